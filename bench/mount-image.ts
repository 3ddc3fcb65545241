// Figure 2: MountImage round trip through a real mntfsd (child process, compiled tree), cold
// (first time for each of N distinct images) and warm (cached), idmapped to a mapped user
// namespace, from a root client using the public client library.
import fs from 'node:fs';
import path from 'node:path';
import { buildDdi } from '../src/image-builder/build-ddi.js';
import { mountImage } from '../src/client/index.js';
import { waitForSocket } from '../test/support/daemons.js';
import { fmtSummary, ms, noise, summarize, timed, type BenchContext, type Figure, SHIPPED_ENTRY, SHIPPED_NAME } from '../test/support/figures.js';
import { startChild, type Child } from '../test/support/processes.js';
import { killAndWait, spawnInNewUserns, type UsernsHolder } from '../test/support/userns.js';
import { verifyOnce, verityLayout } from './verify.js';

export const COLD_IMAGES = 50;
const IMAGE_PAYLOAD = 4 << 20;
const WARM_RUNS = 100;
const COLD_SLACK_MS = 30;
const WARM_TARGET_MS = 15;

/** `count` distinct signed DDIs of a few MiB each (different random payloads), two builds at a time. */
export async function buildSmallImages(ctx: BenchContext, dir: string, count: number): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const images = Array.from({ length: count }, (_, i) => path.join(dir, `img${i}.raw`));
  const buildOne = async (i: number): Promise<void> => {
    const tree = path.join(dir, `tree${i}`);
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc/hello'), `image ${i}\n`);
    fs.writeFileSync(path.join(tree, 'payload'), noise(IMAGE_PAYLOAD, i + 1));
    await buildDdi({ sourceDir: tree, output: images[i]!, keyPem: ctx.keyPem, certPem: ctx.certPem });
    fs.rmSync(tree, { recursive: true, force: true });
  };
  for (let i = 0; i < count; i += 2) await Promise.all([buildOne(i), ...(i + 1 < count ? [buildOne(i + 1)] : [])]);
  return images;
}

/** mntfsd from the compiled tree, as `mountgate mntfsd` runs it; not registering with userdbd. */
export async function startMntfsdChild(ctx: BenchContext, socket: string, nodeArgs: string[] = []): Promise<Child> {
  const child = startChild([process.execPath, ...nodeArgs, path.join(ctx.root, SHIPPED_ENTRY), 'mntfsd', '--listen', socket, '--userdbd', 'none', '--verity-certs', ctx.certDir], { group: true, graceMs: 3000 });
  await waitForSocket(socket, child);
  return child;
}

/** A user namespace with 0..65535 mapped to 100000.. (what userdbd would give a container). */
export async function mappedUserns(): Promise<UsernsHolder> {
  const ns = await spawnInNewUserns('unshare', ['--user', 'sleep', '1000']);
  fs.writeFileSync(`/proc/${ns.pid}/uid_map`, '0 100000 65536\n');
  fs.writeFileSync(`/proc/${ns.pid}/setgroups`, 'deny');
  fs.writeFileSync(`/proc/${ns.pid}/gid_map`, '0 100000 65536\n');
  return ns;
}

/** One MountImage call as a container manager makes it (connect, call, close); returns ms. */
export async function mountOnce(socket: string, image: string, usernsFd: number): Promise<number> {
  const imageFd = fs.openSync(image, 'r');
  try {
    const [r, t] = await timed(() => mountImage({ socket, imageFd, userNamespaceFd: usernsFd }));
    r.partitions.forEach((p) => fs.closeSync(p.mountFd));
    if (r.partitions.length === 0) throw new Error('no partitions mounted');
    return t;
  } finally {
    fs.closeSync(imageFd);
  }
}

export async function mountImageFigures(ctx: BenchContext, log: (s: string) => void): Promise<Figure[]> {
  const dir = path.join(ctx.work, 'mount-images');
  log(`building ${COLD_IMAGES} distinct ${IMAGE_PAYLOAD >> 20} MiB DDIs`);
  const images = await buildSmallImages(ctx, dir, COLD_IMAGES);
  const socket = path.join(ctx.work, 'mntfsd-fig2.sock');
  const ns = await mappedUserns();
  const nsFd = fs.openSync(`/proc/${ns.pid}/ns/user`, 'r');
  const daemon = await startMntfsdChild(ctx, socket);
  try {
    log('cold: one MountImage per image');
    const cold: number[] = [];
    for (const img of images) cold.push(await mountOnce(socket, img, nsFd));
    // The reference: verifying the same partitions in-process (copy mode, as MountImage does).
    const verify: number[] = [];
    for (const img of images) verify.push(await verifyOnce(verityLayout(img), true));
    log(`warm: ${WARM_RUNS} MountImage calls on a cached image`);
    const warmImage = images[images.length - 1]!;
    await mountOnce(socket, warmImage, nsFd);
    const warm: number[] = [];
    for (let i = 0; i < WARM_RUNS; i++) warm.push(await mountOnce(socket, warmImage, nsFd));

    const c = summarize(cold);
    const v = summarize(verify);
    const w = summarize(warm);
    const layout = verityLayout(images[0]!);
    const coldOk = c.p50 <= v.p50 + COLD_SLACK_MS;
    const common = `mntfsd = \`mountgate mntfsd --userdbd none\` (${SHIPPED_NAME}, own process); root client using src/client mountImage() (connect, call, close per mount) with the image fd and the fd of a user namespace mapped 0→100000 (65536), so every mount is the idmapped clone a container gets; all returned mount fds closed.`;
    return [
      {
        id: '2a',
        title: 'MountImage round trip, cold',
        method: `${common} ${COLD_IMAGES} distinct signed DDIs (builder, ${IMAGE_PAYLOAD >> 20} MiB random payload, data partition ${(layout.data.size / 2 ** 20).toFixed(1)} MiB), each mounted once (first time for that image: signature check, verify into a private copy, mount, idmapped clone). Reference: verifyPartition() copy mode on each of the same images in the benchmark process.`,
        samples: `${c.n} cold mounts, ${v.n} verifications`,
        result: `cold ${fmtSummary(c)}; verification alone ${fmtSummary(v)}; cold − verification at p50: ${ms(c.p50 - v.p50)}`,
        target: `cold p50 ≤ verification p50 + ${COLD_SLACK_MS} ms (= ${ms(v.p50 + COLD_SLACK_MS)})`,
        status: coldOk ? 'met' : 'missed',
      },
      {
        id: '2b',
        title: 'MountImage round trip, warm (cached)',
        method: `${common} One image mounted once, then ${WARM_RUNS} more times (cache hit: signature check, open_tree clone, idmap).`,
        samples: `${w.n} warm mounts`,
        result: fmtSummary(w),
        target: `p50 ≤ ${WARM_TARGET_MS} ms`,
        status: w.p50 <= WARM_TARGET_MS ? 'met' : 'missed',
      },
    ];
  } finally {
    await daemon.stop();
    fs.closeSync(nsFd);
    await killAndWait(ns);
  }
}
