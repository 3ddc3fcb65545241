// Where verified copies live and how long the cache keeps them (mount-cache.ts, verified-copy.ts):
// the memory budget, the root-only state directory for copies beyond it, eviction of copies
// no caller's mount uses, and the daemon's memory after many images mounted and released by
// uid 1000. Real images (mkfs.erofs + veritysetup + sfdisk), real loop devices and mounts.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { parseBytes } from '../../src/cli/mntfsd.js';
import { VarlinkClient } from '../../src/ipc/client.js';
import { dissectImage } from '../../src/mntfsd/ddi/dissect.js';
import { startMntfsd, type Mntfsd } from '../../src/mntfsd/daemon.js';
import { DEFAULT_IDLE_MS, MountCache, type CachedMount } from '../../src/mntfsd/mount-cache.js';
import { mountForCaller, mountPartition } from '../../src/mntfsd/mount.js';
import { FILE_NAME, prepareStateDir } from '../../src/mntfsd/verified-copy.js';
import { verifyPartition } from '../../src/mntfsd/verity.js';
import { callerWithRange, e2eClientAs1000 } from '../support/clients.js';
import { startTestUserdbd, type TestUserdbd } from '../support/daemons.js';
import { loopDevices } from '../support/loops.js';
import { killAndWait, type UsernsHolder } from '../support/userns.js';
import { gptImage, imageDir, publish, removeImages, run, verityUuids } from '../support/images.js';

const execFileAsync = promisify(execFile);
const MIB = 1 << 20;

interface Image {
  path: string;
  rootHash: string;
}

/** `n` distinct erofs images with Verity (no signature), each holding `bulk` bytes of noise. */
function distinctImages(prefix: string, n: number, bulk: number): Image[] {
  const out: Image[] = [];
  for (let i = 0; i < n; i++) {
    const tree = path.join(imageDir(), `${prefix}-tree${i}`);
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc/hello'), `image ${prefix} ${i}\n`);
    const noise = Buffer.alloc(bulk);
    for (let k = 0, x = (i + 1) * 2654435761; k + 4 <= bulk; k += 4) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      noise.writeUInt32LE(x, k);
    }
    fs.writeFileSync(path.join(tree, 'bulk'), noise);
    const data = path.join(imageDir(), `${prefix}-${i}.erofs`);
    run('mkfs.erofs', ['--quiet', data, tree]);
    const hash = `${data}.verity`;
    const rootHash = /Root hash:\s+([0-9a-f]{64})/.exec(run('veritysetup', ['format', data, hash]))![1]!;
    const u = verityUuids(rootHash);
    const img = gptImage(`${prefix}-${i}.raw`, [
      { designator: 'root', file: data, uuid: u.data, label: 'root' },
      { designator: 'root-verity', file: hash, uuid: u.hash, label: 'root-verity', attrs: 'GUID:60' },
    ]);
    fs.rmSync(tree, { recursive: true, force: true });
    out.push({ path: img, rootHash });
  }
  return out;
}

/** What mount-image.ts does for the copy backend: verify into a copy, mount it, cache it. */
async function cachedCopy(cache: MountCache, img: Image): Promise<CachedMount> {
  const fd = fs.openSync(img.path, 'r');
  try {
    const root = dissectImage(fd).partitions.find((p) => p.designator === 'root' && p.verity)!;
    const { mount } = await cache.getOrCreate(img.rootHash, async () => {
      const copy = await verifyPartition(fd, { offset: root.offset, size: root.size }, root.verity!.hash, Buffer.from(img.rootHash, 'hex'), { storage: cache.storage });
      try {
        return { partition: mountPartition(copy, { designator: 'root', fileSystemType: 'erofs', readOnly: true }), fileSystemType: 'erofs', rootHash: img.rootHash, verity: 'copy' as const };
      } finally {
        fs.closeSync(copy.fd);
      }
    });
    return mount;
  } finally {
    fs.closeSync(fd);
  }
}

/** A caller's mount of a cached partition (as MountImage hands out), and what it shows. */
function callerMount(m: CachedMount): { fd: number; hello: string } {
  const fd = mountForCaller(m.partition, null, true);
  return { fd, hello: fs.readFileSync(`/proc/self/fd/${fd}/etc/hello`, 'utf8') };
}

/** Loop devices bound to a verified copy: in memory (on its tmpfs) or in `stateDir`. */
function copyLoops(stateDir?: string): { memory: number; disk: number } {
  let memory = 0;
  let disk = 0;
  for (const backing of loopDevices().values()) {
    if (backing === `/${FILE_NAME}`) memory++;
    else if (stateDir && backing.startsWith(`${stateDir}/`)) disk++;
  }
  return { memory, disk };
}

let dir: string;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'copy-storage-'));
});

after(() => {
  removeImages();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('state directory', () => {
  test('is created root-owned 0700 when missing', () => {
    const d = path.join(dir, 'new-state');
    prepareStateDir(d);
    const st = fs.statSync(d);
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o7777, 0o700);
  });

  test('one that others can enter, one owned by another user, or a symbolic link is refused', () => {
    const open = path.join(dir, 'open-state');
    fs.mkdirSync(open, { mode: 0o755 });
    fs.chmodSync(open, 0o755);
    assert.throws(() => prepareStateDir(open), /owned by root with mode 0700/);
    const theirs = path.join(dir, 'their-state');
    fs.mkdirSync(theirs, { mode: 0o700 });
    fs.chownSync(theirs, 1000, 1000);
    assert.throws(() => prepareStateDir(theirs), /owned by root with mode 0700/);
    const link = path.join(dir, 'link-state');
    fs.symlinkSync(path.join(dir, 'new-state'), link);
    assert.throws(() => prepareStateDir(link), /owned by root with mode 0700/);
    // The daemon does not start with such a directory.
    assert.throws(() => new MountCache(4, { stateDir: open }), /mode 0700/);
  });
});

describe('mountgate mntfsd options', () => {
  test('--copy-memory takes bytes with binary suffixes', () => {
    assert.equal(parseBytes('4096'), 4096);
    assert.equal(parseBytes('512M'), 512 * MIB);
    assert.equal(parseBytes('2G'), 2 * 1024 * MIB);
    assert.equal(parseBytes('64KiB'), 64 * 1024);
    for (const bad of ['1.5G', '-1', 'lots', '', '9X']) assert.equal(parseBytes(bad), null, bad);
  });

  test('the daemon does not start with a state directory others can enter', async () => {
    const open = path.join(dir, 'cli-open-state');
    fs.mkdirSync(open, { mode: 0o755 });
    fs.chmodSync(open, 0o755);
    const main = path.resolve(import.meta.dirname, '../../src/cli/main.ts');
    const r = await execFileAsync(process.execPath, ['--import', 'tsx', main, 'mntfsd', '--listen', path.join(dir, 'cli.sock'), '--userdbd', 'none', '--state-dir', open], { encoding: 'utf8', timeout: 30_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /must be a directory owned by root with mode 0700/);
    assert.ok(!fs.existsSync(path.join(dir, 'cli.sock')), 'it never listened');
  });
});

describe('copies beyond the memory budget', () => {
  let images: Image[];
  before(() => {
    images = distinctImages('budget', 3, 2 * MIB);
  });

  test('go to the state directory as unnamed files, and are the verified bytes', async () => {
    const stateDir = path.join(dir, 'disk-state');
    const cache = new MountCache(8, { stateDir, memoryBudget: 0, graceMs: 0 });
    try {
      const before = copyLoops(stateDir);
      const m = await cachedCopy(cache, images[0]!);
      const u = cache.usage();
      assert.equal(u.memoryBytes, 0);
      assert.ok(u.diskBytes >= 2 * MIB, `disk bytes ${u.diskBytes}`);
      assert.deepEqual(fs.readdirSync(stateDir), [], 'nothing in the directory has a name');
      assert.equal(copyLoops(stateDir).disk, before.disk + 1);
      const c = callerMount(m);
      try {
        assert.equal(c.hello, 'image budget 0\n');
      } finally {
        fs.closeSync(c.fd);
      }
    } finally {
      cache.clear();
    }
  });

  test('within the budget they stay in memory; without a state directory, memory it is', async () => {
    const cache = new MountCache(8, { memoryBudget: 0, graceMs: 0 });
    try {
      await cachedCopy(cache, images[1]!);
      assert.ok(cache.usage().memoryBytes >= 2 * MIB);
      assert.equal(cache.usage().diskBytes, 0);
    } finally {
      cache.clear();
    }
    const big = new MountCache(8, { stateDir: path.join(dir, 'disk-state'), memoryBudget: 64 * MIB, graceMs: 0 });
    try {
      await cachedCopy(big, images[2]!);
      assert.equal(big.usage().diskBytes, 0);
    } finally {
      big.clear();
    }
  });
});

describe('eviction', () => {
  let images: Image[];
  before(() => {
    images = distinctImages('evict', 6, 3 * MIB);
  });

  test('copies no caller mounts are evicted to stay within the budget; a copy in use stays and still counts', async () => {
    const one = 3 * MIB + MIB; // a copy: the bulk plus erofs metadata, rounded up generously
    const cache = new MountCache(32, { memoryBudget: 2 * one, graceMs: 0 });
    const loopsBefore = copyLoops().memory;
    try {
      // Image 0 stays mounted by its caller throughout.
      const held = callerMount(await cachedCopy(cache, images[0]!));
      try {
        for (const img of images.slice(1)) {
          const c = callerMount(await cachedCopy(cache, img));
          assert.match(c.hello, /^image evict \d\n$/);
          fs.closeSync(c.fd); // released
          const u = cache.usage();
          assert.ok(u.memoryBytes <= u.memoryBudget, `${u.memoryBytes} bytes held in memory, budget ${u.memoryBudget}`);
        }
        assert.ok(cache.has(images[0]!.rootHash), 'the copy in use was not evicted');
        assert.ok(cache.stats.evictions >= 3, `evictions: ${cache.stats.evictions}`);
        const u = cache.usage({ probe: true });
        assert.equal(u.inUse, 1);
        // The kernel agrees: only the cached copies are still bound to loop devices.
        assert.equal(copyLoops().memory - loopsBefore, u.entries);
        // The copy in use still serves its caller and a new one.
        assert.equal(fs.readFileSync(`/proc/self/fd/${held.fd}/etc/hello`, 'utf8'), 'image evict 0\n');
        const again = callerMount(await cachedCopy(cache, images[0]!));
        assert.equal(again.hello, 'image evict 0\n');
        fs.closeSync(again.fd);
      } finally {
        fs.closeSync(held.fd);
      }
      // Released: now it can go too.
      assert.ok(cache.evictUnused(() => cache.size === 0) >= 1);
      assert.equal(cache.size, 0);
      assert.equal(copyLoops().memory, loopsBefore, 'every copy is freed');
    } finally {
      cache.clear();
    }
  });

  test('entries beyond the capacity go least recently used first, and idle ones after idleMs', async () => {
    const cache = new MountCache(2, { memoryBudget: 1 << 30, graceMs: 0, idleMs: 50 });
    try {
      for (const img of images.slice(0, 3)) fs.closeSync(callerMount(await cachedCopy(cache, img)).fd);
      assert.equal(cache.size, 2);
      assert.ok(!cache.has(images[0]!.rootHash));
      const held = callerMount(await cachedCopy(cache, images[1]!));
      try {
        assert.equal(cache.sweepIdle(Date.now() + 1000), 1, 'the unused one went, the one in use stayed');
        assert.ok(cache.has(images[1]!.rootHash));
      } finally {
        fs.closeSync(held.fd);
      }
      assert.equal(cache.sweepIdle(Date.now() + 1000), 1);
      assert.equal(cache.size, 0);
    } finally {
      cache.clear();
    }
  });
});

describe('mntfsd after many images mounted and released by uid 1000', () => {
  const N = 8;
  const BULK = 2 * MIB;
  let images: Image[];
  let sock: string;
  let stateDir: string;
  let daemon: Mntfsd;
  let userdbd: TestUserdbd;
  let ns: UsernsHolder;

  before(async () => {
    const trusted = path.join(dir, 'trusted');
    fs.mkdirSync(trusted, { mode: 0o755 });
    fs.chmodSync(dir, 0o755);
    images = distinctImages('daemon', N, BULK).map((img, i) => ({ ...img, path: publish(img.path, trusted, `img${i}.raw`) }));
    sock = path.join(dir, 'mntfsd.sock');
    stateDir = path.join(dir, 'mntfsd-state');
    userdbd = await startTestUserdbd('copy-storage', { dir, sock: path.join(dir, 'userdbd.sock'), state: path.join(dir, 'userdbd-state') });
    daemon = startMntfsd({
      listen: sock,
      userdbd: userdbd.sock,
      certificateDirectories: [],
      trustedDirectories: [trusted],
      verity: 'copy',
      copyMemoryBudget: 3 * (BULK + MIB),
      stateDir,
    });
    ({ ns } = await callerWithRange(userdbd.sock, 'copy-storage'));
  });

  after(async () => {
    await killAndWait(ns);
    daemon.close();
    await userdbd.close();
  });

  async function status(): Promise<{ cachedImages: Array<{ rootHash: string }>; copyBytesInMemory?: number }> {
    const client = await VarlinkClient.connect(sock);
    try {
      const { parameters } = await client.call('io.mountgate.Mntfsd.GetStatus', {});
      return parameters as { cachedImages: Array<{ rootHash: string }>; copyBytesInMemory?: number };
    } finally {
      client.close();
    }
  }

  test('copies held in memory stay within the budget (the rest on disk), and idle ones are all freed', async () => {
    const loopsBefore = copyLoops(stateDir);
    let disk = 0;
    for (let round = 0; round < 2; round++) {
      for (const img of images) {
        // The client exits after printing: its mounts are released.
        const res = await e2eClientAs1000<{ error?: string; partitions?: Array<{ host: { content: string } | null }> }>(['mount', sock, img.path, String(ns.pid)]);
        assert.equal(res.error, undefined, JSON.stringify(res));
        const u = daemon.cache.usage();
        assert.ok(u.memoryBytes <= u.memoryBudget, `${u.memoryBytes} bytes of copies in memory, budget ${u.memoryBudget}`);
        disk = Math.max(disk, u.diskBytes);
      }
    }
    // Calls come faster than the 2 s grace, so some copies had to go to disk.
    assert.ok(disk > 0, 'the state directory was used');
    await new Promise((r) => setTimeout(r, 2100));
    const u = daemon.cache.usage({ probe: true });
    assert.equal(u.inUse, 0, 'nothing is mounted any more');
    const st = await status();
    assert.equal(st.cachedImages.length, u.entries);
    if (st.copyBytesInMemory !== undefined) assert.equal(st.copyBytesInMemory, u.memoryBytes);
    const live = copyLoops(stateDir);
    assert.equal(live.memory + live.disk - loopsBefore.memory - loopsBefore.disk, u.entries, 'the kernel holds the cached copies and no others');

    // Idle past DEFAULT_IDLE_MS: everything goes, and the kernel frees it.
    daemon.cache.sweepIdle(Date.now() + DEFAULT_IDLE_MS);
    assert.deepEqual((await status()).cachedImages, []);
    assert.equal(daemon.cache.usage().memoryBytes, 0);
    assert.equal(daemon.cache.usage().diskBytes, 0);
    assert.deepEqual(copyLoops(stateDir), loopsBefore);
    assert.deepEqual(fs.readdirSync(stateDir), []);
  });
});
