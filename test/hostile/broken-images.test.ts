// Broken images through MountImage on a real mntfsd (child process): valid images built by the
// real tools, then damaged. Each must be refused with the right error, the daemon's memory
// must stay bounded and nothing (fd, loop device) may be left behind.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { buildDdi } from '../../src/image-builder/build-ddi.js';
import { handVerityImage, imageDir, publish, removeImages, run, sampleTree, testCertDir, testDir, testKey } from '../support/images.js';
import { MntfsdProcess } from '../support/daemons.js';
import { assertNoNewLoops, loopDevices } from '../support/loops.js';
import { rawPeer } from '../support/raw-peer.js';

const MOUNT = 'io.systemd.MountFileSystem.MountImage';
const E = (n: string): string => `io.systemd.MountFileSystem.${n}`;

let dir: string;
let trusted: string;
let daemon: MntfsdProcess;
let signedA: string;
let signedB: string;
let verity: string;
let baseFds: number;
let rss0: number;
let loops0: Map<string, string>;

async function build(name: string): Promise<string> {
  const { key, cert } = testKey();
  const tree = path.join(imageDir(), `${name}-tree`);
  fs.cpSync(sampleTree(), tree, { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc/unique'), `${name}\n`);
  const out = path.join(imageDir(), `${name}.raw`);
  await buildDdi({ sourceDir: tree, output: out, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
  return out;
}

interface Part {
  start: number;
  size: number;
}
function partitions(image: string): Part[] {
  const j = JSON.parse(run('sfdisk', ['-J', image])) as { partitiontable: { partitions: Array<{ start: number; size: number }> } };
  return j.partitiontable.partitions.map((p) => ({ start: p.start * 512, size: p.size * 512 }));
}

/** A copy of `src` (in the trusted dir if asked) changed by `edit`. */
function damaged(src: string, name: string, edit: (buf: Buffer) => Buffer, inTrusted = false): string {
  const out = path.join(inTrusted ? trusted : dir, name);
  fs.writeFileSync(out, edit(fs.readFileSync(src)));
  return out;
}

/** Edits GPT entry `i` (0-based) and fixes both CRCs, so only the edit's meaning is wrong. */
function editGpt(buf: Buffer, edit: (hdr: Buffer, array: Buffer) => void): Buffer {
  const hdr = buf.subarray(512, 1024);
  const arrayLba = Number(hdr.readBigUInt64LE(72));
  const array = buf.subarray(arrayLba * 512, arrayLba * 512 + 128 * 128);
  edit(hdr, array);
  const count = Math.min(hdr.readUInt32LE(80), 128);
  hdr.writeUInt32LE(crc32(array.subarray(0, count * hdr.readUInt32LE(84))), 88);
  hdr.writeUInt32LE(0, 16);
  hdr.writeUInt32LE(crc32(hdr.subarray(0, hdr.readUInt32LE(12))), 16);
  return buf;
}

async function mount(image: string): Promise<Record<string, unknown>> {
  const p = rawPeer(daemon.sock);
  const fd = fs.openSync(image, 'r');
  p.call(MOUNT, { imageFileDescriptor: 0 }, [fd]);
  fs.closeSync(fd);
  try {
    return await p.nextReply();
  } finally {
    p.close();
  }
}

before(async () => {
  dir = testDir('hostile-broken-');
  trusted = path.join(dir, 'trusted');
  fs.mkdirSync(trusted, { mode: 0o755 });
  const certs = testCertDir(dir);
  [signedA, signedB] = await Promise.all([build('broken-a'), build('broken-b')]);
  verity = handVerityImage('ext4').path;
  loops0 = loopDevices();
  daemon = await MntfsdProcess.start(dir, { certificateDirectories: [certs], trustedDirectories: [trusted] });
  // Image B is mounted once so that lazily opened fds (OpenSSL's entropy source, …) are part of
  // the baseline. No image that gets damaged is mounted first: the cache is keyed by root hash, and a cache hit never
  // reads the damaged metadata again. The last test shows the undamaged images mount.
  assert.equal((await mount(publish(signedB, dir, 'b.raw'))).error, undefined);
  baseFds = await daemon.quietFdCount();
  rss0 = daemon.rssKiB();
});

after(async () => {
  await daemon?.stop();
  if (loops0) await assertNoNewLoops(loops0, 'after stopping mntfsd');
  removeImages();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function refused(image: string, expected: string | string[], what: string): Promise<void> {
  const r = await mount(image);
  const allowed = Array.isArray(expected) ? expected : [expected];
  assert.ok(allowed.includes(r.error as string), `${what}: ${JSON.stringify(r)}`);
  await daemon.settleFds(baseFds, what);
  assert.ok(daemon.alive, daemon.log());
}

describe('truncated', () => {
  for (const [name, size] of [['to 0 bytes', () => 0], ['to 600 bytes', () => 600], ['inside the GPT array', () => 4096], ['inside the data partition', (p: Part[]) => p[0]!.start + 8192], ['inside the hash partition', (p: Part[]) => p[1]!.start + 4096], ['into the backup GPT', (_p: Part[], n: number) => n - 34 * 512]] as const) {
    test(`signed image truncated ${name} → IncompatibleImage`, async () => {
      const total = fs.statSync(signedA).size;
      const img = damaged(signedA, `trunc-${name.replace(/\W/g, '')}.raw`, (b) => b.subarray(0, (size as (p: Part[], n: number) => number)(partitions(signedA), total)));
      await refused(img, E('IncompatibleImage'), name);
    });
  }
});

describe('GPT', () => {
  test('an entry past the end of the image → IncompatibleImage', async () => {
    const img = damaged(signedA, 'past-end.raw', (b) => editGpt(b, (_h, a) => a.writeBigUInt64LE(BigInt(b.length / 512 + 100), 40)));
    await refused(img, E('IncompatibleImage'), 'past the end');
  });

  test('an entry ending at 2^64-1 → IncompatibleImage', async () => {
    const img = damaged(signedA, 'u64max.raw', (b) => editGpt(b, (_h, a) => a.writeBigUInt64LE((1n << 64n) - 1n, 40)));
    await refused(img, E('IncompatibleImage'), '2^64-1');
  });

  test('overlapping entries → IncompatibleImage', async () => {
    const img = damaged(signedA, 'overlap.raw', (b) => editGpt(b, (_h, a) => a.writeBigUInt64LE(a.readBigUInt64LE(40) - 8n, 128 + 32)));
    await refused(img, E('IncompatibleImage'), 'overlap');
  });

  for (const count of [0, 1025, 0xffffffff]) {
    test(`entry count ${count} → IncompatibleImage`, async () => {
      const img = damaged(signedA, `count-${count}.raw`, (b) => editGpt(b, (h) => h.writeUInt32LE(count, 80)));
      await refused(img, E('IncompatibleImage'), `count ${count}`);
    });
  }

  test('entry size 2^31 → IncompatibleImage', async () => {
    const img = damaged(signedA, 'entry-size.raw', (b) => editGpt(b, (h) => h.writeUInt32LE(0x80000000, 84)));
    await refused(img, E('IncompatibleImage'), 'entry size');
  });
});

describe('Verity hash tree (trusted unsigned image, so verification decides)', () => {
  const sb = (b: Buffer): number => partitions(verity)[1]!.start + b.length * 0;
  const cases: Array<[string, (b: Buffer, at: number) => void, string | string[]]> = [
    ['data block count + 1 (wrong number of levels/blocks)', (b, at) => b.writeBigUInt64LE(b.readBigUInt64LE(at + 72) + 1n, at + 72), [E('VerityFailure'), E('IncompatibleImage')]],
    ['data block count × 128 (one more level)', (b, at) => b.writeBigUInt64LE(b.readBigUInt64LE(at + 72) * 128n, at + 72), E('IncompatibleImage')],
    ['data block count 2^63 (overflow)', (b, at) => b.writeBigUInt64LE(1n << 63n, at + 72), E('IncompatibleImage')],
    ['data block count 2^64-1', (b, at) => b.writeBigUInt64LE((1n << 64n) - 1n, at + 72), E('IncompatibleImage')],
    ['data block count 0', (b, at) => b.writeBigUInt64LE(0n, at + 72), E('IncompatibleImage')],
    ['salt size 257', (b, at) => b.writeUInt16LE(257, at + 80), E('IncompatibleImage')],
    ['salt size 65535', (b, at) => b.writeUInt16LE(65535, at + 80), E('IncompatibleImage')],
    ['hash block size 8192', (b, at) => b.writeUInt32LE(8192, at + 68), E('IncompatibleImage')],
    ['hash block size 3000', (b, at) => b.writeUInt32LE(3000, at + 68), E('IncompatibleImage')],
    ['hash type 0', (b, at) => b.writeUInt32LE(0, at + 12), E('IncompatibleImage')],
    ['algorithm sha1', (b, at) => b.write('sha1\0\0', at + 32, 'latin1'), E('IncompatibleImage')],
    ['non-zero byte in the top hash block padding', (b, at) => {
      // The top block holds few digests; its last byte is padding.
      b[at + 4096 + 4095] = 1;
    }, E('VerityFailure')],
    ['a flipped bit in a level-0 digest', (b, at) => {
      let end = at + partitions(verity)[1]!.size - 1;
      while (end > at && b[end] === 0) end--;
      b[end]! ^= 1;
    }, E('VerityFailure')],
  ];
  for (const [name, edit, expected] of cases) {
    test(`${name} → ${Array.isArray(expected) ? expected.join(' or ') : expected}`, async () => {
      const img = damaged(verity, `v-${name.replace(/\W/g, '')}.raw`, (b) => {
        edit(b, sb(b));
        return b;
      }, true);
      await refused(img, expected, name);
    });
  }
});

describe('signatures', () => {
  const sigOf = (img: string): Buffer => {
    const p = partitions(img)[2]!;
    return fs.readFileSync(img).subarray(p.start, p.start + p.size);
  };

  test("a PKCS#7 signature over another image's root hash → KeyNotFound", async () => {
    const a = JSON.parse(sigOf(signedA).toString('utf8').replace(/\0+$/, '')) as { rootHash: string; signature: string };
    const b = JSON.parse(sigOf(signedB).toString('utf8').replace(/\0+$/, '')) as { signature: string };
    const img = damaged(signedA, 'other-sig.raw', (buf) => {
      const p = partitions(signedA)[2]!;
      const json = Buffer.from(JSON.stringify({ ...a, signature: b.signature }));
      buf.fill(0, p.start, p.start + p.size);
      json.copy(buf, p.start);
      return buf;
    });
    await refused(img, E('KeyNotFound'), 'signature over another hash');
  });

  test("another image's whole signature partition → no root partition it covers", async () => {
    const img = damaged(signedA, 'other-sig-part.raw', (buf) => {
      const p = partitions(signedA)[2]!;
      sigOf(signedB).copy(buf, p.start);
      return buf;
    });
    await refused(img, [E('RootPartitionNotFound'), E('DeniedByImagePolicy')], 'foreign signature partition');
  });

  test('a verity-sig partition full of garbage → IncompatibleImage', async () => {
    const img = damaged(signedA, 'garbage-sig.raw', (buf) => {
      const p = partitions(signedA)[2]!;
      for (let i = p.start, x = 7; i < p.start + p.size; i++) buf[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
      return buf;
    });
    await refused(img, E('IncompatibleImage'), 'garbage signature');
  });

  test('a verity-sig partition with valid JSON but a garbage PKCS#7 → io.systemd.System EBADMSG', async () => {
    const a = JSON.parse(sigOf(signedA).toString('utf8').replace(/\0+$/, '')) as Record<string, string>;
    const img = damaged(signedA, 'garbage-pkcs7.raw', (buf) => {
      const p = partitions(signedA)[2]!;
      buf.fill(0, p.start, p.start + p.size);
      Buffer.from(JSON.stringify({ ...a, signature: Buffer.alloc(300, 0x30).toString('base64') })).copy(buf, p.start);
      return buf;
    });
    const r = await mount(img);
    assert.equal(r.error, 'io.systemd.System', JSON.stringify(r));
    assert.equal((r.parameters as { errnoName: string }).errnoName, 'EBADMSG');
    await daemon.settleFds(baseFds, 'garbage PKCS#7');
  });
});

test('memory stayed bounded and nothing leaked over all broken images; the undamaged ones mount', async () => {
  await daemon.assertServing();
  assert.equal((await mount(publish(signedA, dir, 'a.raw'))).error, undefined);
  assert.equal((await mount(publish(verity, trusted, 'verity.raw'))).error, undefined);
  baseFds += 2; // their cached base mounts
  await daemon.settleFds(baseFds, 'end');
  const grown = daemon.rssKiB() - rss0;
  // Bound: 128 MiB over the whole file (the images are ~10 MiB; a leak of a copy per image would exceed it).
  assert.ok(grown < 128 * 1024, `RSS grew by ${Math.round(grown / 1024)} MiB`);
});
