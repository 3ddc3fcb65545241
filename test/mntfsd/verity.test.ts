import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { dissectImage } from '../../src/mntfsd/ddi/dissect.js';
import { isMountFsError, type MountFsErrorName } from '../../src/mntfsd/errors.js';
import { parseVeritySuperblock, treeGeometry, verifyPartition, type Extent, type VerifiedCopy } from '../../src/mntfsd/verity.js';
import { F_SEAL_ALL_DATA, addSeals, memfdCreate } from '../../src/sys/memfd.js';
import { fdFlags, statfsType, TMPFS_MAGIC } from '../../src/sys/stat.js';
import { createCopyTarget } from '../../src/mntfsd/verified-copy.js';
import { flipped, handVerityImage, imageDir, makeFileSystem, removeImages, repartImage, run, verityFormat } from '../support/images.js';

after(removeImages);

interface Layout {
  img: string;
  rootHash: Buffer;
  data: Extent;
  hash: Extent;
}

function layoutOf(img: string, rootHash: string): Layout {
  const fd = fs.openSync(img, 'r');
  try {
    const d = dissectImage(fd, { rootHash });
    const root = d.partitions.find((p) => p.designator === 'root')!;
    return { img, rootHash: Buffer.from(rootHash, 'hex'), data: root, hash: root.verity!.hash };
  } finally {
    fs.closeSync(fd);
  }
}

async function verifyFile(file: string, l: Layout, rootHash = l.rootHash): Promise<VerifiedCopy> {
  const fd = fs.openSync(file, 'r');
  try {
    return await verifyPartition(fd, l.data, l.hash, rootHash);
  } finally {
    fs.closeSync(fd);
  }
}

async function rejects(kind: MountFsErrorName, p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (err: unknown) => isMountFsError(err, kind) || assert.fail(`expected ${kind}, got ${String(err)}`));
}

function readRange(fd: number, offset: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  assert.equal(fs.readSync(fd, b, 0, size, offset), size);
  return b;
}

describe('verity: superblock', () => {
  const sbOf = (dbs: number, hbs: number): Buffer => {
    const v = verityFormat(makeFileSystem('ext4'), dbs, hbs);
    return fs.readFileSync(v.hash).subarray(0, 512);
  };

  test('parses what veritysetup writes, and the geometry matches veritysetup dump', () => {
    const v = verityFormat(makeFileSystem('ext4'), 4096, 4096);
    const sb = parseVeritySuperblock(fs.readFileSync(v.hash).subarray(0, 512));
    const dump = run('veritysetup', ['dump', v.hash]);
    const field = (name: string): string => new RegExp(`${name}:\\s+(\\S+)`).exec(dump)![1]!;
    assert.equal(sb.dataBlocks, Number(field('Data blocks')));
    assert.equal(sb.salt.toString('hex'), field('Salt'));
    assert.equal(sb.uuid, field('UUID'));
    const g = treeGeometry(sb);
    assert.equal(g.treeBytes / sb.hashBlockSize, Number(field('Hash blocks')));
  });

  test('rejects out-of-range fields', () => {
    const good = sbOf(4096, 4096);
    const bad = (edit: (b: Buffer) => void): void => {
      const b = Buffer.from(good);
      edit(b);
      assert.throws(() => parseVeritySuperblock(b), (e: unknown) => isMountFsError(e, 'IncompatibleImage'));
    };
    bad((b) => b.write('veritx', 0, 'latin1'));
    bad((b) => b.writeUInt32LE(2, 8));
    bad((b) => b.writeUInt32LE(0, 12));
    bad((b) => b.write('sha1\0\0', 32, 'latin1'));
    bad((b) => b.write('sha256x', 32, 'latin1'));
    for (const size of [0, 256, 1000, 8192, 1 << 19]) {
      bad((b) => b.writeUInt32LE(size, 64));
      bad((b) => b.writeUInt32LE(size, 68));
    }
    bad((b) => b.writeBigUInt64LE(0n, 72));
    bad((b) => b.writeBigUInt64LE(1n << 61n, 72));
    bad((b) => b.writeUInt16LE(257, 80));
    assert.throws(() => parseVeritySuperblock(good.subarray(0, 100)), (e: unknown) => isMountFsError(e, 'IncompatibleImage'));
  });

  test('property: random and mutated superblocks only fail with IncompatibleImage (1000 cases)', () => {
    const good = sbOf(512, 512);
    const input = fc.oneof(
      fc.array(fc.record({ at: fc.nat(511), v: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 }).map((m) => {
        const b = Buffer.from(good);
        for (const x of m) b[x.at] = x.v;
        return b;
      }),
      fc.uint8Array({ minLength: 0, maxLength: 600 }).map((a) => Buffer.from(a)),
    );
    fc.assert(
      fc.property(input, (b) => {
        try {
          const sb = parseVeritySuperblock(b);
          const g = treeGeometry(sb);
          assert.ok(Number.isSafeInteger(g.treeBytes) && g.levels.length < 64);
        } catch (err) {
          if (!isMountFsError(err, 'IncompatibleImage')) throw err;
        }
      }),
      { numRuns: 1000 },
    );
  });
});

/** A verified copy: a read-only fd on a private tmpfs that no longer accepts writers. */
function assertFrozenCopy(fd: number): void {
  const f = fdFlags(fd);
  assert.equal(f.writable, false);
  assert.equal(statfsType(fd), TMPFS_MAGIC);
  assert.throws(() => fs.openSync(`/proc/self/fd/${fd}`, 'r+'), { code: 'EROFS' });
  assert.throws(() => fs.ftruncateSync(fd, 0));
}

describe('verity: the private copy target', () => {
  test('written, then frozen: read-only, same bytes, on its own read-only tmpfs; no fds left behind', () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const bytes = Buffer.alloc(3 * 1024 * 1024 + 4096, 0x5a);
    const t = createCopyTarget(bytes.length);
    assert.equal(fs.fstatSync(t.fd).size, bytes.length);
    fs.writeSync(t.fd, bytes, 0, bytes.length, 0);
    const ro = t.freeze();
    try {
      assertFrozenCopy(ro);
      assert.ok(readRange(ro, 0, bytes.length).equals(bytes));
    } finally {
      fs.closeSync(ro);
    }
    assert.equal(fs.readdirSync('/proc/self/fd').length, before);
  });

  test('freezing fails while another writer is open (EBUSY), and cleans up', () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const t = createCopyTarget(4096);
    const writer = fs.openSync(`/proc/self/fd/${t.fd}`, 'r+');
    try {
      assert.throws(() => t.freeze(), { code: 'EBUSY' });
    } finally {
      fs.closeSync(writer);
    }
    assert.equal(fs.readdirSync('/proc/self/fd').length, before);
  });

  test('the copy cannot outgrow its instance', () => {
    const t = createCopyTarget(4096);
    try {
      // Sized to the copy (rounded up to one huge page): the fourth MiB does not fit.
      const mib = Buffer.alloc(1024 * 1024, 1);
      assert.throws(() => {
        for (let i = 0; i < 4; i++) fs.writeSync(t.fd, mib, 0, mib.length, i * mib.length);
      }, { code: 'ENOSPC' });
    } finally {
      t.discard();
    }
  });
});

describe('verity: verification with copy', () => {
  for (const [dbs, hbs] of [[4096, 4096], [512, 512], [512, 4096], [4096, 512]] as const) {
    test(`data ${dbs} / hash ${hbs}: verified copy is read-only and equals the data`, async () => {
      const { path: img, rootHash } = handVerityImage('erofs', { dataBlockSize: dbs, hashBlockSize: hbs });
      const l = layoutOf(img, rootHash);
      const progress: number[] = [];
      const fd = fs.openSync(img, 'r');
      let copy: VerifiedCopy;
      try {
        copy = await verifyPartition(fd, l.data, l.hash, l.rootHash, { onProgress: (done, total) => progress.push(done / total) });
      } finally {
        fs.closeSync(fd);
      }
      try {
        assert.equal(copy.copied, true);
        assertFrozenCopy(copy.fd);
        const original = fs.readFileSync(makeFileSystem('erofs'));
        assert.equal(copy.size, original.length);
        assert.ok(readRange(copy.fd, 0, copy.size).equals(original));
        assert.equal(progress.at(-1), 1);
      } finally {
        fs.closeSync(copy.fd);
      }
    });
  }

  test('signed systemd-repart image (512-byte verity blocks) verifies', async () => {
    const { path: img, rootHash } = repartImage('squashfs');
    const copy = await verifyFile(img, layoutOf(img, rootHash));
    assert.equal(copy.superblock.dataBlockSize, 512);
    fs.closeSync(copy.fd);
  });

  test('a single data block (no hash levels) verifies against the root hash directly', async () => {
    const data = path.join(imageDir(), 'one-block');
    fs.writeFileSync(data, Buffer.alloc(4096, 7));
    const v = verityFormat(data, 4096, 4096);
    const img = path.join(imageDir(), 'one-block.img');
    fs.writeFileSync(img, Buffer.concat([fs.readFileSync(data), fs.readFileSync(v.hash)]));
    const l: Layout = { img, rootHash: Buffer.from(v.rootHash, 'hex'), data: { offset: 0, size: 4096 }, hash: { offset: 4096, size: fs.statSync(v.hash).size } };
    const copy = await verifyFile(img, l);
    fs.closeSync(copy.fd);
    await rejects('VerityFailure', verifyFile(flipped(img, 100, 'one-block-flip.img'), l));
  });

  test('one flipped byte in data, hash tree, salt or root hash → VerityFailure', async () => {
    const { path: img, rootHash } = handVerityImage('erofs', { dataBlockSize: 512, hashBlockSize: 512 });
    const l = layoutOf(img, rootHash);
    const sb = parseVeritySuperblock(fs.readFileSync(img).subarray(l.hash.offset, l.hash.offset + 512));
    const g = treeGeometry(sb);
    const dataBytes = sb.dataBlocks * sb.dataBlockSize;
    await rejects('VerityFailure', verifyFile(flipped(img, l.data.offset + dataBytes - 1, 'v-data-last.raw'), l));
    assert.ok(g.levels.length >= 3, 'the test needs a multi-level tree');
    await rejects('VerityFailure', verifyFile(flipped(img, l.data.offset + Math.floor(dataBytes / 2), 'v-data.raw'), l));
    const area = l.hash.offset + g.hashAreaOffset;
    await rejects('VerityFailure', verifyFile(flipped(img, area + 3, 'v-top.raw'), l));
    await rejects('VerityFailure', verifyFile(flipped(img, area + g.levels[0]!.start * sb.hashBlockSize + 40, 'v-level0.raw'), l));
    await rejects('VerityFailure', verifyFile(flipped(img, l.hash.offset + 88, 'v-salt.raw'), l));
    const wrong = Buffer.from(l.rootHash);
    wrong[31]! ^= 1;
    await rejects('VerityFailure', verifyFile(img, l, wrong));
  });

  test('non-zero spare digest slots are refused even when the hashes are consistent', async () => {
    // 5 data blocks: one level-0 hash block with 5 digests and 123 spare slots.
    const data = path.join(imageDir(), 'five-blocks');
    fs.writeFileSync(data, Buffer.alloc(5 * 4096, 3));
    const v = verityFormat(data, 4096, 4096);
    const hash = fs.readFileSync(v.hash);
    const sb = parseVeritySuperblock(hash);
    hash[4096 + 5 * 32 + 7] = 1;
    const root = createHash('sha256').update(sb.salt).update(hash.subarray(4096, 8192)).digest();
    const img = path.join(imageDir(), 'five-blocks.img');
    fs.writeFileSync(img, Buffer.concat([fs.readFileSync(data), hash]));
    const l: Layout = { img, rootHash: root, data: { offset: 0, size: 5 * 4096 }, hash: { offset: 5 * 4096, size: hash.length } };
    await assert.rejects(verifyFile(img, l), /spare area/);
  });

  test('truncated data or hash partition → IncompatibleImage', async () => {
    const { path: img, rootHash } = handVerityImage('erofs');
    const l = layoutOf(img, rootHash);
    await rejects('IncompatibleImage', verifyFile(img, { ...l, data: { offset: l.data.offset, size: 65536 } }));
    await rejects('IncompatibleImage', verifyFile(img, { ...l, hash: { offset: l.hash.offset, size: 8192 } }));
    const short = path.join(imageDir(), 'short.raw');
    fs.copyFileSync(img, short);
    fs.truncateSync(short, l.data.offset + 8192);
    await rejects('IncompatibleImage', verifyFile(short, l));
  });

  test('writing to the source after verification changes nothing in the copy', async () => {
    const { path: img, rootHash } = handVerityImage('erofs');
    const l = layoutOf(img, rootHash);
    const work = path.join(imageDir(), 'mutable.raw');
    fs.copyFileSync(img, work);
    const fd = fs.openSync(work, 'r+');
    let copy: VerifiedCopy | undefined;
    try {
      copy = await verifyPartition(fd, l.data, l.hash, l.rootHash);
      const before = readRange(copy.fd, 0, copy.size);
      fs.writeSync(fd, Buffer.alloc(65536, 0xee), 0, 65536, l.data.offset);
      assert.ok(readRange(copy.fd, 0, copy.size).equals(before));
      assert.throws(() => fs.writeSync(copy!.fd, Buffer.from('x'), 0, 1, 0), /EPERM|EBADF/);
    } finally {
      fs.closeSync(fd);
      if (copy) fs.closeSync(copy.fd);
    }
  });

  test('a sealed memfd source is verified in place, an unsealed one is copied', async () => {
    const { path: img, rootHash } = handVerityImage('erofs');
    const l = layoutOf(img, rootHash);
    const mfd = memfdCreate('verity-test');
    try {
      fs.writeSync(mfd, fs.readFileSync(img), 0, undefined, 0);
      const unsealed = await verifyPartition(mfd, l.data, l.hash, l.rootHash);
      assert.equal(unsealed.copied, true);
      fs.closeSync(unsealed.fd);
      addSeals(mfd, F_SEAL_ALL_DATA);
      const sealed = await verifyPartition(mfd, l.data, l.hash, l.rootHash);
      try {
        assert.equal(sealed.copied, false);
        assert.equal(sealed.offset, l.data.offset);
        assert.notEqual(sealed.fd, mfd);
        assert.equal(fs.fstatSync(sealed.fd).ino, fs.fstatSync(mfd).ino);
      } finally {
        fs.closeSync(sealed.fd);
      }
    } finally {
      fs.closeSync(mfd);
    }
  });
});

// How the native copy writes (src/native/hash.c): a step at a time into small pages, a whole
// 2 MiB chunk at a time where the destination takes huge pages (st_blksize). This host's copies
// use small pages (verified-copy.ts: free page reporting), so the huge-page way is checked here
// on a tmpfs mounted with huge=within_size: the copy holds exactly the source's bytes.
describe('native copy into small and huge pages', () => {
  for (const huge of ['never', 'within_size'] as const) {
    test(`huge=${huge}`, async () => {
      const { native } = await import('../../src/native/index.js');
      const mnt = fs.mkdtempSync(path.join(imageDir(), `huge-${huge}-`));
      run('mount', ['-t', 'tmpfs', '-o', `huge=${huge},size=64M,mode=0700`, 'none', mnt]);
      try {
        const bs = 4096;
        const count = (5 << 20) / bs + 3; // two whole chunks, a part, and a few blocks
        const data = Buffer.alloc(count * bs);
        for (let i = 0, x = 12345; i < data.length; i += 4) {
          x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
          data.writeUInt32LE(x, i);
        }
        const salt = Buffer.from('0123456789abcdef0123456789abcdef');
        const expected = Buffer.concat(Array.from({ length: count }, (_, i) => createHash('sha256').update(salt).update(data.subarray(i * bs, (i + 1) * bs)).digest()));
        const src = memfdCreate('verity-src');
        fs.writeSync(src, data, 0, data.length, 0);
        const dst = fs.openSync(path.join(mnt, 'copy'), fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
        try {
          fs.ftruncateSync(dst, data.length);
          assert.equal(fs.fstatSync(dst).blksize, huge === 'never' ? 4096 : 2 << 20);
          assert.equal(await native.verityVerifyFd(src, 0, dst, 0, bs, count, salt, expected, 32, 1), -1);
          const back = Buffer.alloc(data.length);
          fs.readSync(dst, back, 0, back.length, 0);
          assert.ok(back.equals(data), 'the copy holds the verified bytes');
        } finally {
          fs.closeSync(dst);
          fs.closeSync(src);
        }
      } finally {
        run('umount', [mnt]);
        fs.rmdirSync(mnt);
      }
    });
  }
});
