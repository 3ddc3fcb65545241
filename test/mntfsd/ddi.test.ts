import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { dissectImage, detectFileSystem, type DissectedImage } from '../../src/mntfsd/ddi/dissect.js';
import { parseGpt } from '../../src/mntfsd/ddi/gpt.js';
import { typeUuidOf } from '../../src/mntfsd/ddi/dps.js';
import { isMountFsError, type MountFsErrorName } from '../../src/mntfsd/errors.js';
import {
  type FsKind,
  flipped,
  gptImage,
  handVerityImage,
  imageDir,
  makeFileSystem,
  removeImages,
  repartImage,
  run,
  systemdDissect,
  verityFormat,
  verityUuids,
} from '../support/images.js';

after(removeImages);

function withFd<T>(file: string, f: (fd: number) => T): T {
  const fd = fs.openSync(file, 'r');
  try {
    return f(fd);
  } finally {
    fs.closeSync(fd);
  }
}

const dissect = (file: string, opts = {}): DissectedImage => withFd(file, (fd) => dissectImage(fd, opts));

function assertFails(kind: MountFsErrorName, f: () => unknown): void {
  assert.throws(f, (err: unknown) => isMountFsError(err, kind) || assert.fail(`expected ${kind}, got ${String(err)}`));
}

/** Our view must agree with systemd-dissect on every partition systemd reports. */
function crossCheck(img: string): DissectedImage {
  const ours = dissect(img);
  const theirs = systemdDissect(img);
  assert.equal(ours.partitions.length, theirs.mounts.length);
  for (const m of theirs.mounts) {
    const p = ours.partitions.find((x) => x.partitionNumber === m.partno);
    assert.ok(p, `partition ${m.partno} missing`);
    assert.equal(p.designator, m.designator);
    assert.equal(p.partitionUuid, m.partition_uuid);
    assert.equal(p.partitionLabel, m.partition_label);
    assert.equal(p.fileSystemType, m.fstype);
    assert.equal(p.architecture, m.architecture);
    if (m.designator === 'root') assert.equal(p.readOnly, m.rw === 'ro');
    assert.equal(p.growFileSystem, m.growfs);
  }
  return ours;
}

describe('dissect: images from systemd-repart', () => {
  for (const format of ['squashfs', 'ext4'] as const) {
    test(`signed ${format} DDI matches systemd-dissect and pairs by the signed root hash`, () => {
      const { path: img, rootHash } = repartImage(format);
      const d = crossCheck(img);
      assert.equal(d.partitionTable, true);
      assert.equal(d.sectorSize, 512);
      const root = d.partitions.find((p) => p.designator === 'root')!;
      assert.equal(root.verity?.source, 'signature');
      assert.equal(root.verity?.rootHash, rootHash);
      assert.equal(root.verity?.hash.partitionNumber, d.partitions.find((p) => p.designator === 'root-verity')!.partitionNumber);
      assert.ok(root.verity?.signature);
    });
  }
});

describe('dissect: images made by hand (sfdisk + mkfs + veritysetup)', () => {
  test('512-byte sectors, erofs + verity: matches systemd-dissect, pairs by UUIDs', () => {
    const { path: img, rootHash } = handVerityImage('erofs');
    const d = crossCheck(img);
    const root = d.partitions.find((p) => p.designator === 'root')!;
    assert.equal(root.fileSystemType, 'erofs');
    assert.deepEqual([root.verity?.source, root.verity?.rootHash], ['uuids', rootHash]);
    assert.equal(root.partitionLabel, 'root_1.0');
    assert.equal(d.partitions.find((p) => p.designator === 'root-verity')!.readOnly, true);
  });

  test('4096-byte sectors are found at offset 4096', () => {
    const { path: img, rootHash } = handVerityImage('squashfs', { sectorSize: 4096 });
    const d = dissect(img);
    assert.equal(d.sectorSize, 4096);
    const root = d.partitions.find((p) => p.designator === 'root')!;
    assert.equal(root.fileSystemType, 'squashfs');
    assert.equal(root.offset, 1 << 20);
    assert.equal(root.verity?.rootHash, rootHash);
    // A 512-byte-sector reader sees only the protective MBR: the GPT really is 4K-only.
    const dump = JSON.parse(run('sfdisk', ['--json', img])) as { partitiontable: { label: string; partitions: Array<{ type: string }> } };
    assert.deepEqual([dump.partitiontable.label, dump.partitiontable.partitions.map((p) => p.type)], ['dos', ['ee']]);
  });

  test('an external root hash selects matching partitions; a foreign one finds no root', () => {
    const { path: img, rootHash } = handVerityImage('erofs');
    const d = dissect(img, { rootHash });
    assert.equal(d.partitions.find((p) => p.designator === 'root')!.verity?.source, 'external');
    assertFails('RootPartitionNotFound', () => dissect(img, { rootHash: 'ab'.repeat(32) }));
  });

  test('A/B: the newest label wins, equal labels are ambiguous, PRT#/PND# and no-auto are ignored', () => {
    const data = makeFileSystem('erofs');
    const pick = (labels: Array<[string, string?]>): DissectedImage =>
      dissect(gptImage(`ab-${labels.map((l) => l.join('')).join('-').replace(/[#/]/g, '_')}.raw`, labels.map(([label, attrs]) => ({ designator: 'root', file: data, label, attrs }))));
    const number = (d: DissectedImage): number | null => d.partitions.find((p) => p.designator === 'root')!.partitionNumber;
    assert.equal(number(pick([['root_1.9'], ['root_1.10'], ['root_1.2']])), 2);
    assert.equal(number(pick([['root_2'], ['PRT#root_3'], ['PND#root_4']])), 1);
    assert.equal(number(pick([['root_2'], ['root_3', 'GUID:63']])), 1);
    assertFails('MultipleRootPartitionsFound', () => pick([['root_5'], ['root_5']]));
  });

  test('no root or usr partition → RootPartitionNotFound; foreign architecture is skipped', () => {
    const data = makeFileSystem('ext4');
    const home = gptImage('home-only.raw', [{ designator: 'home', file: data }]);
    assertFails('RootPartitionNotFound', () => dissect(home));
    assert.equal(dissect(home, { requireRoot: false }).partitions[0]!.designator, 'home');
    const arm = gptImage('arm.raw', [{ designator: 'root', architecture: 'arm64', file: data }]);
    assertFails('RootPartitionNotFound', () => dissect(arm));
    assert.equal(dissect(arm, { architecture: 'arm64' }).partitions[0]!.architecture, 'arm64');
  });

  test('usr + home + srv + var + tmp + swap with flags', () => {
    const ext4 = makeFileSystem('ext4');
    const img = gptImage('multi.raw', [
      { designator: 'usr', file: makeFileSystem('squashfs'), attrs: 'GUID:60' },
      { designator: 'home', file: ext4, attrs: 'GUID:59' },
      { designator: 'srv', file: ext4 },
      { designator: 'var', file: ext4 },
      { designator: 'tmp', file: ext4 },
      { designator: 'swap', file: makeFileSystem('swap') },
    ]);
    const d = crossCheck(img);
    const by = (x: string) => d.partitions.find((p) => p.designator === x)!;
    assert.equal(by('usr').readOnly, true);
    assert.equal(by('home').growFileSystem, true);
    assert.equal(by('swap').fileSystemType, 'swap');
    assert.equal(d.partitions.length, 6);
  });
});

describe('dissect: bare file systems', () => {
  for (const kind of ['ext4', 'erofs', 'squashfs', 'btrfs', 'xfs'] as const satisfies FsKind[]) {
    test(`${kind} without partition table is one root partition; type agrees with blkid`, () => {
      const img = makeFileSystem(kind);
      const d = dissect(img);
      assert.equal(d.partitionTable, false);
      assert.equal(d.partitions.length, 1);
      const p = d.partitions[0]!;
      assert.deepEqual([p.designator, p.partitionNumber, p.offset, p.size], ['root', null, 0, fs.statSync(img).size]);
      assert.equal(p.fileSystemType, run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', img]).trim());
    });
  }

  test('swap, a verity hash file or random bytes are not images', () => {
    assertFails('IncompatibleImage', () => dissect(makeFileSystem('swap')));
    assertFails('IncompatibleImage', () => dissect(verityFormat(makeFileSystem('erofs'), 4096, 4096).hash));
    const junk = path.join(imageDir(), 'junk.raw');
    fs.writeFileSync(junk, Buffer.alloc(1 << 20, 0x5a));
    assertFails('IncompatibleImage', () => dissect(junk));
    withFd(junk, (fd) => assert.equal(detectFileSystem(fd, 0, 1 << 20), null));
  });
});

// ---- hand-crafted GPTs for the malformed cases ----

interface CraftEntry {
  first: number;
  last: number;
  type?: string;
}

function guidBytes(uuid: string): Buffer {
  const h = uuid.replaceAll('-', '');
  const b = Buffer.from(h, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** A GPT with valid CRCs over whatever (possibly absurd) values are asked for. */
function craftGpt(o: { entries: CraftEntry[]; count?: number; entrySize?: number; sectors?: number; ss?: number; lastUsable?: number }): Buffer {
  const ss = o.ss ?? 512;
  const sectors = o.sectors ?? 2048;
  const count = o.count ?? 128;
  const entrySize = o.entrySize ?? 128;
  const img = Buffer.alloc(sectors * ss);
  const arrayLen = Math.min(count * entrySize, img.length - 2 * ss);
  const array = img.subarray(2 * ss, 2 * ss + arrayLen);
  o.entries.forEach((e, i) => {
    const at = i * entrySize;
    guidBytes(e.type ?? typeUuidOf('root', 'x86-64')!).copy(array, at);
    guidBytes('11111111-2222-3333-4444-55555555555' + i.toString(16)).copy(array, at + 16);
    array.writeBigUInt64LE(BigInt(e.first), at + 32);
    array.writeBigUInt64LE(BigInt(e.last), at + 40);
  });
  const h = img.subarray(ss, 2 * ss);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(92, 12);
  h.writeBigUInt64LE(1n, 24);
  h.writeBigUInt64LE(BigInt(sectors - 1), 32);
  h.writeBigUInt64LE(34n, 40);
  h.writeBigUInt64LE(BigInt(o.lastUsable ?? sectors - 34), 48);
  h.writeBigUInt64LE(2n, 72);
  h.writeUInt32LE(count >>> 0, 80);
  h.writeUInt32LE(entrySize, 84);
  h.writeUInt32LE(crc32(img.subarray(2 * ss, 2 * ss + count * entrySize)), 88);
  h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
  return img;
}

function parseBuffer(b: Buffer): unknown {
  const f = path.join(imageDir(), 'crafted.raw');
  fs.writeFileSync(f, b);
  return withFd(f, (fd) => parseGpt(fd, b.length));
}

describe('GPT: malformed tables', () => {
  const good = (): Buffer => craftGpt({ entries: [{ first: 40, last: 100 }, { first: 200, last: 300 }] });

  test('the crafted baseline parses', () => {
    const t = parseBuffer(good()) as { entries: unknown[] };
    assert.equal(t.entries.length, 2);
  });

  test('a flipped byte in the header or entry array of a real image is refused', () => {
    const { path: img } = repartImage('squashfs');
    assertFails('IncompatibleImage', () => dissect(flipped(img, 512 + 60, 'flip-hdr.raw')));
    assertFails('IncompatibleImage', () => dissect(flipped(img, 1024 + 20, 'flip-entry.raw')));
  });

  test('truncated files, entries past the end or outside the usable area, overlaps, absurd counts', () => {
    const b = good();
    assertFails('IncompatibleImage', () => parseBuffer(b.subarray(0, 600)));
    assertFails('IncompatibleImage', () => parseBuffer(b.subarray(0, 300 * 512)));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [{ first: 40, last: 5000 }] })));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [{ first: 10, last: 50 }] })));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [{ first: 100, last: 40 }] })));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [{ first: 40, last: 100 }, { first: 100, last: 120 }] })));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [], count: 0xffffffff })));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [], count: 4096 })));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [], entrySize: 100 })));
    assertFails('IncompatibleImage', () => parseBuffer(craftGpt({ entries: [], lastUsable: 1e6 })));
    assertFails('IncompatibleImage', () =>
      parseBuffer(craftGpt({ entries: [{ first: 40, last: Number.MAX_SAFE_INTEGER }] })));
  });

  test('property: random and mutated input only ever fails with a typed error (1000 cases)', () => {
    const base = good();
    const mutation = fc.oneof(
      fc.array(fc.record({ at: fc.nat(34 * 512 - 1), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }).map((muts) => {
        const b = Buffer.from(base);
        for (const m of muts) b[m.at] = m.value;
        return b;
      }),
      fc.uint8Array({ minLength: 0, maxLength: 40 * 512 }).map((a) => {
        const b = Buffer.from(a);
        if (b.length >= 520) b.write('EFI PART', 512, 'latin1');
        return b;
      }),
      fc.nat(base.length).map((n) => base.subarray(0, n)),
    );
    fc.assert(
      fc.property(mutation, (b) => {
        try {
          parseBuffer(b);
        } catch (err) {
          if (!isMountFsError(err, 'IncompatibleImage')) throw err;
        }
      }),
      { numRuns: 1000 },
    );
  });
});

test('verity UUID helper agrees with systemd-repart', () => {
  const { path: img, rootHash } = repartImage('ext4');
  const d = dissect(img);
  const u = verityUuids(rootHash);
  assert.equal(d.partitions.find((p) => p.designator === 'root')!.partitionUuid, u.data);
  assert.equal(d.partitions.find((p) => p.designator === 'root-verity')!.partitionUuid, u.hash);
});
