// Helpers for the hostile-client, broken-image and leak tests: mntfsd runs as a child process
// (so its fds, RSS and crashes are its own), clients are raw sockets or uid 1000 processes.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { VarlinkClient } from '../../src/ipc/client.js';
import { Connection } from '../../src/ipc/connection.js';
import { native } from '../../src/native/index.js';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const MAIN = path.join(ROOT, 'src/cli/main.ts');
const E2E_CLIENT = path.join(ROOT, 'test/e2e/client.ts');
/** Node has no fs.constants.O_PATH. */
export const O_PATH = 0o10000000;
export const LONG = process.env.MOUNTGATE_LONG === '1';

export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export interface DaemonOptions {
  certificateDirectories?: string[];
  trustedDirectories?: string[];
  /** userdbd socket mntfsd registers mounts with; default none. */
  userdbd?: string;
}

/** mntfsd in a child process on a private socket. */
export class DaemonProcess {
  readonly child: ChildProcess & { pid: number };
  readonly sock: string;
  readonly logFile: string;
  private exit: Promise<void>;

  private constructor(child: ChildProcess & { pid: number }, sock: string, logFile: string) {
    this.child = child;
    this.sock = sock;
    this.logFile = logFile;
    this.exit = new Promise((r) => child.once('exit', () => r()));
  }

  static async start(dir: string, opts: DaemonOptions = {}): Promise<DaemonProcess> {
    const sock = path.join(dir, `mntfsd-${Date.now()}-${Math.random().toString(16).slice(2)}.sock`);
    const logFile = `${sock}.log`;
    const args = ['--import', 'tsx', MAIN, 'mntfsd', '--listen', sock, '--userdbd', opts.userdbd ?? 'none'];
    for (const d of opts.certificateDirectories ?? []) args.push('--verity-certs', d);
    for (const d of opts.trustedDirectories ?? []) args.push('--trusted-dir', d);
    const log = fs.openSync(logFile, 'w');
    const child = spawn(process.execPath, args, { stdio: ['ignore', log, log], env: { ...process.env, MOUNTGATE_LOG_LEVEL: 'warn' } });
    fs.closeSync(log);
    if (child.pid === undefined) throw new Error('spawn mntfsd failed');
    const d = new DaemonProcess(child as ChildProcess & { pid: number }, sock, logFile);
    await until(() => {
      if (child.exitCode !== null) throw new Error(`mntfsd exited: ${d.log()}`);
      // The socket file appears at bind(), before listen(): wait until a connect works.
      try {
        native.close(native.connect(sock));
        return true;
      } catch {
        return false;
      }
    }, 'mntfsd to listen', 30_000);
    return d;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').slice(-3000);
    } catch {
      return '';
    }
  }

  /** Open fds of the daemon process. */
  fds(): string[] {
    return fs.readdirSync(`/proc/${this.child.pid}/fd`).map((n) => {
      try {
        return fs.readlinkSync(`/proc/${this.child.pid}/fd/${n}`);
      } catch {
        return '?';
      }
    });
  }

  fdCount(): number {
    return fs.readdirSync(`/proc/${this.child.pid}/fd`).length;
  }

  rssKiB(): number {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${this.child.pid}/status`, 'utf8'));
    return Number(m?.[1] ?? 0);
  }

  mountinfoLines(): number {
    return fs.readFileSync(`/proc/${this.child.pid}/mountinfo`, 'utf8').split('\n').length;
  }

  async client(): Promise<VarlinkClient> {
    return VarlinkClient.connect(this.sock);
  }

  async status(): Promise<{ cachedImages: Array<{ rootHash: string }>; cacheHits: number; verifications: number; mountsHandedOut: number }> {
    const c = await this.client();
    try {
      return (await c.call('io.mountgate.Mntfsd.GetStatus')).parameters as never;
    } finally {
      c.close();
    }
  }

  /** Fails the test if the daemon died; proves it still answers a call. */
  async assertServing(): Promise<void> {
    assert.ok(this.alive, `mntfsd died: ${this.log()}`);
    const c = await this.client();
    try {
      const info = await c.call('org.varlink.service.GetInfo');
      assert.ok(Array.isArray(info.parameters.interfaces));
    } finally {
      c.close();
    }
  }

  /** Waits until the daemon's fd count is back to `n` (the daemon sees a disconnect asynchronously). */
  async settleFds(n: number, what: string): Promise<void> {
    try {
      await until(() => this.fdCount() <= n, what, 5000);
    } catch {
      assert.fail(`${what}: daemon holds ${this.fdCount()} fds, expected ${n}: ${JSON.stringify(this.fds().slice(-20))}`);
    }
    await sleep(20);
    assert.equal(this.fdCount(), n, `${what}: fd count`);
  }

  /** The fd count once no client is connected any more (stable for 200 ms). */
  async quietFdCount(): Promise<number> {
    let last = -1;
    for (let stable = 0; stable < 10; ) {
      await sleep(20);
      const n = this.fdCount();
      stable = n === last ? stable + 1 : 0;
      last = n;
    }
    return last;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.alive) {
      this.child.kill(signal);
      const killer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exit;
      clearTimeout(killer);
    }
    fs.rmSync(this.sock, { force: true });
  }
}

/** Bound loop devices and their backing files. */
export function loopDevices(): Map<string, string> {
  const out = new Map<string, string>();
  for (const d of fs.readdirSync('/sys/block')) {
    if (!d.startsWith('loop')) continue;
    try {
      out.set(d, fs.readFileSync(`/sys/block/${d}/loop/backing_file`, 'utf8').trim());
    } catch {
      // unbound
    }
  }
  return out;
}

/** Backing files of loops mntfsd makes for these tests: verified copies, or images in our dirs.
 * (Other suites running on the machine at the same time bind loops of their own files.) */
const OURS = /memfd:mountgate-verified|\/hostile-/;

/** Loop devices bound now that were not in `before` (loops we made that are still there). */
export function newLoops(before: Map<string, string>): string[] {
  return [...loopDevices()].filter(([d, f]) => before.get(d) !== f && OURS.test(f)).map(([d, f]) => `${d}:${f}`);
}

/** Waits until no loop device beyond `before` is bound (autoclear runs after the last mount goes). */
export async function assertNoNewLoops(before: Map<string, string>, what: string): Promise<void> {
  try {
    await until(() => newLoops(before).length === 0, what, 5000);
  } catch {
    assert.fail(`${what}: loop devices left: ${newLoops(before).join(', ')}`);
  }
}

export interface RawPeer {
  fd: number;
  replies: Array<Record<string, unknown>>;
  fdsReceived: number[];
  closed: Promise<Error | undefined>;
  isClosed(): boolean;
  /** Sends bytes exactly as given (with fds on the first byte); throws on a short write. */
  send(data: string | Buffer, fds?: number[]): void;
  /** Sends a JSON call (NUL-terminated). */
  call(method: string, parameters?: unknown, fds?: number[]): void;
  nextReply(ms?: number): Promise<Record<string, unknown>>;
  close(): void;
}

/** A client that speaks bytes, not the protocol: whatever the test wants to send. */
export function rawPeer(sock: string): RawPeer {
  const fd = native.connect(sock);
  const replies: Array<Record<string, unknown>> = [];
  const fdsReceived: number[] = [];
  let closedFlag = false;
  let onClose!: (e?: Error) => void;
  const closed = new Promise<Error | undefined>((r) => (onClose = r));
  const conn = new Connection(fd, {
    onMessage: (m) => {
      fdsReceived.push(...m.fds);
      replies.push(JSON.parse(m.text) as Record<string, unknown>);
    },
    onClose: (e) => {
      closedFlag = true;
      onClose(e);
    },
  });
  let consumed = 0;
  const peer: RawPeer = {
    fd,
    replies,
    fdsReceived,
    closed,
    isClosed: () => closedFlag,
    send(data, fds = []) {
      const b = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      let first = true;
      const deadline = Date.now() + 10_000;
      while (off < b.length) {
        const n = native.sendmsg(fd, b, off, b.length - off, first ? fds : []);
        if (n < 0) {
          if (Date.now() > deadline) throw new Error('send stalled');
          // Blocking busy-wait is fine: the daemon is another process.
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
          continue;
        }
        first = false;
        off += n;
      }
    },
    call(method, parameters, fds = []) {
      peer.send(`${JSON.stringify(parameters === undefined ? { method } : { method, parameters })}\0`, fds);
    },
    async nextReply(ms = 30_000) {
      await until(() => replies.length > consumed || closedFlag, 'a reply', ms);
      if (replies.length > consumed) return replies[consumed++]!;
      throw new Error('connection closed without a reply');
    },
    close() {
      conn.close();
      closeAll(fdsReceived.splice(0));
    },
  };
  return peer;
}

/** Runs `test/e2e/client.ts` as uid 1000 (asynchronously: a daemon may run in this process). */
export async function e2eClientAs1000(args: string[]): Promise<Record<string, unknown>> {
  let stdout = '';
  let stderr = '';
  try {
    ({ stdout, stderr } = await execFileAsync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', process.execPath, '--import', 'tsx', E2E_CLIENT, ...args], {
      encoding: 'utf8',
      timeout: 60_000,
    }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    stdout = e.stdout ?? '';
    stderr = e.stderr ?? String(err);
  }
  const line = stdout.trim().split('\n').pop() ?? '';
  assert.ok(line.startsWith('{'), `client printed no result: ${stderr.slice(-1500)}`);
  return JSON.parse(line) as Record<string, unknown>;
}

/** A private test directory that uid 1000 can traverse. */
export function testDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

/** A copy of `src` at `dir/name`, world-readable. */
export function publish(src: string, dir: string, name: string): string {
  const out = path.join(dir, name);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.copyFileSync(src, out);
  fs.chmodSync(out, 0o644);
  return out;
}

export function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  }
}
