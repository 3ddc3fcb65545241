// What test/lab-systemd/peers.test.ts and bench/peers.ts share in the lab's systemd boot: the two
// implementations as socket-activated units on sockets of their own (mountgate's daemons from
// this checkout's bundle, systemd 262's from the units the sid root ships, renamed), and the
// uid-1000 agent that makes the same calls against both (peers-agent.ts).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { FdSpec, Reply, Request } from './peers-agent.js';

/** The host's root, read-only (test/lab-systemd/run), and this checkout in it. */
export const HOST = process.env.LAB_HOST ?? '/run/lab/host';
export const CHECKOUT = path.join(HOST, process.env.MOUNTGATE_LAB_CHECKOUT ?? '/nonexistent');
export const MOUNTGATE = ['/usr/bin/node', path.join(CHECKOUT, 'dist/bundle/main.mjs')];
export const UNIT_DIR = '/run/systemd/system';
export const PEERS = '/run/peers';
/** The unprivileged client's account (what units.test.ts's login is too). */
export const USER = { uid: 1000, gid: 1000, home: '/home/tester' };

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(argv: string[], timeout = 120_000): Run {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function ok(argv: string[], timeout?: number): string {
  const r = run(argv, timeout);
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}:\n${r.stderr.slice(-3000)}${r.stdout.slice(-1000)}`);
  return r.stdout;
}

/**
 * A tool the sid root lacks (acl, attr, e2fsprogs are not in scripts/build-lab-rootfs's list),
 * run from the host's root with the host's own loader and libraries, so no glibc is mixed.
 */
export function hostTool(bin: string): string[] {
  const lib = `${HOST}/usr/lib/x86_64-linux-gnu:${HOST}/lib/x86_64-linux-gnu`;
  return [`${HOST}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`, '--library-path', lib, `${HOST}${bin}`];
}
/** hostTool as a shell word list, for scripts run inside namespaces. */
export const hostToolSh = (bin: string): string => hostTool(bin).map((w) => `'${w}'`).join(' ');

/** One implementation: its two sockets and the units behind them. */
export interface Side {
  name: 'mountgate' | 'systemd';
  nsSocket: string;
  mntSocket: string;
  nsService: string;
  mntService: string;
  /** Prefix of AllocateUserRange names (non-root callers' names are prefixed by the daemon). */
  prefix: string;
}

export const MOUNTGATE_SIDE: Side = {
  name: 'mountgate',
  nsSocket: `${PEERS}/mountgate/io.systemd.NamespaceResource`,
  mntSocket: `${PEERS}/mountgate/io.systemd.MountFileSystem`,
  nsService: 'peers-mg-userdbd.service',
  mntService: 'peers-mg-mntfsd.service',
  prefix: 'mg',
};

export const SYSTEMD_SIDE: Side = {
  name: 'systemd',
  nsSocket: `${PEERS}/systemd/io.systemd.NamespaceResource`,
  mntSocket: `${PEERS}/systemd/io.systemd.MountFileSystem`,
  nsService: 'peers-sd-nsresourced.service',
  mntService: 'peers-sd-mountfsd.service',
  prefix: 'sd',
};

export const SIDES = [MOUNTGATE_SIDE, SYSTEMD_SIDE] as const;
export const MG_PIN_DIR = '/sys/fs/bpf/peers-mountgate';

const socketUnit = (service: string, listen: string, fdName: string): string =>
  `[Unit]\nDescription=peers: ${service} socket\n\n[Socket]\nListenStream=${listen}\nFileDescriptorName=${fdName}\nSocketMode=0666\nService=${service}\n`;

/** systemd's own service unit as the sid root ships it, pointed at our socket unit instead. */
function upstreamService(name: 'nsresourced' | 'mountfsd', ourSocket: string): string {
  const text = fs.readFileSync(`/usr/lib/systemd/system/systemd-${name}.service`, 'utf8');
  return text.replaceAll(`systemd-${name}.socket`, ourSocket).replace(/^\[Install\][\s\S]*$/m, '');
}

/**
 * Writes and starts the four socket units. mountgate's services run the checkout's bundle with
 * its defaults except where two instances on one host must differ (socket, state, BPF pins);
 * no hardening directives (units.test.ts covers the shipped units). systemd's run its shipped
 * service files unchanged but for the socket they require.
 */
export function installUnits(): void {
  for (const d of ['mountgate', 'systemd']) fs.mkdirSync(path.join(PEERS, d), { recursive: true, mode: 0o755 });
  const files: Record<string, string> = {
    'peers-mg-userdbd.socket': socketUnit(MOUNTGATE_SIDE.nsService, MOUNTGATE_SIDE.nsSocket, 'io.systemd.NamespaceResource'),
    'peers-mg-userdbd.service': `[Unit]\nDescription=peers: mountgate userdbd\n\n[Service]\nType=notify\nExecStart=${MOUNTGATE.join(' ')} userdbd --state-dir ${PEERS}/mountgate/userdbd --userdb-link none --bpf-pin-dir ${MG_PIN_DIR}\n`,
    'peers-mg-mntfsd.socket': socketUnit(MOUNTGATE_SIDE.mntService, MOUNTGATE_SIDE.mntSocket, 'io.systemd.MountFileSystem'),
    'peers-mg-mntfsd.service': `[Unit]\nDescription=peers: mountgate mntfsd\n\n[Service]\nType=notify\nExecStart=${MOUNTGATE.join(' ')} mntfsd --userdbd ${MOUNTGATE_SIDE.nsSocket} --verity dm-verity\n`,
    'peers-sd-nsresourced.socket': socketUnit(SYSTEMD_SIDE.nsService, SYSTEMD_SIDE.nsSocket, 'varlink'),
    'peers-sd-nsresourced.service': upstreamService('nsresourced', 'peers-sd-nsresourced.socket'),
    'peers-sd-mountfsd.socket': socketUnit(SYSTEMD_SIDE.mntService, SYSTEMD_SIDE.mntSocket, 'varlink'),
    'peers-sd-mountfsd.service': upstreamService('mountfsd', 'peers-sd-mountfsd.socket'),
  };
  for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(UNIT_DIR, f), text);
  // systemd-mountfsd reports each mount it hands out to systemd-nsresourced at the fixed path
  // (nsresource_connect(); AddMountToUserNamespace), with no option to name another: point that
  // path at the upstream side while this file runs. Nothing owns it before units.test.ts runs.
  if (!fs.existsSync(NSRESOURCE_PATH)) {
    fs.symlinkSync(SYSTEMD_SIDE.nsSocket, NSRESOURCE_PATH);
    linked = true;
  }
  ok(['systemctl', 'daemon-reload']);
  ok(['systemctl', 'start', ...Object.keys(files).filter((f) => f.endsWith('.socket'))]);
}

const NSRESOURCE_PATH = '/run/systemd/io.systemd.NamespaceResource';
let linked = false;

export function removeUnits(): void {
  if (linked) fs.rmSync(NSRESOURCE_PATH, { force: true });
  const units = fs.readdirSync(UNIT_DIR).filter((f) => f.startsWith('peers-'));
  run(['systemctl', 'stop', ...units]);
  for (const f of units) fs.rmSync(path.join(UNIT_DIR, f), { force: true });
  run(['systemctl', 'daemon-reload']);
  // Pinned policies outlive their loaders; neither may linger for the next test file.
  fs.rmSync(MG_PIN_DIR, { recursive: true, force: true });
  run(['umount', `${PEERS}/checkout`]); // the agent's view of the checkout (Agent.start)
}

export const show = (unit: string, prop: string): string => ok(['systemctl', 'show', '-P', prop, unit]).trim();

/** Stops a service (its socket keeps listening): the next call activates it again. */
export function stopService(unit: string): void {
  ok(['systemctl', 'stop', unit]);
}

/** Resident and proportional set size of every process of the unit's cgroup, KiB. */
export function memoryKiB(unit: string): { rss: number; pss: number; pids: number } {
  const cg = show(unit, 'ControlGroup');
  if (!cg) return { rss: 0, pss: 0, pids: 0 };
  const procs = fs.readFileSync(`/sys/fs/cgroup${cg}/cgroup.procs`, 'utf8').split('\n').filter(Boolean);
  let rss = 0;
  let pss = 0;
  for (const pid of procs) {
    try {
      const r = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
      rss += Number(/^Rss:\s+(\d+)/m.exec(r)?.[1] ?? 0);
      pss += Number(/^Pss:\s+(\d+)/m.exec(r)?.[1] ?? 0);
    } catch {
      // exited meanwhile
    }
  }
  return { rss, pss, pids: procs.length };
}

/** The uid-1000 client: peers-agent.ts bundled with the checkout's esbuild, started once. */
export class Agent {
  private readonly child: ChildProcess;
  private readonly lines: AsyncIterator<string>;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(child: ChildProcess) {
    this.child = child;
    this.lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  }

  /** `inherit`: fds of this process the agent gets as 3, 4, … (e.g. a foreign namespace). */
  static start(inherit: number[] = []): Agent {
    const out = `${PEERS}/agent.mjs`;
    ok([path.join(CHECKOUT, 'node_modules/.bin/esbuild'), path.join(CHECKOUT, 'test/lab-systemd/peers-agent.ts'), '--bundle', '--platform=node', '--format=esm',
      '--target=node20', '--log-level=warning', `--outfile=${out}`]);
    fs.chmodSync(out, 0o644);
    // The checkout may sit below directories only root can enter (a clone in /root): the
    // agent, uid 1000, reads it through a bind mount of the checkout alone.
    const view = `${PEERS}/checkout`;
    if (run(['mountpoint', '-q', view]).status !== 0) {
      fs.mkdirSync(view, { recursive: true });
      ok(['mount', '--bind', '-o', 'ro', CHECKOUT, view]);
    }
    const child = spawn('setpriv', [`--reuid=${USER.uid}`, `--regid=${USER.gid}`, '--init-groups', '--inh-caps=-all', '--', 'env', '-i', 'PATH=/usr/bin:/bin:/usr/sbin:/sbin',
      `HOME=${USER.home}`, `PEERS_CHECKOUT=${view}`, '/usr/bin/node', out], { stdio: ['pipe', 'pipe', 'inherit', ...inherit], cwd: '/' });
    return new Agent(child);
  }

  /** One request; requests are answered in order. */
  request(req: Request): Promise<Reply> {
    const p = this.queue.then(async () => {
      this.child.stdin!.write(`${JSON.stringify(req)}\n`);
      const line = await this.lines.next();
      if (line.done) throw new Error('the agent exited');
      return JSON.parse(line.value) as Reply;
    });
    this.queue = p.catch(() => undefined);
    return p;
  }

  async must(req: Request): Promise<Reply> {
    const r = await this.request(req);
    if (!r.ok) throw new Error(`agent ${req.op}: ${r.message}`);
    return r;
  }

  async userns(count = 1): Promise<number[]> {
    return (await this.must({ op: 'userns', count })).pids!;
  }

  async kill(pids: number[]): Promise<void> {
    await this.must({ op: 'kill', pids });
  }

  async call(socket: string, method: string, parameters?: Record<string, unknown>, fds?: FdSpec[]): Promise<NonNullable<Reply['result']>> {
    return (await this.must({ op: 'call', socket, method, parameters, fds })).result!;
  }

  /** AllocateUserRange for the namespace of `pid`; throws on an error reply. */
  async allocate(side: Side, pid: number, name: string): Promise<void> {
    const r = await this.call(side.nsSocket, 'io.systemd.NamespaceResource.AllocateUserRange', { name, size: 65536, userNamespaceFileDescriptor: 0 }, [{ userns: pid }]);
    if (r.error) throw new Error(`${side.name} AllocateUserRange: ${r.error} ${JSON.stringify(r.errorParameters)}`);
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin!.write(`${JSON.stringify({ op: 'exit' })}\n`);
    await exited;
  }
}

/** Host ids of root of the namespace of `pid` (first line of its uid_map), or undefined when unmapped. */
export function nsRoot(pid: number): number | undefined {
  const line = fs.readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split('\n')[0];
  if (!line) return undefined;
  const [inside, outside] = line.trim().split(/\s+/).map(Number);
  return inside === 0 ? outside : undefined;
}

export const table = (head: string[], rows: string[][]): string =>
  [head, head.map(() => '---'), ...rows].map((r) => `| ${r.map((c) => c.replace(/\|/g, '\\|').replace(/\n/g, ' ')).join(' | ')} |`).join('\n');
