// Test support for the userdbd tests that drive steps-client.ts: an in-process userdbd on a
// private socket and state dir, the client run as uid 1000, and readers for what the kernel
// shows (maps, links).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startUserdbd, type Userdbd } from '../../src/userdbd/daemon.js';
import type { NamespaceDeath, NamespacePolicy, PolicyStatus } from '../../src/userdbd/namespace-resource.js';
import { userScript } from '../e2e/user-package.js';
import { loadPolicy, type TestPolicy } from './policy.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const clientScript = path.join(here, 'steps-client.ts');

export type Step = { spawn: 'user' | 'user+net' | 'user+mount' } | { call: string; params: Record<string, unknown>; fds?: string[]; hold?: boolean };

export interface Reply {
  ok?: Record<string, unknown>;
  error?: string;
  parameters?: Record<string, unknown>;
  fds?: Array<{ link: string; iff?: string; owner?: string; tunFlags?: string }>;
  holder?: number;
}

/** Runs a command without blocking the event loop (the daemon under test runs in this process). */
export async function run(cmd: string, args: string[], fds: number[] = []): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe', ...fds] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, out, err };
}

export const STEPS_CLIENT = clientScript;

/** Runs steps-client.ts as `uid` (default 1000); `inherit` becomes its fds 3, 4, … */
export async function steps(sock: string, list: Step[], opts: { uid?: number; inherit?: number[] } = {}): Promise<{ pids: number[]; replies: Reply[] }> {
  const uid = opts.uid ?? 1000;
  const r = await run('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, userScript(clientScript), sock, JSON.stringify(list)], opts.inherit ?? []);
  const last = r.out.trim().split('\n').pop() ?? '';
  let parsed: { pids: number[]; replies: Reply[]; crash?: string };
  try {
    parsed = JSON.parse(last) as typeof parsed;
  } catch {
    throw new Error(`client exited with ${r.code}: ${r.out}${r.err}`);
  }
  if (parsed.crash) throw new Error(`client crashed: ${parsed.crash}`);
  return parsed;
}

export function readMap(pid: number, file: 'uid_map' | 'gid_map'): number[][] {
  return fs
    .readFileSync(`/proc/${pid}/${file}`, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => l.trim().split(/\s+/).map(Number));
}

export function nsInode(pid: number, kind = 'user'): number {
  return fs.statSync(`/proc/${pid}/ns/${kind}`).ino;
}

export function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

export interface Link {
  ifname: string;
  address: string;
  altnames?: string[];
  linkinfo?: { info_kind?: string };
}

/** `ip -d -j link show NAME`, in the network namespace of `pid` (host's when undefined); null if absent. */
export async function link(name: string, pid?: number): Promise<Link | null> {
  const ip = ['ip', '-d', '-j', 'link', 'show', 'dev', name];
  const r = pid === undefined ? await run(ip[0]!, ip.slice(1)) : await run('nsenter', [`--net=/proc/${pid}/ns/net`, '--', ...ip]);
  if (r.code !== 0) {
    assert.match(r.err, /does not exist/, r.err);
    return null;
  }
  return (JSON.parse(r.out) as Link[])[0] ?? null;
}

/** Host links whose names userdbd makes ("ns-" and 12 hex digits). */
export function hostNsLinks(): string[] {
  return fs.readdirSync('/sys/class/net').filter((n) => /^ns-[0-9a-f]{12}$/.test(n));
}

/** Records the policy calls (and forwards them to the test policy). */
export class RecordingPolicy implements NamespacePolicy {
  readonly calls: Array<[string, number]> = [];
  constructor(private readonly inner: NamespacePolicy) {}
  status(): PolicyStatus {
    return this.inner.status();
  }
  manage(inode: number): void {
    this.calls.push(['manage', inode]);
    this.inner.manage(inode);
  }
  unmanage(inode: number): void {
    this.calls.push(['unmanage', inode]);
    this.inner.unmanage(inode);
  }
  denySetgroups(inode: number): void {
    this.calls.push(['denySetgroups', inode]);
    this.inner.denySetgroups(inode);
  }
  deaths(): AsyncIterable<NamespaceDeath> {
    return this.inner.deaths();
  }
  close(): void {
    // the test disposes of the inner policy
  }
}

export interface TestDaemon {
  dir: string;
  sock: string;
  state: string;
  daemon: Userdbd;
  policy: RecordingPolicy;
  /** Stops the daemon and starts a new one on the same state dir (a restart). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

const silent = pino({ level: 'silent' });

export async function startTestDaemon(pinName: string): Promise<TestDaemon> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `userdbd-${pinName}-`));
  fs.chmodSync(dir, 0o755); // reachable from uid 1000
  const sock = path.join(dir, 'io.systemd.NamespaceResource');
  const state = path.join(dir, 'state');
  const pol: TestPolicy = await loadPolicy(pinName);
  const start = (policy: RecordingPolicy): Promise<Userdbd> =>
    startUserdbd({ listen: sock, stateDir: state, userdbLink: null, policy, allowWithoutPolicy: !pol.real, sweepIntervalMs: 100, logger: silent });
  const t: TestDaemon = {
    dir,
    sock,
    state,
    policy: new RecordingPolicy(pol.policy),
    daemon: undefined as unknown as Userdbd,
    async restart() {
      await t.daemon.close();
      t.policy = new RecordingPolicy(pol.policy);
      t.daemon = await start(t.policy);
    },
    async close() {
      await t.daemon?.close();
      pol.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  t.daemon = await start(t.policy);
  return t;
}
