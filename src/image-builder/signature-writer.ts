// Verity signature partition content: a detached PKCS#7 signature over the root hash's hex
// string, encoded as `openssl smime -sign -binary -noattr` (and systemd-repart) encode it —
// SignedData v1, sha256, the signer's certificate embedded, no signed attributes — wrapped in
// the DDI JSON object and NUL-padded.
import crypto from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';

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

const ab = (b: Buffer): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

/** DER PKCS#7 detached signature over the ASCII bytes of `rootHashHex`. */
export function signRootHash(rootHashHex: string, id: SigningIdentity): Buffer {
  const content = Buffer.from(rootHashHex, 'ascii');
  // Without signed attributes the signature covers the content itself (PKCS#1 v1.5 / ECDSA DER).
  const signature = crypto.sign('sha256', content, id.key);
  const cert = pkijs.Certificate.fromBER(ab(id.cert.raw));
  const sha256 = (): pkijs.AlgorithmIdentifier =>
    new pkijs.AlgorithmIdentifier({ algorithmId: OID_SHA256, algorithmParams: new asn1js.Null() });
  const signatureAlgorithm =
    id.key.asymmetricKeyType === 'rsa'
      ? new pkijs.AlgorithmIdentifier({ algorithmId: OID_RSA_ENCRYPTION, algorithmParams: new asn1js.Null() })
      : new pkijs.AlgorithmIdentifier({ algorithmId: OID_ECDSA_WITH_SHA256 });
  const signedData = new pkijs.SignedData({
    version: 1,
    digestAlgorithms: [sha256()],
    encapContentInfo: new pkijs.EncapsulatedContentInfo({ eContentType: OID_DATA }),
    certificates: [cert],
    signerInfos: [
      new pkijs.SignerInfo({
        version: 1,
        sid: new pkijs.IssuerAndSerialNumber({ issuer: cert.issuer, serialNumber: cert.serialNumber }),
        digestAlgorithm: sha256(),
        signatureAlgorithm,
        signature: new asn1js.OctetString({ valueHex: ab(signature) }),
      }),
    ],
  });
  const contentInfo = new pkijs.ContentInfo({ contentType: OID_SIGNED_DATA, content: signedData.toSchema(true) });
  return Buffer.from(contentInfo.toSchema().toBER(false));
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
