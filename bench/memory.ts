// Figure 7: resident memory (VmRSS) of each daemon, run as `mountgate userdbd|mntfsd` child
// processes from the compiled tree: idle after start, then after 1,000 allocations and after
// 1,000 mounts.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { allocateBatch, startUserdbdCli, stateDirUnder } from './allocate.js';
import { buildSmallImages, mappedUserns, mountOnce, startMntfsdChild } from './mount-image.js';
import { rssKiB } from '../test/support/daemons.js';
import { SHIPPED_NAME, type BenchContext, type Figure } from '../test/support/figures.js';
import { killAndWait } from '../test/support/userns.js';

const OPERATIONS = 1000;
/** Namespaces alive at once; root's cap is 256 live ones, dead ones are reaped at the cap. */
const ALLOC_BATCH = 100;
/** Distinct images cycled through (fewer than the cache's 32 entries: the rest are cache hits). */
const MOUNT_IMAGES = 20;
const SETTLE_MS = 1000;

const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;

async function settledRss(pid: number): Promise<number> {
  await sleep(SETTLE_MS);
  return rssKiB(pid);
}

export async function memoryFigure(ctx: BenchContext, log: (s: string) => void): Promise<Figure> {
  const rows: string[] = [];

  const stateDir = stateDirUnder('memory');
  const usock = path.join(ctx.work, 'userdbd-mem.sock');
  const u = await startUserdbdCli(ctx, usock, stateDir);
  let userdbd: { idle: number; after: number };
  try {
    const idle = await settledRss(u.child.pid);
    log(`userdbd: ${OPERATIONS} allocations`);
    for (let done = 0; done < OPERATIONS; done += ALLOC_BATCH) await allocateBatch(usock, ALLOC_BATCH, 1, `mem${done}-`);
    userdbd = { idle, after: await settledRss(u.child.pid) };
  } finally {
    await u.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
  rows.push(`userdbd idle ${mib(userdbd.idle)}, after ${OPERATIONS} allocations ${mib(userdbd.after)}`);

  log(`mntfsd: building ${MOUNT_IMAGES} images, then ${OPERATIONS} mounts`);
  const images = await buildSmallImages(ctx, path.join(ctx.work, 'memory-images'), MOUNT_IMAGES);
  const msock = path.join(ctx.work, 'mntfsd-mem.sock');
  const ns = await mappedUserns();
  const nsFd = fs.openSync(`/proc/${ns.pid}/ns/user`, 'r');
  const m = await startMntfsdChild(ctx, msock);
  let mntfsd: { idle: number; after: number };
  try {
    const idle = await settledRss(m.pid);
    for (let i = 0; i < OPERATIONS; i++) await mountOnce(msock, images[i % images.length]!, nsFd);
    mntfsd = { idle, after: await settledRss(m.pid) };
  } finally {
    await m.stop();
    fs.closeSync(nsFd);
    await killAndWait(ns);
  }
  rows.push(`mntfsd idle ${mib(mntfsd.idle)}, after ${OPERATIONS} mounts ${mib(mntfsd.after)}`);

  return {
    id: '7',
    title: 'Daemon memory (RSS)',
    method:
      `VmRSS from /proc/PID/status of \`mountgate userdbd --allow-without-policy\` and \`… mntfsd --userdbd none\` (${SHIPPED_NAME}, child processes), read ${SETTLE_MS} ms after start and ${SETTLE_MS} ms after the load. ` +
      `userdbd: ${OPERATIONS} AllocateUserRange calls by a root client, each for a fresh \`unshare --user\` namespace, ${ALLOC_BATCH} alive at a time (killed after each batch; the per-uid cap reaps them). ` +
      `mntfsd: ${OPERATIONS} MountImage calls by a root client cycling over ${MOUNT_IMAGES} distinct 4 MiB signed DDIs (${MOUNT_IMAGES} cold, the rest cache hits; the verified copies stay cached on private tmpfs instances, which the daemon never maps, so they are kernel memory outside its RSS), idmapped to a mapped user namespace, mount fds closed by the client.`,
    samples: `1 reading per state per daemon`,
    result: rows.join('; '),
    target: 'report (no target)',
    status: 'info',
    notes: [
      `growth: userdbd ${mib(userdbd.after - userdbd.idle)} over ${OPERATIONS} allocations (${((userdbd.after - userdbd.idle) / OPERATIONS).toFixed(1)} KiB each); mntfsd ${mib(mntfsd.after - mntfsd.idle)} over ${OPERATIONS} mounts, ${MOUNT_IMAGES} images cached.`,
    ],
  };
}
