// Side by side with systemd 262's own daemons: the same uid-1000 client
// (test/lab-systemd/peers-agent.ts: mountgate's Varlink client) makes the same calls against
// mountgate's userdbd/mntfsd and systemd-nsresourced/systemd-mountfsd, both socket-activated in
// one boot of the kernel lab with systemd as PID 1 (test/lab-systemd/peers.test.ts runs this
// after its security and error tables). Calls alternate between the two sides per scenario, so
// both meet the same TCG machine state. Ratios are mountgate / systemd; below 1.0 is better for
// every figure here.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent, Side } from '../test/lab-systemd/peers-lab.js';
import { memoryKiB, ok, stopService, table } from '../test/lab-systemd/peers-lab.js';

/** Namespaces per allocation scenario (each side holds them at once; both limit a uid to 256). */
const ALLOCATIONS = 100;
const WARMUP = 10;
const WARM_MOUNTS = 5;
const ACTIVATIONS = 3;
/** Calls made before the "after 1,000 calls" memory reading, allocations included. */
const CALLS_FOR_MEMORY = 1000;
/** Longer than mountgate's default idle exit under socket activation (src/ipc/host.ts, 90 s). */
const IDLE_WAIT_MS = 100_000;

export interface PeerImages {
  small: string;
  /** ~512 MiB; absent when the guest could not build it. */
  large?: string;
}

export interface Figure {
  name: string;
  unit: string;
  mountgate: number;
  systemd: number;
}

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const median = (xs: readonly number[]): number => percentile(xs, 50);

type Both = Record<Side['name'], number>;

async function eachSide(sides: readonly Side[], fn: (side: Side) => Promise<number>): Promise<Both> {
  const out = {} as Both;
  for (const side of sides) out[side.name] = await fn(side);
  return out;
}

/** `count` allocations by `clients` concurrent connections, for namespaces made beforehand. */
async function allocations(agent: Agent, side: Side, clients: number, tag: string, count = ALLOCATIONS): Promise<{ latencies: number[]; perSecond: number }> {
  const pids = await agent.userns(count);
  try {
    const r = await agent.must({ op: 'allocate', socket: side.nsSocket, pids, clients, prefix: `${side.prefix}${tag}` });
    return { latencies: r.latencies!, perSecond: r.perSecond! };
  } finally {
    await agent.kill(pids);
  }
}

/** A userns of uid 1000 with a range from `side` (MountImage's target), and its killer. */
async function allocatedNs(agent: Agent, side: Side, name: string): Promise<{ pid: number; kill(): Promise<void> }> {
  const [pid] = await agent.userns(1);
  await agent.allocate(side, pid!, name);
  return { pid: pid!, kill: () => agent.kill([pid!]) };
}

async function mountMs(agent: Agent, side: Side, image: string, pid: number, count: number): Promise<number[]> {
  const r = await agent.must({ op: 'mount', socket: side.mntSocket, image, userns: pid, count });
  const failed = r.results!.find((x) => x.error);
  if (failed) throw new Error(`${side.name} MountImage ${image}: ${failed.error} ${JSON.stringify(failed.errorParameters)}`);
  return r.results!.map((x) => x.ms);
}

function dropCaches(): void {
  ok(['sync']);
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

export async function benchPeers(agent: Agent, sides: readonly Side[], images: PeerImages, log: (s: string) => void): Promise<Figure[]> {
  const figures: Figure[] = [];
  const add = (name: string, unit: string, v: Both): void => {
    figures.push({ name, unit, mountgate: v.mountgate, systemd: v.systemd });
    log(`# ${name}: mountgate ${v.mountgate.toFixed(2)} ${unit}, systemd ${v.systemd.toFixed(2)} ${unit}, ratio ${(v.mountgate / v.systemd).toFixed(2)}`);
  };

  // One failing scenario must not cost the others' figures: each is reported and skipped.
  const section = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      log(`# ${what}: FAILED: ${(e as Error).message.slice(0, 400)}`);
    }
  };

  // Socket activation to the first reply: the service stopped (its socket listening), then one
  // call, timed from connect to reply as the client sees it. A refused call (no fds) times the
  // start alone; a real AllocateUserRange as the first call adds what the first grant costs.
  await section('activation', async () => {
    const act = { ns: [] as Both[], mnt: [] as Both[], alloc: [] as Both[] };
    for (let i = 0; i < ACTIVATIONS; i++) {
      const ns = {} as Both;
      const mnt = {} as Both;
      const alloc = {} as Both;
      for (const side of sides) {
        stopService(side.mntService);
        stopService(side.nsService);
        await sleep(500);
        const r = await agent.call(side.nsSocket, 'io.systemd.NamespaceResource.AllocateUserRange', { name: `${side.prefix}nofd`, size: 65536, userNamespaceFileDescriptor: 0 }, []);
        if (!r.error || r.error.startsWith('(client)')) throw new Error(`${side.name} activation: ${r.error ?? 'success'}`);
        ns[side.name] = r.ms;
        const m = await agent.call(side.mntSocket, 'io.systemd.MountFileSystem.MountImage', { imageFileDescriptor: 0 }, []);
        if (!m.error || m.error.startsWith('(client)')) throw new Error(`${side.name} activation: ${m.error ?? 'success'}`);
        mnt[side.name] = m.ms;
        stopService(side.nsService);
        await sleep(500);
        const [pid] = await agent.userns(1);
        const a = await agent.call(side.nsSocket, 'io.systemd.NamespaceResource.AllocateUserRange', { name: `${side.prefix}act${i}`, size: 65536, userNamespaceFileDescriptor: 0 }, [{ userns: pid! }]);
        await agent.kill([pid!]);
        if (a.error) throw new Error(`${side.name} activation: ${a.error}`);
        alloc[side.name] = a.ms;
      }
      act.ns.push(ns);
      act.mnt.push(mnt);
      act.alloc.push(alloc);
    }
    const med = (xs: Both[]): Both => ({ mountgate: median(xs.map((x) => x.mountgate)), systemd: median(xs.map((x) => x.systemd)) });
    add(`socket activation to first reply, range daemon (refused call, median of ${ACTIVATIONS})`, 'ms', med(act.ns));
    add(`socket activation to first reply, mount daemon (refused call, median of ${ACTIVATIONS})`, 'ms', med(act.mnt));
    add(`socket activation to first AllocateUserRange granted (median of ${ACTIVATIONS})`, 'ms', med(act.alloc));
  });

  // Idle memory: both daemons of a side, running, 3 s after their last call.
  await sleep(3000);
  const idle = await eachSide(sides, async (s) => memoryKiB(s.nsService).rss + memoryKiB(s.mntService).rss);
  const idlePss = await eachSide(sides, async (s) => memoryKiB(s.nsService).pss + memoryKiB(s.mntService).pss);
  add('RSS idle while running (3 s after the last call), range + mount daemon (all processes of both units)', 'MiB', { mountgate: idle.mountgate / 1024, systemd: idle.systemd / 1024 });
  add('PSS idle while running, range + mount daemon', 'MiB', { mountgate: idlePss.mountgate / 1024, systemd: idlePss.systemd / 1024 });

  // AllocateUserRange, 1 and 2 clients, sides alternating per scenario.
  let calls = 3 * ACTIVATIONS;
  for (const clients of [1, 2]) await section(`AllocateUserRange, ${clients} client(s)`, async () => {
    const lat = {} as Record<Side['name'], number[]>;
    const rate = {} as Both;
    for (const side of sides) {
      await allocations(agent, side, 1, `w${clients}-`, WARMUP).catch(() => undefined); // warm-up, result ignored
      const r = await allocations(agent, side, clients, `c${clients}-`);
      lat[side.name] = r.latencies;
      rate[side.name] = r.perSecond;
    }
    calls += ALLOCATIONS + WARMUP;
    add(`AllocateUserRange p50, ${clients} client(s)`, 'ms', { mountgate: median(lat.mountgate), systemd: median(lat.systemd) });
    add(`AllocateUserRange p99, ${clients} client(s)`, 'ms', { mountgate: percentile(lat.mountgate, 99), systemd: percentile(lat.systemd, 99) });
    // Throughput: higher is better, so the figure is seconds per 1,000 allocations (ratio < 1 better).
    add(`AllocateUserRange time per 1,000 allocations (throughput), ${clients} client(s)`, 's', { mountgate: 1000 / rate.mountgate, systemd: 1000 / rate.systemd });
  });

  // MountImage cold (page cache dropped, the image never mounted by this daemon process) and
  // warm (the same image again, the daemon's caches and the page cache hot), dm-verity both sides.
  for (const [label, image] of [['small', images.small], ['512 MiB', images.large]] as const) {
    if (!image) {
      log(`# MountImage ${label}: no image, skipped`);
      continue;
    }
    await section(`MountImage ${label}`, async () => {
      const cold = {} as Both;
      const warm = {} as Both;
      for (const side of sides) {
        stopService(side.mntService); // a fresh daemon: nothing cached in it
        const ns = await allocatedNs(agent, side, `${side.prefix}mnt${label.replace(/\W/g, '')}`);
        try {
          // Activation off the clock, without touching an image: a refused call (no fds).
          const r = await agent.call(side.mntSocket, 'io.systemd.MountFileSystem.MountImage', { imageFileDescriptor: 0 }, []);
          if (!r.error) throw new Error(`${side.name}: MountImage without an image fd succeeded`);
          dropCaches();
          cold[side.name] = (await mountMs(agent, side, image, ns.pid, 1))[0]!;
          warm[side.name] = median(await mountMs(agent, side, image, ns.pid, WARM_MOUNTS));
        } finally {
          await ns.kill();
        }
      }
      add(`MountImage cold, ${label} image`, 'ms', cold);
      add(`MountImage warm, ${label} image (median of ${WARM_MOUNTS})`, 'ms', warm);
    });
  }

  // Memory after 1,000 calls: the allocations above plus refused AllocateUserRange calls
  // (no namespace fd) up to 1,000 per side, then 3 s idle.
  await section('memory after 1,000 calls', async () => {
    for (const side of sides) {
      for (let i = calls; i < CALLS_FOR_MEMORY; i++) {
        const r = await agent.call(side.nsSocket, 'io.systemd.NamespaceResource.AllocateUserRange', { name: `${side.prefix}m${i}`, size: 65536, userNamespaceFileDescriptor: 0 }, []);
        if (!r.error) throw new Error(`${side.name}: an allocation without a namespace fd succeeded`);
      }
    }
    await sleep(3000);
    const after = await eachSide(sides, async (s) => memoryKiB(s.nsService).rss + memoryKiB(s.mntService).rss);
    add('RSS after 1,000 calls, range + mount daemon', 'MiB', { mountgate: after.mountgate / 1024, systemd: after.systemd / 1024 });
  });

  // Idle memory as shipped: both sides' units with their defaults, left alone for longer than
  // mountgate's idle exit. Its daemons have exited (userdbd once no namespace is registered:
  // every namespace above has been killed); what systemd's hold then is what it keeps.
  await section('memory when left idle', async () => {
    await sleep(IDLE_WAIT_MS);
    const rss = await eachSide(sides, async (s) => memoryKiB(s.nsService).rss + memoryKiB(s.mntService).rss);
    add(`RSS ${IDLE_WAIT_MS / 1000} s after the last call (default idle exit), range + mount daemon`, 'MiB', { mountgate: rss.mountgate / 1024, systemd: rss.systemd / 1024 });
  });

  // One machine-readable line per figure, for bench/run.ts's figure 10.
  for (const f of figures) log(`peer-figure ${JSON.stringify(f)}`);
  log(table(['figure', 'mountgate', 'systemd 262', 'mountgate / systemd'], figures.map((f) => [f.name, `${f.mountgate.toFixed(2)} ${f.unit}`, `${f.systemd.toFixed(2)} ${f.unit}`, (f.mountgate / f.systemd).toFixed(2)])));
  return figures;
}
