// Verification of the detached PKCS#7 (CMS, RFC 5652) SignedData a verity signature partition
// carries, with node:crypto doing the cryptography and a DER reader written for exactly this
// structure. What it accepts is what the kernel's own PKCS#7 parser accepts for dm-verity
// signatures (crypto/asymmetric_keys/pkcs7_parser.c, pkcs7_verify.c) and what OpenSSL's
// PKCS7_verify() accepts for systemd's userspace check: one signer, detached data, the signer
// named by issuer and serial number or by subject key identifier, the signature over the data
// itself or over the DER of the signed attributes, whose messageDigest must be the data's digest.
//
// Why not a general ASN.1 library: this is the one place trust is decided, and a generic parser
// plus chain builder is large to audit and, under emulation, costs seconds to load and run.
// Every length here is checked against its parent, only definite DER lengths are read, and
// anything unexpected is 'malformed'.
import crypto, { type X509Certificate } from 'node:crypto';

export class Pkcs7FormatError extends Error {
  override name = 'Pkcs7FormatError';
}

/** One DER element: tag byte, and where its header and value lie in the buffer. */
interface Tlv {
  tag: number;
  start: number;
  valueStart: number;
  end: number;
}

const SEQUENCE = 0x30;
const SET = 0x31;
const INTEGER = 0x02;
const OCTET_STRING = 0x04;
const OID = 0x06;
const CONTEXT_0 = 0xa0;
const CONTEXT_0_PRIMITIVE = 0x80;
const CONTEXT_1 = 0xa1;
const CONTEXT_3 = 0xa3;

function fail(what: string): never {
  throw new Pkcs7FormatError(what);
}

/** Reads the element at `pos`, which must end at or before `limit`. Low tag numbers only (all CMS needs). */
function readTlv(buf: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) fail('truncated element');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) fail('high tag numbers are not used in SignedData');
  let len = buf[pos + 1]!;
  let valueStart = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    // 0x80 is BER's indefinite length, which DER forbids; more than 4 bytes is beyond any signature.
    if (n === 0 || n > 4) fail('length form not allowed in DER');
    if (valueStart + n > limit) fail('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[valueStart + i]!;
    valueStart += n;
  }
  const end = valueStart + len;
  if (end > limit) fail('element longer than its container');
  return { tag, start: pos, valueStart, end };
}

/** The elements inside a constructed one, in order. */
function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let pos = parent.valueStart; pos < parent.end; ) {
    const t = readTlv(buf, pos, parent.end);
    out.push(t);
    pos = t.end;
  }
  return out;
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag) fail(`${what}: expected tag 0x${tag.toString(16)}`);
  return t;
}

function oid(buf: Uint8Array, t: Tlv | undefined, what: string): string {
  const o = expect(t, OID, what);
  const v = buf.subarray(o.valueStart, o.end);
  if (v.length === 0) fail(`${what}: empty object identifier`);
  const parts: number[] = [];
  let acc = 0;
  for (let i = 0; i < v.length; i++) {
    acc = acc * 128 + (v[i]! & 0x7f);
    if (acc > Number.MAX_SAFE_INTEGER / 128) fail(`${what}: object identifier too large`);
    if (!(v[i]! & 0x80)) {
      if (parts.length === 0) parts.push(acc < 80 ? Math.floor(acc / 40) : 2, acc < 80 ? acc % 40 : acc - 80);
      else parts.push(acc);
      acc = 0;
    } else if (i === v.length - 1) fail(`${what}: truncated object identifier`);
  }
  return parts.join('.');
}

const bytes = (buf: Uint8Array, t: Tlv): Buffer => Buffer.from(buf.subarray(t.valueStart, t.end));
const whole = (buf: Uint8Array, t: Tlv): Buffer => Buffer.from(buf.subarray(t.start, t.end));

/** INTEGER content without the sign-padding zero, so 00 80 and 80 compare equal as serials do. */
function unsignedInteger(buf: Uint8Array, t: Tlv): Buffer {
  let v = bytes(buf, t);
  while (v.length > 1 && v[0] === 0) v = v.subarray(1);
  return v;
}

const OID_SIGNED_DATA = '1.2.840.113549.1.7.2';
const OID_DATA = '1.2.840.113549.1.7.1';
const OID_CONTENT_TYPE = '1.2.840.113549.1.9.3';
const OID_MESSAGE_DIGEST = '1.2.840.113549.1.9.4';
const OID_SUBJECT_KEY_IDENTIFIER = '2.5.29.14';

/** Digest algorithms (RFC 5754); SHA-1 as well, which OpenSSL and the kernel still accept. */
const DIGESTS: Record<string, string> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.4': 'sha224',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/** Signature algorithms: the key type they need and the digest they fix (null: the signer's digestAlgorithm). */
const SIGNATURES: Record<string, { key: 'rsa' | 'ec'; digest: string | null }> = {
  '1.2.840.113549.1.1.1': { key: 'rsa', digest: null }, // rsaEncryption, as OpenSSL writes it
  '1.2.840.113549.1.1.5': { key: 'rsa', digest: 'sha1' },
  '1.2.840.113549.1.1.14': { key: 'rsa', digest: 'sha224' },
  '1.2.840.113549.1.1.11': { key: 'rsa', digest: 'sha256' },
  '1.2.840.113549.1.1.12': { key: 'rsa', digest: 'sha384' },
  '1.2.840.113549.1.1.13': { key: 'rsa', digest: 'sha512' },
  '1.2.840.10045.2.1': { key: 'ec', digest: null }, // id-ecPublicKey, as some signers write it
  '1.2.840.10045.4.1': { key: 'ec', digest: 'sha1' },
  '1.2.840.10045.4.3.1': { key: 'ec', digest: 'sha224' },
  '1.2.840.10045.4.3.2': { key: 'ec', digest: 'sha256' },
  '1.2.840.10045.4.3.3': { key: 'ec', digest: 'sha384' },
  '1.2.840.10045.4.3.4': { key: 'ec', digest: 'sha512' },
};

/** How the signer is named: IssuerAndSerialNumber or SubjectKeyIdentifier (RFC 5652 §5.3). */
type SignerId = { issuer: Buffer; serial: Buffer } | { subjectKeyIdentifier: Buffer };

export interface SignedData {
  signer: SignerId;
  /** Node's name for the digest, and its object identifier. */
  digest: string;
  digestOid: string;
  signatureKey: 'rsa' | 'ec';
  /** DER of the signed attributes re-tagged as a SET (what was signed), if present. */
  signedAttributes: { der: Buffer; messageDigest: Buffer } | null;
  signature: Buffer;
}

/**
 * Decodes a DER ContentInfo holding a SignedData with exactly one signer over detached
 * content of type id-data. Throws Pkcs7FormatError on anything else.
 */
export function parseSignedData(der: Uint8Array): SignedData {
  const ci = readTlv(der, 0, der.length);
  if (ci.tag !== SEQUENCE || ci.end !== der.length) fail('not a single DER SEQUENCE');
  const [ciType, ciContent] = children(der, ci);
  const type = oid(der, ciType, 'ContentInfo.contentType');
  if (type !== OID_SIGNED_DATA) fail(`content type ${type} is not SignedData`);
  const sd = expect(children(der, expect(ciContent, CONTEXT_0, 'ContentInfo.content'))[0], SEQUENCE, 'SignedData');
  const fields = children(der, sd);
  expect(fields[0], INTEGER, 'SignedData.version');
  // The signer's digest must be among those listed up front (OpenSSL's CMS_verify() reads them too).
  const listed = children(der, expect(fields[1], SET, 'SignedData.digestAlgorithms')).map((a) => oid(der, children(der, expect(a, SEQUENCE, 'digestAlgorithm'))[0], 'digestAlgorithm'));
  const encap = children(der, expect(fields[2], SEQUENCE, 'SignedData.encapContentInfo'));
  const eType = oid(der, encap[0], 'encapContentInfo.eContentType');
  if (encap.length > 1) fail('not detached: the signature carries its content');
  if (eType !== OID_DATA) fail(`encapsulated content type ${eType} is not id-data`);
  let i = 3;
  if (fields[i]?.tag === CONTEXT_0) i++; // certificates: never trusted, so not read
  if (fields[i]?.tag === CONTEXT_1) i++; // crls
  const infos = children(der, expect(fields[i], SET, 'SignedData.signerInfos'));
  if (i + 1 !== fields.length) fail('data after signerInfos');
  if (infos.length !== 1) fail(`${infos.length} signers, expected 1`);
  const signed = parseSignerInfo(der, expect(infos[0], SEQUENCE, 'SignerInfo'));
  if (!listed.includes(signed.digestOid)) fail(`digest algorithm ${signed.digestOid} is not in SignedData.digestAlgorithms`);
  return signed;
}

function parseSignerInfo(der: Uint8Array, si: Tlv): SignedData {
  const f = children(der, si);
  expect(f[0], INTEGER, 'SignerInfo.version');
  let signer: SignerId;
  if (f[1]?.tag === SEQUENCE) {
    const [issuer, serial] = children(der, f[1]);
    signer = { issuer: whole(der, expect(issuer, SEQUENCE, 'sid.issuer')), serial: unsignedInteger(der, expect(serial, INTEGER, 'sid.serialNumber')) };
  } else if (f[1]?.tag === CONTEXT_0_PRIMITIVE) {
    signer = { subjectKeyIdentifier: bytes(der, f[1]) };
  } else fail('SignerInfo.sid');
  const digestOid = oid(der, children(der, expect(f[2], SEQUENCE, 'SignerInfo.digestAlgorithm'))[0], 'digestAlgorithm');
  const digest = DIGESTS[digestOid] ?? fail(`digest algorithm ${digestOid} not supported`);
  let n = 3;
  let signedAttributes: SignedData['signedAttributes'] = null;
  if (f[n]?.tag === CONTEXT_0) {
    signedAttributes = parseSignedAttributes(der, f[n]!);
    n++;
  }
  const sigOid = oid(der, children(der, expect(f[n], SEQUENCE, 'SignerInfo.signatureAlgorithm'))[0], 'signatureAlgorithm');
  const alg = SIGNATURES[sigOid] ?? fail(`signature algorithm ${sigOid} not supported`);
  if (alg.digest !== null && alg.digest !== digest) fail(`signature algorithm ${sigOid} does not use digest ${digest}`);
  const signature = bytes(der, expect(f[n + 1], OCTET_STRING, 'SignerInfo.signature'));
  // Unsigned attributes ([1]) may follow; nothing else.
  if (f.length > n + 3 || (f.length === n + 3 && f[n + 2]!.tag !== CONTEXT_1)) fail('unexpected data in SignerInfo');
  return { signer, digest, digestOid, signatureKey: alg.key, signedAttributes, signature };
}

/** RFC 5652 §5.4: the signed DER is the attributes with the [0] tag replaced by SET OF. */
function parseSignedAttributes(der: Uint8Array, attrs: Tlv): NonNullable<SignedData['signedAttributes']> {
  let messageDigest: Buffer | null = null;
  let contentType: string | null = null;
  for (const attr of children(der, attrs)) {
    const [type, values] = children(der, expect(attr, SEQUENCE, 'Attribute'));
    const t = oid(der, type, 'Attribute.type');
    const vs = children(der, expect(values, SET, 'Attribute.values'));
    if (t === OID_MESSAGE_DIGEST || t === OID_CONTENT_TYPE) {
      // Both exactly once, with one value (RFC 5652 §11.1, §11.2).
      if (vs.length !== 1 || (t === OID_MESSAGE_DIGEST ? messageDigest : contentType) !== null) fail(`attribute ${t} must occur once with one value`);
      if (t === OID_MESSAGE_DIGEST) messageDigest = bytes(der, expect(vs[0], OCTET_STRING, 'messageDigest'));
      else contentType = oid(der, vs[0], 'contentType');
    }
  }
  if (messageDigest === null || contentType === null) fail('signed attributes without messageDigest or contentType');
  if (contentType !== OID_DATA) fail(`signed content type ${contentType} is not id-data`);
  const signed = whole(der, attrs);
  signed[0] = SET;
  return { der: signed, messageDigest };
}

/** issuer Name (DER), serial and subject key identifier of a certificate, read from its DER. */
function certificateIds(cert: X509Certificate): { issuer: Buffer; serial: Buffer; rawSerial: Buffer; subjectKeyIdentifier: Buffer | null } {
  const der = cert.raw;
  const c = expect(readTlv(der, 0, der.length), SEQUENCE, 'Certificate');
  const tbs = children(der, expect(children(der, c)[0], SEQUENCE, 'tbsCertificate'));
  // version [0] EXPLICIT is optional (v1 certificates).
  const k = tbs[0]?.tag === CONTEXT_0 ? 1 : 0;
  const serialTlv = expect(tbs[k], INTEGER, 'serialNumber');
  const serial = unsignedInteger(der, serialTlv);
  const issuer = whole(der, expect(tbs[k + 2], SEQUENCE, 'issuer'));
  let subjectKeyIdentifier: Buffer | null = null;
  const ext = tbs.find((t) => t.tag === CONTEXT_3);
  if (ext) {
    for (const e of children(der, expect(children(der, ext)[0], SEQUENCE, 'extensions'))) {
      const parts = children(der, e);
      if (oid(der, parts[0], 'extnID') !== OID_SUBJECT_KEY_IDENTIFIER) continue;
      const value = expect(parts.at(-1), OCTET_STRING, 'extnValue');
      subjectKeyIdentifier = bytes(der, expect(readTlv(der, value.valueStart, value.end), OCTET_STRING, 'subjectKeyIdentifier'));
    }
  }
  return { issuer, serial, rawSerial: bytes(der, serialTlv), subjectKeyIdentifier };
}

/**
 * The hex id the kernel names a certificate's key by in its description: the subject key
 * identifier, else the serial number's DER content (x509_key_preparse()).
 */
export function kernelKeyId(cert: X509Certificate): string {
  const ids = certificateIds(cert);
  return (ids.subjectKeyIdentifier ?? ids.rawSerial).toString('hex');
}

/** The signer's IssuerAndSerialNumber (RFC 5652 §10.2.4) as DER, for writing a SignerInfo. */
export function issuerAndSerialNumber(cert: X509Certificate): Buffer {
  const ids = certificateIds(cert);
  const serial = Buffer.concat([Buffer.from([INTEGER]), derLength(ids.rawSerial.length), ids.rawSerial]);
  const body = Buffer.concat([ids.issuer, serial]);
  return Buffer.concat([Buffer.from([SEQUENCE]), derLength(body.length), body]);
}

/** A DER length: short form below 128, else 0x80 | byte count, big-endian. */
export function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Whether `cert` is the certificate the SignerInfo names. */
export function isSigner(sd: SignedData, cert: X509Certificate): boolean {
  const ids = certificateIds(cert);
  if ('subjectKeyIdentifier' in sd.signer) return ids.subjectKeyIdentifier !== null && ids.subjectKeyIdentifier.equals(sd.signer.subjectKeyIdentifier);
  return ids.serial.equals(sd.signer.serial) && ids.issuer.equals(sd.signer.issuer);
}

/**
 * Whether the signature verifies over `content` with `cert`'s key. The caller has checked
 * isSigner(). A key of another type than the signature algorithm's does not verify.
 */
export function verifySignedData(sd: SignedData, content: Uint8Array, cert: X509Certificate): boolean {
  const key = cert.publicKey;
  const keyType = key.asymmetricKeyType;
  if (keyType !== sd.signatureKey) return false;
  let signed: Uint8Array = content;
  if (sd.signedAttributes) {
    const digest = crypto.createHash(sd.digest).update(content).digest();
    // Nothing secret is compared here: the digest of public content against a public attribute.
    if (!digest.equals(sd.signedAttributes.messageDigest)) return false;
    signed = sd.signedAttributes.der;
  }
  try {
    // RSA PKCS#1 v1.5, or ECDSA with a DER signature (node's default dsaEncoding).
    return crypto.verify(sd.digest, signed, key, sd.signature);
  } catch {
    return false;
  }
}
