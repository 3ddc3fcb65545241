// Verity signature partition content: a detached PKCS#7 signature over the root hash's hex
// string, encoded as `openssl smime -sign -binary -noattr` (and systemd-repart) encode it —
// SignedData v1, sha256, the signer's certificate embedded, no signed attributes — wrapped in
// the DDI JSON object and NUL-padded.
import crypto from 'node:crypto';
import { derLength, issuerAndSerialNumber } from '../mntfsd/pkcs7.js';

const OID_DATA = '1.2.840.113549.1.7.1';
const OID_SIGNED_DATA = '1.2.840.113549.1.7.2';
const OID_SHA256 = '2.16.840.1.101.3.4.2.1';
const OID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';
const OID_ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/** systemd-repart's fixed signature partition size; larger JSON rounds up to 4 KiB. */
const SIGNATURE_PARTITION_MIN_SIZE = 16384;
const SIGNATURE_PARTITION_ALIGN = 4096;

export interface SigningIdentity {
  key: crypto.KeyObject;
  cert: crypto.X509Certificate;
}

const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Parses PEM text of a private key and an X.509 certificate; errors say which one is wrong. */
export function loadSigningIdentity(keyPem: string, certPem: string): SigningIdentity {
  let key: crypto.KeyObject;
  let cert: crypto.X509Certificate;
  try {
    key = crypto.createPrivateKey({ key: keyPem, format: 'pem' });
  } catch (err) {
    throw new Error(`cannot read the private key (PEM, unencrypted): ${describe(err)}`);
  }
  try {
    cert = new crypto.X509Certificate(certPem);
  } catch (err) {
    throw new Error(`cannot read the certificate (PEM X.509): ${describe(err)}`);
  }
  if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec')
    throw new Error(`unsupported key type '${key.asymmetricKeyType ?? 'unknown'}': use RSA or ECDSA (what the kernel verifies)`);
  if (!cert.checkPrivateKey(key)) throw new Error('the private key does not belong to the certificate');
  return { key, cert };
}

/** One DER element. */
const der = (tag: number, ...parts: Buffer[]): Buffer => {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
};

/** An OBJECT IDENTIFIER (X.690 §8.19): the first two arcs in one byte, the rest base 128. */
function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [a! * 40 + b!];
  for (const arc of rest) {
    const groups = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) groups.unshift(0x80 | (v & 0x7f));
    out.push(...groups);
  }
  return der(0x06, Buffer.from(out));
}

const NULL = Buffer.from([0x05, 0x00]);
const SEQUENCE = 0x30;
const SET = 0x31;
const algorithm = (id: string, params?: Buffer): Buffer => der(SEQUENCE, oid(id), ...(params ? [params] : []));
const integer = (n: number): Buffer => der(0x02, Buffer.from([n]));

/** DER PKCS#7 detached signature over the ASCII bytes of `rootHashHex` (RFC 5652 SignedData). */
export function signRootHash(rootHashHex: string, id: SigningIdentity): Buffer {
  const content = Buffer.from(rootHashHex, 'ascii');
  // Without signed attributes the signature covers the content itself (PKCS#1 v1.5 / ECDSA DER).
  const signature = crypto.sign('sha256', content, id.key);
  const sha256 = algorithm(OID_SHA256, NULL);
  const signatureAlgorithm = id.key.asymmetricKeyType === 'rsa' ? algorithm(OID_RSA_ENCRYPTION, NULL) : algorithm(OID_ECDSA_WITH_SHA256);
  const signerInfo = der(SEQUENCE, integer(1), issuerAndSerialNumber(id.cert), sha256, signatureAlgorithm, der(0x04, signature));
  const signedData = der(
    SEQUENCE,
    integer(1),
    der(SET, sha256),
    der(SEQUENCE, oid(OID_DATA)), // encapContentInfo without eContent: detached
    der(0xa0, id.cert.raw), // certificates [0] IMPLICIT
    der(SET, signerInfo),
  );
  return der(SEQUENCE, oid(OID_SIGNED_DATA), der(0xa0, signedData));
}

/** The signature partition: DDI JSON, NUL-padded to at least 16 KiB and a multiple of 4 KiB. */
export function signaturePartition(rootHashHex: string, id: SigningIdentity): Buffer {
  const json = JSON.stringify({
    rootHash: rootHashHex,
    certificateFingerprint: crypto.createHash('sha256').update(id.cert.raw).digest('hex'),
    signature: signRootHash(rootHashHex, id).toString('base64'),
  });
  const text = Buffer.from(json, 'utf8');
  const size = Math.max(SIGNATURE_PARTITION_MIN_SIZE, Math.ceil((text.length + 1) / SIGNATURE_PARTITION_ALIGN) * SIGNATURE_PARTITION_ALIGN);
  const out = Buffer.alloc(size);
  text.copy(out);
  return out;
}
