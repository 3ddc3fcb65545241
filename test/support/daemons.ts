// The daemons under test, started as root on private paths, in one of three ways:
//   startDaemon        `mountgate ARGS` (sources, shipped bundle or an installed bin), directly or
//                      socket-activated as the units start it; stopDaemons() stops them all.
//   MntfsdProcess,     mntfsd or userdbd in a child process observed from outside (fds, RSS, log,
//   UserdbdProcess     registry): for tests that crash, kill or measure them.
//   startTestUserdbd   userdbd in this process (its policy calls recorded), restartable.
// Benchmarks start theirs with startChild() and waitForSocket() from a private compiled tree.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { VarlinkClient } from '../../src/ipc/client.js';
import { startUserdbd, type Userdbd } from '../../src/userdbd/daemon.js';
import { openFds } from './fds.js';
import { SETTLE_MS } from './loops.js';
import { loadPolicy, RecordingPolicy, type TestPolicy } from './policy.js';
import { REPO, startChild, type Child } from './processes.js';
import { listening } from './raw-peer.js';
import { registryFiles, type RegistryFileRecord } from './registry.js';
import { waitFor } from './wait.js';

/** `mountgate` run from source: the command line before its subcommand. */
const CLI = [process.execPath, '--import', 'tsx', path.join(REPO, 'src/cli/main.ts')];
/** `mountgate` as shipped: the bundle that the package's bin and the units run (scripts/setup builds it). */
const SHIPPED = [process.execPath, path.join(REPO, 'dist/bundle/main.mjs')];

/**
 * Waits until CHILD serves SOCKET: the file exists, or with `connects` a connect works (the
 * file appears at bind(), before listen()). Fails at once, with its stderr, if it exits.
 */
export async function waitForSocket(socket: string, child: Child, opts: { timeoutMs?: number; connects?: boolean } = {}): Promise<void> {
  await waitFor(() => {
    if (!child.alive()) throw new Error(`exited with status ${child.proc.exitCode ?? child.proc.signalCode}: ${child.stderrTail().slice(-2000)}`);
    return opts.connects ? listening(socket) : fs.existsSync(socket);
  }, socket, opts.timeoutMs ?? 20_000);
}

/** setpriv's --bounding-set for a unit's CapabilityBoundingSet= (the daemon gets no more than that). */
function boundingSet(service: string): string {
  const m = /^CapabilityBoundingSet=(.+)$/m.exec(fs.readFileSync(path.join(REPO, 'units', service), 'utf8'));
  assert.ok(m, `${service} has no CapabilityBoundingSet`);
  return ['-all', ...m[1]!.trim().split(/\s+/).map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
}

/** A daemon startDaemon() started. */
export type Daemon = Child;

export interface DaemonOptions {
  /** Run with the CapabilityBoundingSet= of this unit in units/. */
  service?: string;
  /** Socket-activate it: systemd-socket-activate listens on the socket, passes it with this
   * fd name and starts the daemon on the first connection, with these NAME=VALUE variables. */
  activate?: { fdName: string; env?: string[] };
  /** Run the shipped bundle instead of the sources. */
  shipped?: boolean;
  /** Run this `mountgate` executable instead (an installed copy's bin, as a unit's ExecStart= does). */
  bin?: string;
  /** Working directory (default: this process's). */
  cwd?: string;
}

const running = new Set<Daemon>();

/** Starts `mountgate ARGS` as root and waits until SOCKET exists. stopDaemons() stops it too. */
export async function startDaemon(args: string[], socket: string, opts: DaemonOptions = {}): Promise<Daemon> {
  let argv = [...(opts.bin ? [opts.bin] : opts.shipped ? SHIPPED : CLI), ...args];
  if (opts.service) argv = ['setpriv', `--bounding-set=${boundingSet(opts.service)}`, ...argv];
  if (opts.activate) {
    const env = ['PATH', ...(opts.activate.env ?? [])].flatMap((e) => ['-E', e]);
    argv = ['systemd-socket-activate', '-l', socket, `--fdname=${opts.activate.fdName}`, ...env, ...argv];
  }
  const child = startChild(argv, { cwd: opts.cwd });
  const daemon: Daemon = {
    ...child,
    async stop(signal?: NodeJS.Signals) {
      running.delete(daemon);
      await child.stop(signal);
    },
  };
  running.add(daemon);
  try {
    await waitForSocket(socket, child);
  } catch (err) {
    throw new Error(`${argv[0]} ${args[0]} did not start (${(err as Error).message}): ${child.stderrTail().slice(-2000)}`);
  }
  return daemon;
}

/** Stops every daemon startDaemon() started that is not stopped yet. */
export async function stopDaemons(): Promise<void> {
  await Promise.all([...running].map((d) => d.stop()));
}

/** A daemon run as a child process, observed from outside: its fds, RSS and log. */
abstract class ObservedDaemon {
  protected constructor(
    private readonly name: string,
    readonly child: Child,
    readonly sock: string,
  ) {}

  get alive(): boolean {
    return this.child.alive();
  }

  /** The end of its log. */
  log(): string {
    return this.child.stderrTail().slice(-3000);
  }

  /** Open fds of the daemon process. */
  fds(): string[] {
    return [...openFds(this.child.pid).values()];
  }

  fdCount(): number {
    return fs.readdirSync(`/proc/${this.child.pid}/fd`).length;
  }

  rssKiB(): number {
    return rssKiB(this.child.pid);
  }

  /** The fd count once it is stable for 200 ms (no client connected any more). */
  async quietFdCount(): Promise<number> {
    let last = -1;
    let stable = 0;
    await waitFor(() => {
      const n = this.fdCount();
      stable = n === last ? stable + 1 : 0;
      last = n;
      return stable >= 10;
    }, 'a stable fd count', 60_000, 20);
    return last;
  }

  /** Waits until the daemon's fd count is back to `n` (it sees a disconnect asynchronously; a
   * verification under way stops at its next chunk, which takes long on a loaded machine). */
  async settleFds(n: number, what: string): Promise<void> {
    try {
      await waitFor(() => this.fdCount() <= n, what, SETTLE_MS);
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
    await this.child.stop(signal);
    fs.rmSync(this.sock, { force: true });
  }

  /** SIGKILL, no cleanup: what a crash leaves. */
  async kill9(): Promise<void> {
    await this.child.stop('SIGKILL');
  }
}

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

export interface MntfsdOptions {
  certificateDirectories?: string[];
  trustedDirectories?: string[];
  /** userdbd socket mntfsd registers mounts with; default none. */
  userdbd?: string;
}

/** mntfsd (`mountgate mntfsd` from the sources) in a child process on a private socket in `dir`. */
export class MntfsdProcess extends ObservedDaemon {
  private constructor(child: Child, sock: string) {
    super('mntfsd', child, sock);
  }

  static async start(dir: string, opts: MntfsdOptions = {}): Promise<MntfsdProcess> {
    const sock = path.join(dir, `mntfsd-${Date.now()}-${Math.random().toString(16).slice(2)}.sock`);
    const argv = [...CLI, 'mntfsd', '--listen', sock, '--userdbd', opts.userdbd ?? 'none'];
    for (const d of opts.certificateDirectories ?? []) argv.push('--verity-certs', d);
    for (const d of opts.trustedDirectories ?? []) argv.push('--trusted-dir', d);
    const child = startChild(argv, { logFile: `${sock}.log`, env: { ...process.env, MOUNTGATE_LOG_LEVEL: 'warn' } });
    await waitForSocket(sock, child, { timeoutMs: 30_000, connects: true });
    return new MntfsdProcess(child, sock);
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

/** userdbd in a child process on a private socket and state dir (userdbd-main.ts: the test
 * policy, its pins under testPinDir(pinName)). */
export class UserdbdProcess extends ObservedDaemon {
  private constructor(
    child: Child,
    sock: string,
    readonly stateDir: string,
    private readonly pinName: string,
  ) {
    super('userdbd', child, sock);
  }

  static async start(opts: { sock: string; stateDir: string; pinName: string; sweepIntervalMs?: number }): Promise<UserdbdProcess> {
    const argv = [process.execPath, '--import', 'tsx', path.join(REPO, 'test/support/userdbd-main.ts'), opts.sock, opts.stateDir, opts.pinName, String(opts.sweepIntervalMs ?? 100)];
    const child = startChild(argv, { cwd: REPO, logFile: `${opts.sock}.log`, env: { ...process.env, MOUNTGATE_LOG_LEVEL: 'warn' } });
    await waitForSocket(opts.sock, child, { timeoutMs: 30_000, connects: true });
    return new UserdbdProcess(child, opts.sock, opts.stateDir, opts.pinName);
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

  /** Removes the BPF pins a killed daemon may have left (nothing when the policy did not load). */
  async unpin(): Promise<void> {
    (await loadPolicy(this.pinName)).dispose();
  }
}

export interface TestUserdbd {
  dir: string;
  sock: string;
  state: string;
  daemon: Userdbd;
  policy: RecordingPolicy;
  /** What loadPolicy() gave (real: the BPF policy is enforced). */
  testPolicy: TestPolicy;
  /** Stops the daemon and starts a new one on the same state dir (a restart). */
  restart(): Promise<void>;
  /** Stops it, disposes of the policy and removes the directory it made (not a `dir` it was given). */
  close(): Promise<void>;
}

const silent = pino({ level: 'silent' });

/**
 * userdbd in this process with the test policy (pins under testPinDir(pinName)), on SOCKET and
 * STATE in `dir` (a new directory uid 1000 can reach when none is given), sweeping every 100 ms.
 */
export async function startTestUserdbd(pinName: string, opts: { dir?: string; sock?: string; state?: string; sweepIntervalMs?: number } = {}): Promise<TestUserdbd> {
  const own = opts.dir === undefined;
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `userdbd-${pinName}-`));
  if (own) fs.chmodSync(dir, 0o755); // reachable from uid 1000
  const sock = opts.sock ?? path.join(dir, 'io.systemd.NamespaceResource');
  const state = opts.state ?? path.join(dir, 'state');
  const pol = await loadPolicy(pinName);
  const start = (policy: RecordingPolicy): Promise<Userdbd> =>
    startUserdbd({ listen: sock, stateDir: state, userdbLink: null, policy, allowWithoutPolicy: !pol.real, sweepIntervalMs: opts.sweepIntervalMs ?? 100, logger: silent });
  const t: TestUserdbd = {
    dir,
    sock,
    state,
    policy: new RecordingPolicy(pol.policy),
    testPolicy: pol,
    daemon: undefined as unknown as Userdbd,
    async restart() {
      await t.daemon.close();
      t.policy = new RecordingPolicy(pol.policy);
      t.daemon = await start(t.policy);
    },
    async close() {
      await t.daemon?.close();
      pol.dispose();
      if (own) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  t.daemon = await start(t.policy);
  return t;
}
