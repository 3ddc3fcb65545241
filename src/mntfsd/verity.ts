// Userspace dm-verity: checks a data area and its hash tree against a root hash, and hands
// back daemon-private bytes that are exactly the ones that were checked (the fallback for
// kernels without device-mapper: a file system must then never read the caller's fd directly).
// On-disk format: cryptsetup's superblock + hash tree, hash type 1 (cryptsetup's
// lib/verity/verity.c and verity_hash.c; the kernel's device-mapper/verity.rst).
import fs from 'node:fs';
import { native } from '../native/index.js';
import { isSysError } from '../sys/errors.js';
import { F_SEAL_SHRINK, F_SEAL_WRITE, getSeals } from '../sys/memfd.js';
import { createCopyTarget, type CopyTarget } from './verified-copy.js';
import type { CopyReservation, CopyStorage } from './mount-cache.js';
import { incompatible, verityFailure } from './errors.js';
import { readAt } from './ddi/gpt.js';

export const VERITY_SUPERBLOCK_SIZE = 512;
const SIGNATURE = Buffer.from('verity\0\0', 'latin1');
const DIGEST_SIZE = 32;
/** cryptsetup accepts 512 B … 512 KiB; the kernel target only up to PAGE_SIZE. We accept
 * what the kernel could activate, so an image we take would also work with real dm-verity. */
const MIN_BLOCK_SIZE = 512;
const MAX_BLOCK_SIZE = 4096;
export const MAX_SALT_SIZE = 256;
/** The tree is held in memory while it is checked; refuse trees beyond this. */
const MAX_TREE_BYTES = 1 << 30;
/** Data is verified in slices this large so progress can be reported between them. */
const SLICE_BYTES = 64 << 20;

export interface VeritySuperblock {
  hashType: 1;
  uuid: string;
  algorithm: 'sha256';
  dataBlockSize: number;
  hashBlockSize: number;
  dataBlocks: number;
  salt: Buffer;
}

const isBlockSize = (x: number): boolean => x >= MIN_BLOCK_SIZE && x <= MAX_BLOCK_SIZE && (x & (x - 1)) === 0;

/** Parses the 512-byte superblock at the start of a Verity hash partition. */
export function parseVeritySuperblock(b: Buffer): VeritySuperblock {
  if (b.length < VERITY_SUPERBLOCK_SIZE) throw incompatible('Verity superblock truncated');
  if (!b.subarray(0, 8).equals(SIGNATURE)) throw incompatible('no Verity superblock');
  if (b.readUInt32LE(8) !== 1) throw incompatible(`unsupported Verity superblock version ${b.readUInt32LE(8)}`);
  // Hash type 0 (Chrome OS) appends the salt; DDIs always use type 1.
  if (b.readUInt32LE(12) !== 1) throw incompatible(`unsupported Verity hash type ${b.readUInt32LE(12)}`);
  const algEnd = b.indexOf(0, 32);
  const algorithm = b.toString('latin1', 32, algEnd < 0 || algEnd > 64 ? 64 : algEnd);
  if (algorithm.toLowerCase() !== 'sha256' || !b.subarray(32 + algorithm.length, 64).every((x) => x === 0))
    throw incompatible(`unsupported Verity hash algorithm`);
  const dataBlockSize = b.readUInt32LE(64);
  const hashBlockSize = b.readUInt32LE(68);
  if (!isBlockSize(dataBlockSize) || !isBlockSize(hashBlockSize)) throw incompatible(`unsupported Verity block sizes ${dataBlockSize}/${hashBlockSize}`);
  const blocks = b.readBigUInt64LE(72);
  if (blocks === 0n || blocks * BigInt(dataBlockSize) > BigInt(Number.MAX_SAFE_INTEGER)) throw incompatible('Verity data block count out of range');
  const saltSize = b.readUInt16LE(80);
  if (saltSize > MAX_SALT_SIZE) throw incompatible('Verity salt too long');
  const u = b.toString('hex', 16, 32);
  return {
    hashType: 1,
    uuid: `${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20)}`,
    algorithm: 'sha256',
    dataBlockSize,
    hashBlockSize,
    dataBlocks: Number(blocks),
    salt: Buffer.from(b.subarray(88, 88 + saltSize)),
  };
}

export interface TreeGeometry {
  /** Digests per hash block. */
  hashesPerBlock: number;
  /** Byte offset of the first hash block inside the hash partition. */
  hashAreaOffset: number;
  /** Per level (0 = hashes of data blocks): first block (relative to the hash area) and block count. */
  levels: Array<{ start: number; blocks: number }>;
  /** Bytes of the whole tree. */
  treeBytes: number;
}

/** Tree layout as cryptsetup's hash_levels(): top level stored first, level 0 last. */
export function treeGeometry(sb: VeritySuperblock): TreeGeometry {
  const hashesPerBlock = sb.hashBlockSize / DIGEST_SIZE;
  const bits = Math.log2(hashesPerBlock);
  const n = BigInt(sb.dataBlocks);
  let count = 0;
  while (bits * count < 64 && (n - 1n) >> BigInt(bits * count) !== 0n) count++;
  const sizes: number[] = [];
  for (let i = 0; i < count; i++) {
    const shift = BigInt((i + 1) * bits);
    sizes.push(Number((n + (1n << shift) - 1n) >> shift));
  }
  const levels: Array<{ start: number; blocks: number }> = new Array(count);
  let pos = 0;
  for (let i = count - 1; i >= 0; i--) {
    levels[i] = { start: pos, blocks: sizes[i]! };
    pos += sizes[i]!;
  }
  const hashAreaOffset = Math.ceil(VERITY_SUPERBLOCK_SIZE / sb.hashBlockSize) * sb.hashBlockSize;
  return { hashesPerBlock, hashAreaOffset, levels, treeBytes: pos * sb.hashBlockSize };
}

export interface Extent {
  offset: number;
  size: number;
}

export interface VerifiedCopy {
  /** A read-only private copy of the verified data (verified-copy.ts), or a re-opened sealed
   * source; the caller closes it. */
  fd: number;
  offset: number;
  /** data_blocks × data_block_size: only these bytes were verified. */
  size: number;
  /** The source was already immutable, so nothing was copied. */
  copied: boolean;
  superblock: VeritySuperblock;
}

export interface VerifyOptions {
  /** Copy unless the source is immutable (default). false: verify in place, return no fd. */
  copy?: boolean;
  onProgress?: (done: number, total: number) => void;
  /** Where the copy goes (memory or the state directory) and who counts its bytes
   * (mount-cache.ts); default: memory, uncounted. */
  storage?: CopyStorage;
}

/** A memfd with write and shrink seals cannot change any more: no copy needed. */
function isImmutable(fd: number): boolean {
  try {
    const seals = getSeals(fd);
    return (seals & (F_SEAL_WRITE | F_SEAL_SHRINK)) === (F_SEAL_WRITE | F_SEAL_SHRINK);
  } catch (err) {
    if (isSysError(err, 'EINVAL')) return false; // not a memfd
    throw err;
  }
}

function checkZero(b: Buffer, what: string): void {
  if (!b.every((x) => x === 0)) throw verityFailure(`${what}: spare area not zeroed`);
}

export interface VerityLayout {
  superblock: VeritySuperblock;
  geometry: TreeGeometry;
  /** data_blocks × data_block_size: the bytes the tree covers. */
  dataBytes: number;
}

/**
 * Reads the superblock of the hash partition and checks that data and tree fit their
 * partitions; what both the userspace verifier and a dm-verity table (dm-verity.ts) rely on.
 */
export function readVerityLayout(srcFd: number, data: Extent, hash: Extent): VerityLayout {
  if (hash.size < VERITY_SUPERBLOCK_SIZE) throw incompatible('Verity partition too small');
  const superblock = parseVeritySuperblock(readAt(srcFd, hash.offset, VERITY_SUPERBLOCK_SIZE));
  const geometry = treeGeometry(superblock);
  const dataBytes = superblock.dataBlocks * superblock.dataBlockSize;
  if (dataBytes > data.size) throw incompatible('Verity data blocks exceed the data partition');
  if (geometry.treeBytes > MAX_TREE_BYTES || geometry.hashAreaOffset + geometry.treeBytes > hash.size) throw incompatible('Verity hash tree exceeds the hash partition');
  return { superblock, geometry, dataBytes };
}

/**
 * Verifies `data` (with its hash tree in `hash`) inside `srcFd` against `rootHash`. The tree
 * is read once into memory and checked top-down; the data is read once per chunk, hashed
 * and copied from the same memory into a private copy (in memory or in the state directory,
 * as `opts.storage` decides) that then becomes read-only. Throws VerityFailure on any
 * mismatch, IncompatibleImage on malformed metadata.
 */
export async function verifyPartition(srcFd: number, data: Extent, hash: Extent, rootHash: Buffer, opts: VerifyOptions = {}): Promise<VerifiedCopy> {
  if (rootHash.length !== DIGEST_SIZE) throw verityFailure(`root hash must be ${DIGEST_SIZE} bytes`);
  const { superblock: sb, geometry: geo, dataBytes } = readVerityLayout(srcFd, data, hash);

  const total = dataBytes + geo.treeBytes;
  const tree = readAt(srcFd, hash.offset + geo.hashAreaOffset, geo.treeBytes);
  const hbs = sb.hashBlockSize;
  const per = geo.hashesPerBlock;
  const levelBuf = (i: number): Buffer => tree.subarray(geo.levels[i]!.start * hbs, (geo.levels[i]!.start + geo.levels[i]!.blocks) * hbs);

  // Top-down: the root hash authenticates the top block, each level the one below.
  const top = geo.levels.length - 1;
  if (top >= 0) {
    if ((await native.verityVerifyMemory(levelBuf(top), hbs, 1, sb.salt, rootHash, DIGEST_SIZE, 1)) !== -1)
      throw verityFailure('root hash does not match the top hash block');
  }
  for (let i = top; i >= 0; i--) {
    const children = i === 0 ? sb.dataBlocks : geo.levels[i - 1]!.blocks;
    checkZero(levelBuf(i).subarray(children * DIGEST_SIZE), `hash level ${i}`);
    if (i === 0) break;
    const bad = await native.verityVerifyMemory(levelBuf(i - 1), hbs, children, sb.salt, levelBuf(i), hbs, per);
    if (bad !== -1) throw verityFailure(`hash block ${bad} of level ${i - 1} does not match`);
  }
  opts.onProgress?.(geo.treeBytes, total);

  const expected = top >= 0 ? levelBuf(0) : rootHash;
  const [expHbs, expPer] = top >= 0 ? [hbs, per] : [DIGEST_SIZE, 1];
  const inPlace = opts.copy === false || isImmutable(srcFd);
  const reservation: CopyReservation | undefined = inPlace ? undefined : opts.storage?.reserve(dataBytes, rootHash.toString('hex'));
  let copy: CopyTarget | null = null;
  try {
    copy = inPlace ? null : createCopyTarget(dataBytes, reservation?.place);
  } catch (err) {
    reservation?.release();
    throw err;
  }
  const dst = copy ? copy.fd : -1;
  try {
    const blocksPerSlice = SLICE_BYTES / sb.dataBlockSize;
    for (let first = 0; first < sb.dataBlocks; first += blocksPerSlice) {
      const n = Math.min(blocksPerSlice, sb.dataBlocks - first);
      const off = first * sb.dataBlockSize;
      // Digests of this slice start at block `first`, i.e. hash block first/per (slices are whole hash blocks).
      const exp = top >= 0 ? expected.subarray((first / per) * hbs) : expected;
      let bad: number;
      try {
        bad = await native.verityVerifyFd(srcFd, data.offset + off, dst, off, sb.dataBlockSize, n, sb.salt, exp, expHbs, expPer);
      } catch (err) {
        if ((err as { code?: unknown }).code === 'ENODATA') throw incompatible('data partition truncated');
        throw err;
      }
      if (bad !== -1) throw verityFailure(`data block ${first + bad} does not match`);
      opts.onProgress?.(geo.treeBytes + off + n * sb.dataBlockSize, total);
    }
    if (copy) return { fd: copy.freeze(), offset: 0, size: dataBytes, copied: true, superblock: sb };
    // Hand out our own read-only descriptor so the caller's fd stays the caller's.
    const fd = opts.copy === false ? -1 : fs.openSync(`/proc/self/fd/${srcFd}`, fs.constants.O_RDONLY);
    return { fd, offset: data.offset, size: dataBytes, copied: false, superblock: sb };
  } catch (err) {
    copy?.discard();
    reservation?.release();
    throw err;
  }
}
