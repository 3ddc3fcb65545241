// Verity signature partitions (UAPI.2 DPS): the JSON written by systemd-repart, and userspace
// verification of its PKCS#7 signature over the hex root hash against certificates in verity.d
// directories. Mirrors systemd's userspace path (PKCS7_verify with NOINTERN|NOVERIFY): the signer
// must be one of the configured certificates, certificates embedded in the signature are never
// trusted, and validity dates are not enforced unless asked for. One deliberate difference: a
// trusted certificate must be self-signed (as the keys systemd-repart/mkosi generate are), so a
// CA's certificate in verity.d never stands in for a leaf's; systemd would also accept a listed leaf.
// The PKCS#7 structure and its cryptography are pkcs7.ts's.
import fs from 'node:fs';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { Pkcs7FormatError, isSigner, parseSignedData, verifySignedData, type SignedData } from './pkcs7.js';
import { VarlinkError, systemError } from '../ipc/errors.js';
import { MountFileSystem } from '../ipc/interfaces/io.systemd.MountFileSystem.js';

/** systemd refuses signature partitions larger than this (dissect-image.c). */
export const MAX_SIGNATURE_PARTITION_SIZE = 4 * 1024 * 1024;
/** A certificate file larger than this is not a certificate. */
const MAX_CERTIFICATE_FILE_SIZE = 1024 * 1024;

/** Where trusted signing certificates live: systemd's CONF_PATHS("verity.d"), highest priority first. */
export const DEFAULT_VERITY_CERT_DIRECTORIES: readonly string[] = ['/etc/verity.d', '/run/verity.d', '/usr/local/lib/verity.d', '/usr/lib/verity.d'];

export type SignatureErrorKind =
  /** Partition content bigger than MAX_SIGNATURE_PARTITION_SIZE. */
  | 'too-large'
  /** Not the JSON we expect, or the PKCS#7 inside cannot be used. */
  | 'malformed'
  /** The signed root hash is not the one of the image. */
  | 'root-hash-mismatch'
  /** No trusted certificate is the signer. */
  | 'key-not-found'
  /** A trusted certificate is the signer, but the signature does not verify. */
  | 'signature-invalid';

/**
 * What MountImage answers for each kind of signature failure: systemd maps both "no key" and
 * "signature does not verify" to ENOKEY, which is KeyNotFound; content errors are
 * io.systemd.System with the errno systemd uses (EFBIG, EBADMSG).
 */
function wireError(kind: SignatureErrorKind): VarlinkError {
  switch (kind) {
    case 'key-not-found':
    case 'signature-invalid':
      return new VarlinkError(MountFileSystem.error.KeyNotFound);
    case 'too-large':
      return systemError('EFBIG');
    case 'malformed':
    case 'root-hash-mismatch':
      return systemError('EBADMSG');
  }
}

/** Verity signature failure, carrying the Varlink error MountImage answers with; the message is for logs. */
export class VeritySignatureError extends VarlinkError {
  constructor(
    readonly kind: SignatureErrorKind,
    message: string,
  ) {
    const wire = wireError(kind);
    super(wire.error, wire.parameters, message);
    this.name = 'VeritySignatureError';
  }
}

const hexRootHash = /^(?:[0-9a-fA-F]{2}){16,64}$/;
const base64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The fields of the JSON object, checked by hand: three strings do not need a schema library. */
function signatureFields(value: unknown): { rootHash: string; certificateFingerprint: string | undefined; signature: string } {
  const malformed = (why: string): never => {
    throw new VeritySignatureError('malformed', `verity signature JSON: ${why}`);
  };
  // Unknown fields are tolerated (the spec reserves them) and ignored.
  if (typeof value !== 'object' || value === null || Array.isArray(value)) malformed('not an object');
  const o = value as Record<string, unknown>;
  const { rootHash, certificateFingerprint, signature } = o;
  if (typeof rootHash !== 'string' || !hexRootHash.test(rootHash)) malformed('rootHash must be 16..64 bytes of hex');
  if (certificateFingerprint !== undefined && (typeof certificateFingerprint !== 'string' || !/^[0-9a-fA-F]{64}$/.test(certificateFingerprint))) {
    malformed('certificateFingerprint must be a SHA-256 in hex');
  }
  if (typeof signature !== 'string' || signature.length < 4 || !base64.test(signature)) malformed('signature must be base64');
  return { rootHash: rootHash as string, certificateFingerprint: certificateFingerprint as string | undefined, signature: signature as string };
}

export interface VeritySignature {
  /** Lowercase hex; the signed content is exactly this string. */
  rootHash: string;
  /** Lowercase hex SHA-256 of the signer's DER certificate, if the image names it. */
  certificateFingerprint: string | undefined;
  /** DER PKCS#7 SignedData. */
  signature: Buffer;
}

/**
 * Parses the content of a verity-sig partition: JSON text followed only by NUL padding.
 * Throws VeritySignatureError ('too-large' or 'malformed').
 */
export function parseVeritySignature(content: Uint8Array): VeritySignature {
  if (content.length > MAX_SIGNATURE_PARTITION_SIZE) {
    throw new VeritySignatureError('too-large', `verity signature partition is ${content.length} bytes, limit ${MAX_SIGNATURE_PARTITION_SIZE}`);
  }
  const nul = content.indexOf(0);
  const end = nul < 0 ? content.length : nul;
  for (let i = end; i < content.length; i++) {
    if (content[i] !== 0) throw new VeritySignatureError('malformed', 'verity signature data continues after NUL padding');
  }
  if (end === 0) throw new VeritySignatureError('malformed', 'verity signature partition is empty');

  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(content.subarray(0, end)));
  } catch (err) {
    throw new VeritySignatureError('malformed', `verity signature is not valid JSON: ${(err as Error).message}`);
  }
  const fields = signatureFields(value);
  return {
    rootHash: fields.rootHash.toLowerCase(),
    certificateFingerprint: fields.certificateFingerprint?.toLowerCase(),
    signature: Buffer.from(fields.signature, 'base64'),
  };
}

/** Reads and parses a verity-sig partition at `offset`/`size` of `fd`, refusing oversized ones before reading. */
export function readVeritySignature(fd: number, offset: number, size: number): VeritySignature {
  if (size > MAX_SIGNATURE_PARTITION_SIZE) {
    throw new VeritySignatureError('too-large', `verity signature partition is ${size} bytes, limit ${MAX_SIGNATURE_PARTITION_SIZE}`);
  }
  const buf = Buffer.alloc(size);
  let done = 0;
  while (done < size) {
    const n = fs.readSync(fd, buf, done, size - done, offset + done);
    if (n === 0) throw new VeritySignatureError('malformed', 'verity signature partition is truncated');
    done += n;
  }
  return parseVeritySignature(buf);
}

/** Throws 'root-hash-mismatch' unless the signed root hash is `expected` (hex, any case). */
export function checkRootHash(sig: VeritySignature, expected: string): void {
  if (sig.rootHash !== expected.toLowerCase()) {
    throw new VeritySignatureError('root-hash-mismatch', `signed root hash ${sig.rootHash} is not the image's root hash ${expected.toLowerCase()}`);
  }
}

export interface TrustedCertificate {
  /** File it was loaded from. */
  path: string;
  /** Lowercase hex SHA-256 of the DER encoding. */
  fingerprint: string;
  subject: string;
  certificate: X509Certificate;
}

export interface TrustedCertificates {
  certificates: TrustedCertificate[];
  /** Files that were ignored, with why (systemd ignores unloadable certificates too). */
  skipped: { path: string; reason: string }[];
}

/**
 * Loads the first certificate of every `*.crt` PEM file in `dirs`. As with systemd's conf-file
 * lookup, a name in an earlier directory hides the same name in later ones, and an empty file or a
 * symlink to /dev/null masks it. Missing directories are fine.
 */
export function loadTrustedCertificates(dirs: readonly string[] = DEFAULT_VERITY_CERT_DIRECTORIES): TrustedCertificates {
  const chosen = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (name.endsWith('.crt') && !name.startsWith('.') && !chosen.has(name)) chosen.set(name, path.join(dir, name));
    }
  }
  const result: TrustedCertificates = { certificates: [], skipped: [] };
  for (const name of [...chosen.keys()].sort()) {
    const file = chosen.get(name) as string;
    try {
      const loaded = loadCertificateFile(file);
      if (loaded) result.certificates.push(loaded);
    } catch (err) {
      result.skipped.push({ path: file, reason: (err as Error).message });
    }
  }
  return result;
}

/** Returns undefined for a masked file. */
function loadCertificateFile(file: string): TrustedCertificate | undefined {
  const st = fs.statSync(file);
  if (st.isCharacterDevice() && fs.realpathSync(file) === '/dev/null') return undefined;
  if (!st.isFile()) throw new Error('not a regular file');
  if (st.size === 0) return undefined;
  if (st.size > MAX_CERTIFICATE_FILE_SIZE) throw new Error(`larger than ${MAX_CERTIFICATE_FILE_SIZE} bytes`);
  const x509 = new X509Certificate(fs.readFileSync(file));
  return {
    path: file,
    fingerprint: x509.fingerprint256.replaceAll(':', '').toLowerCase(),
    subject: x509.subject,
    certificate: x509,
  };
}

export interface VerifiedSignature {
  rootHash: string;
  /** The trusted certificate that verified it. */
  subject: string;
  fingerprint: string;
  certificatePath: string;
  /** That certificate: the kernel may hold its key too (dm-verity.ts). */
  certificate: X509Certificate;
}

export interface VerifyOptions {
  trusted: readonly TrustedCertificate[];
  /** The image's root hash (e.g. paired from the partition UUIDs); checked before any crypto. */
  expectedRootHash?: string;
  /** Enforce certificate validity at this date. Default: not enforced, as in systemd. */
  checkDate?: Date;
}

/**
 * Verifies `sig` against the trusted certificates. Candidates are the certificates with the
 * fingerprint the image names, or all of them if it names none. Throws VeritySignatureError:
 * 'root-hash-mismatch', 'malformed' (unusable PKCS#7), 'key-not-found', 'signature-invalid'.
 */
export async function verifyVeritySignature(sig: VeritySignature, opts: VerifyOptions): Promise<VerifiedSignature> {
  if (opts.expectedRootHash !== undefined) checkRootHash(sig, opts.expectedRootHash);
  const signed = decodeSignedData(sig.signature);
  const data = Buffer.from(sig.rootHash, 'ascii');
  const candidates = opts.trusted.filter((c) => sig.certificateFingerprint === undefined || c.fingerprint === sig.certificateFingerprint);

  let signerFound = false;
  let lastFailure = '';
  for (const candidate of candidates) {
    // NOINTERN: only the candidate may be the signer, whatever certificates the signature carries.
    // This also accepts signatures made without embedded certificates (-nocerts).
    const cert = candidate.certificate;
    if (!isSigner(signed, cert)) continue;
    signerFound = true;
    if (!selfSigned(cert)) lastFailure = 'the trusted certificate is not self-signed';
    else if (opts.checkDate && !validAt(cert, opts.checkDate)) lastFailure = `the certificate is not valid on ${opts.checkDate.toISOString()}`;
    else if (!verifySignedData(signed, data, cert)) lastFailure = 'signature does not match';
    else return { rootHash: sig.rootHash, subject: candidate.subject, fingerprint: candidate.fingerprint, certificatePath: candidate.path, certificate: cert };
  }
  if (!signerFound) {
    const why = sig.certificateFingerprint !== undefined && candidates.length === 0
      ? `no trusted certificate has fingerprint ${sig.certificateFingerprint}`
      : 'the signer is not a trusted certificate';
    throw new VeritySignatureError('key-not-found', `verity signature: ${why}`);
  }
  throw new VeritySignatureError('signature-invalid', `verity signature does not verify: ${lastFailure}`);
}

/** Decodes the DER SignedData: one signer over detached content, or 'malformed'. */
function decodeSignedData(der: Buffer): SignedData {
  try {
    return parseSignedData(der);
  } catch (err) {
    if (!(err instanceof Pkcs7FormatError)) throw err;
    throw new VeritySignatureError('malformed', `verity signature is not a usable PKCS#7 SignedData: ${err.message}`);
  }
}

/** Issued by itself and signed by its own key: a trust anchor on its own. */
function selfSigned(cert: X509Certificate): boolean {
  try {
    return cert.checkIssued(cert) && cert.verify(cert.publicKey);
  } catch {
    return false;
  }
}

function validAt(cert: X509Certificate, date: Date): boolean {
  return new Date(cert.validFrom) <= date && date <= new Date(cert.validTo);
}
