// Leaks: 1,000 MountImage + close cycles of one (cached) signed image leave mntfsd's fd count,
// the loop devices, its mounts and its RSS flat. Long run (MOUNTGATE_LONG=1): crash
// consistency, mntfsd killed with SIGKILL at random points during 200 mounts; after each
// restart no loop device or mount of the dead daemon is left once clients let go.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildDdi } from '../../src/image-builder/build-ddi.js';
import { imageDir, publish, removeImages, sampleTree, testCertDir, testDir, testKey } from '../support/images.js';
import { MntfsdProcess } from '../support/daemons.js';
import { closeAll } from '../support/fds.js';
import { assertNoNewLoops, loopDevices, newLoops } from '../support/loops.js';
import { LONG } from '../support/processes.js';
import { rawPeer } from '../support/raw-peer.js';
import { killAndWait, spawnInNewUserns } from '../support/userns.js';

const MOUNT = 'io.systemd.MountFileSystem.MountImage';
const CYCLES = 1000;
/** RSS may grow this much over the cycles (V8 heap settling); a leaked copy or mount per call would not fit. */
const RSS_BOUND_KIB = 48 * 1024;

let dir: string;
let certs: string;
let image: string;
let loops0: Map<string, string>;
let ns: Awaited<ReturnType<typeof spawnInNewUserns>>;

before(async () => {
  dir = testDir('hostile-leaks-');
  certs = testCertDir(dir);
  const { key, cert } = testKey();
  const out = path.join(imageDir(), 'leaks.raw');
  await buildDdi({ sourceDir: sampleTree(), output: out, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
  image = publish(out, dir, 'leaks.raw');
  ns = await spawnInNewUserns('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'unshare', '--user', 'sleep', 'infinity']);
  fs.writeFileSync(`/proc/${ns.pid}/uid_map`, `0 ${524288 * 42} 65536\n`);
  fs.writeFileSync(`/proc/${ns.pid}/gid_map`, `0 ${524288 * 42} 65536\n`);
  loops0 = loopDevices();
});

after(async () => {
  if (ns) await killAndWait(ns);
  if (loops0) await assertNoNewLoops(loops0, 'after all daemons stopped');
  removeImages();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** One MountImage call with an idmapping; returns the mount fds (the caller closes them). */
async function mountOnce(sock: string): Promise<{ error?: unknown; fds: number[] }> {
  const p = rawPeer(sock);
  try {
    const fds = [fs.openSync(image, 'r'), fs.openSync(`/proc/${ns.pid}/ns/user`, 'r')];
    p.call(MOUNT, { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 }, fds);
    closeAll(fds);
    const r = await p.nextReply();
    return { error: r.error, fds: p.fdsReceived.splice(0) };
  } finally {
    p.close();
  }
}

test(`${CYCLES} MountImage + close cycles: fds, loop devices, mounts flat; RSS grows < ${RSS_BOUND_KIB / 1024} MiB`, async () => {
  const daemon = await MntfsdProcess.start(dir, { certificateDirectories: [certs] });
  try {
    // Warm-up: the first call verifies and caches; the rest let V8 and the allocator settle.
    for (let i = 0; i < 50; i++) {
      const r = await mountOnce(daemon.sock);
      assert.equal(r.error, undefined);
      r.fds.forEach((fd) => fs.closeSync(fd));
    }
    const fds0 = await daemon.quietFdCount();
    const mounts0 = daemon.mountinfoLines();
    const loops = loopDevices();
    const rss0 = daemon.rssKiB();
    let rssPeak = rss0;
    for (let i = 0; i < CYCLES; i++) {
      const r = await mountOnce(daemon.sock);
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      assert.equal(r.fds.length, 1);
      r.fds.forEach((fd) => fs.closeSync(fd));
      if (i % 100 === 0) rssPeak = Math.max(rssPeak, daemon.rssKiB());
    }
    await daemon.settleFds(fds0, `after ${CYCLES} cycles`);
    assert.equal(daemon.mountinfoLines(), mounts0);
    assert.deepEqual(newLoops(loops), []);
    const st = await daemon.status();
    assert.equal(st.verifications, 1);
    assert.equal(st.cacheHits, CYCLES + 49);
    const grown = Math.max(rssPeak, daemon.rssKiB()) - rss0;
    assert.ok(grown < RSS_BOUND_KIB, `RSS grew by ${Math.round(grown / 1024)} MiB`);
  } finally {
    await daemon.stop();
  }
});

test('crash consistency: SIGKILL at random points during 200 mounts leaves nothing behind', { skip: LONG ? false : 'long test (MOUNTGATE_LONG=1)' }, async () => {
  const loops = loopDevices();
  let daemon = await MntfsdProcess.start(dir, { certificateDirectories: [certs] });
  let done = 0;
  let kills = 0;
  let seed = 12345;
  const rnd = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  try {
    while (done < 200) {
      // A burst of parallel calls, and a kill somewhere in the middle of some bursts.
      const burst = Array.from({ length: 5 }, () => mountOnce(daemon.sock).catch((e: unknown) => ({ error: String(e), fds: [] as number[] })));
      const killNow = rnd(3) === 0;
      if (killNow) {
        await sleep(rnd(40));
        daemon.child.proc.kill('SIGKILL');
      }
      const results = await Promise.all(burst);
      for (const r of results) {
        if (r.error === undefined) {
          done++;
          // Mount fds a client holds stay valid after the daemon died.
          assert.ok(fs.statSync(`/proc/self/fd/${r.fds[0]}/etc/hello`).isFile());
        }
        r.fds.forEach((fd) => fs.closeSync(fd));
      }
      if (killNow) {
        kills++;
        await daemon.stop();
        // Everything the dead daemon set up goes once the clients closed their fds.
        await assertNoNewLoops(loops, `after kill ${kills}`);
        daemon = await MntfsdProcess.start(dir, { certificateDirectories: [certs] });
      }
    }
  } finally {
    await daemon.stop();
  }
  assert.ok(kills > 0);
  await assertNoNewLoops(loops, 'after the last daemon stopped');
});
