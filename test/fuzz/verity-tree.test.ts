// Fuzzes the userspace dm-verity verifier with small trees built here from first principles
// (sha256(salt ‖ block), cryptsetup's level layout): a correct tree always verifies, and a
// single flipped bit anywhere in the data, the tree or its zero padding is always VerityFailure.
// The hash partition is the last thing in the memfd, so a read past it would be "truncated".
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { MountFsError } from '../../src/mntfsd/errors.js';
import { verifyPartition } from '../../src/mntfsd/verity.js';
import { memfdCreate } from '../../src/sys/memfd.js';

const RUNS = process.env.MOUNTGATE_LONG === '1' ? 100_000 : 1000;

const digest = (salt: Buffer, block: Buffer): Buffer => createHash('sha256').update(salt).update(block).digest();

interface Built {
  image: Buffer;
  data: { offset: number; size: number };
  hash: { offset: number; size: number };
  root: Buffer;
  /** Byte ranges of the tree's hash blocks (within image). */
  treeStart: number;
}

function build(dataBlocks: number, dbs: number, hbs: number, salt: Buffer, seed: number): Built {
  const data = Buffer.alloc(dataBlocks * dbs);
  for (let i = 0, x = seed | 1; i < data.length; i += 4) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    data.writeUInt32LE(x, i);
  }
  // Levels bottom-up: each is the digests of the level below, packed into hash blocks.
  const per = hbs / 32;
  const levels: Buffer[] = [];
  let below = Array.from({ length: dataBlocks }, (_, i) => data.subarray(i * dbs, (i + 1) * dbs));
  while (below.length > 1) {
    const blocks = Math.ceil(below.length / per);
    const level = Buffer.alloc(blocks * hbs);
    below.forEach((b, i) => digest(salt, b).copy(level, Math.floor(i / per) * hbs + (i % per) * 32));
    levels.push(level);
    below = Array.from({ length: blocks }, (_, i) => level.subarray(i * hbs, (i + 1) * hbs));
  }
  const root = digest(salt, below[0]!);
  const sb = Buffer.alloc(512);
  sb.write('verity\0\0', 0, 'latin1');
  sb.writeUInt32LE(1, 8);
  sb.writeUInt32LE(1, 12);
  sb.write('sha256', 32, 'latin1');
  sb.writeUInt32LE(dbs, 64);
  sb.writeUInt32LE(hbs, 68);
  sb.writeBigUInt64LE(BigInt(dataBlocks), 72);
  sb.writeUInt16LE(salt.length, 80);
  salt.copy(sb, 88);
  const sbArea = Buffer.alloc(Math.ceil(512 / hbs) * hbs);
  sb.copy(sbArea);
  // Top level first on disk.
  const tree = Buffer.concat([...levels].reverse());
  const image = Buffer.concat([data, sbArea, tree]);
  return { image, data: { offset: 0, size: data.length }, hash: { offset: data.length, size: sbArea.length + tree.length }, root, treeStart: data.length + sbArea.length };
}

const arb = fc.record({
  dataBlocks: fc.integer({ min: 1, max: 70 }),
  dbs: fc.constantFrom(512, 1024, 4096),
  hbs: fc.constantFrom(512, 1024, 4096),
  salt: fc.uint8Array({ maxLength: 256 }),
  seed: fc.nat(),
  flip: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { freq: 3 }),
});

test(`small trees: good ones verify, any flipped bit in data or tree fails with VerityFailure (${RUNS} cases)`, async () => {
  await fc.assert(
    fc.asyncProperty(arb, async (c) => {
      const b = build(c.dataBlocks, c.dbs, c.hbs, Buffer.from(c.salt), c.seed);
      const image = Buffer.from(b.image);
      let where: 'data' | 'superblock' | 'tree' | null = null;
      if (c.flip) {
        const pos = c.flip[0] % image.length;
        image[pos]! ^= 1 << c.flip[1];
        where = pos < b.hash.offset ? 'data' : pos < b.treeStart ? 'superblock' : 'tree';
      }
      const fd = memfdCreate('fuzz-verity');
      fs.writeSync(fd, image, 0, image.length, 0);
      try {
        const copy = await verifyPartition(fd, b.data, b.hash, b.root, { copy: false });
        // A flipped bit may only go unnoticed in parts of the superblock the format ignores.
        assert.ok(where === null || where === 'superblock', `a flipped bit in the ${where} verified`);
        assert.equal(copy.size, b.data.size);
      } catch (err) {
        if (!(err instanceof MountFsError)) throw err;
        assert.notEqual(where, null, `a good tree failed: ${err.message}`);
        assert.doesNotMatch(err.detail, /truncated/, 'read outside the image');
        if (where !== 'superblock') assert.equal(err.kind, 'VerityFailure', err.message);
      } finally {
        fs.closeSync(fd);
      }
    }),
    { numRuns: RUNS },
  );
});

// The native SHA-256 (src/native/hash.c: SHA extensions, several blocks per pass, the salt's
// whole 64-byte blocks absorbed once) against node's, at every salt length where the message's
// split into 64-byte blocks changes, for block counts that leave each number of lanes over,
// with one wrong digest at each position.
for (const path of ['default', 'openssl'] as const) {
  test(`native salted SHA-256 (${path}) matches node crypto for every salt length and lane position`, async () => {
    const { native } = await import('../../src/native/index.js');
    // Read by each call (src/native/hash.c salted_init()).
    if (path === 'openssl') process.env.MOUNTGATE_HASH = 'openssl';
    try {
      for (const saltLen of [0, 1, 31, 32, 55, 56, 63, 64, 65, 119, 120, 128, 200, 256]) {
        for (const bs of [64, 512, 1024, 4096]) {
          const count = 9;
          const data = Buffer.alloc(bs * count);
          for (let i = 0, x = saltLen * 7919 + bs; i < data.length; i += 4) {
            x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
            data.writeUInt32LE(x, i);
          }
          const salt = Buffer.from(data.subarray(0, saltLen)).reverse();
          const expected = Buffer.concat(Array.from({ length: count }, (_, i) => digest(salt, data.subarray(i * bs, (i + 1) * bs))));
          assert.equal(await native.verityVerifyMemory(data, bs, count, salt, expected, 32, 1), -1, `salt ${saltLen}, block ${bs}`);
          for (const bad of [0, 3, 5, 8]) {
            const wrong = Buffer.from(expected);
            wrong[bad * 32 + 31]! ^= 1;
            assert.equal(await native.verityVerifyMemory(data, bs, count, salt, wrong, 32, 1), bad, `salt ${saltLen}, block ${bs}, bad ${bad}`);
          }
        }
      }
    } finally {
      delete process.env.MOUNTGATE_HASH;
    }
  });
}
