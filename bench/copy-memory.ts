// Figure 9: what mntfsd holds after many MountImage calls in copy mode with a memory budget:
// its RSS and the bytes of verified copies its cache keeps (in memory and in --state-dir),
// read from the kernel, not from the daemon's own accounting.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildSmallImages, mappedUserns, mountOnce } from './mount-image.js';
import { rssKiB, waitForSocket } from '../test/support/daemons.js';
import { SHIPPED_ENTRY, SHIPPED_NAME, type BenchContext, type Figure } from '../test/support/figures.js';
import { startChild } from '../test/support/processes.js';
import { killAndWait } from '../test/support/userns.js';

const OPERATIONS = 1000;
const IMAGES = 20;
const MIB = 1 << 20;
/** About six of the ~4.5 MiB copies: the 20 images cannot all stay in memory. */
const BUDGET = 28 * MIB;
/** Past the cache's grace for entries just handed out (mount-cache.ts). */
const SETTLE_MS = 2500;
const LOOP_MAJOR = 7;

interface Held {
  memory: number;
  disk: number;
  copies: number;
}

/**
 * Copies the daemon holds: each cached copy is a loop device whose file system the daemon
 * keeps mounted (a base mount fd), so its fds lead to the loop devices; the loop's backing
 * file tells memory (a file on a private tmpfs, `/mountgate-verified`) from the state directory.
 */
function heldCopies(pid: number, stateDir: string): Held {
  const held: Held = { memory: 0, disk: 0, copies: 0 };
  const seen = new Set<number>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let dev: number;
    try {
      dev = fs.statSync(`/proc/${pid}/fd/${fd}`).dev;
    } catch {
      continue;
    }
    // Linux's new_encode_dev(): major in bits 8..19, minor in 0..7 and 20..31.
    const major = (dev >> 8) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    if (major !== LOOP_MAJOR || seen.has(minor)) continue;
    seen.add(minor);
    const sys = `/sys/block/loop${minor}`;
    let backing: string;
    try {
      backing = fs.readFileSync(`${sys}/loop/backing_file`, 'utf8').trim();
    } catch {
      continue;
    }
    const bytes = Number(fs.readFileSync(`${sys}/size`, 'utf8')) * 512;
    held.copies++;
    if (backing.startsWith(`${stateDir}/`)) held.disk += bytes;
    else held.memory += bytes;
  }
  return held;
}

const mib = (b: number): string => `${(b / MIB).toFixed(1)} MiB`;

export async function copyMemoryFigure(ctx: BenchContext, log: (s: string) => void): Promise<Figure> {
  log(`building ${IMAGES} images`);
  const images = await buildSmallImages(ctx, path.join(ctx.work, 'copy-memory-images'), IMAGES);
  const socket = path.join(ctx.work, 'mntfsd-copy-memory.sock');
  const stateDir = path.join(ctx.work, 'mntfsd-copy-state');
  const ns = await mappedUserns();
  const nsFd = fs.openSync(`/proc/${ns.pid}/ns/user`, 'r');
  const daemon = startChild([
    process.execPath,
    path.join(ctx.root, SHIPPED_ENTRY), 'mntfsd', '--listen', socket, '--userdbd', 'none', '--verity-certs', ctx.certDir,
    '--verity', 'copy', '--copy-memory', String(BUDGET), '--state-dir', stateDir,
  ], { group: true, graceMs: 3000 });
  const rows: string[] = [];
  let worstMemory = 0;
  let final: Held;
  let rss: { idle: number; after: number };
  try {
    await waitForSocket(socket, daemon);
    await sleep(SETTLE_MS);
    const idle = rssKiB(daemon.pid);
    log(`${OPERATIONS} MountImage calls over ${IMAGES} images`);
    for (let i = 0; i < OPERATIONS; i++) {
      await mountOnce(socket, images[i % IMAGES]!, nsFd);
      const h = heldCopies(daemon.pid, stateDir);
      worstMemory = Math.max(worstMemory, h.memory);
      if ((i + 1) % 250 === 0) rows.push(`after ${i + 1}: ${h.copies} copies held, ${mib(h.memory)} in memory, ${mib(h.disk)} on disk, RSS ${mib(rssKiB(daemon.pid) * 1024)}`);
    }
    await sleep(SETTLE_MS);
    final = heldCopies(daemon.pid, stateDir);
    rss = { idle, after: rssKiB(daemon.pid) };
    if (fs.readdirSync(stateDir).length !== 0) throw new Error(`${stateDir} is not empty`);
  } finally {
    await daemon.stop();
    fs.closeSync(nsFd);
    await killAndWait(ns);
  }
  const bounded = worstMemory <= BUDGET;
  return {
    id: '9',
    title: 'Verified copies held after 1,000 mounts of 20 images (copy mode, memory budget)',
    method:
      `\`mountgate mntfsd --verity copy --copy-memory ${BUDGET} --state-dir DIR --userdbd none\` (${SHIPPED_NAME}, a child process); ${OPERATIONS} MountImage calls by a root client cycling over ${IMAGES} distinct 4 MiB signed DDIs, idmapped to a mapped user namespace, mount fds closed by the client after each call. ` +
      `Bytes held in copies are read from the kernel after every call: the loop devices under the daemon's base mounts (its fds) and their sizes, in memory (a private tmpfs) or in the state directory (an unnamed file). VmRSS from /proc/PID/status, ${SETTLE_MS} ms after start and after the load.`,
    samples: `${OPERATIONS} readings of the copies, RSS at start and end`,
    result: `copies in memory at most ${mib(worstMemory)} (budget ${mib(BUDGET)}); at the end ${final.copies} copies held: ${mib(final.memory)} in memory, ${mib(final.disk)} on disk; RSS ${mib(rss.idle * 1024)} idle, ${mib(rss.after * 1024)} after ${OPERATIONS} mounts`,
    target: `copies in memory ≤ the budget throughout; bounded`,
    status: bounded ? 'met' : 'missed',
    notes: [
      ...rows,
      'The state directory held no names at the end (copies there are O_TMPFILE files). Eviction rule: src/mntfsd/mount-cache.ts (unused copies go first, least recently used, when over the entry capacity or the memory budget, and after 10 minutes idle; a copy handed out within the last 2 s is kept, so calls arriving faster than that put new copies on disk once memory is full).',
    ],
  };
}
