// Figures 3 and 4: AllocateUserRange through a real userdbd (child process, compiled tree) for
// fresh `unshare --user` namespaces: latency and throughput with 1 and 2 concurrent clients,
// and the cost with 0 … 16k namespaces already registered.
import fs from 'node:fs';
import path from 'node:path';
import { UsernsPolicy } from '../src/bpf/policy.js';
import { joinUserNamespace } from '../src/sys/userns-joiner.js';
import { allocateUserRange } from '../src/client/index.js';
import { CONTAINER_SIZE, CONTAINER_WINDOW } from '../src/userdbd/range-allocator.js';
import { Registry } from '../src/userdbd/registry.js';
import { waitForSocket } from '../test/support/daemons.js';
import { fmtSummary, ms, profileTop, summarize, type BenchContext, type Figure, SHIPPED_ENTRY, SHIPPED_NAME } from '../test/support/figures.js';
import { startChild, type Child } from '../test/support/processes.js';
import { killAndWait, spawnInNewUserns, type UsernsHolder } from '../test/support/userns.js';

const TARGET_P50_MS = 10;
const TARGET_PER_S = 200;
/** Per scenario; root may hold 256 live namespaces (USERNS_PER_UID), so batches stay below. */
const SCENARIO_ALLOCATIONS = 200;
const LEVEL_ALLOCATIONS = 150;
const WARMUP = 10;
const LEVELS = [0, 1000, 8000, 16000];
/** p50 at the largest level may exceed the empty registry's by this factor and still be "flat". */
const FLAT_FACTOR = 1.25;
/** Records written for namespaces that do not exist get inodes below the kernel's proc inode
 * range (PROC_DYNAMIC_FIRST = 0xF0000000), so they never collide with a real namespace. */
const FAKE_INODE_BASE = 100_000_000;
export const PREFILL_PREFIX = 'bench-pre-';

/** A private tmpfs-backed state directory, like /run on a systemd host. */
export function stateDirUnder(name: string): string {
  return fs.mkdtempSync(path.join('/dev/shm', `mountgate-bench-${name}-`));
}

/** `mountgate userdbd` from the compiled tree, as an operator runs it on a kernel without BPF-LSM. */
export async function startUserdbdCli(ctx: BenchContext, socket: string, stateDir: string, nodeArgs: string[] = []): Promise<{ child: Child; stop(): Promise<void> }> {
  const pinDir = `/sys/fs/bpf/mountgate-bench-${process.pid}`;
  const child = startChild([
    process.execPath,
    ...nodeArgs,
    path.join(ctx.root, SHIPPED_ENTRY), 'userdbd', '--listen', socket, '--state-dir', stateDir, '--userdb-link', 'none', '--bpf-pin-dir', pinDir, '--allow-without-policy',
  ], { group: true, graceMs: 3000 });
  await waitForSocket(socket, child);
  return {
    child,
    stop: async () => {
      await child.stop();
      UsernsPolicy.uninstall(pinDir);
    },
  };
}

/** userdbd with the liveness sweep off (sweepIntervalMs: 0) and the unenforced policy, so the
 * pre-populated records stay put; otherwise the same daemon code from the compiled tree. */
async function startUserdbdNoSweep(ctx: BenchContext, socket: string, stateDir: string): Promise<Child> {
  const dist = (m: string): string => `file://${path.join(ctx.root, 'dist', m)}`;
  const script = `
    import { startUserdbd } from '${dist('userdbd/daemon.js')}';
    import { UnenforcedPolicy } from '${dist('userdbd/unenforced-policy.js')}';
    const [listen, stateDir] = process.argv.slice(1);
    const d = await startUserdbd({ listen, stateDir, userdbLink: null, sweepIntervalMs: 0, allowWithoutPolicy: true,
      policy: new UnenforcedPolicy(false, 'benchmark') });
    process.once('SIGTERM', () => void d.close());`;
  const child = startChild([process.execPath, '--input-type=module', '-e', script, socket, stateDir], { group: true, graceMs: 3000 });
  await waitForSocket(socket, child, { timeoutMs: 120_000 });
  return child;
}

export interface AllocationRun {
  latencies: number[];
  /** Allocations per second over the timed phase. */
  perSecond: number;
}

/**
 * `count` allocations by `clients` concurrent root clients (src/client allocateUserRange:
 * connect, call, close), each for a fresh `unshare --user` namespace started beforehand and
 * killed afterwards. Only the calls are timed.
 */
export async function allocateBatch(socket: string, count: number, clients: number, prefix: string): Promise<AllocationRun> {
  const namespaces: UsernsHolder[] = [];
  const fds: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const ns = await spawnInNewUserns('unshare', ['--user', 'sleep', '1000']);
      namespaces.push(ns);
      fds.push(fs.openSync(`/proc/${ns.pid}/ns/user`, 'r'));
    }
    const latencies: number[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < count; i = next++) {
        const t0 = performance.now();
        await allocateUserRange({ socket, name: `${prefix}${i}`, userNamespaceFd: fds[i]! });
        latencies.push(performance.now() - t0);
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: clients }, worker));
    const wall = performance.now() - t0;
    return { latencies, perSecond: count / (wall / 1000) };
  } finally {
    fds.forEach((fd) => fs.closeSync(fd));
    await Promise.all(namespaces.map(killAndWait));
  }
}

/**
 * Where an allocation's time goes: a CPU profile of the daemon over `count` allocations
 * (start-up excluded), and the cost of joining a namespace alone (done once per call).
 */
async function profileAllocations(ctx: BenchContext, count: number): Promise<string[]> {
  const stateDir = stateDirUnder('profile');
  const socket = path.join(ctx.work, 'userdbd-prof.sock');
  const profDir = path.join(ctx.work, 'cpu-profile');
  const t0 = performance.now();
  const d = await startUserdbdCli(ctx, socket, stateDir, ['--cpu-prof', `--cpu-prof-dir=${profDir}`]);
  const startMs = performance.now() - t0;
  let perCall: number;
  try {
    const r = await allocateBatch(socket, count, 1, 'prof-');
    perCall = summarize(r.latencies).p50;
  } finally {
    await d.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
    fs.rmSync(socket, { force: true });
  }
  const files = fs.existsSync(profDir) ? fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')) : [];
  const notes: string[] = [];
  if (files[0]) {
    // Skip start-up (until the socket appeared, plus margin); the rest is allocations and idle waits.
    const p = profileTop(path.join(profDir, files[0]), 6, startMs + 200);
    notes.push(
      `Profile (node --cpu-prof on the daemon, ${count} allocations, 1 client, start-up excluded): daemon JS thread busy ${ms(p.busyMs, 0)} (${ms(p.busyMs / count)} per allocation of ${ms(perCall)} p50), idle ${ms(p.idleMs, 0)}. Top self time: ${p.top.map((x) => `${x.what} ${(x.share * 100).toFixed(0)} %`).join('; ')}.`,
    );
  }
  // The join alone: what the daemon does per allocation to reach the namespace's maps.
  const join: number[] = [];
  for (let i = 0; i < 30; i++) {
    const ns = await spawnInNewUserns('unshare', ['--user', 'sleep', '1000']);
    const fd = fs.openSync(`/proc/${ns.pid}/ns/user`, 'r');
    try {
      const t = performance.now();
      const m = await joinUserNamespace(fd);
      await m.release();
      join.push(performance.now() - t);
    } finally {
      fs.closeSync(fd);
      await killAndWait(ns);
    }
  }
  notes.push(
    `Joining a namespace through the long-lived joiner (joinUserNamespace + release, timed in the benchmark process: a request over a socketpair, a fork of the small C joiner, setns, then kill and reap) takes p50 ${ms(summarize(join).p50)}.`,
  );
  return notes;
}

/** Writes pre-fill records up to `total` through the Registry API. */
function prefill(stateDir: string, total: number, taken: Set<number>): void {
  const reg = Registry.open(stateDir);
  try {
      const chunks = Math.floor((CONTAINER_WINDOW.max + 1 - CONTAINER_WINDOW.min) / CONTAINER_SIZE);
    const first = CONTAINER_WINDOW.min / CONTAINER_SIZE;
    for (let i = reg.size; i < total; i++) {
      let chunk: number;
      do chunk = first + Math.floor(Math.random() * chunks);
      while (taken.has(chunk));
      taken.add(chunk);
      const start = chunk * CONTAINER_SIZE;
      reg.put({
        userns: FAKE_INODE_BASE + i,
        nsId: '', // liveness 'unknown': never reaped (only provably dead namespaces are)
        owner: 1_000_000 + Math.floor(i / 200), // < USERNS_PER_UID per owner, none of them root
        name: `${PREFILL_PREFIX}${i}`,
        size: CONTAINER_SIZE,
        start,
        target: 0,
        startGid: start,
        targetGid: 0,
        cgroups: [],
        delegates: [],
      });
    }
  } finally {
    reg.close();
  }
}

export async function allocateFigures(ctx: BenchContext, log: (s: string) => void): Promise<Figure[]> {
  const figures: Figure[] = [];
  const socket = path.join(ctx.work, 'userdbd.sock');
  const method = `userdbd = \`mountgate userdbd --allow-without-policy\` (${SHIPPED_NAME}, own process; this kernel refuses the BPF policy, so it runs with the unenforced stand-in), state dir on tmpfs (/dev/shm, as /run on a systemd host), fresh daemon and state per scenario. Root clients using src/client allocateUserRange() (connect, call, close per allocation), 64K range, each for its own fresh \`unshare --user sleep\` process (started before the timed phase, SIGKILLed after). Latency is the call; throughput is allocations / wall time of the timed phase.`;
  for (const clients of [1, 2]) {
    const stateDir = stateDirUnder(`alloc${clients}`);
    const d = await startUserdbdCli(ctx, socket, stateDir);
    try {
      log(`${SCENARIO_ALLOCATIONS} allocations, ${clients} client(s)`);
      await allocateBatch(socket, WARMUP, 1, `warm${clients}-`);
      const r = await allocateBatch(socket, SCENARIO_ALLOCATIONS, clients, `c${clients}-`);
      const s = summarize(r.latencies);
      figures.push({
        id: clients === 1 ? '3a' : '3b',
        title: `AllocateUserRange, ${clients} client${clients > 1 ? 's' : ''}`,
        method: `${method} ${clients} concurrent client loop(s) in the benchmark process. ${WARMUP} warm-up allocations not counted.`,
        samples: `${s.n} allocations`,
        result: `${fmtSummary(s)}; ${r.perSecond.toFixed(0)} allocations/s`,
        target: `p50 ≤ ${TARGET_P50_MS} ms and ≥ ${TARGET_PER_S}/s`,
        status: s.p50 <= TARGET_P50_MS && r.perSecond >= TARGET_PER_S ? 'met' : 'missed',
      });
    } finally {
      await d.stop();
      fs.rmSync(stateDir, { recursive: true, force: true });
      fs.rmSync(socket, { force: true });
    }
  }

  if (figures.some((f) => f.status === 'missed')) {
    log('profiling the allocation path');
    const notes = await profileAllocations(ctx, 150);
    for (const f of figures) if (f.status === 'missed') f.notes = [...(f.notes ?? []), ...notes];
  }

  // One daemon per level, all running at once; allocations go round-robin (rotating order), so
  // drift and background load hit every level alike.
  const levels: Array<{ level: number; stateDir: string; socket: string; child?: Child; startMs: number; lat: number[] }> = LEVELS.map((level) => ({
    level,
    stateDir: stateDirUnder(`level${level}`),
    socket: path.join(ctx.work, `userdbd-level${level}.sock`),
    startMs: 0,
    lat: [],
  }));
  try {
    for (const l of levels) {
      const tp = performance.now();
      prefill(l.stateDir, l.level, new Set());
      log(`${l.level} registered (${(performance.now() - tp).toFixed(0)} ms to write)`);
      const ts = performance.now();
      l.child = await startUserdbdNoSweep(ctx, l.socket, l.stateDir);
      l.startMs = performance.now() - ts;
    }
    log(`${LEVEL_ALLOCATIONS} allocations per level, interleaved`);
    for (let i = 0; i < WARMUP + LEVEL_ALLOCATIONS; i++) {
      for (let k = 0; k < levels.length; k++) {
        const l = levels[(i + k) % levels.length]!;
        const ns = await spawnInNewUserns('unshare', ['--user', 'sleep', '1000']);
        const fd = fs.openSync(`/proc/${ns.pid}/ns/user`, 'r');
        try {
          const t0 = performance.now();
          await allocateUserRange({ socket: l.socket, name: `l${i}`, userNamespaceFd: fd });
          if (i >= WARMUP) l.lat.push(performance.now() - t0);
        } finally {
          fs.closeSync(fd);
          await killAndWait(ns);
        }
      }
    }
  } finally {
    for (const l of levels) {
      await l.child?.stop();
      fs.rmSync(l.stateDir, { recursive: true, force: true });
      fs.rmSync(l.socket, { force: true });
    }
  }
  const rows = levels.map((l) => {
    const s = summarize(l.lat);
    return { level: l.level, p50: s.p50, p99: s.p99, startMs: l.startMs };
  });
  const base = rows[0]!.p50;
  const worst = Math.max(...rows.map((r) => r.p50));
  const flat = worst <= base * FLAT_FACTOR;
  figures.push({
    id: '4',
    title: 'AllocateUserRange vs namespaces already registered',
    method:
      `Same daemon code, started from the compiled tree with startUserdbd({ sweepIntervalMs: 0, allowWithoutPolicy: true, policy: UnenforcedPolicy }) on one tmpfs state dir. ` +
      `Before each level the benchmark opens the state dir with the Registry API and put()s records (durably, as the daemon writes them) for namespaces that do not exist: ` +
      `inodes ${FAKE_INODE_BASE}+i (below the kernel's nsfs inode range), nsId "" (liveness 'unknown', so neither startup reconciliation nor collision checks reap them; only provably dead namespaces are), ` +
      `distinct random 64K chunks of the container window, owners 1000000+ (200 per owner, under the per-uid cap), names ${PREFILL_PREFIX}N. ` +
      `One daemon per level (each loads its records at start), all running at once; then ${WARMUP} warm-up + ${LEVEL_ALLOCATIONS} timed rounds, each round one allocation per daemon in rotating order (so background load hits every level alike), each for a fresh \`unshare --user\` namespace killed right after, 1 root client.`,
    samples: `${LEVEL_ALLOCATIONS} allocations per level, levels ${LEVELS.join(', ')}`,
    result: rows.map((r) => `${r.level}: p50 ${ms(r.p50)}, p99 ${ms(r.p99)} (daemon start ${ms(r.startMs, 0)})`).join('; '),
    target: `flat: p50 at every level ≤ ${FLAT_FACTOR}× p50 with none registered`,
    status: flat ? 'met' : 'missed',
    notes: [`largest p50 / empty-registry p50 = ${(worst / base).toFixed(2)}. Startup grows with the registry (every record is read and parsed once); calls do not scan it.`],
  });
  return figures;
}
