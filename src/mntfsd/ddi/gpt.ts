// GUID partition table parser for untrusted images. Everything read from the image is
// bounds-checked against the image size before use; any inconsistency is IncompatibleImage.
// Only the primary header and entry array are used: a damaged primary is refused rather
// than repaired from the backup, so what we accept is exactly what we checked.
import fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { incompatible } from '../errors.js';

const GPT_SIGNATURE = 'EFI PART';
/** Sector sizes DDIs may use (UAPI.3); the header sits at LBA 1. */
const GPT_SECTOR_SIZES = [512, 4096] as const;
const MIN_HEADER_SIZE = 92;
const MIN_ENTRY_SIZE = 128;
const MAX_ENTRY_SIZE = 4096;
/** The spec's minimum array is 128 entries; real tables never need more than a few hundred. */
const MAX_ENTRIES = 1024;
/** An entry array larger than this is not a disk image we want to parse. */
const MAX_ARRAY_BYTES = 1 << 20;

export interface GptEntry {
  /** 1-based index in the entry array (the kernel's partition number). */
  number: number;
  typeUuid: string;
  partitionUuid: string;
  label: string;
  /** Raw 64-bit attribute field. */
  attributes: bigint;
  /** Byte offset and size inside the image. */
  offset: number;
  size: number;
}

export interface GptTable {
  sectorSize: number;
  diskUuid: string;
  entries: GptEntry[];
}

/** pread exactly `length` bytes at `position`; a short read means the image is truncated. */
export function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw incompatible(`image truncated: short read at ${position + done}`);
    done += n;
  }
  return buf;
}

/** GUIDs are stored mixed-endian: first three fields little-endian, the rest as bytes. */
function guidToString(b: Buffer, off = 0): string {
  const hex = (start: number, end: number, reverse: boolean): string => {
    const part = Buffer.from(b.subarray(off + start, off + end));
    return (reverse ? part.reverse() : part).toString('hex');
  };
  return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`;
}

function u64(b: Buffer, off: number, what: string): number {
  const v = b.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw incompatible(`GPT ${what} out of range`);
  return Number(v);
}

const isZero = (b: Buffer): boolean => b.every((x) => x === 0);

/** Sector size of the GPT in the image, or null when there is no GPT header at 512 or 4096. */
export function probeGpt(fd: number, imageSize: number): number | null {
  for (const ss of GPT_SECTOR_SIZES) {
    if (imageSize < ss + 8) continue;
    if (readAt(fd, ss, 8).toString('latin1') === GPT_SIGNATURE) return ss;
  }
  return null;
}

/** Parses the primary GPT; throws MountFsError('IncompatibleImage') on anything inconsistent. */
export function parseGpt(fd: number, imageSize: number): GptTable {
  if (!Number.isSafeInteger(imageSize) || imageSize < 0) throw incompatible('bad image size');
  const ss = probeGpt(fd, imageSize);
  if (ss === null) throw incompatible('no GPT header');
  const sectors = Math.floor(imageSize / ss);
  const hdr = readAt(fd, ss, ss);

  const headerSize = hdr.readUInt32LE(12);
  if (headerSize < MIN_HEADER_SIZE || headerSize > ss) throw incompatible('GPT header size out of range');
  const want = hdr.readUInt32LE(16);
  const copy = Buffer.from(hdr.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== want) throw incompatible('GPT header CRC mismatch');
  if (hdr.readUInt32LE(8) !== 0x00010000) throw incompatible('unsupported GPT revision');
  if (u64(hdr, 24, 'current LBA') !== 1) throw incompatible('GPT header not at LBA 1');

  const firstUsable = u64(hdr, 40, 'first usable LBA');
  const lastUsable = u64(hdr, 48, 'last usable LBA');
  if (firstUsable < 2 || lastUsable < firstUsable || lastUsable >= sectors) throw incompatible('GPT usable area out of range');

  const entriesLba = u64(hdr, 72, 'entry array LBA');
  const count = hdr.readUInt32LE(80);
  const entrySize = hdr.readUInt32LE(84);
  if (count === 0 || count > MAX_ENTRIES) throw incompatible(`GPT entry count ${count} out of range`);
  if (entrySize < MIN_ENTRY_SIZE || entrySize > MAX_ENTRY_SIZE || entrySize % MIN_ENTRY_SIZE !== 0 || (entrySize & (entrySize - 1)) !== 0)
    throw incompatible(`GPT entry size ${entrySize} out of range`);
  const arrayBytes = count * entrySize;
  if (arrayBytes > MAX_ARRAY_BYTES) throw incompatible('GPT entry array too large');
  const arraySectors = Math.ceil(arrayBytes / ss);
  // The array must sit between the header and the usable area (where every tool puts it).
  if (entriesLba < 2 || entriesLba + arraySectors > firstUsable) throw incompatible('GPT entry array out of range');
  const array = readAt(fd, entriesLba * ss, arrayBytes);
  if (crc32(array) !== hdr.readUInt32LE(88)) throw incompatible('GPT entry array CRC mismatch');

  const entries: GptEntry[] = [];
  for (let i = 0; i < count; i++) {
    const e = array.subarray(i * entrySize, i * entrySize + MIN_ENTRY_SIZE);
    if (isZero(e.subarray(0, 16))) continue;
    const first = u64(e, 32, 'partition start');
    const last = u64(e, 40, 'partition end');
    if (first < firstUsable || last < first || last > lastUsable) throw incompatible(`GPT partition ${i + 1} outside the usable area`);
    const name = e.subarray(56, 128);
    let end = 0;
    while (end < name.length && (name[end] !== 0 || name[end + 1] !== 0)) end += 2;
    entries.push({
      number: i + 1,
      typeUuid: guidToString(e, 0),
      partitionUuid: guidToString(e, 16),
      label: name.subarray(0, end).toString('utf16le'),
      attributes: e.readBigUInt64LE(48),
      offset: first * ss,
      size: (last - first + 1) * ss,
    });
  }
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (prev.offset + prev.size > sorted[i]!.offset) throw incompatible(`GPT partitions ${prev.number} and ${sorted[i]!.number} overlap`);
  }
  return { sectorSize: ss, diskUuid: guidToString(hdr, 56), entries };
}
