// dm-verity hash device writer, byte-compatible with `veritysetup format` (format version 1,
// sha256, 4096-byte data and hash blocks): a 512-byte superblock in the first hash block,
// then the hash tree with its top level first.
import crypto from 'node:crypto';

export const VERITY_BLOCK_SIZE = 4096;
const DIGEST_SIZE = 32;
const ALGORITHM = 'sha256';
const HASHES_PER_BLOCK = VERITY_BLOCK_SIZE / DIGEST_SIZE; // 128: sha256 digests need no slot padding
export const VERITY_SALT_SIZE = 32;

export interface VerityResult {
  rootHash: Buffer;
  dataBlocks: number;
  /** The whole hash device: superblock block followed by the tree. */
  hashDevice: Buffer;
}

/** Number of tree levels: the smallest L with (n − 1) >> (L·7) == 0 (0 for one block). */
function levelCount(dataBlocks: number): number {
  let levels = 0;
  while (Math.floor((dataBlocks - 1) / HASHES_PER_BLOCK ** levels) > 0) levels++;
  return levels;
}

function superblock(uuid: string, salt: Buffer, dataBlocks: number): Buffer {
  const sb = Buffer.alloc(512);
  sb.write('verity', 0, 'latin1');
  sb.writeUInt32LE(1, 8); // superblock version
  sb.writeUInt32LE(1, 12); // hash type 1: H(salt ‖ block)
  Buffer.from(uuid.replaceAll('-', ''), 'hex').copy(sb, 16);
  sb.write(ALGORITHM, 32, 'latin1');
  sb.writeUInt32LE(VERITY_BLOCK_SIZE, 64);
  sb.writeUInt32LE(VERITY_BLOCK_SIZE, 68);
  sb.writeBigUInt64LE(BigInt(dataBlocks), 72);
  sb.writeUInt16LE(salt.length, 80);
  salt.copy(sb, 88);
  return sb;
}

/**
 * Builds the tree incrementally: feed the data device in order with update() (chunks of whole
 * blocks), then finish(). Only level 0 (1/128 of the data) is kept in memory.
 */
export class VerityTreeBuilder {
  private readonly base: crypto.Hash;
  private readonly level0: Buffer;
  private firstDigest: Buffer | null = null;
  private blocksSeen = 0;

  constructor(
    private readonly salt: Buffer,
    private readonly dataBlocks: number,
  ) {
    if (salt.length === 0 || salt.length > 256) throw new Error('verity salt must be 1..256 bytes');
    if (!Number.isSafeInteger(dataBlocks) || dataBlocks < 1) throw new Error('verity needs at least one data block');
    this.base = crypto.createHash(ALGORITHM).update(salt);
    this.level0 = Buffer.alloc(Math.ceil(dataBlocks / HASHES_PER_BLOCK) * VERITY_BLOCK_SIZE);
  }

  private digest(block: Uint8Array): Buffer {
    return this.base.copy().update(block).digest();
  }

  update(chunk: Uint8Array): void {
    if (chunk.length % VERITY_BLOCK_SIZE !== 0) throw new Error('verity data must come in whole blocks');
    const blocks = chunk.length / VERITY_BLOCK_SIZE;
    if (this.blocksSeen + blocks > this.dataBlocks) throw new Error('more verity data than announced');
    for (let i = 0; i < blocks; i++) {
      const d = this.digest(chunk.subarray(i * VERITY_BLOCK_SIZE, (i + 1) * VERITY_BLOCK_SIZE));
      if (this.blocksSeen === 0) this.firstDigest = d;
      d.copy(this.level0, this.blocksSeen * DIGEST_SIZE);
      this.blocksSeen++;
    }
  }

  finish(uuid: string): VerityResult {
    if (this.blocksSeen !== this.dataBlocks) throw new Error(`verity got ${this.blocksSeen} of ${this.dataBlocks} data blocks`);
    const levels: Buffer[] = [];
    let rootHash = this.firstDigest!;
    if (levelCount(this.dataBlocks) > 0) {
      let level = this.level0;
      for (;;) {
        levels.push(level);
        const blocks = level.length / VERITY_BLOCK_SIZE;
        if (blocks === 1) break;
        const next = Buffer.alloc(Math.ceil(blocks / HASHES_PER_BLOCK) * VERITY_BLOCK_SIZE);
        for (let i = 0; i < blocks; i++) this.digest(level.subarray(i * VERITY_BLOCK_SIZE, (i + 1) * VERITY_BLOCK_SIZE)).copy(next, i * DIGEST_SIZE);
        level = next;
      }
      rootHash = this.digest(level);
    }
    const sbBlock = Buffer.alloc(VERITY_BLOCK_SIZE);
    superblock(uuid, this.salt, this.dataBlocks).copy(sbBlock);
    return { rootHash, dataBlocks: this.dataBlocks, hashDevice: Buffer.concat([sbBlock, ...levels.reverse()]) };
  }
}

/** Size of the hash device for `dataBlocks` blocks, known before hashing. */
export function verityHashDeviceSize(dataBlocks: number): number {
  let blocks = 1; // superblock
  const levels = levelCount(dataBlocks);
  for (let i = 0; i < levels; i++) blocks += Math.ceil(dataBlocks / HASHES_PER_BLOCK ** (i + 1));
  return blocks * VERITY_BLOCK_SIZE;
}
