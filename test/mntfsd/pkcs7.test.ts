// The PKCS#7 verifier against signatures openssl makes in every shape a signer may choose (with
// and without signed attributes and embedded certificates, signer by issuer+serial or by subject
// key identifier, RSA and EC keys, SHA-256/384/512), each also checked by
// `openssl smime -verify`, so our verdict is compared with OpenSSL's on the same bytes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { Pkcs7FormatError, isSigner, kernelKeyId, parseSignedData, verifySignedData } from '../../src/mntfsd/pkcs7.js';

const CONTENT = 'c5acc505d1b9d24fd25bc3c1d6fcb3a9803e8b1ac85b963ec9bf09229b9b81e2';
let tmp = '';

interface Key {
  key: string;
  cert: string;
  x509: X509Certificate;
}

function makeKey(name: string, newkey: string[]): Key {
  const key = path.join(tmp, `${name}.key`);
  const cert = path.join(tmp, `${name}.pem`);
  execFileSync('openssl', ['req', '-x509', ...newkey, '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=${name}`], { stdio: 'ignore' });
  return { key, cert, x509: new X509Certificate(fs.readFileSync(cert)) };
}

function sign(k: Key, extra: string[], content = CONTENT): Buffer {
  const input = path.join(tmp, 'content');
  fs.writeFileSync(input, content);
  return execFileSync('openssl', ['cms', '-sign', '-in', input, '-inkey', k.key, '-signer', k.cert, '-binary', '-outform', 'DER', ...extra]);
}

/** OpenSSL's own verdict: the signer certificate as the only trust anchor, detached content. */
function opensslVerifies(der: Buffer, k: Key, content = CONTENT): boolean {
  const sig = path.join(tmp, 'sig.der');
  const input = path.join(tmp, 'content');
  fs.writeFileSync(sig, der);
  fs.writeFileSync(input, content);
  const r = spawnSync('openssl', ['cms', '-verify', '-binary', '-inform', 'DER', '-in', sig, '-content', input, '-certfile', k.cert, '-CAfile', k.cert, '-out', '/dev/null'], { stdio: 'ignore' });
  return r.status === 0;
}

function ours(der: Buffer, k: Key, content = CONTENT): boolean {
  const sd = parseSignedData(der);
  return isSigner(sd, k.x509) && verifySignedData(sd, Buffer.from(content), k.x509);
}

let rsa: Key;
let ec: Key;
let other: Key;

describe('PKCS#7 SignedData verification', () => {
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-pkcs7-'));
    rsa = makeKey('rsa', ['-newkey', 'rsa:2048']);
    ec = makeKey('ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']);
    other = makeKey('other', ['-newkey', 'rsa:2048']);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const shapes: [string, string[]][] = [
    ['no attributes (systemd-repart)', ['-noattr']],
    ['no attributes, no certificates', ['-noattr', '-nocerts']],
    ['signed attributes', []],
    ['signer by subject key identifier', ['-keyid']],
    ['SHA-384', ['-md', 'sha384']],
    ['SHA-512, no attributes', ['-md', 'sha512', '-noattr']],
  ];
  for (const [name, extra] of shapes) {
    it(`${name}: RSA and EC verify, as OpenSSL says`, () => {
      for (const k of [rsa, ec]) {
        const der = sign(k, extra);
        assert.equal(opensslVerifies(der, k), true);
        assert.equal(ours(der, k), true, `${name} ${k.x509.subject}`);
        // the same signature over other content, or checked with another key, fails for both
        assert.equal(opensslVerifies(der, k, CONTENT.replace('c5', 'ff')), false);
        assert.equal(ours(der, k, CONTENT.replace('c5', 'ff')), false);
        const sd = parseSignedData(der);
        assert.equal(isSigner(sd, other.x509), false);
      }
    });
  }

  it('a signature by another key does not verify even when the signer id is forged to match', () => {
    const der = sign(other, ['-noattr', '-nocerts']);
    const sd = parseSignedData(der);
    assert.equal(isSigner(sd, rsa.x509), false);
    // an id claiming rsa, signed by other's key
    assert.equal(verifySignedData(sd, Buffer.from(CONTENT), rsa.x509), false);
    // a key of the wrong type never verifies
    assert.equal(verifySignedData(parseSignedData(sign(ec, ['-noattr'])), Buffer.from(CONTENT), rsa.x509), false);
  });

  it('a flipped bit in the signature or the signed attributes fails', () => {
    for (const extra of [['-noattr'], []]) {
      const der = sign(rsa, extra);
      const sigAt = der.length - 10; // inside the signature value, the last field
      const bad = Buffer.from(der);
      bad[sigAt]! ^= 1;
      assert.equal(ours(bad, rsa), false);
    }
    const withAttrs = sign(rsa, []);
    // the messageDigest value: find the SHA-256 of the content inside the DER and flip it
    const digest = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: CONTENT });
    const at = withAttrs.indexOf(digest);
    assert.ok(at > 0);
    const bad = Buffer.from(withAttrs);
    bad[at]! ^= 1;
    assert.equal(ours(bad, rsa), false);
  });

  it('refuses attached signatures, BER lengths, trailing bytes and truncation as malformed', () => {
    const input = path.join(tmp, 'content');
    fs.writeFileSync(input, CONTENT);
    const attached = execFileSync('openssl', ['cms', '-sign', '-nodetach', '-in', input, '-inkey', rsa.key, '-signer', rsa.cert, '-binary', '-noattr', '-outform', 'DER']);
    assert.throws(() => parseSignedData(attached), Pkcs7FormatError);
    const streamed = execFileSync('openssl', ['cms', '-sign', '-stream', '-in', input, '-inkey', rsa.key, '-signer', rsa.cert, '-binary', '-noattr', '-outform', 'DER']);
    assert.throws(() => parseSignedData(streamed), Pkcs7FormatError);
    const der = sign(rsa, ['-noattr']);
    assert.throws(() => parseSignedData(Buffer.concat([der, Buffer.from([0])])), Pkcs7FormatError);
    for (let cut = 0; cut < der.length; cut += 97) assert.throws(() => parseSignedData(der.subarray(0, cut)), Pkcs7FormatError);
    // Single-byte corruptions (every 5th byte of a signature without certificates): refused as
    // malformed or not verified, never another exception; and accepted only where OpenSSL accepts
    // the same bytes too (unsigned fields such as SignedData.digestAlgorithms).
    const bare = sign(rsa, ['-noattr', '-nocerts']);
    let accepted = 0;
    for (let i = 0; i < bare.length; i += 5) {
      const bad = Buffer.from(bare);
      bad[i]! ^= 0x55;
      let verdict: boolean;
      try {
        verdict = ours(bad, rsa);
      } catch (err) {
        assert.ok(err instanceof Pkcs7FormatError, `byte ${i}: ${String(err)}`);
        continue;
      }
      if (verdict) {
        accepted++;
        assert.equal(opensslVerifies(bad, rsa), true, `byte ${i}: accepted by us, not by OpenSSL`);
      }
    }
    assert.ok(accepted < 5, `${accepted} corruptions accepted`);
  });

  it("names a key as the kernel's key descriptions do: the subject key identifier openssl reports", () => {
    for (const k of [rsa, ec]) {
      const out = execFileSync('openssl', ['x509', '-in', k.cert, '-noout', '-ext', 'subjectKeyIdentifier'], { encoding: 'utf8' });
      const skid = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(out)![1]!.replaceAll(':', '').toLowerCase();
      assert.equal(kernelKeyId(k.x509), skid);
    }
  });
});
