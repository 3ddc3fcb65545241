// Helpers for the hostile-client, broken-image and leak tests: mntfsd runs as a child process
// (so its fds, RSS and crashes are its own), clients are raw sockets or uid 1000 processes.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { VarlinkClient } from '../../src/ipc/client.js';
import { Connection } from '../../src/ipc/connection.js';
import { FILE_NAME } from '../../src/mntfsd/verified-copy.js';
import { native } from '../../src/native/index.js';
import { userEval, userPackage, userScript } from '../e2e/user-package.js';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const MAIN = path.join(ROOT, 'src/cli/main.ts');
const E2E_CLIENT = path.join(ROOT, 'test/e2e/client.ts');
/** Node has no fs.constants.O_PATH. */
export const O_PATH = 0o10000000;
export const LONG = process.env.MOUNTGATE_LONG === '1';
/** How long a daemon may take to let go of what a finished or abandoned call held. */
const SETTLE_MS = 20_000;

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
/** A daemon run as a child process, observed from outside: its fds, RSS and log. */
abstract class ChildDaemon {
  protected readonly exit: Promise<void>;

  protected constructor(
    private readonly name: string,
    readonly child: ChildProcess & { pid: number },
    readonly sock: string,
    readonly logFile: string,
  ) {
    this.exit = new Promise((r) => child.once('exit', () => r()));
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

  /** The fd count once it is stable for 200 ms (no client connected any more). */
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

  /** Waits until the daemon's fd count is back to `n` (it sees a disconnect asynchronously; a
   * verification under way stops at its next chunk, which takes long on a loaded machine). */
  async settleFds(n: number, what: string): Promise<void> {
    try {
      await until(() => this.fdCount() <= n, what, SETTLE_MS);
    } catch {
      assert.fail(`${what}: ${this.name} holds ${this.fdCount()} fds, expected ${n}: ${JSON.stringify(this.fds().slice(-20))}`);
    }
    assert.equal(await this.quietFdCount(), n, `${what}: fd count`);
  }

  /** Fails the test if the daemon died; proves it still answers a call. */
  async assertServing(): Promise<void> {
    assert.ok(this.alive, `${this.name} died: ${this.log()}`);
    const c = await VarlinkClient.connect(this.sock);
    try {
      const info = await c.call('org.varlink.service.GetInfo');
      assert.ok(Array.isArray(info.parameters.interfaces));
    } finally {
      c.close();
    }
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

export class DaemonProcess extends ChildDaemon {
  private constructor(child: ChildProcess & { pid: number }, sock: string, logFile: string) {
    super('mntfsd', child, sock, logFile);
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
const OURS = new RegExp(`^/${FILE_NAME}$|/hostile-`);

/** Loop devices bound now that were not in `before` (loops we made that are still there). */
export function newLoops(before: Map<string, string>): string[] {
  return [...loopDevices()].filter(([d, f]) => before.get(d) !== f && OURS.test(f)).map(([d, f]) => `${d}:${f}`);
}

/** Waits until no loop device beyond `before` is bound (autoclear runs after the last mount goes). */
export async function assertNoNewLoops(before: Map<string, string>, what: string): Promise<void> {
  try {
    await until(() => newLoops(before).length === 0, what, SETTLE_MS);
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

/** Runs `test/e2e/client.ts` as uid 1000, bundled into the unpacked package (user-package.ts)
 * (asynchronously: a daemon may run in this process). */
export async function e2eClientAs1000(args: string[]): Promise<Record<string, unknown>> {
  let stdout = '';
  let stderr = '';
  try {
    ({ stdout, stderr } = await execFileAsync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', process.execPath, userScript(E2E_CLIENT), ...args], {
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

/** userdbd in a child process on a private socket and state dir (its fds, RSS and crashes are its
 * own). It runs with the policy of test/userdbd/policy.ts: the BPF policy when it attaches, else
 * what `--allow-without-policy` runs with (deaths are then found by the liveness sweep). */
export class UserdbdProcess extends ChildDaemon {
  private constructor(
    child: ChildProcess & { pid: number },
    sock: string,
    readonly stateDir: string,
    logFile: string,
    private readonly pinName: string,
  ) {
    super('userdbd', child, sock, logFile);
  }

  static async start(opts: { sock: string; stateDir: string; pinName: string; sweepIntervalMs?: number }): Promise<UserdbdProcess> {
    const logFile = `${opts.sock}.log`;
    const script = `
      import { startUserdbd } from ${JSON.stringify(path.join(ROOT, 'src/userdbd/daemon.ts'))};
      import { loadPolicy } from ${JSON.stringify(path.join(ROOT, 'test/userdbd/policy.ts'))};
      const [listen, stateDir, pin, sweep] = process.argv.slice(1);
      const { policy, real } = await loadPolicy(pin);
      const d = await startUserdbd({ listen, stateDir, userdbLink: null, policy, allowWithoutPolicy: !real, sweepIntervalMs: Number(sweep) });
      process.once('SIGTERM', () => void d.close().then(() => { policy.close(); process.exit(0); }));
    `;
    const log = fs.openSync(logFile, 'a');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, opts.sock, opts.stateDir, opts.pinName, String(opts.sweepIntervalMs ?? 100)], {
      cwd: ROOT,
      stdio: ['ignore', log, log],
      env: { ...process.env, MOUNTGATE_LOG_LEVEL: 'warn' },
    });
    fs.closeSync(log);
    if (child.pid === undefined) throw new Error('spawn userdbd failed');
    const d = new UserdbdProcess(child as ChildProcess & { pid: number }, opts.sock, opts.stateDir, logFile, opts.pinName);
    await until(() => {
      if (!d.alive) throw new Error(`userdbd exited: ${d.log()}`);
      return d.fdCount() > 0 && d.listening();
    }, 'userdbd to listen', 30_000);
    return d;
  }

  /** The socket file appears at bind(), before listen(): a connect proves the daemon listens. */
  private listening(): boolean {
    try {
      native.close(native.connect(this.sock));
      return true;
    } catch {
      return false;
    }
  }

  /** The namespaces the daemon reports (io.mountgate.Userdbd.GetStatus). */
  async namespaces(): Promise<Array<{ name: string; owner: number; userNamespaceInode: number; base: number; size: number; delegations: number[] }>> {
    const c = await VarlinkClient.connect(this.sock);
    try {
      return (await c.call('io.mountgate.Userdbd.GetStatus')).parameters.namespaces as never;
    } finally {
      c.close();
    }
  }

  /** The records on disk, asserting the directory holds only complete records and the lock
   * (no tmp file, no set-aside corrupt record, every record parses and is named after its inode).
   * `busy`: calls may be in flight, so the tmp file of a write under way is skipped. */
  records(busy = false): RegistryFileRecord[] {
    return registryFiles(this.stateDir, busy);
  }

  async kill9(): Promise<void> {
    if (this.alive) this.child.kill('SIGKILL');
    await this.exit;
  }

  /** Removes the BPF pins a killed daemon may have left (nothing when the policy did not load). */
  async unpin(): Promise<void> {
    const { loadPolicy } = await import('../userdbd/policy.js');
    (await loadPolicy(this.pinName)).dispose();
  }
}

export interface RegistryFileRecord {
  userns: number;
  nsId: string;
  owner: number;
  name: string;
  size: number;
  start?: number;
  delegates: Array<{ start: number; size: number }>;
}

/** Reads <stateDir>/registry, failing on anything but complete records and the lock file
 * (and, when `busy`, the tmp file of a write under way). */
export function registryFiles(stateDir: string, busy = false): RegistryFileRecord[] {
  const dir = path.join(stateDir, 'registry');
  const out: RegistryFileRecord[] = [];
  for (const entry of fs.readdirSync(dir)) {
    if (entry === 'lock' || (busy && /^i[0-9]+\.userns\.tmp$/.test(entry))) continue;
    assert.match(entry, /^i[0-9]+\.userns$/, `unexpected file in the registry: ${entry}`);
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, entry), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed since readdir
      throw e;
    }
    assert.ok(text.endsWith('}\n'), `half-written record ${entry}: ${JSON.stringify(text.slice(-80))}`);
    const rec = JSON.parse(text) as RegistryFileRecord;
    assert.equal(`i${rec.userns}.userns`, entry);
    out.push(rec);
  }
  return out;
}

/** One reply of the userdbd agent (see runUserdbdAgent). */
export type AgentReply = Record<string, unknown>;

/**
 * A long-lived client of userdbd running as `uid` (setpriv; numeric uids need no passwd entry).
 * It creates user namespaces itself (owned by `uid`, kept alive by fds it holds, no process
 * left to become a zombie) and makes calls with them. `inherit` fds become its fds 3, 4, …
 */
export class UserdbdAgent {
  readonly child: ChildProcess & { pid: number };
  private readonly pending = new Map<number, (r: AgentReply) => void>();
  private nextId = 0;
  private stderr = '';

  private constructor(child: ChildProcess & { pid: number }) {
    this.child = child;
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      buf += s;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const { id, ...rest } = JSON.parse(buf.slice(0, nl)) as { id: number } & AgentReply;
        buf = buf.slice(nl + 1);
        this.pending.get(id)?.(rest);
        this.pending.delete(id);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (this.stderr.length < 8192) this.stderr += s;
    });
    child.once('exit', () => {
      for (const [, r] of this.pending) r({ crash: `agent exited: ${this.stderr.slice(-2000)}` });
      this.pending.clear();
    });
  }

  static async start(uid: number, sock: string, inherit: number[] = []): Promise<UserdbdAgent> {
    const script = `import { runUserdbdAgent } from ${JSON.stringify(path.join(ROOT, 'test/hostile/util.ts'))}; await runUserdbdAgent();`;
    const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, userEval('userdbd-agent', script), sock], {
      stdio: ['pipe', 'pipe', 'pipe', ...inherit],
    });
    if (child.pid === undefined) throw new Error('spawn agent failed');
    const a = new UserdbdAgent(child as ChildProcess & { pid: number });
    assert.deepEqual(await a.req({ op: 'ping' }), { ok: true });
    return a;
  }

  /** Sends one request; rejects if the agent reports a crash. */
  async req(r: Record<string, unknown>): Promise<AgentReply> {
    const id = this.nextId++;
    const reply = new Promise<AgentReply>((res) => this.pending.set(id, res));
    this.child.stdin!.write(`${JSON.stringify({ id, ...r })}\n`);
    const out = await reply;
    if (out.crash) throw new Error(`agent: ${String(out.crash)}`);
    return out;
  }

  /** A new empty user namespace owned by the agent's uid: its fd number in the agent and inode. */
  async userns(): Promise<{ fd: number; inode: number }> {
    return (await this.req({ op: 'userns' })) as { fd: number; inode: number };
  }

  /** One call on a fresh connection with the agent's fds `fds`; the reply, or {closed: true}. */
  async call(method: string, parameters: unknown, fds: number[] = []): Promise<AgentReply> {
    return this.req({ op: 'call', method, parameters, fds });
  }

  /** An fd of the agent's, opened in this (root) process via /proc. */
  openFd(fd: number): number {
    return fs.openSync(`/proc/${this.child.pid}/fd/${fd}`, 'r');
  }

  /** Ends the agent; the namespaces only it held die with it. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin!.end();
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  }
}

/** The uid and gid maps of the user namespace `fd` (read by a helper that joined it). */
export async function usernsMaps(fd: number): Promise<{ uid: number[][]; gid: number[][] }> {
  const { joinUserNamespace } = await import('../../src/sys/userns-joiner.js');
  const member = await joinUserNamespace(fd);
  try {
    const read = (f: string): number[][] =>
      fs
        .readFileSync(`/proc/${member.pid}/${f}`, 'utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => l.trim().split(/\s+/).map(Number));
    return { uid: read('uid_map'), gid: read('gid_map') };
  } finally {
    await member.release();
  }
}

/**
 * The agent side (run by UserdbdAgent as its uid): JSON requests on stdin, one JSON reply line
 * each on stdout. Ops: ping; userns; close {fds}; maps {fd}; call {method, parameters, fds};
 * alloc {count, size, prefix, keep} (count allocations, each on a new namespace, over one
 * connection re-made when it breaks; keep: probability of keeping a successful namespace alive,
 * namespaces whose call broke off are always kept; replies {ok, errors, kept}).
 */
export async function runUserdbdAgent(): Promise<void> {
  const sock = process.argv[1]!;
  const { createInterface } = await import('node:readline');
  const { createUserNamespace } = await import('../../src/sys/nshelper.js');
  const { VarlinkError } = await import('../../src/ipc/errors.js');
  const userns = async (): Promise<{ fd: number; inode: number }> => {
    const fd = await createUserNamespace();
    return { fd, inode: fs.fstatSync(fd).ino };
  };
  const ops: Record<string, (r: Record<string, unknown>) => Promise<AgentReply>> = {
    ping: async () => ({ ok: true }),
    userns,
    close: async (r) => {
      closeAll(r.fds as number[]);
      return {};
    },
    maps: async (r) => usernsMaps(r.fd as number),
    call: async (r) => {
      const p = rawPeer(sock);
      try {
        p.call(r.method as string, r.parameters, r.fds as number[]);
        return await p.nextReply().catch(() => ({ closed: true }));
      } finally {
        p.close();
      }
    },
    alloc: async (r) => {
      const count = r.count as number;
      const keep = r.keep as number;
      const errors: string[] = [];
      const kept: Array<{ fd: number; inode: number; name: string; answered: boolean }> = [];
      let ok = 0;
      let client: VarlinkClient | undefined;
      for (let i = 0; i < count; i++) {
        const ns = await userns();
        const name = `${String(r.prefix)}${i}`;
        let answered = false;
        let allocated = false;
        try {
          client ??= await connectRetrying(sock);
          await client.call('io.systemd.NamespaceResource.AllocateUserRange', { name, size: r.size, userNamespaceFileDescriptor: 0 }, { fds: [ns.fd] });
          answered = allocated = true;
          ok++;
        } catch (e) {
          if (e instanceof VarlinkError) {
            answered = true;
            errors.push(`${name}:${e.error}:${JSON.stringify(e.parameters)}`);
          } else {
            client?.close();
            client = undefined;
          }
        }
        if (!answered || (allocated && Math.random() < keep)) kept.push({ ...ns, name, answered });
        else fs.closeSync(ns.fd);
      }
      client?.close();
      return { ok, errors, kept };
    },
  };
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    const { id, op, ...rest } = JSON.parse(line) as { id: number; op: string } & Record<string, unknown>;
    let out: AgentReply;
    try {
      const fn = ops[op];
      if (!fn) throw new Error(`unknown op ${op}`);
      out = await fn(rest);
    } catch (e) {
      out = { crash: String(e instanceof Error ? e.stack : e) };
    }
    process.stdout.write(`${JSON.stringify({ id, ...out })}\n`);
  }
}

/** Connects, retrying while the daemon is down (restarting after a kill). */
async function connectRetrying(sock: string, ms = 30_000): Promise<VarlinkClient> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await VarlinkClient.connect(sock);
    } catch (e) {
      if (Date.now() > end) throw e;
      await sleep(10);
    }
  }
}

/** A pipe [read, write] (Node has no pipe(2); a FIFO opened both ways is the same kind of fd). */
export function fifoPipe(dir: string): [number, number] {
  const fifo = path.join(dir, `fifo-${Math.random().toString(16).slice(2)}`);
  execFileSync('mkfifo', [fifo]);
  const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  fs.rmSync(fifo);
  return [r, w];
}

/**
 * A process running as `uid` sends one call to `sock` with `fd` attached (inherited as its fd 3),
 * busy-waits `delayMs` and kills itself with SIGKILL: a client that vanishes mid-call. Plain
 * node without tsx, so it starts in tens of milliseconds; the addon is the unpacked package's
 * (uid 1000 may not be able to read the checkout). Resolves once it is gone.
 */
export async function sendAndDie(uid: number, sock: string, method: string, parameters: unknown, fd: number, delayMs: number): Promise<void> {
  const script = `
    const native = require(${JSON.stringify(path.join(userPackage().dir, 'build/Release/mountgate.node'))});
    const [sock, text, delay] = process.argv.slice(1);
    const s = native.connect(sock);
    const msg = Buffer.from(text + '\\0');
    if (native.sendmsg(s, msg, 0, msg.length, [3]) !== msg.length) process.exit(3);
    const end = performance.now() + Number(delay);
    while (performance.now() < end);
    process.kill(process.pid, 'SIGKILL');
  `;
  const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', script, sock, JSON.stringify({ method, parameters }), String(delayMs)], {
    stdio: ['ignore', 'ignore', 'inherit', fd],
  });
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  assert.equal(signal ?? code, 'SIGKILL', 'the client did not send its call');
}
