// Verity signature partitions: real systemd-repart output and openssl-made signatures, verified
// against certificates in temporary verity.d directories.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as z from '../../src/validation.js';
import {
  MAX_SIGNATURE_PARTITION_SIZE,
  VeritySignatureError,
  checkRootHash,
  loadTrustedCertificates,
  parseVeritySignature,
  readVeritySignature,
  verifyVeritySignature,
  type SignatureErrorKind,
  type TrustedCertificate,
  type VeritySignature,
} from '../../src/mntfsd/signature.js';

let tmp = '';

function run(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  return execFileSync(cmd, args, { cwd: opts.cwd ?? tmp, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

interface Key {
  key: string;
  cert: string;
  fingerprint: string;
}

function makeKey(name: string, alg: 'rsa' | 'ec'): Key {
  const key = path.join(tmp, `${name}.key`);
  const cert = path.join(tmp, `${name}.pem`);
  const newkey = alg === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  run('openssl', ['req', '-x509', ...newkey, '-nodes', '-keyout', key, '-out', cert, '-days', '365', '-subj', `/CN=${name}`]);
  const der = execFileSync('openssl', ['x509', '-in', cert, '-outform', 'DER']);
  return { key, cert, fingerprint: createHash('sha256').update(der).digest('hex') };
}

/** Signs the hex string as systemd-repart does (detached, no attributes, binary). */
function sign(k: Key, rootHash: string, extra: string[] = []): Buffer {
  const input = path.join(tmp, 'content.txt');
  fs.writeFileSync(input, rootHash);
  return execFileSync('openssl', ['smime', '-sign', '-in', input, '-inkey', k.key, '-signer', k.cert, '-binary', '-noattr', '-outform', 'DER', ...extra]);
}

function partition(json: unknown, size = 16384): Buffer {
  const buf = Buffer.alloc(size);
  buf.write(typeof json === 'string' ? json : JSON.stringify(json));
  return buf;
}

function trustDir(name: string, ...keys: Key[]): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const k of keys) fs.copyFileSync(k.cert, path.join(dir, `${path.basename(k.cert, '.pem')}.crt`));
  return dir;
}

function trusted(...dirs: string[]): TrustedCertificate[] {
  return loadTrustedCertificates(dirs).certificates;
}

async function rejects(p: Promise<unknown> | (() => unknown), kind: SignatureErrorKind, varlinkError?: string): Promise<void> {
  await assert.rejects(
    typeof p === 'function' ? async () => p() : p,
    (err: unknown) => {
      assert.ok(err instanceof VeritySignatureError, `expected VeritySignatureError, got ${String(err)}`);
      assert.equal(err.kind, kind, err.message);
      if (varlinkError) assert.equal(err.error, varlinkError);
      return true;
    },
  );
}

const ROOT_HASH = 'c5acc505d1b9d24fd25bc3c1d6fcb3a9803e8b1ac85b963ec9bf09229b9b81e2';
const OTHER_HASH = 'ffacc505d1b9d24fd25bc3c1d6fcb3a9803e8b1ac85b963ec9bf09229b9b81e2';

let rsa: Key;
let ec: Key;
let stranger: Key;
/** Produced by systemd-repart from a real image. */
let repart: { sig: VeritySignature; rootHash: string; raw: Buffer };

describe('verity signature', () => {
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-sig-'));
    rsa = makeKey('rsa', 'rsa');
    ec = makeKey('ec', 'ec');
    stranger = makeKey('stranger', 'rsa');

    // A real signed DDI from systemd-repart: squashfs root + verity + signature.
    const defs = path.join(tmp, 'defs');
    fs.mkdirSync(defs);
    fs.mkdirSync(path.join(tmp, 'root/etc'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'root/etc/hello'), 'hi\n');
    fs.writeFileSync(path.join(defs, '10-root.conf'), '[Partition]\nType=root\nFormat=squashfs\nCopyFiles=/etc:/etc\nVerity=data\nVerityMatchKey=root\n');
    fs.writeFileSync(path.join(defs, '20-verity.conf'), '[Partition]\nType=root-verity\nVerity=hash\nVerityMatchKey=root\n');
    fs.writeFileSync(path.join(defs, '30-sig.conf'), '[Partition]\nType=root-verity-sig\nVerity=signature\nVerityMatchKey=root\n');
    const image = path.join(tmp, 'image.raw');
    const out = run('systemd-repart', [
      `--definitions=${defs}`, '--empty=create', '--size=auto', '--dry-run=no', `--root=${path.join(tmp, 'root')}`,
      `--private-key=${rsa.key}`, `--certificate=${rsa.cert}`, '--json=short', image,
    ]);
    const parts = z.array(z.object({ type: z.string(), offset: z.number(), raw_size: z.number(), roothash: z.nullable(z.string()) })).parse(JSON.parse(out));
    const rootHash = parts.find((p) => p.roothash)?.roothash;
    assert.ok(rootHash, 'repart reported no root hash');
    // Locate the signature partition from the partition table itself, as a dissector would.
    const table = z
      .object({ partitiontable: z.object({ sectorsize: z.number(), partitions: z.array(z.object({ type: z.string(), start: z.number(), size: z.number() })) }) })
      .parse(JSON.parse(run('sfdisk', ['-J', image])));
    const sigPart = table.partitiontable.partitions.find((p) => p.type.toLowerCase() === '41092b05-9fc8-4523-994f-2def0408b176');
    assert.ok(sigPart, 'no root-verity-sig partition');
    const ss = table.partitiontable.sectorsize;
    const fd = fs.openSync(image, 'r');
    try {
      const sig = readVeritySignature(fd, sigPart.start * ss, sigPart.size * ss);
      const raw = Buffer.alloc(sigPart.size * ss);
      fs.readSync(fd, raw, 0, raw.length, sigPart.start * ss);
      repart = { sig, rootHash, raw };
    } finally {
      fs.closeSync(fd);
    }
  });

  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('parse', () => {
    it('reads the JSON systemd-repart wrote, NUL padding and all', () => {
      assert.equal(repart.raw.length, 16384);
      assert.equal(repart.sig.rootHash, repart.rootHash);
      assert.equal(repart.sig.certificateFingerprint, rsa.fingerprint);
      assert.ok(repart.sig.signature.length > 100);
    });

    it('tolerates unknown fields and normalises hex case', () => {
      const s = parseVeritySignature(partition({ rootHash: ROOT_HASH.toUpperCase(), signature: 'AAAA', futureField: { x: 1 } }));
      assert.equal(s.rootHash, ROOT_HASH);
      assert.equal(s.certificateFingerprint, undefined);
    });

    it('accepts content without padding', () => {
      const s = parseVeritySignature(Buffer.from(JSON.stringify({ rootHash: ROOT_HASH, signature: 'AAAA' })));
      assert.equal(s.rootHash, ROOT_HASH);
    });

    it('refuses garbage after the padding', () => {
      const buf = Buffer.from(repart.raw);
      buf[buf.length - 1] = 0x41;
      return rejects(() => parseVeritySignature(buf), 'malformed', 'io.systemd.System');
    });

    it('refuses malformed content cleanly', async () => {
      const good = { rootHash: ROOT_HASH, signature: 'AAAA' };
      const bad: [string, Buffer][] = [
        ['empty', Buffer.alloc(4096)],
        ['garbage', partition('{"rootHash": "ab", gar')],
        ['not an object', partition('[1,2,3]')],
        ['JSON null', partition('null')],
        ['invalid UTF-8', Buffer.concat([Buffer.from('{"rootHash":"\xff'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')])],
        ['rootHash missing', partition({ signature: 'AAAA' })],
        ['rootHash a number', partition({ ...good, rootHash: 12 })],
        ['rootHash odd length', partition({ ...good, rootHash: ROOT_HASH.slice(1) })],
        ['rootHash not hex', partition({ ...good, rootHash: ROOT_HASH.replace('c', 'g') })],
        ['rootHash too short', partition({ ...good, rootHash: 'abcd' })],
        ['signature missing', partition({ rootHash: ROOT_HASH })],
        ['signature an array', partition({ ...good, signature: ['AAAA'] })],
        ['signature not base64', partition({ ...good, signature: 'AA*A' })],
        ['signature badly padded', partition({ ...good, signature: 'AAA' })],
        ['fingerprint short', partition({ ...good, certificateFingerprint: 'abcd' })],
        ['fingerprint a number', partition({ ...good, certificateFingerprint: 5 })],
      ];
      for (const [what, buf] of bad) {
        await assert.rejects(async () => parseVeritySignature(buf), (err: unknown) => {
          assert.ok(err instanceof VeritySignatureError, `${what}: ${String(err)}`);
          assert.equal(err.kind, 'malformed', what);
          assert.equal(err.parameters.errnoName, 'EBADMSG', what);
          return true;
        });
      }
    });

    it('refuses oversized partitions before reading them', async () => {
      await rejects(() => parseVeritySignature(Buffer.alloc(MAX_SIGNATURE_PARTITION_SIZE + 1)), 'too-large', 'io.systemd.System');
      const f = path.join(tmp, 'big.bin');
      fs.writeFileSync(f, '');
      const fd = fs.openSync(f, 'r');
      try {
        await rejects(() => readVeritySignature(fd, 0, MAX_SIGNATURE_PARTITION_SIZE + 4096), 'too-large');
        await rejects(() => readVeritySignature(fd, 0, 4096), 'malformed');
      } finally {
        fs.closeSync(fd);
      }
    });

    it('checks the root hash against the expected one', async () => {
      checkRootHash(repart.sig, repart.rootHash.toUpperCase());
      await rejects(() => checkRootHash(repart.sig, OTHER_HASH), 'root-hash-mismatch', 'io.systemd.System');
    });
  });

  describe('certificates', () => {
    it('loads *.crt files with conf-dir priority and masking, ignoring junk', () => {
      const high = trustDir('prio-high', rsa);
      const low = trustDir('prio-low', ec, stranger);
      // same name in the higher dir hides the lower one; an empty file masks
      fs.copyFileSync(ec.cert, path.join(high, 'stranger.crt'));
      fs.writeFileSync(path.join(high, 'ec.crt'), '');
      fs.writeFileSync(path.join(low, 'junk.crt'), 'not a certificate');
      fs.writeFileSync(path.join(low, 'ignored.pem'), fs.readFileSync(stranger.cert));
      const r = loadTrustedCertificates([high, path.join(tmp, 'missing'), low]);
      assert.deepEqual(r.certificates.map((c) => [path.basename(c.path), c.fingerprint]), [
        ['rsa.crt', rsa.fingerprint],
        ['stranger.crt', ec.fingerprint],
      ]);
      assert.equal(r.certificates[0]?.subject, 'CN=rsa');
      assert.deepEqual(r.skipped.map((s) => path.basename(s.path)), ['junk.crt']);
    });
  });

  describe('verify', () => {
    it('accepts the systemd-repart signature with its certificate trusted', async () => {
      const v = await verifyVeritySignature(repart.sig, { trusted: trusted(trustDir('t-rsa', rsa)), expectedRootHash: repart.rootHash });
      assert.equal(v.subject, 'CN=rsa');
      assert.equal(v.fingerprint, rsa.fingerprint);
      assert.equal(v.rootHash, repart.rootHash);
    });

    it('accepts an EC signature, with and without a fingerprint', async () => {
      const der = sign(ec, ROOT_HASH);
      const t = trusted(trustDir('t-mixed', rsa, ec));
      for (const certificateFingerprint of [ec.fingerprint, undefined]) {
        const v = await verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint, signature: der }, { trusted: t });
        assert.equal(v.subject, 'CN=ec');
      }
    });

    it('accepts signatures without embedded certificates and with signed attributes', async () => {
      const t = trusted(trustDir('t-rsa', rsa));
      for (const extra of [['-nocerts'], []]) {
        const der = extra.length ? sign(rsa, ROOT_HASH, extra) : signWithAttributes(rsa, ROOT_HASH);
        const v = await verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint: undefined, signature: der }, { trusted: t });
        assert.equal(v.subject, 'CN=rsa');
      }
    });

    // Deliberately stricter than systemd (PKCS7_NOVERIFY accepts any listed certificate): a
    // trusted certificate must be self-signed, a trust anchor on its own.
    it('a trusted certificate must be self-signed; a CA alone is not trusted for its leaves', async () => {
      const ca = makeKey('ca', 'rsa');
      const leafKey = path.join(tmp, 'leaf.key');
      const csr = path.join(tmp, 'leaf.csr');
      run('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', leafKey, '-out', csr, '-subj', '/CN=leaf']);
      const leafCert = path.join(tmp, 'leaf.pem');
      run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', leafCert, '-days', '30']);
      const leaf: Key = { key: leafKey, cert: leafCert, fingerprint: '' };
      const der = sign(leaf, ROOT_HASH);
      await rejects(verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint: undefined, signature: der }, { trusted: trusted(trustDir('t-leaf', leaf)) }), 'signature-invalid');
      // trusting only the CA is not enough: the signer itself must be listed
      await rejects(verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint: undefined, signature: der }, { trusted: trusted(trustDir('t-ca', ca)) }), 'key-not-found');
    });

    it('KeyNotFound when the certificate is not trusted', async () => {
      await rejects(verifyVeritySignature(repart.sig, { trusted: trusted(trustDir('t-other', ec, stranger)) }), 'key-not-found', 'io.systemd.MountFileSystem.KeyNotFound');
      await rejects(verifyVeritySignature(repart.sig, { trusted: [] }), 'key-not-found');
      // no fingerprint: every trusted certificate is tried, none is the signer
      await rejects(verifyVeritySignature({ ...repart.sig, certificateFingerprint: undefined }, { trusted: trusted(trustDir('t-other', ec, stranger)) }), 'key-not-found');
    });

    it('a self-signed certificate embedded in the signature is never trusted', async () => {
      // the signature carries the stranger's own certificate, which must not be used
      const der = sign(stranger, ROOT_HASH);
      await rejects(verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint: undefined, signature: der }, { trusted: trusted(trustDir('t-rsa', rsa)) }), 'key-not-found');
    });

    it('KeyNotFound when the named fingerprint is not trusted, even if the signer is', async () => {
      await rejects(verifyVeritySignature({ ...repart.sig, certificateFingerprint: stranger.fingerprint }, { trusted: trusted(trustDir('t-rsa', rsa)) }), 'key-not-found');
    });

    it('a signature over another hash fails verification', async () => {
      const t = trusted(trustDir('t-mixed', rsa, ec));
      for (const k of [rsa, ec]) {
        const der = sign(k, OTHER_HASH);
        await rejects(verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint: k.fingerprint, signature: der }, { trusted: t }), 'signature-invalid', 'io.systemd.MountFileSystem.KeyNotFound');
      }
      // the hash with a trailing newline is another content
      const der = sign(rsa, `${ROOT_HASH}\n`);
      await rejects(verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint: undefined, signature: der }, { trusted: t }), 'signature-invalid');
    });

    it('the JSON rootHash must be the expected one', async () => {
      await rejects(verifyVeritySignature(repart.sig, { trusted: trusted(trustDir('t-rsa', rsa)), expectedRootHash: OTHER_HASH }), 'root-hash-mismatch');
      // JSON edited to another hash: the signature no longer matches it
      await rejects(verifyVeritySignature({ ...repart.sig, rootHash: OTHER_HASH }, { trusted: trusted(trustDir('t-rsa', rsa)) }), 'signature-invalid');
    });

    it('a corrupted signature is refused cleanly', async () => {
      const t = trusted(trustDir('t-rsa', rsa));
      const der = repart.sig.signature;
      // last byte is inside the RSA signature value: parses, does not verify
      const flipped = Buffer.from(der);
      flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
      await rejects(verifyVeritySignature({ ...repart.sig, signature: flipped }, { trusted: t }), 'signature-invalid');
      for (const broken of [der.subarray(0, der.length - 10), Buffer.concat([der, Buffer.from([0])]), Buffer.from('hello world'), Buffer.alloc(0)]) {
        await rejects(verifyVeritySignature({ ...repart.sig, signature: broken }, { trusted: t }), 'malformed', 'io.systemd.System');
      }
      // Single-byte flips: never anything but success or a VeritySignatureError. Flips inside the
      // embedded certificate may still verify (it is never used: only trusted certificates are),
      // flips in the trailing SignerInfo (identity, algorithms, signature value) never do.
      const signerInfoStart = der.length - 300;
      for (let i = 0; i < der.length; i += 3) {
        const b = Buffer.from(der);
        b[i] = (b[i] as number) ^ 0x80;
        let outcome: 'ok' | SignatureErrorKind;
        try {
          await verifyVeritySignature({ ...repart.sig, signature: b }, { trusted: t });
          outcome = 'ok';
        } catch (err) {
          assert.ok(err instanceof VeritySignatureError, `flip at ${i}: ${String(err)}`);
          outcome = err.kind;
        }
        if (i >= signerInfoStart) assert.notEqual(outcome, 'ok', `flip at ${i} verified`);
      }
    });

    it('an attached (non-detached) signature is refused', async () => {
      const der = sign(rsa, ROOT_HASH, ['-nodetach']);
      await rejects(verifyVeritySignature({ rootHash: ROOT_HASH, certificateFingerprint: undefined, signature: der }, { trusted: trusted(trustDir('t-rsa', rsa)) }), 'malformed');
    });

    it('validity dates are ignored unless a check date is given', async () => {
      const t = trusted(trustDir('t-rsa', rsa));
      await verifyVeritySignature(repart.sig, { trusted: t });
      await rejects(verifyVeritySignature(repart.sig, { trusted: t, checkDate: new Date('2000-01-01') }), 'signature-invalid');
    });
  });
});

function signWithAttributes(k: Key, rootHash: string): Buffer {
  const input = path.join(tmp, 'content.txt');
  fs.writeFileSync(input, rootHash);
  return execFileSync('openssl', ['cms', '-sign', '-in', input, '-inkey', k.key, '-signer', k.cert, '-binary', '-outform', 'DER']);
}
