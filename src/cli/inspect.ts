// `mountgate inspect IMAGE`: what the image holds and what mntfsd would do with it for an
// unprivileged caller: the plan of mntfsd's own admission decision (admission.ts: trust by
// location, policy, dissection, partition selection, signatures), formatted; optionally with
// every verity-protected byte checked. Mounts nothing.
import fs from 'node:fs';
import { toVarlinkError } from '../ipc/errors.js';
import { admitImage, checkSignature, type AdmissionPlan, type SignatureVerdict } from '../mntfsd/admission.js';
import type { DissectedPartition } from '../mntfsd/ddi/dissect.js';
import { formatImagePolicy, type Protection } from '../mntfsd/image-policy.js';
import { DEFAULT_VERITY_CERT_DIRECTORIES, loadTrustedCertificates, type TrustedCertificate } from '../mntfsd/signature.js';
import { verifyPartition } from '../mntfsd/verity.js';
import { parseCommand, singlePositional, type Command } from './args.js';
import { progressBar } from './progress.js';

const INSPECT_USAGE = `Usage: mountgate inspect IMAGE [OPTIONS]

Show the partitions of the disk image IMAGE, their verity and signature status, and whether
mntfsd would mount it for an unprivileged caller (and if not, the Varlink error it would
answer). Runs mntfsd's checks with the same configuration options; mounts nothing.

Options:
  --verity-certs DIR  trust the certificates (*.crt) in DIR; repeatable
                      (default ${DEFAULT_VERITY_CERT_DIRECTORIES.join(' ')})
  --trusted-dir DIR   trust images directly inside DIR by location; repeatable (default none)
  --verify            also check every byte the mount would use against its verity hash tree
  --json              print the report as JSON on stdout
  -h, --help          show this text

Exit status: 0 mntfsd would accept the image, 1 it would refuse it (or IMAGE cannot be
  read), 2 usage error.
`;

export type SignatureStatus =
  /** Verified by a trusted certificate. */
  | { status: 'trusted'; subject: string; fingerprint: string; certificate: string }
  /** Unsigned verity, or a signature no trusted certificate made / that does not verify. */
  | { status: 'none' }
  | { status: 'untrusted' | 'invalid'; error: string; message: string };

export interface InspectedPartition {
  designator: string;
  partitionNumber: number | null;
  fileSystemType: string | null;
  size: number;
  offset: number;
  label: string | null;
  uuid: string | null;
  architecture: string | null;
  flags: { readOnly: boolean; noAuto: boolean; growFileSystem: boolean };
  /** Data partitions with a verity hash partition; null otherwise. */
  verity: { rootHash: string; rootHashSource: string; signature: SignatureStatus } | null;
  /** How mntfsd would mount it; null if it would not be used (or the image is refused). */
  use: Protection | null;
  /** --verify result: true ok, false failed, null not checked. */
  verified: boolean | null;
}

export interface InspectReport {
  image: string;
  imageSize: number | null;
  sectorSize: number | null;
  imageUuid: string | null;
  partitionTable: boolean | null;
  trustedByLocation: boolean;
  trust: string;
  /** The policy mntfsd would apply, in systemd's syntax. */
  imagePolicy: string;
  partitions: InspectedPartition[];
  accepted: boolean;
  /** The Varlink error MountImage would answer, when refused. */
  error: string | null;
  reason: string | null;
}

export interface InspectOptions {
  certificateDirectories?: readonly string[];
  trustedDirectories?: readonly string[];
  verify?: boolean;
  onProgress?: (designator: string, done: number, total: number) => void;
}

/** The Varlink error name MountImage would answer with, and a readable reason (its log detail). */
function refusal(err: unknown): { error: string; reason: string } {
  const v = toVarlinkError(err);
  if (v === undefined) throw err;
  return { error: v.error, reason: (err as Error).message };
}

function signatureStatus(verdict: SignatureVerdict | null): SignatureStatus {
  if (verdict === null) return { status: 'none' };
  if (verdict.status === 'trusted') {
    const { subject, fingerprint, certificatePath } = verdict.verified;
    return { status: 'trusted', subject, fingerprint, certificate: certificatePath };
  }
  return { status: verdict.status, error: verdict.error.error, message: verdict.error.message };
}

function describePartition(p: DissectedPartition, table: boolean, use: Protection | null): InspectedPartition {
  return {
    designator: p.designator,
    partitionNumber: table ? p.partitionNumber : null,
    fileSystemType: p.fileSystemType,
    size: p.size,
    offset: p.offset,
    label: p.partitionLabel || null,
    uuid: p.partitionUuid,
    architecture: p.architecture,
    flags: { readOnly: p.readOnly, noAuto: p.noAuto, growFileSystem: p.growFileSystem },
    verity: null,
    use,
    verified: null,
  };
}

/** Inspects the image at `imagePath` as mntfsd would for an unprivileged caller: admission.ts's plan, formatted. */
async function inspectImage(imagePath: string, opts: InspectOptions = {}): Promise<InspectReport> {
  const fd = fs.openSync(imagePath, 'r');
  try {
    const certificateDirectories = opts.certificateDirectories ?? DEFAULT_VERITY_CERT_DIRECTORIES;
    const plan = await admitImage(fd, { trustedDirectories: opts.trustedDirectories ?? [], certificateDirectories });
    const { trust, image } = plan;
    const report: InspectReport = {
      image: imagePath,
      imageSize: image?.imageSize ?? null,
      sectorSize: image?.sectorSize ?? null,
      imageUuid: image?.imageUuid ?? null,
      partitionTable: image?.partitionTable ?? null,
      trustedByLocation: trust.trusted,
      trust: trust.trusted ? `trusted: inside ${trust.directory}` : `untrusted: ${trust.reason}`,
      imagePolicy: formatImagePolicy(plan.policy),
      partitions: [],
      accepted: plan.admitted,
      error: null,
      reason: null,
    };
    // Signatures the plan did not need are checked for the report alone.
    let certificates: readonly TrustedCertificate[] | undefined;
    for (const planned of plan.partitions) {
      const { partition: data } = planned;
      const p = describePartition(data, image?.partitionTable ?? false, planned.use);
      if (data.verity) {
        const verdict = planned.signature ?? (await checkSignature(fd, data, (certificates ??= loadTrustedCertificates(certificateDirectories).certificates)));
        p.verity = { rootHash: data.verity.rootHash, rootHashSource: data.verity.source, signature: signatureStatus(verdict) };
      }
      report.partitions.push(p);
    }
    if (!plan.admitted) {
      Object.assign(report, { error: plan.refusal.error, reason: plan.reason });
    } else if (opts.verify) {
      try {
        await verifyMounts(fd, plan, report, opts.onProgress);
      } catch (err) {
        report.partitions.forEach((p) => (p.use = null));
        Object.assign(report, { accepted: false }, refusal(err));
      }
    }
    return report;
  } finally {
    fs.closeSync(fd);
  }
}

/** --verify: every byte each verity-protected mount would use, against its hash tree (as the verified copy does). */
async function verifyMounts(fd: number, plan: AdmissionPlan, report: InspectReport, onProgress: InspectOptions['onProgress']): Promise<void> {
  for (const [i, { partition, use }] of plan.partitions.entries()) {
    if (use === null || use === 'unprotected') continue;
    const p = report.partitions[i]!;
    const v = partition.verity!;
    try {
      await verifyPartition(fd, { offset: partition.offset, size: partition.size }, { offset: v.hash.offset, size: v.hash.size }, Buffer.from(v.rootHash, 'hex'), {
        copy: false,
        onProgress: onProgress && ((done, total) => onProgress(partition.designator, done, total)),
      });
      p.verified = true;
    } catch (err) {
      p.verified = false;
      throw err;
    }
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
function humanSize(n: number): string {
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}

function verityText(p: InspectedPartition): string {
  if (p.designator.endsWith('-verity')) return 'hash tree';
  if (p.designator.endsWith('-verity-sig')) return 'signature';
  const v = p.verity;
  if (!v) return 'no verity';
  const s = v.signature;
  switch (s.status) {
    case 'trusted':
      return `signed by ${s.subject.replaceAll('\n', ', ')} (${s.certificate})`;
    case 'none':
      return 'verity, no signature';
    case 'untrusted':
      return 'signed, key not trusted';
    case 'invalid':
      return `bad signature`;
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

function formatReport(r: InspectReport): string {
  const head = [
    `Image:    ${r.image}`,
    r.imageSize === null
      ? undefined
      : `          ${r.partitionTable ? 'GPT disk image' : 'bare file system'}, ${humanSize(r.imageSize)}, sector size ${r.sectorSize}${r.imageUuid ? `, uuid ${r.imageUuid}` : ''}`,
    `Trust:    ${r.trust}`,
    `Policy:   ${r.imagePolicy}`,
  ].filter((l): l is string => l !== undefined);
  const rows = [
    ['#', 'DESIGNATOR', 'FS', 'SIZE', 'OFFSET', 'LABEL', 'FLAGS', 'VERITY', 'USE', 'UUID'],
    ...r.partitions.map((p) => [
      p.partitionNumber === null ? '-' : String(p.partitionNumber),
      p.designator,
      p.fileSystemType ?? '-',
      humanSize(p.size),
      String(p.offset),
      p.label ?? '-',
      [p.flags.readOnly && 'ro', p.flags.growFileSystem && 'growfs', p.flags.noAuto && 'no-auto'].filter(Boolean).join(',') || '-',
      verityText(p),
      p.use === null ? '-' : `${p.use}${p.verified === true ? ', verified' : p.verified === false ? ', VERIFY FAILED' : ''}`,
      p.uuid ?? '-',
    ]),
  ];
  const verdict = r.accepted
    ? 'Verdict:  accepted: mntfsd would mount it for an unprivileged caller'
    : `Verdict:  refused: ${r.error}${r.reason ? `\n          ${r.reason}` : ''}`;
  return `${head.join('\n')}\n\n${r.partitions.length ? `${table(rows)}\n\n` : ''}${verdict}\n`;
}

const INSPECT: Command = { name: 'inspect', usage: INSPECT_USAGE };

export async function inspectCommand(args: string[]): Promise<number> {
  const parsed = parseCommand(INSPECT, args, {
    allowPositionals: true,
    options: {
      'verity-certs': { type: 'string', multiple: true },
      'trusted-dir': { type: 'string', multiple: true },
      verify: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const image = singlePositional(INSPECT, positionals, 'IMAGE');
  if (typeof image === 'number') return image;
  const bar = values.verify ? progressBar('verifying') : undefined;
  let report: InspectReport;
  try {
    report = await inspectImage(image, {
      certificateDirectories: values['verity-certs'],
      trustedDirectories: values['trusted-dir'],
      verify: values.verify,
      onProgress: bar && ((_designator, done, total) => bar.update(done, total)),
    });
  } catch (err) {
    process.stderr.write(`mountgate inspect: ${(err as Error).message}\n`);
    return 1;
  } finally {
    bar?.clear();
  }
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return report.accepted ? 0 : 1;
}
