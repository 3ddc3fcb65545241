// Admission: whether mntfsd takes an image, and how. The one decision, used by MountImage
// (mount-image.ts, which then verifies, mounts and idmaps what the plan lists) and by
// `mountgate inspect` (cli/inspect.ts, which only prints the plan), so the two cannot drift
// apart; as systemd's vl_method_mount_image() (mountwork.c) and systemd-dissect share
// dissect-image.c and image-policy.c. The checks, in MountImage's order: trust by location,
// the image policy, dissection, partition selection by the policy, signed partitions only in
// the host's id space, then per selected partition a known file system and, where it is to be
// used as signed, its signature. Nothing here mounts or sets up a device.
import { toVarlinkError, type VarlinkError } from '../ipc/errors.js';
import { dissectImage, type DissectedImage, type DissectedPartition } from './ddi/dissect.js';
import { MountFsError } from './errors.js';
import { evaluatePartition, type Designator, type ImagePolicy, type Protection } from './image-policy.js';
import type { RootHashSignature } from './dm-verity.js';
import { loadTrustedCertificates, readVeritySignature, verifyVeritySignature, VeritySignatureError, type TrustedCertificate, type VerifiedSignature } from './signature.js';
import { checkTrustedImage, effectiveImagePolicy, type TrustResult } from './trust.js';

export interface AdmissionRequest {
  trustedDirectories: readonly string[];
  certificateDirectories: readonly string[];
  /**
   * A caller other than root asking for a mount in the host's id space (see HOST_ID_SPACE_ATTRS
   * in mount-image.ts): the image's location grants nothing, and every partition must be signed.
   */
  hostIdSpace?: boolean;
  /** MountImage's imagePolicy: narrows the daemon's default for the image, never widens it. */
  callerPolicy?: string;
}

export type SignatureVerdict =
  /** A trusted certificate made it; `der` (PKCS#7) goes to dm-verity too (dm-verity.ts loadSigned()). */
  | { status: 'trusted'; verified: VerifiedSignature; der: Buffer }
  /** 'untrusted': no trusted certificate made it (KeyNotFound); 'invalid': it does not verify or cannot be read. */
  | { status: 'untrusted' | 'invalid'; error: VeritySignatureError };

export interface PlannedPartition {
  partition: DissectedPartition;
  /** How it is to be mounted; null if it is not (skipped by the policy, a verity or signature partition, or the image is refused). */
  use: Protection | null;
  /** For a partition to be used as signed: the verdict on its signature, once checked. */
  signature: SignatureVerdict | null;
}

/** One partition to mount; in image order. */
export interface PlannedMount {
  partition: DissectedPartition;
  protection: Protection;
  /** As dissection read it; a verified partition's is read again from the verified bytes. */
  fileSystemType: string;
  /** The verified signature of a partition used as signed, and its signer. */
  signature?: RootHashSignature;
}

interface PlanBase {
  trust: TrustResult;
  policy: ImagePolicy;
  /** Every partition dissection found, in its order (verity and signature partitions too). */
  partitions: PlannedPartition[];
}

export type AdmissionPlan =
  | (PlanBase & { admitted: true; image: DissectedImage; mounts: PlannedMount[] })
  /** `refusal` is what the first failed check threw: MountImage answers with it. */
  | (PlanBase & {
      admitted: false;
      image: DissectedImage | null;
      /** The answer to MountImage, from the first check that failed. */
      refusal: VarlinkError;
      /** That check's own message, for people (the wire error carries no detail). */
      reason: string;
    });

const HOST_ID_SPACE: TrustResult = { trusted: false, reason: 'the host id space: location grants nothing' };

/**
 * Decides on the image behind `fd`. A refusal is part of the plan, with what is known by then.
 * Throws ImagePolicyError (a VarlinkError) for a caller policy that is malformed or leaves
 * nothing allowed: a bad request, refused before the image is looked at.
 */
export async function admitImage(fd: number, req: AdmissionRequest): Promise<AdmissionPlan> {
  const trust = req.hostIdSpace ? HOST_ID_SPACE : checkTrustedImage(fd, req.trustedDirectories);
  const policy = effectiveImagePolicy(trust.trusted, req.callerPolicy);
  let image: DissectedImage | null = null;
  let partitions: PlannedPartition[] = [];
  try {
    image = dissectImage(fd);
    partitions = image.partitions.map((partition) => ({ partition, use: null, signature: null }));
    const selected = selectPartitions(image, policy);
    if (req.hostIdSpace && selected.some((x) => x.protection !== 'signed')) throw new MountFsError('DeniedByImagePolicy', 'host id space: signed partitions only');
    const mounts: PlannedMount[] = [];
    let certificates: readonly TrustedCertificate[] | undefined;
    for (const { partition, protection } of selected) {
      if (!partition.fileSystemType) throw new MountFsError('IncompatibleImage', `${partition.designator}: unknown file system`);
      const mount: PlannedMount = { partition, protection, fileSystemType: partition.fileSystemType };
      if (protection === 'signed') {
        certificates ??= loadTrustedCertificates(req.certificateDirectories).certificates;
        // 'signed' is only offered for partitions dissection paired with a signature partition.
        const verdict = (await checkSignature(fd, partition, certificates))!;
        partitions.find((p) => p.partition === partition)!.signature = verdict;
        if (verdict.status !== 'trusted') throw verdict.error;
        mount.signature = { der: verdict.der, signer: verdict.verified.certificate };
      }
      mounts.push(mount);
    }
    for (const p of partitions) p.use = mounts.find((m) => m.partition === p.partition)?.protection ?? null;
    return { admitted: true, trust, policy, partitions, image, mounts };
  } catch (err) {
    // What has no Varlink answer is a bug, not a refusal.
    const refusal = toVarlinkError(err);
    if (refusal === undefined) throw err;
    return { admitted: false, trust, policy, partitions, image, refusal, reason: (err as Error).message };
  }
}

/**
 * The verdict on a data partition's Verity signature against `certificates`, or null if it has
 * no signature partition. Throws only what reading the image throws.
 */
export async function checkSignature(fd: number, p: DissectedPartition, certificates: readonly TrustedCertificate[]): Promise<SignatureVerdict | null> {
  const where = p.verity?.signature;
  if (!p.verity || !where) return null;
  try {
    const sig = readVeritySignature(fd, where.offset, where.size);
    const verified = await verifyVeritySignature(sig, { trusted: certificates, expectedRootHash: p.verity.rootHash });
    return { status: 'trusted', verified, der: sig.signature };
  } catch (err) {
    if (!(err instanceof VeritySignatureError)) throw err;
    return { status: err.kind === 'key-not-found' ? 'untrusted' : 'invalid', error: err };
  }
}

interface Selected {
  partition: DissectedPartition;
  protection: Protection;
}

/** What to mount and with which protection; throws DeniedByImagePolicy. */
function selectPartitions(image: DissectedImage, policy: ImagePolicy): Selected[] {
  const selected: Selected[] = [];
  const seen = new Set<string>();
  for (const partition of image.partitions) {
    if (partition.designator.endsWith('-verity') || partition.designator.endsWith('-verity-sig')) continue;
    seen.add(partition.designator);
    const offered: Protection = partition.verity?.signature ? 'signed' : partition.verity ? 'verity' : 'unprotected';
    const v = evaluatePartition(policy, partition.designator as Designator, offered, {
      readOnly: partition.readOnly,
      growFileSystem: partition.growFileSystem,
      fileSystem: partition.fileSystemType ?? undefined,
    });
    if (v.verdict === 'skip') continue;
    if (v.verdict === 'deny') throw new MountFsError('DeniedByImagePolicy', v.reason);
    selected.push({ partition, protection: v.as });
  }
  for (const designator of ['root', 'usr'] as const) {
    if (seen.has(designator)) continue;
    const v = evaluatePartition(policy, designator, 'absent');
    if (v.verdict === 'deny') throw new MountFsError('DeniedByImagePolicy', v.reason);
  }
  return selected;
}
