// Dissects a Discoverable Disk Image (UAPI.3) or a bare file system image into the
// partitions a container manager would mount, pairing data partitions with their Verity
// hash and signature partitions by the UUIDs derived from the root hash (UAPI.2: the
// partition UUIDs are the root hash's two halves).
// Nothing here is trusted yet: file-system types are read from unverified bytes and are
// informational; verify (verity.ts) and re-probe the verified copy before mounting.
import * as z from '../../validation.js';
import { fdStat } from '../../sys/stat.js';
import { MountFsError, incompatible } from '../errors.js';
import {
  type Architecture,
  type Designator,
  isSignatureDesignator,
  isVerityDesignator,
  nativeArchitecture,
  partitionFlags,
  partitionType,
} from './dps.js';
import { type GptEntry, parseGpt, probeGpt, readAt } from './gpt.js';

export interface PartitionRef {
  partitionNumber: number;
  partitionUuid: string;
  offset: number;
  size: number;
}

export type RootHashSource = 'external' | 'signature' | 'uuids';

export interface VerityPairing {
  hash: PartitionRef;
  signature: PartitionRef | null;
  /**
   * The root hash the partitions were paired by. Only authentic when `source` is
   * 'external' (caller-trusted); 'signature' still needs the PKCS#7 check, and 'uuids'
   * (concatenated partition UUIDs) is a guess that must be authenticated another way.
   * Lowercase hex.
   */
  rootHash: string;
  source: RootHashSource;
}

export interface DissectedPartition {
  designator: Designator;
  /** null for a bare file system without partition table. */
  partitionNumber: number | null;
  partitionUuid: string | null;
  typeUuid: string | null;
  partitionLabel: string | null;
  architecture: Architecture | null;
  offset: number;
  size: number;
  readOnly: boolean;
  noAuto: boolean;
  growFileSystem: boolean;
  fileSystemType: string | null;
  /** Set on root/usr data partitions that have a Verity hash partition. */
  verity: VerityPairing | null;
}

export interface DissectedImage {
  sectorSize: number;
  imageUuid: string | null;
  imageSize: number;
  partitionTable: boolean;
  partitions: DissectedPartition[];
}

export interface DissectOptions {
  /** Image size; defaults to fstat (pass it for block devices, whose st_size is 0). */
  size?: number;
  /** Architecture whose root/usr partitions count; defaults to this machine's. */
  architecture?: Architecture | null;
  /** Externally trusted root hashes, hex (e.g. from a signed command line). */
  rootHash?: string;
  usrHash?: string;
  /** Fail with RootPartitionNotFound when neither root nor usr is found (default true). */
  requireRoot?: boolean;
}

/** Labels of partitions that are partially written (PRT#) or pending (PND#): never used. */
const IGNORED_LABEL = /^(PRT|PND)#/;
/** systemd-repart writes 16 KiB; anything far larger is not a signature partition. */
const MAX_SIGNATURE_SIZE = 4 << 20;
const PROBE_SIZE = 65536 + 4096;

/** Identifies a file system (or Verity hash area) by its magic, blkid-style names. */
export function detectFileSystem(fd: number, offset: number, size: number): string | null {
  const b = readAt(fd, offset, Math.min(size, PROBE_SIZE));
  const at = (off: number, magic: string): boolean =>
    b.length >= off + magic.length && b.toString('latin1', off, off + magic.length) === magic;
  if (at(0, 'hsqs')) return 'squashfs';
  if (at(0, 'XFSB')) return 'xfs';
  if (b.length >= 1028 && b.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  if (b.length >= 1128 && b.readUInt16LE(1080) === 0xef53) {
    const compat = b.readUInt32LE(1116);
    const incompat = b.readUInt32LE(1120);
    const roCompat = b.readUInt32LE(1124);
    if (incompat & 0x8) return null; // external journal device, not mountable
    // Same split as blkid: features ext3 lacks make it ext4.
    if (incompat & ~(0x2 | 0x4 | 0x10) || roCompat & ~0x7) return 'ext4';
    return compat & 0x4 ? 'ext3' : 'ext2';
  }
  if (at(65536 + 64, '_BHRfS_M')) return 'btrfs';
  if (at(4086, 'SWAPSPACE2') || at(4086, 'SWAP-SPACE')) return 'swap';
  if (b.length >= 512 && b[510] === 0x55 && b[511] === 0xaa && (at(54, 'FAT12   ') || at(54, 'FAT16   ') || at(82, 'FAT32   ')))
    return 'vfat';
  if (at(0, 'verity\0\0')) return 'DM_verity_hash';
  return null;
}

/** Version-aware label comparison for A/B partitions (a simplified strverscmp). */
function compareVersions(a: string, b: string): number {
  const ta = a.match(/\d+|\D+/g) ?? [];
  const tb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    const x = ta[i]!;
    const y = tb[i]!;
    if (/^\d/.test(x) && /^\d/.test(y)) {
      const nx = x.replace(/^0+(?=\d)/, '');
      const ny = y.replace(/^0+(?=\d)/, '');
      if (nx.length !== ny.length) return nx.length - ny.length;
      if (nx !== ny) return nx < ny ? -1 : 1;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return ta.length - tb.length;
}

const HEX_HASH = /^([0-9a-f]{2}){16,64}$/;
const signatureJson = z.looseObject({ rootHash: z.string().check(z.regex(HEX_HASH)) });

/** Root hash announced by a verity-sig partition (unauthenticated; only used for pairing). */
function signatureRootHash(fd: number, e: GptEntry): string {
  if (e.size > MAX_SIGNATURE_SIZE) throw incompatible(`verity signature partition ${e.number} too large`);
  const raw = readAt(fd, e.offset, e.size);
  const end = raw.indexOf(0);
  const text = raw.toString('utf8', 0, end < 0 ? raw.length : end);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw incompatible(`verity signature partition ${e.number} is not JSON`);
  }
  const r = signatureJson.safeParse(parsed);
  if (!r.success) throw incompatible(`verity signature partition ${e.number} has no valid rootHash`);
  return r.data.rootHash;
}

const uuidHex = (uuid: string): string => uuid.replaceAll('-', '');
const halves = (h: string): [string, string] => [h.slice(0, h.length / 2), h.slice(h.length / 2)];
const ref = (e: GptEntry): PartitionRef => ({ partitionNumber: e.number, partitionUuid: e.partitionUuid, offset: e.offset, size: e.size });

interface Selection {
  data: GptEntry;
  verity: VerityPairing | null;
  extra: GptEntry[];
}

/** Picks the newest-labelled entry; two equally new ones are ambiguous. */
function newest(cands: GptEntry[], designator: Designator): GptEntry {
  const sorted = [...cands].sort((x, y) => compareVersions(y.label, x.label) || x.number - y.number);
  if (sorted.length > 1 && compareVersions(sorted[0]!.label, sorted[1]!.label) === 0)
    throw new MountFsError('MultipleRootPartitionsFound', `several ${designator} partitions with label "${sorted[0]!.label}"`);
  return sorted[0]!;
}

/** Chooses the data partition of `root` or `usr` and pairs it with its Verity partitions. */
function selectVersioned(
  fd: number,
  designator: 'root' | 'usr',
  byDesignator: Map<Designator, GptEntry[]>,
  external: string | undefined,
): Selection | null {
  const data = byDesignator.get(designator) ?? [];
  const hashes = byDesignator.get(`${designator}-verity`) ?? [];
  const sigs = byDesignator.get(`${designator}-verity-sig`) ?? [];
  if (data.length === 0) return null;

  const pairFor = (h: string): { d: GptEntry[]; v: GptEntry | undefined } => {
    const [first, last] = halves(h);
    return {
      d: data.filter((e) => uuidHex(e.partitionUuid) === first),
      v: hashes.find((e) => uuidHex(e.partitionUuid) === last),
    };
  };

  if (external !== undefined) {
    if (!HEX_HASH.test(external)) throw incompatible('external root hash is not lowercase hex');
    const { d, v } = pairFor(external);
    if (d.length === 0) return null;
    const chosen = newest(d, designator);
    const sig = sigs.find((e) => signatureRootHash(fd, e) === external);
    return {
      data: chosen,
      verity: v ? { hash: ref(v), signature: sig ? ref(sig) : null, rootHash: external, source: 'external' } : null,
      extra: [v, sig].filter((e): e is GptEntry => e !== undefined),
    };
  }

  if (sigs.length > 0) {
    // Each signature names a root hash; keep the data partitions some signature covers.
    const triples: Array<{ d: GptEntry; v: GptEntry; s: GptEntry; h: string }> = [];
    for (const s of sigs) {
      const h = signatureRootHash(fd, s);
      const { d, v } = pairFor(h);
      if (v) for (const e of d) triples.push({ d: e, v, s, h });
    }
    if (triples.length === 0) return null;
    const chosen = newest(
      triples.map((t) => t.d),
      designator,
    );
    const t = triples.find((x) => x.d === chosen)!;
    return { data: chosen, verity: { hash: ref(t.v), signature: ref(t.s), rootHash: t.h, source: 'signature' }, extra: [t.v, t.s] };
  }

  const chosen = newest(data, designator);
  if (hashes.length === 0) return { data: chosen, verity: null, extra: [] };
  // No hash to go by: only an unambiguous pair can be matched (the root hash is then a guess).
  if (hashes.length > 1 || data.length > 1) throw incompatible(`cannot pair several ${designator} Verity partitions without a root hash`);
  const v = hashes[0]!;
  const rootHash = uuidHex(chosen.partitionUuid) + uuidHex(v.partitionUuid);
  return { data: chosen, verity: { hash: ref(v), signature: null, rootHash, source: 'uuids' }, extra: [v] };
}

function describe(fd: number, e: GptEntry, designator: Designator, architecture: Architecture | null, verity: VerityPairing | null): DissectedPartition {
  const flags = partitionFlags(designator, e.attributes);
  let fileSystemType: string | null;
  if (isSignatureDesignator(designator)) fileSystemType = 'verity_hash_signature';
  else fileSystemType = detectFileSystem(fd, e.offset, e.size);
  // A Verity-protected file system cannot be written, so neither can it grow.
  const protectedFs = verity !== null;
  return {
    designator,
    partitionNumber: e.number,
    partitionUuid: e.partitionUuid,
    typeUuid: e.typeUuid,
    partitionLabel: e.label,
    architecture,
    offset: e.offset,
    size: e.size,
    readOnly: flags.readOnly || protectedFs,
    noAuto: flags.noAuto,
    growFileSystem: flags.growFileSystem && !protectedFs,
    fileSystemType,
    verity,
  };
}

export function dissectImage(fd: number, opts: DissectOptions = {}): DissectedImage {
  const imageSize = opts.size ?? fdStat(fd).size;
  if (!Number.isSafeInteger(imageSize) || imageSize <= 0) throw incompatible('empty image');
  const arch = opts.architecture === undefined ? nativeArchitecture() : opts.architecture;

  if (probeGpt(fd, imageSize) === null) {
    const fileSystemType = detectFileSystem(fd, 0, imageSize);
    if (fileSystemType === null || fileSystemType === 'DM_verity_hash' || fileSystemType === 'swap')
      throw incompatible('neither a GPT disk image nor a known file system');
    return {
      sectorSize: 512,
      imageUuid: null,
      imageSize,
      partitionTable: false,
      partitions: [
        {
          designator: 'root',
          partitionNumber: null,
          partitionUuid: null,
          typeUuid: null,
          partitionLabel: null,
          architecture: null,
          offset: 0,
          size: imageSize,
          readOnly: false,
          noAuto: false,
          growFileSystem: false,
          fileSystemType,
          verity: null,
        },
      ],
    };
  }

  const gpt = parseGpt(fd, imageSize);
  const byDesignator = new Map<Designator, GptEntry[]>();
  const archOf = new Map<GptEntry, Architecture | null>();
  for (const e of gpt.entries) {
    const t = partitionType(e.typeUuid);
    if (!t || IGNORED_LABEL.test(e.label)) continue;
    if (t.architecture !== null && t.architecture !== arch) continue;
    if (partitionFlags(t.designator, e.attributes).noAuto) continue;
    archOf.set(e, t.architecture);
    byDesignator.set(t.designator, [...(byDesignator.get(t.designator) ?? []), e]);
  }

  const chosen: Array<{ e: GptEntry; designator: Designator; verity: VerityPairing | null }> = [];
  for (const designator of ['root', 'usr'] as const) {
    const sel = selectVersioned(fd, designator, byDesignator, designator === 'root' ? opts.rootHash : opts.usrHash);
    if (!sel) continue;
    chosen.push({ e: sel.data, designator, verity: sel.verity });
    for (const x of sel.extra) chosen.push({ e: x, designator: partitionType(x.typeUuid)!.designator, verity: null });
  }
  if ((opts.requireRoot ?? true) && chosen.length === 0) throw new MountFsError('RootPartitionNotFound', 'no root or usr partition');

  // Other designators: the first partition of each type wins (UAPI.2).
  for (const [designator, entries] of byDesignator) {
    if (designator === 'root' || designator === 'usr' || isVerityDesignator(designator) || isSignatureDesignator(designator)) continue;
    chosen.push({ e: entries[0]!, designator, verity: null });
  }
  chosen.sort((a, b) => a.e.number - b.e.number);
  return {
    sectorSize: gpt.sectorSize,
    imageUuid: gpt.diskUuid,
    imageSize,
    partitionTable: true,
    partitions: chosen.map((c) => describe(fd, c.e, c.designator, archOf.get(c.e) ?? null, c.verity)),
  };
}
