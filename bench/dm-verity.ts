// Cold MountImage through kernel dm-verity against the verified copy, at 16 MiB and 1 GiB, in
// one boot of the kernel lab (this host has no device-mapper). dm-verity reads only what the
// mount needs, so its cost should not follow the image size (target: 1 GiB / 16 MiB ≤ 1.5);
// the copy reads, hashes and copies every byte.
//
//   node --import tsx bench/dm-verity.ts        builds the images here, measures in the lab
//   ... --prepare DIR / --measure DIR           the two halves (to share a lab boot with other work)
//
// Each image is mounted once per backend by a fresh mntfsd (the shipped bundle built from the
// current sources, --verity dm-verity or --verity copy), so every call is cold, by a root client
// from a mapped user namespace. Shmem growth while the daemon holds the mount shows what each
// backend keeps in memory per image.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { buildDdi } from '../src/image-builder/build-ddi.js';
import { mappedUserns, mountOnce } from './mount-image.js';
import { waitForSocket } from '../test/support/daemons.js';
import { noise, run, summarize, table, ms } from '../test/support/figures.js';
import { REPO, startChild } from '../test/support/processes.js';
import { killAndWait } from '../test/support/userns.js';

const SIZES = [
  { name: '16 MiB', bytes: 16 << 20 },
  { name: '1 GiB', bytes: 1 << 30 },
];
const RUNS = 3;
type Backend = 'dm-verity' | 'copy';
/** BENCH_BACKENDS=copy measures one only (the host has no dm-verity). */
const BACKENDS = (process.env.BENCH_BACKENDS?.split(',') ?? ['dm-verity', 'copy']) as Backend[];

const imageName = (size: string, i: number): string => `img-${size.replace(' ', '')}-${i}.raw`;

/** Host side: signed erofs DDIs (mountgate build), RUNS distinct ones per size. */
async function prepare(dir: string): Promise<void> {
  const certs = path.join(dir, 'certs');
  fs.mkdirSync(certs, { recursive: true });
  const key = path.join(dir, 'bench.key');
  const cert = path.join(certs, 'bench.crt');
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=mountgate bench']);
  const keyPem = fs.readFileSync(key, 'utf8');
  const certPem = fs.readFileSync(cert, 'utf8');
  for (const size of SIZES) {
    for (let i = 0; i < RUNS; i++) {
      const tree = path.join(dir, 'tree');
      fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
      fs.writeFileSync(path.join(tree, 'etc/hello'), `image ${size.name} ${i}\n`);
      fs.writeFileSync(path.join(tree, 'payload'), noise(size.bytes, i + 1 + size.bytes));
      await buildDdi({ sourceDir: tree, output: path.join(dir, imageName(size.name, i)), keyPem, certPem });
      fs.rmSync(tree, { recursive: true, force: true });
      process.stderr.write(`built ${imageName(size.name, i)}\n`);
    }
  }
  await bundle(dir);
}

function shmemKiB(): number {
  return Number(/^Shmem:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))![1]);
}

/** A private tree like the repo's with the shipped bundle built from the current sources (as test/support/figures.ts createContext). */
async function bundle(dir: string): Promise<void> {
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  fs.symlinkSync(path.join(REPO, 'build'), path.join(root, 'build'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(root, 'node_modules'));
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(root, 'package.json'));
  await run(path.join(REPO, 'scripts/build-bundle'), [path.join(root, 'dist/bundle')]);
}

/**
 * Lab side. A fresh mntfsd (the bundle, as the units run it) per call, so every call is cold and
 * the guest never holds more than one 1 GiB copy; Shmem is read while the daemon holds the mount.
 */
async function measure(dir: string): Promise<void> {
  const ns = await mappedUserns();
  const usernsFd = fs.openSync(`/proc/${ns.pid}/ns/user`, 'r');
  const rows: string[][] = [];
  const medians: Record<string, number> = {};
  const sock = path.join(dir, 'mntfsd.sock');
  try {
    for (const backend of BACKENDS) {
      for (const size of SIZES) {
        const times: number[] = [];
        const held: number[] = [];
        for (let i = 0; i < RUNS; i++) {
          fs.rmSync(sock, { force: true });
          const child = startChild([process.execPath, path.join(dir, 'root/dist/bundle/main.mjs'), 'mntfsd', '--listen', sock, '--userdbd', 'none', '--verity-certs', path.join(dir, 'certs'), '--verity', backend], {
            env: { ...process.env, MOUNTGATE_LOG_LEVEL: 'warn' },
            group: true,
            graceMs: 3000,
          });
          try {
            await waitForSocket(sock, child, { timeoutMs: 120_000 });
            const shmem0 = shmemKiB();
            times.push(await mountOnce(sock, path.join(dir, imageName(size.name, i)), usernsFd));
            held.push((shmemKiB() - shmem0) / 1024);
          } catch (err) {
            throw new Error(`${backend} ${size.name} run ${i}: ${String(err)}; mntfsd: ${child.stderr().slice(-1500)}`);
          } finally {
            await child.stop();
          }
          process.stderr.write(`${backend} ${size.name} run ${i}: ${ms(times.at(-1)!)}, Shmem +${held.at(-1)!.toFixed(0)} MiB\n`);
        }
        const s = summarize(times);
        medians[`${backend} ${size.name}`] = s.p50;
        rows.push([backend, size.name, ms(s.p50), times.map((t) => ms(t)).join(', '), `${summarize(held).p50.toFixed(0)} MiB`]);
      }
    }
  } finally {
    fs.closeSync(usernsFd);
    await killAndWait(ns);
  }
  const ratio = (a: string, b: string): string => (medians[a] && medians[b] ? (medians[a] / medians[b]).toFixed(2) : '-');
  process.stdout.write(`kernel ${process.env.MOUNTGATE_LAB_KERNEL ?? '?'} (kernel lab, qemu TCG), ${RUNS} cold MountImage calls per row (distinct images, a fresh mntfsd each)\n\n`);
  process.stdout.write(`${table(['backend', 'image', 'median', 'runs', 'Shmem held (median)'], rows)}\n\n`);
  process.stdout.write(`dm-verity 1 GiB / 16 MiB: ${ratio('dm-verity 1 GiB', 'dm-verity 16 MiB')} (target ≤ 1.5)\n`);
  process.stdout.write(`copy 1 GiB / 16 MiB: ${ratio('copy 1 GiB', 'copy 16 MiB')}\n`);
  process.stdout.write(`copy / dm-verity at 16 MiB: ${ratio('copy 16 MiB', 'dm-verity 16 MiB')}, at 1 GiB: ${ratio('copy 1 GiB', 'dm-verity 1 GiB')}\n`);
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--measure');
  if (at >= 0) return measure(process.argv[at + 1]!);
  const prep = process.argv.indexOf('--prepare');
  if (prep >= 0) return prepare(process.argv[prep + 1]!);
  // Under /var/tmp: on the root file system the lab shares, and not a host tmpfs.
  const dir = fs.mkdtempSync('/var/tmp/mountgate-bench-verity-');
  try {
    await prepare(dir);
    // The 1 GiB copy needs 1 GiB of guest memory besides everything else.
    const lab = spawn(path.join(REPO, 'scripts/lab'), ['run', process.execPath, '--import', 'tsx', path.join(REPO, 'bench/dm-verity.ts'), '--measure', dir], {
      cwd: REPO,
      env: { ...process.env, LAB_MEM: process.env.LAB_MEM ?? '4G' },
      stdio: 'inherit',
    });
    const [code] = (await once(lab, 'exit')) as [number | null];
    process.exitCode = code ?? 1;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
