// Property-based fuzzing of the parsers that read untrusted input: GPT (and dissection on top of
// it), the Verity superblock, the verity-sig JSON and its PKCS#7, image policies, Varlink IDL and
// call parameters.
// 1k cases each by default, 100k with MOUNTGATE_LONG=1. Properties: only the module's typed
// error ever escapes, and nothing is read outside the image (the image is a memfd of exactly the
// given size, so a read past its end would surface as an "image truncated" error).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { dissectImage } from '../../src/mntfsd/ddi/dissect.js';
import { parseGpt } from '../../src/mntfsd/ddi/gpt.js';
import { MountFsError } from '../../src/mntfsd/errors.js';
import {
  ImagePolicyError, equivalentPolicies, evaluatePartition, formatImagePolicy, intersectImagePolicies, parseImagePolicy, DESIGNATORS,
} from '../../src/mntfsd/image-policy.js';
import { parseVeritySignature, verifyVeritySignature, VeritySignatureError } from '../../src/mntfsd/signature.js';
import { parseVeritySuperblock, treeGeometry, MAX_SALT_SIZE } from '../../src/mntfsd/verity.js';
import { IdlError, formatInterface, parseInterface } from '../../src/ipc/idl.js';
import { validateCall, validateParameters } from '../../src/ipc/validate.js';
import { MntfsdStatus } from '../../src/ipc/interfaces/io.mountgate.Mntfsd.js';
import { MountFileSystem } from '../../src/ipc/interfaces/io.systemd.MountFileSystem.js';
import { memfdCreate } from '../../src/sys/memfd.js';

const RUNS = process.env.MOUNTGATE_LONG === '1' ? 100_000 : 1000;
const opts = { numRuns: RUNS };

/** A memfd holding exactly `bytes`. */
function memfdOf(bytes: Uint8Array): number {
  const fd = memfdCreate('fuzz');
  if (bytes.length) fs.writeSync(fd, bytes, 0, bytes.length, 0);
  return fd;
}

function expectTyped(err: unknown): void {
  if (!(err instanceof MountFsError)) throw err;
  assert.doesNotMatch(err.detail, /image truncated/, 'read outside the image');
}

// ---------------------------------------------------------------------------------------------
// GPT: structurally valid tables (right CRCs, so the parser goes deep) with hostile field values.

const ROOT_X86_64 = '4f68bce3-e8cd-4db1-96e7-fbcaf984b709';
const ROOT_VERITY_X86_64 = '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5';
const ROOT_VERITY_SIG_X86_64 = '41092b05-9fc8-4523-994f-2def0408b176';
const HOME = '933ac7e1-2eb4-4f13-b844-0e14e2aef915';

function guidBytes(uuid: string): Buffer {
  const b = Buffer.from(uuid.replaceAll('-', ''), 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

const u64 = fc.oneof(
  fc.bigInt({ min: 0n, max: 4096n }),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  fc.constantFrom(0n, 1n, 2n, 33n, 34n, 2047n, 2048n, (1n << 53n) - 1n, 1n << 53n, (1n << 63n) - 1n, (1n << 64n) - 1n),
);
const u32 = fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(0, 1, 92, 128, 256, 1024, 1025, 0x7fffffff, 0xffffffff), fc.nat());

const entryArb = fc.record({
  type: fc.constantFrom(ROOT_X86_64, ROOT_VERITY_X86_64, ROOT_VERITY_SIG_X86_64, HOME, '00000000-0000-0000-0000-000000000000', '0fc63daf-8483-4772-8e79-3d69d8477de4'),
  uuid: fc.uuid(),
  first: u64,
  last: u64,
  attrs: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  label: fc.string({ maxLength: 36 }),
});

const gptArb = fc.record({
  sectorSize: fc.constantFrom(512, 4096),
  sectors: fc.integer({ min: 3, max: 256 }),
  headerSize: fc.oneof(fc.constant(92), u32),
  revision: fc.oneof(fc.constant(0x00010000), u32),
  currentLba: fc.oneof(fc.constant(1n), u64),
  firstUsable: fc.oneof(fc.constant(34n), u64),
  lastUsable: u64,
  entriesLba: fc.oneof(fc.constant(2n), u64),
  count: fc.oneof(fc.constantFrom(128, 4), u32),
  entrySize: fc.oneof(fc.constant(128), u32),
  entries: fc.array(entryArb, { maxLength: 6 }),
  flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 3 }),
  fixCrcAfterFlips: fc.boolean(),
});

type GptCase = typeof gptArb extends fc.Arbitrary<infer T> ? T : never;

function buildGpt(g: GptCase): Buffer {
  const ss = g.sectorSize;
  const img = Buffer.alloc(g.sectors * ss);
  const count = g.count;
  const entrySize = g.entrySize;
  const arrayLen = Math.min(count * entrySize, 1 << 20);
  const array = Buffer.alloc(Number.isFinite(arrayLen) ? arrayLen : 0);
  g.entries.forEach((e, i) => {
    const off = i * entrySize;
    if (off + 128 > array.length) return;
    guidBytes(e.type).copy(array, off);
    guidBytes(e.uuid).copy(array, off + 16);
    array.writeBigUInt64LE(e.first, off + 32);
    array.writeBigUInt64LE(e.last, off + 40);
    array.writeBigUInt64LE(e.attrs, off + 48);
    array.write(e.label, off + 56, 72, 'utf16le');
  });
  const hdr = Buffer.alloc(ss);
  hdr.write('EFI PART', 0, 'latin1');
  hdr.writeUInt32LE(g.revision >>> 0, 8);
  hdr.writeUInt32LE(g.headerSize >>> 0, 12);
  hdr.writeBigUInt64LE(g.currentLba, 24);
  hdr.writeBigUInt64LE(BigInt(g.sectors - 1), 32);
  hdr.writeBigUInt64LE(g.firstUsable, 40);
  hdr.writeBigUInt64LE(g.lastUsable, 48);
  guidBytes('11111111-2222-3333-4444-555555555555').copy(hdr, 56);
  hdr.writeBigUInt64LE(g.entriesLba, 72);
  hdr.writeUInt32LE(count >>> 0, 80);
  hdr.writeUInt32LE(entrySize >>> 0, 84);
  hdr.writeUInt32LE(crc32(array), 88);
  const place = (): void => {
    hdr.copy(img, ss);
    if (g.entriesLba < BigInt(g.sectors)) array.copy(img, Number(g.entriesLba) * ss);
  };
  const fixHeaderCrc = (): void => {
    const n = Math.min(Math.max(g.headerSize >>> 0, 0), ss);
    hdr.writeUInt32LE(0, 16);
    hdr.writeUInt32LE(crc32(hdr.subarray(0, n)), 16);
  };
  fixHeaderCrc();
  place();
  for (const [pos, x] of g.flips) img[pos % img.length]! ^= x;
  if (g.fixCrcAfterFlips) {
    img.copy(hdr, 0, ss, 2 * ss);
    fixHeaderCrc();
    hdr.copy(img, ss);
  }
  return img;
}

describe('GPT parser', () => {
  test(`hostile but CRC-correct tables: typed errors, partitions inside the usable area (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(gptArb, (g) => {
        const img = buildGpt(g);
        const fd = memfdOf(img);
        try {
          const t = parseGpt(fd, img.length);
          const sorted = [...t.entries].sort((a, b) => a.offset - b.offset);
          for (const [i, e] of sorted.entries()) {
            assert.ok(e.offset >= 2 * t.sectorSize && e.size > 0 && e.offset + e.size <= img.length, `entry ${e.number} outside the image`);
            if (i > 0) assert.ok(sorted[i - 1]!.offset + sorted[i - 1]!.size <= e.offset, 'overlap');
          }
        } catch (err) {
          expectTyped(err);
        } finally {
          fs.closeSync(fd);
        }
      }),
      opts,
    );
  });

  test(`dissection of the same tables: only MountFsError, nothing read outside (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(gptArb, (g) => {
        const img = buildGpt(g);
        const fd = memfdOf(img);
        try {
          const d = dissectImage(fd, { architecture: 'x86-64' });
          for (const p of d.partitions) assert.ok(p.offset + p.size <= img.length);
        } catch (err) {
          expectTyped(err);
        } finally {
          fs.closeSync(fd);
        }
      }),
      opts,
    );
  });

  test(`random bytes: only MountFsError (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 9000 }), fc.boolean(), (bytes, withMagic) => {
        const img = Buffer.from(bytes);
        if (withMagic && img.length >= 520) img.write('EFI PART', 512, 'latin1');
        const fd = memfdOf(img);
        try {
          dissectImage(fd, { size: img.length || 1 });
        } catch (err) {
          // size 1 for an empty memfd: the only case where a short read is expected
          if (img.length === 0 && err instanceof MountFsError) return;
          expectTyped(err);
        } finally {
          fs.closeSync(fd);
        }
      }),
      opts,
    );
  });
});

// ---------------------------------------------------------------------------------------------

const superblockArb = fc.record({
  magic: fc.oneof(fc.constant('verity\0\0'), fc.string({ minLength: 8, maxLength: 8 })),
  version: fc.oneof(fc.constant(1), u32),
  hashType: fc.oneof(fc.constant(1), u32),
  algorithm: fc.oneof(fc.constantFrom('sha256', 'SHA256', 'sha1', 'sha256\0x', ''), fc.string({ maxLength: 40 })),
  dataBlockSize: fc.oneof(fc.constantFrom(512, 1024, 2048, 4096, 8192, 0, 3000), u32),
  hashBlockSize: fc.oneof(fc.constantFrom(512, 1024, 2048, 4096, 8192, 0, 3000), u32),
  dataBlocks: u64,
  saltSize: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.constant(65535)),
  salt: fc.uint8Array({ maxLength: 424 }),
});

describe('Verity superblock', () => {
  test(`parse: MountFsError or sane values; geometry consistent (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(superblockArb, (s) => {
        const b = Buffer.alloc(512);
        b.write(s.magic, 0, 8, 'latin1');
        b.writeUInt32LE(s.version >>> 0, 8);
        b.writeUInt32LE(s.hashType >>> 0, 12);
        b.write(s.algorithm, 32, 32, 'latin1');
        b.writeUInt32LE(s.dataBlockSize >>> 0, 64);
        b.writeUInt32LE(s.hashBlockSize >>> 0, 68);
        b.writeBigUInt64LE(s.dataBlocks, 72);
        b.writeUInt16LE(s.saltSize, 80);
        Buffer.from(s.salt).copy(b, 88);
        let sb;
        try {
          sb = parseVeritySuperblock(b);
        } catch (err) {
          expectTyped(err);
          return;
        }
        assert.ok(sb.salt.length <= MAX_SALT_SIZE);
        assert.ok(Number.isSafeInteger(sb.dataBlocks * sb.dataBlockSize));
        const g = treeGeometry(sb);
        const per = sb.hashBlockSize / 32;
        if (sb.dataBlocks > 1) assert.equal(g.levels[0]!.blocks, Math.ceil(sb.dataBlocks / per));
        if (g.levels.length) assert.equal(g.levels.at(-1)!.blocks, 1);
        assert.equal(g.treeBytes, g.levels.reduce((n, l) => n + l.blocks, 0) * sb.hashBlockSize);
        assert.ok(Number.isSafeInteger(g.treeBytes));
      }),
      opts,
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('verity-sig JSON and PKCS#7', () => {
  const jsonish = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.json().map((j) => new TextEncoder().encode(j)),
    fc
      .record({
        rootHash: fc.oneof(fc.stringMatching(/^[0-9a-fA-F]{0,140}$/), fc.string(), fc.integer()),
        certificateFingerprint: fc.option(fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.string())),
        signature: fc.oneof(fc.base64String({ maxLength: 400 }), fc.string(), fc.constant('')),
        extra: fc.jsonValue(),
      }, { requiredKeys: [] })
      .chain((o) => fc.tuple(fc.constant(o), fc.nat({ max: 64 }), fc.uint8Array({ maxLength: 4 })))
      .map(([o, pad, junk]) => {
        const text = new TextEncoder().encode(JSON.stringify(o));
        const out = new Uint8Array(text.length + pad + junk.length);
        out.set(text, 0);
        out.set(junk, text.length + pad);
        return out;
      }),
  );

  test(`parse: VeritySignatureError or a well-formed signature (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(jsonish, (bytes) => {
        try {
          const s = parseVeritySignature(bytes);
          assert.match(s.rootHash, /^([0-9a-f]{2}){16,64}$/);
          assert.ok(s.signature.length > 0);
        } catch (err) {
          if (!(err instanceof VeritySignatureError)) throw err;
        }
      }),
      opts,
    );
  });

  test(`verify garbage PKCS#7: VeritySignatureError only (${Math.min(RUNS, 20_000)} cases)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.boolean(), async (der, sequence) => {
        const sig = Buffer.from(der);
        // Half the cases start like a DER SEQUENCE so the ASN.1 decoder gets further.
        if (sequence) {
          sig[0] = 0x30;
          if (sig.length > 1) sig[1] = Math.min(sig.length - 2, 0x7f);
        }
        try {
          await verifyVeritySignature({ rootHash: 'ab'.repeat(32), certificateFingerprint: undefined, signature: sig }, { trusted: [] });
          assert.fail('garbage verified');
        } catch (err) {
          if (!(err instanceof VeritySignatureError)) throw err;
        }
      }),
      { numRuns: Math.min(RUNS, 20_000) },
    );
  });
});

// ---------------------------------------------------------------------------------------------

const FLAGS = ['verity', 'signed', 'encrypted', 'unprotected', 'unused', 'absent', 'open', 'ignore', 'read-only-on', 'read-only-off', 'growfs-on', 'growfs-off', 'btrfs', 'erofs', 'ext4', 'f2fs', 'squashfs', 'vfat', 'xfs'];
const policyTextArb = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc
    .array(
      fc.tuple(
        fc.oneof(fc.constantFrom(...DESIGNATORS, ''), fc.string({ maxLength: 6 })),
        fc.array(fc.oneof(fc.constantFrom(...FLAGS), fc.string({ maxLength: 4 })), { maxLength: 4 }),
        fc.constantFrom('', ' ', '\t'),
      ),
      { maxLength: 6 },
    )
    .map((rules) => rules.map(([d, f, ws]) => `${ws}${d}${ws}=${f.join('+')}`).join(':')),
  fc.array(fc.tuple(fc.constantFrom(...DESIGNATORS, ''), fc.subarray(FLAGS, { maxLength: 4 })), { maxLength: 5 }).map((rules) => rules.map(([d, f]) => `${d}=${f.join('+')}`).join(':')),
);

function parseOrNull(text: string): ReturnType<typeof parseImagePolicy> | null {
  try {
    return parseImagePolicy(text);
  } catch (err) {
    if (!(err instanceof ImagePolicyError)) throw err;
    return null;
  }
}

describe('image policy', () => {
  test(`parse → ImagePolicyError, or a policy whose canonical form parses back to the same policy (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(policyTextArb, (text) => {
        const p = parseOrNull(text);
        if (!p) return;
        const again = parseImagePolicy(formatImagePolicy(p));
        assert.ok(equivalentPolicies(p, again), `${JSON.stringify(text)} → ${formatImagePolicy(p)}`);
      }),
      opts,
    );
  });

  test(`intersection: typed error or a policy no more permissive than either input (${RUNS} cases)`, () => {
    const state = fc.constantFrom('signed', 'verity', 'encrypted', 'unprotected', 'absent') as fc.Arbitrary<'signed' | 'verity' | 'encrypted' | 'unprotected' | 'absent'>;
    fc.assert(
      fc.property(policyTextArb, policyTextArb, fc.constantFrom(...DESIGNATORS), state, fc.boolean(), fc.boolean(), (ta, tb, d, st, ro, grow) => {
        const a = parseOrNull(ta);
        const b = parseOrNull(tb);
        if (!a || !b) return;
        let z;
        try {
          z = intersectImagePolicies(a, b);
        } catch (err) {
          if (!(err instanceof ImagePolicyError) || err.kind !== 'impossible') throw err;
          return;
        }
        const attrs = st === 'absent' ? {} : { readOnly: ro, growFileSystem: grow };
        const vz = evaluatePartition(z, d, st, attrs);
        if (vz.verdict === 'use') {
          for (const x of [a, b]) {
            const vx = evaluatePartition(x, d, st, attrs);
            assert.equal(vx.verdict, 'use', `${formatImagePolicy(z)} uses ${st} ${d} but ${formatImagePolicy(x)} does not`);
          }
        }
        // Formatting the intersection round-trips too.
        assert.ok(equivalentPolicies(z, parseImagePolicy(formatImagePolicy(z))));
      }),
      opts,
    );
  });
});

// ---------------------------------------------------------------------------------------------

const IDL_TOKENS = ['interface', 'type', 'method', 'error', 'io.example.Fuzz', 'Foo', 'Bar', 'x', 'y_z', 'int', 'string', 'bool', 'float', 'object',
  '(', ')', ',', ':', '[', ']', '[string]', '[]', '?', '->', '\n', ' ', '# doc\n', '-', '.', '0', 'a-b'];

describe('Varlink IDL parser', () => {
  const tokenSoup = fc.array(fc.constantFrom(...IDL_TOKENS), { maxLength: 60 }).map((t) => t.join(' '));
  const mutated = fc
    .tuple(fc.constantFrom(MountFileSystem.idl, MntfsdStatus.idl), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 3 }), fc.string({ maxLength: 3 })), { minLength: 1, maxLength: 4 }))
    .map(([text, edits]) => {
      let t = text;
      for (const [pos, del, ins] of edits) {
        const at = pos % (t.length + 1);
        t = t.slice(0, at) + ins + t.slice(at + del);
      }
      return t;
    });
  const wellFormed = fc
    .array(fc.tuple(fc.stringMatching(/^[A-Z][a-z]{0,3}$/), fc.array(fc.tuple(fc.stringMatching(/^[a-z][a-z0-9]{0,3}$/), fc.constantFrom('int', 'string', '?bool', '[]float', '[string]object', '?[]?string')), { maxLength: 3 })), { maxLength: 4 })
    .map((ms) => `interface io.example.Fuzz\n${ms.map(([n, fields]) => `method ${n}(${fields.map(([f, t]) => `${f}: ${t}`).join(', ')}) -> ()`).join('\n')}\n`);

  test(`token soup, mutated real IDLs and random strings: IdlError or an interface that formats stably (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(fc.oneof(tokenSoup, mutated, wellFormed, fc.string({ maxLength: 200 })), (text) => {
        let iface;
        try {
          iface = parseInterface(text);
        } catch (err) {
          if (!(err instanceof IdlError)) throw err;
          assert.ok(err.line >= 1);
          return;
        }
        const canonical = formatInterface(iface);
        assert.equal(formatInterface(parseInterface(canonical)), canonical);
      }),
      opts,
    );
  });
});

describe('Varlink call parameters', () => {
  const iface = parseInterface(MountFileSystem.idl);
  const input = iface.methods.get('MountImage')!.input;
  const declared = input.fields.map((f) => f.name);
  // Declared names (often with a plausible value), unknown names, and names special to JS objects.
  const key = fc.oneof(fc.constantFrom(...declared), fc.constantFrom('__proto__', 'constructor', 'toString', ''), fc.string({ maxLength: 12 }));
  const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.nat({ max: 3 }), fc.boolean(), fc.constant(null), fc.dictionary(fc.constantFrom('root', 'usr', 'x'), fc.string()));
  const params = fc.array(fc.tuple(key, value), { maxLength: 16 }).map((entries) => JSON.parse(JSON.stringify(Object.fromEntries(entries))) as unknown);

  test(`MountImage: undeclared fields are set aside, the rest checks exactly as strict validation would (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(params, (p) => {
        const obj = p as Record<string, unknown>;
        const r = validateCall(iface, input, obj);
        const known = Object.fromEntries(Object.entries(obj).filter(([k]) => declared.includes(k)));
        const strict = validateParameters(iface, input, known);
        if (!r.ok) {
          assert.deepEqual(strict, r, 'a call fails exactly when its declared fields fail');
          assert.ok(declared.includes(r.parameter), `refused on an undeclared field ${r.parameter}`);
          return;
        }
        assert.ok(strict.ok);
        assert.deepEqual(r.parameters, known);
        assert.equal(Object.getPrototypeOf(r.parameters), Object.prototype);
        assert.deepEqual(r.ignored.sort(), Object.keys(obj).filter((k) => !declared.includes(k)).sort());
      }),
      opts,
    );
  });
});
