// GUID partition table writer (512-byte sectors): protective MBR, primary header + entry
// array at the start, backup entry array + header at the end, CRC32s as UEFI 2.x defines.
import fs from 'node:fs';
import { crc32 } from 'node:zlib';

export const SECTOR_SIZE = 512;
const ENTRY_COUNT = 128;
const ENTRY_SIZE = 128;
const HEADER_SIZE = 92;
/** Sectors taken by the entry array (128 × 128 bytes = 16 KiB). */
const ENTRY_ARRAY_SECTORS = (ENTRY_COUNT * ENTRY_SIZE) / SECTOR_SIZE;
/** Where the first partition may start at the earliest: MBR + header + entry array. */
const MIN_FIRST_USABLE_LBA = 2 + ENTRY_ARRAY_SECTORS;
/** Sectors the backup array and header need at the end of the disk. */
export const BACKUP_SECTORS = ENTRY_ARRAY_SECTORS + 1;

export interface GptPartition {
  typeUuid: string;
  partitionUuid: string;
  /** At most 36 UTF-16 code units. */
  label: string;
  attributes: bigint;
  firstLba: number;
  /** Inclusive. */
  lastLba: number;
}

export interface GptLayout {
  diskUuid: string;
  /** Total size of the disk in sectors; the backup header goes in the last one. */
  totalSectors: number;
  firstUsableLba: number;
  partitions: GptPartition[];
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A GUID as GPT stores it: the first three fields little-endian, the rest byte by byte. */
function guidToBytes(uuid: string): Buffer {
  if (!UUID_RE.test(uuid)) throw new Error(`invalid GUID '${uuid}'`);
  const b = Buffer.from(uuid.replaceAll('-', ''), 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

function entryArray(parts: GptPartition[]): Buffer {
  const array = Buffer.alloc(ENTRY_COUNT * ENTRY_SIZE);
  parts.forEach((p, i) => {
    const e = array.subarray(i * ENTRY_SIZE, (i + 1) * ENTRY_SIZE);
    guidToBytes(p.typeUuid).copy(e, 0);
    guidToBytes(p.partitionUuid).copy(e, 16);
    e.writeBigUInt64LE(BigInt(p.firstLba), 32);
    e.writeBigUInt64LE(BigInt(p.lastLba), 40);
    e.writeBigUInt64LE(p.attributes, 48);
    e.write(p.label, 56, 72, 'utf16le');
  });
  return array;
}

function header(layout: GptLayout, current: number, backup: number, entriesLba: number, arrayCrc: number): Buffer {
  const h = Buffer.alloc(SECTOR_SIZE);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(HEADER_SIZE, 12);
  h.writeBigUInt64LE(BigInt(current), 24);
  h.writeBigUInt64LE(BigInt(backup), 32);
  h.writeBigUInt64LE(BigInt(layout.firstUsableLba), 40);
  h.writeBigUInt64LE(BigInt(layout.totalSectors - BACKUP_SECTORS - 1), 48);
  guidToBytes(layout.diskUuid).copy(h, 56);
  h.writeBigUInt64LE(BigInt(entriesLba), 72);
  h.writeUInt32LE(ENTRY_COUNT, 80);
  h.writeUInt32LE(ENTRY_SIZE, 84);
  h.writeUInt32LE(arrayCrc, 88);
  h.writeUInt32LE(crc32(h.subarray(0, HEADER_SIZE)), 16);
  return h;
}

function protectiveMbr(totalSectors: number): Buffer {
  const m = Buffer.alloc(SECTOR_SIZE);
  const p = m.subarray(446, 462);
  p.writeUIntLE(0x000200, 1, 3); // CHS of LBA 1
  p[4] = 0xee;
  p.writeUIntLE(0xffffff, 5, 3);
  p.writeUInt32LE(1, 8);
  p.writeUInt32LE(Math.min(totalSectors - 1, 0xffffffff), 12);
  m.writeUInt16LE(0xaa55, 510);
  return m;
}

function validate(layout: GptLayout): void {
  const lastUsable = layout.totalSectors - BACKUP_SECTORS - 1;
  if (layout.firstUsableLba < MIN_FIRST_USABLE_LBA || lastUsable < layout.firstUsableLba)
    throw new Error('GPT usable area out of range');
  if (layout.partitions.length > ENTRY_COUNT) throw new Error('too many partitions');
  const sorted = [...layout.partitions].sort((a, b) => a.firstLba - b.firstLba);
  let next = layout.firstUsableLba;
  for (const p of sorted) {
    if (p.firstLba < next || p.lastLba < p.firstLba || p.lastLba > lastUsable)
      throw new Error(`partition '${p.label}' outside the usable area or overlapping`);
    if (p.label.length > 36) throw new Error(`partition label '${p.label}' too long`);
    next = p.lastLba + 1;
  }
}

/** Writes MBR, both GPT headers and both entry arrays into an open file of the disk's size. */
export function writeGpt(fd: number, layout: GptLayout): void {
  validate(layout);
  const array = entryArray(layout.partitions);
  const arrayCrc = crc32(array);
  const last = layout.totalSectors - 1;
  const backupArrayLba = last - ENTRY_ARRAY_SECTORS;
  const writes: [Buffer, number][] = [
    [protectiveMbr(layout.totalSectors), 0],
    [header(layout, 1, last, 2, arrayCrc), 1],
    [array, 2],
    [array, backupArrayLba],
    [header(layout, last, 1, backupArrayLba, arrayCrc), last],
  ];
  for (const [buf, lba] of writes) writeAll(fd, buf, lba * SECTOR_SIZE);
}

/** pwrite until the whole buffer is written. */
export function writeAll(fd: number, buf: Uint8Array, position: number): void {
  let done = 0;
  while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
}
