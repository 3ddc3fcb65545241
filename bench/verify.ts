// Figure 1: dm-verity verification throughput of a 256 MiB DDI with mountgate's verifier (copy
// mode as MountImage uses it, and in place) next to `veritysetup verify` on the same image and
// `openssl speed -evp sha256` (the per-core SHA-256 limit).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDdi } from '../src/image-builder/build-ddi.js';
import { dissectImage } from '../src/mntfsd/ddi/dissect.js';
import { verifyPartition, type Extent } from '../src/mntfsd/verity.js';
import { createCopyTarget } from '../src/mntfsd/verified-copy.js';
import { memfdCreate } from '../src/sys/memfd.js';
import { median, run, type BenchContext, type Figure } from './util.js';

const PAYLOAD_BYTES = 256 << 20;
const ROUNDS = 5;
const TARGET_RATIO = 2.5;
const MIB = 1 << 20;

export interface VerityLayout {
  image: string;
  data: Extent;
  hash: Extent;
  rootHash: string;
  /** Bytes covered by the hash tree (what every verifier hashes). */
  dataBytes: number;
}

/** Dissects a signed DDI and returns its root partition's Verity layout. */
export function verityLayout(image: string): VerityLayout {
  const fd = fs.openSync(image, 'r');
  try {
    const root = dissectImage(fd).partitions.find((p) => p.designator === 'root' && p.verity);
    if (!root?.verity) throw new Error(`${image}: no root partition with Verity`);
    return {
      image,
      data: { offset: root.offset, size: root.size },
      hash: { offset: root.verity.hash.offset, size: root.verity.hash.size },
      rootHash: root.verity.rootHash,
      dataBytes: root.size,
    };
  } finally {
    fs.closeSync(fd);
  }
}

/** One verification with our verifier; returns milliseconds. */
export async function verifyOnce(l: VerityLayout, copy: boolean): Promise<number> {
  const fd = fs.openSync(l.image, 'r');
  try {
    const t0 = performance.now();
    const r = await verifyPartition(fd, l.data, l.hash, Buffer.from(l.rootHash, 'hex'), { copy });
    const t = performance.now() - t0;
    if (r.fd >= 0) fs.closeSync(r.fd);
    return t;
  } finally {
    fs.closeSync(fd);
  }
}

async function veritysetupOnce(l: VerityLayout, dataDev: string): Promise<number> {
  const t0 = performance.now();
  await run('veritysetup', ['verify', dataDev, l.image, l.rootHash, `--hash-offset=${l.hash.offset}`]);
  return performance.now() - t0;
}

/** `openssl speed -evp sha256` on 4 KiB blocks (the Verity block size), bytes/s. */
async function opensslSpeed(multi: number): Promise<number> {
  const args = ['speed', '-evp', 'sha256', '-bytes', '4096', '-seconds', '2', '-mr', ...(multi > 1 ? ['-multi', String(multi)] : [])];
  const out = await run('openssl', args);
  const lines = out.split('\n').filter((x) => x.startsWith('+F:'));
  const m = /^\+F:\d+:sha256:([0-9.]+)/.exec(lines[lines.length - 1] ?? '');
  if (!m) throw new Error(`no result in openssl speed output: ${out.slice(-300)}`);
  return Number(m[1]);
}

/** Writing `bytes` from one thread into a fresh private copy target (what copy mode writes
 * into) or a fresh memfd (what it used before), in 1 MiB writes. */
function writeMs(bytes: number, into: 'copy target' | 'memfd'): number {
  const chunk = crypto.randomBytes(MIB);
  const target = into === 'memfd' ? null : createCopyTarget(bytes);
  const fd = target ? target.fd : memfdCreate('mountgate-bench');
  try {
    const t0 = performance.now();
    for (let off = 0; off < bytes; off += MIB) fs.writeSync(fd, chunk, 0, Math.min(MIB, bytes - off), off);
    return performance.now() - t0;
  } finally {
    if (target) target.discard();
    else fs.closeSync(fd);
  }
}

function shmemHugePages(): string {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/shmem_enabled', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unavailable';
  }
}

const mibps = (bytes: number, msTaken: number): number => bytes / MIB / (msTaken / 1000);

export async function verifyFigure(ctx: BenchContext, log: (s: string) => void): Promise<Figure> {
  const dir = fs.mkdtempSync(path.join(ctx.work, 'verify-'));
  let loop: string | undefined;
  try {
    log('building a 256 MiB signed DDI (mountgate build-ddi)');
    const src = path.join(dir, 'tree');
    fs.mkdirSync(src);
    const fd = fs.openSync(path.join(src, 'payload'), 'w');
    for (let done = 0; done < PAYLOAD_BYTES; done += 16 * MIB) fs.writeSync(fd, crypto.randomBytes(16 * MIB));
    fs.closeSync(fd);
    const image = path.join(dir, 'big.raw');
    await buildDdi({ sourceDir: src, output: image, keyPem: ctx.keyPem, certPem: ctx.certPem });
    fs.rmSync(src, { recursive: true, force: true });
    const l = verityLayout(image);

    // veritysetup has no data offset: give it the data partition as a read-only loop device
    // over the same file, and the image itself (with --hash-offset) as hash device.
    loop = (await run('losetup', ['--read-only', '--offset', String(l.data.offset), '--sizelimit', String(l.data.size), '--find', '--show', image])).trim();

    log('verifying: warm-up, then interleaved rounds');
    await verifyOnce(l, true);
    await verifyOnce(l, false);
    await veritysetupOnce(l, loop);
    const copy: number[] = [];
    const inPlace: number[] = [];
    const vs: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      copy.push(await verifyOnce(l, true));
      inPlace.push(await verifyOnce(l, false));
      vs.push(await veritysetupOnce(l, loop));
    }
    log('openssl speed -evp sha256');
    const oneCore = await opensslSpeed(1);
    const cores = os.cpus().length;
    const allCores = await opensslSpeed(cores);

    const tMemfd = median([0, 1, 2].map(() => writeMs(l.dataBytes, 'memfd')));
    const tTarget = median([0, 1, 2].map(() => writeMs(l.dataBytes, 'copy target')));
    const tCopy = median(copy);
    const tInPlace = median(inPlace);
    const tVs = median(vs);
    const ratio = tVs / tCopy;
    const limitMs = (l.dataBytes / allCores) * 1000;
    const fmt = (t: number): string => `${t.toFixed(0)} ms = ${mibps(l.dataBytes, t).toFixed(0)} MiB/s`;
    const notes = [
      `openssl ceiling for this data on ${cores} cores: ${limitMs.toFixed(0)} ms; in place we reach ${((limitMs / tInPlace) * 100).toFixed(0)} % of it, copy mode ${((limitMs / tCopy) * 100).toFixed(0)} %.`,
      `copy mode costs ${(tCopy - tInPlace).toFixed(0)} ms over in place for ${(l.dataBytes / MIB).toFixed(0)} MiB: writing the verified bytes into the private copy (a file on its own tmpfs instance with huge=within_size, src/mntfsd/verified-copy.ts). For scale, one thread writing that much takes ${tTarget.toFixed(0)} ms into such a copy target and ${tMemfd.toFixed(0)} ms into a fresh memfd, which copy mode used before (the host's shmem transparent huge pages: ${shmemHugePages()}, so a memfd gets every 4 KiB page allocated and zeroed one by one).`,
    ];
    if (ratio < TARGET_RATIO) {
      notes.push(
        `Missed${tVs / tInPlace >= TARGET_RATIO ? ` in copy mode only (in place: ${(tVs / tInPlace).toFixed(2)}×); what dominates is the copy, not hashing: writes into one file serialize on its inode lock, so the hashing threads take turns writing, and the huge pages are still zeroed before the copy fills them (threads claim whole 2 MiB chunks: with 1 MiB chunks two threads shared huge pages and copy mode took twice as long in some runs). Tried and left out: reading straight into a shared mapping of the copy (no pwrite; no measurable gain here, and run-to-run noise on this shared VM is larger than the gap). Fix that needs no copy at all: callers pass a sealed memfd, which is verified in place` : ''}. The ceiling is ${(tVs / limitMs).toFixed(2)}× veritysetup (openssl's ${cores}-core SHA-256 rate vs veritysetup's single-threaded run), so ${TARGET_RATIO}× is ${tVs / limitMs >= TARGET_RATIO ? 'reachable only by closing the gap to that ceiling' : 'not reachable on this machine by any SHA-256 verifier: veritysetup already runs close to one core\'s SHA-256 rate and there are only ' + cores + ' cores'}.`,
      );
    }
    return {
      id: '1',
      title: 'Verification throughput, 256 MiB DDI',
      method: `DDI built by mountgate's builder from ${PAYLOAD_BYTES / MIB} MiB of random data (erofs, data area ${(l.dataBytes / MIB).toFixed(1)} MiB, 4 KiB blocks), page cache warm. verifyPartition() copy mode (as MountImage: into a private copy that then becomes read-only) and in place (copy:false), vs \`veritysetup verify\` (data partition as a read-only loop device over the same file, --hash-offset into the image), interleaved rounds, median. openssl speed -evp sha256 -bytes 4096: 1 process and -multi ${cores}.`,
      samples: `${ROUNDS} rounds each (+1 warm-up)`,
      result: `copy ${fmt(tCopy)}; in place ${fmt(tInPlace)}; veritysetup ${fmt(tVs)}; openssl ${(oneCore / MIB).toFixed(0)} MiB/s per core, ${(allCores / MIB).toFixed(0)} MiB/s on ${cores} cores. Ratio (copy) ${ratio.toFixed(2)}× veritysetup, in place ${(tVs / tInPlace).toFixed(2)}×`,
      target: `≥ ${TARGET_RATIO}× veritysetup on 2 cores`,
      status: ratio >= TARGET_RATIO ? 'met' : 'missed',
      notes,
    };
  } finally {
    if (loop) await run('losetup', ['-d', loop]).catch(() => '');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
