// Builds a signed Discoverable Disk Image from a directory without systemd-repart:
// GPT with an erofs root partition, its dm-verity hash partition and the verity signature
// partition, partition UUIDs derived from the root hash as systemd-repart derives them.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SECTOR_SIZE, BACKUP_SECTORS, writeGpt, writeAll, type GptPartition } from './gpt-writer.js';
import { VERITY_BLOCK_SIZE, VERITY_SALT_SIZE, VerityTreeBuilder } from './verity-writer.js';
import { loadSigningIdentity, signaturePartition } from './signature-writer.js';

export interface BuildDdiOptions {
  sourceDir: string;
  output: string;
  /** PEM text of the signing key (RSA or ECDSA, unencrypted). */
  keyPem: string;
  /** PEM text of the X.509 certificate matching the key. */
  certPem: string;
  /** Bytes of the root file system hashed so far, of the total. */
  onProgress?: (done: number, total: number) => void;
}

export interface BuildDdiResult {
  rootHash: string;
  size: number;
}

/** DPS type UUIDs (UAPI.2) of the partitions we write, per host architecture. */
const PARTITION_TYPES: Partial<Record<NodeJS.Architecture, { name: string; root: string; verity: string; sig: string }>> = {
  x64: {
    name: 'x86-64',
    root: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
    verity: '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5',
    sig: '41092b05-9fc8-4523-994f-2def0408b176',
  },
  arm64: {
    name: 'arm64',
    root: 'b921b045-1df0-41c3-af44-4c6f280d3fae',
    verity: 'df3300ce-d69f-4c92-978c-9bfb0f38d820',
    sig: '6db69de6-29f4-4758-a7a5-962190f00ce3',
  },
};

/** GPT attribute bit 60: mount read-only (all three partitions are immutable). */
const FLAG_READ_ONLY = 1n << 60n;
/** First partition at 1 MiB, as partitioning tools do. */
const FIRST_LBA = 2048;
const COPY_CHUNK = 1 << 20;

const run = promisify(execFile);

/** systemd-repart's derivation: the UUIDs are the root hash's halves, taken verbatim. */
function hashHalfToUuid(half: Buffer): string {
  const h = half.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

async function makeErofs(sourceDir: string, image: string): Promise<void> {
  try {
    await run('mkfs.erofs', ['--quiet', image, sourceDir], { maxBuffer: 1 << 20 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error('mkfs.erofs not found: install erofs-utils');
    throw new Error(`mkfs.erofs failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

/** Copies the file system into the data partition and hashes it on the way; returns the tree. */
async function copyAndHash(
  src: string,
  out: fs.promises.FileHandle,
  offset: number,
  verity: VerityTreeBuilder,
  dataSize: number,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const input = await fs.promises.open(src, 'r');
  try {
    const buf = Buffer.alloc(COPY_CHUNK);
    for (let done = 0; done < dataSize; ) {
      const want = Math.min(COPY_CHUNK, dataSize - done);
      const chunk = buf.subarray(0, want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await input.read(chunk, got, want - got, done + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      chunk.fill(0, got); // the tail of the last block, past the end of the file system
      verity.update(chunk);
      for (let w = 0; w < want; ) w += (await out.write(chunk, w, want - w, offset + done + w)).bytesWritten;
      done += want;
      onProgress?.(done, dataSize);
    }
  } finally {
    await input.close();
  }
}

export async function buildDdi(opts: BuildDdiOptions): Promise<BuildDdiResult> {
  const types = PARTITION_TYPES[process.arch];
  if (!types) throw new Error(`no DDI partition types for architecture '${process.arch}'`);
  const identity = loadSigningIdentity(opts.keyPem, opts.certPem);
  const st = await fs.promises.stat(opts.sourceDir).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot read source directory '${opts.sourceDir}': ${err.code ?? err.message}`);
  });
  if (!st.isDirectory()) throw new Error(`'${opts.sourceDir}' is not a directory`);

  const work = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'mountgate-build-'));
  const partial = path.join(path.dirname(path.resolve(opts.output)), `.${path.basename(opts.output)}.${process.pid}.partial`);
  let out: fs.promises.FileHandle | undefined;
  try {
    const erofs = path.join(work, 'root.erofs');
    await makeErofs(opts.sourceDir, erofs);
    const fsSize = (await fs.promises.stat(erofs)).size;
    const dataSize = Math.max(1, Math.ceil(fsSize / VERITY_BLOCK_SIZE)) * VERITY_BLOCK_SIZE;

    out = await fs.promises.open(partial, 'wx', 0o644).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`cannot create '${opts.output}': ${err.code ?? err.message}`);
    });
    const dataOffset = FIRST_LBA * SECTOR_SIZE;
    const verity = new VerityTreeBuilder(crypto.randomBytes(VERITY_SALT_SIZE), dataSize / VERITY_BLOCK_SIZE);
    await copyAndHash(erofs, out, dataOffset, verity, dataSize, opts.onProgress);
    const tree = verity.finish(crypto.randomUUID());
    const rootHash = tree.rootHash.toString('hex');

    const hashOffset = dataOffset + dataSize;
    const sigOffset = hashOffset + tree.hashDevice.length;
    const sig = signaturePartition(rootHash, identity);
    const end = sigOffset + sig.length;
    const totalSectors = end / SECTOR_SIZE + BACKUP_SECTORS;

    const part = (typeUuid: string, partitionUuid: string, label: string, offset: number, size: number): GptPartition => ({
      typeUuid,
      partitionUuid,
      label,
      attributes: FLAG_READ_ONLY,
      firstLba: offset / SECTOR_SIZE,
      lastLba: (offset + size) / SECTOR_SIZE - 1,
    });
    await out.truncate(totalSectors * SECTOR_SIZE);
    writeAll(out.fd, tree.hashDevice, hashOffset);
    writeAll(out.fd, sig, sigOffset);
    writeGpt(out.fd, {
      diskUuid: crypto.randomUUID(),
      totalSectors,
      firstUsableLba: FIRST_LBA,
      partitions: [
        part(types.root, hashHalfToUuid(tree.rootHash.subarray(0, 16)), `root-${types.name}`, dataOffset, dataSize),
        part(types.verity, hashHalfToUuid(tree.rootHash.subarray(16, 32)), `root-${types.name}-verity`, hashOffset, tree.hashDevice.length),
        part(types.sig, crypto.randomUUID(), `root-${types.name}-verity-sig`, sigOffset, sig.length),
      ],
    });
    await out.sync();
    await out.close();
    out = undefined;
    await fs.promises.rename(partial, opts.output);
    return { rootHash, size: totalSectors * SECTOR_SIZE };
  } finally {
    await out?.close();
    await fs.promises.rm(partial, { force: true });
    await fs.promises.rm(work, { recursive: true, force: true });
  }
}
