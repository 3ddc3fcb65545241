// Device-mapper control: the handful of DM_* ioctls on /dev/mapper/control that mntfsd needs
// to set up, list and remove dm-verity devices, each wrapped once, typed and checked.
//
// Why the ioctls and not libcryptsetup (via koffi): what mntfsd asks of device-mapper is one
// table line that it already computes (verity.ts parses the superblock and checks the tree's
// geometry for the userspace path), plus two things libcryptsetup does not let it control
// well: the device name (mountgate-verity-…, so start-up can find stale devices) and deferred
// removal at the exact moment the base mount holds the device (DM_DEFERRED_REMOVE). The
// ioctls are a stable kernel ABI (linux/dm-ioctl.h, version 4), need no library on the host,
// and keep every kernel call in src/sys as for loop devices. libcryptsetup would add a
// dependency, its own logging/locking (/run/cryptsetup) and udev synchronisation for the same
// three calls. Reference: the kernel's drivers/md/dm-ioctl.c, libdevmapper's libdm-iface.c.
import fs from 'node:fs';
import { check } from './errors.js';
import { ioctl } from './libc.js';

const DM_CONTROL = '/dev/mapper/control';

// struct dm_ioctl (linux/dm-ioctl.h), 312 bytes:
//   u32 version[3]; u32 data_size; u32 data_start; u32 target_count; s32 open_count;
//   u32 flags; u32 event_nr; u32 padding; u64 dev; char name[128]; char uuid[129]; char data[7];
const DM_IOCTL_SIZE = 312;
const OFF_VERSION = 0;
const OFF_DATA_SIZE = 12;
const OFF_DATA_START = 16;
const OFF_TARGET_COUNT = 20;
const OFF_FLAGS = 28;
const OFF_DEV = 40;
const OFF_NAME = 48;
const OFF_UUID = 176;
const DM_NAME_LEN = 128;
const DM_UUID_LEN = 129;
// struct dm_target_spec: u64 sector_start; u64 length; s32 status; u32 next; char target_type[16].
const DM_TARGET_SPEC_SIZE = 40;
const DM_MAX_TYPE_NAME = 16;

/** Interface version we speak; the kernel accepts any minor up to its own (4.48 on 6.12). */
const DM_VERSION_MAJOR = 4;
/** DM_DEFERRED_REMOVE arrived in 4.27 (Linux 3.13). */
const DM_VERSION_MINOR = 27;

// _IOWR(0xfd, nr, struct dm_ioctl)
const dmCmd = (nr: number): number => ((3 << 30) | (DM_IOCTL_SIZE << 16) | (0xfd << 8) | nr) >>> 0;
const DM_VERSION = dmCmd(0);
const DM_LIST_DEVICES = dmCmd(2);
const DM_DEV_CREATE = dmCmd(3);
const DM_DEV_REMOVE = dmCmd(4);
const DM_DEV_SUSPEND = dmCmd(6);
const DM_TABLE_LOAD = dmCmd(9);
const DM_LIST_VERSIONS = dmCmd(13);

export const DM_READONLY_FLAG = 1 << 0;
const DM_BUFFER_FULL_FLAG = 1 << 8;
export const DM_DEFERRED_REMOVE = 1 << 17;

export interface DmDevice {
  name: string;
  major: number;
  minor: number;
}

/** A table target: `length` sectors from `start`, of `type` with its parameter string. */
export interface DmTarget {
  start: bigint | number;
  length: bigint | number;
  type: string;
  params: string;
}

const align8 = (n: number): number => (n + 7) & ~7;

// huge_encode_dev() of the kernel (new_encode_dev for 32-bit dev_t).
function decodeDev(dev: bigint): { major: number; minor: number } {
  const d = Number(dev & 0xffffffffn);
  return { major: (d & 0xfff00) >>> 8, minor: (d & 0xff) | ((d >>> 12) & 0xfff00) };
}

function header(size: number, name: string | null, flags = 0): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32LE(DM_VERSION_MAJOR, OFF_VERSION);
  b.writeUInt32LE(DM_VERSION_MINOR, OFF_VERSION + 4);
  b.writeUInt32LE(0, OFF_VERSION + 8);
  b.writeUInt32LE(size, OFF_DATA_SIZE);
  b.writeUInt32LE(DM_IOCTL_SIZE, OFF_DATA_START);
  b.writeUInt32LE(flags, OFF_FLAGS);
  if (name !== null) {
    if (Buffer.byteLength(name) >= DM_NAME_LEN || name.includes('\0') || name.includes('/') || name === '' || name === '.' || name === '..')
      throw new Error(`invalid device-mapper name ${JSON.stringify(name)}`);
    b.write(name, OFF_NAME, DM_NAME_LEN - 1, 'utf8');
  }
  return b;
}

function cString(b: Buffer, start: number, max: number): string {
  const end = b.indexOf(0, start);
  return b.toString('utf8', start, end < 0 || end > start + max ? start + max : end);
}

/** Runs one DM_* command on a fresh control fd (the ioctls carry all state in the buffer). */
function dmIoctl(cmd: number, what: string, buf: Buffer, detail?: string): Buffer {
  const ctl = fs.openSync(DM_CONTROL, fs.constants.O_RDWR);
  try {
    check(ioctl(ctl, cmd, 'void *', buf), `ioctl(${what})`, detail);
    return buf;
  } finally {
    fs.closeSync(ctl);
  }
}

/** True when /dev/mapper/control answers DM_VERSION: device-mapper is usable here. */
export function dmAvailable(): boolean {
  try {
    dmIoctl(DM_VERSION, 'DM_VERSION', header(DM_IOCTL_SIZE, null));
    return true;
  } catch {
    return false;
  }
}

/** Runs a query whose answer lies after the header, growing the buffer while the kernel says it is full. */
function query(cmd: number, what: string): Buffer {
  for (let size = 16384; ; size *= 4) {
    const b = dmIoctl(cmd, what, header(size, null));
    if ((b.readUInt32LE(OFF_FLAGS) & DM_BUFFER_FULL_FLAG) === 0) return b;
    if (size > 16 << 20) throw new Error(`${what}: answer larger than 16 MiB`);
  }
}

/** Target types the kernel has loaded (DM_LIST_VERSIONS), e.g. 'linear', 'verity'. */
export function dmTargetTypes(): string[] {
  const b = query(DM_LIST_VERSIONS, 'DM_LIST_VERSIONS');
  // struct dm_target_versions { u32 next; u32 version[3]; char name[]; }, chained by `next`.
  const out: string[] = [];
  let pos = b.readUInt32LE(OFF_DATA_START);
  const end = b.readUInt32LE(OFF_DATA_SIZE);
  while (pos + 16 < end) {
    const next = b.readUInt32LE(pos);
    out.push(cString(b, pos + 16, end - pos - 16));
    if (next === 0) break;
    pos += next;
  }
  return out;
}

/** Every device-mapper device (DM_LIST_DEVICES). */
export function dmListDevices(): DmDevice[] {
  const b = query(DM_LIST_DEVICES, 'DM_LIST_DEVICES');
  // struct dm_name_list { u64 dev; u32 next; char name[]; }, chained by `next`; an empty
  // list is one record with dev 0.
  const out: DmDevice[] = [];
  let pos = b.readUInt32LE(OFF_DATA_START);
  const end = b.readUInt32LE(OFF_DATA_SIZE);
  while (pos + 12 < end) {
    const dev = b.readBigUInt64LE(pos);
    if (dev === 0n) break;
    const next = b.readUInt32LE(pos + 8);
    out.push({ name: cString(b, pos + 12, end - pos - 12), ...decodeDev(dev) });
    if (next === 0) break;
    pos += next;
  }
  return out;
}

function deviceOf(b: Buffer): DmDevice {
  return { name: cString(b, OFF_NAME, DM_NAME_LEN), ...decodeDev(b.readBigUInt64LE(OFF_DEV)) };
}

/** Creates an empty device (no table yet). `uuid` is optional; EBUSY if the name exists. */
export function dmCreate(name: string, uuid?: string): DmDevice {
  const b = header(DM_IOCTL_SIZE, name);
  if (uuid !== undefined) {
    if (Buffer.byteLength(uuid) >= DM_UUID_LEN) throw new Error('device-mapper uuid too long');
    b.write(uuid, OFF_UUID, DM_UUID_LEN - 1, 'utf8');
  }
  return deviceOf(dmIoctl(DM_DEV_CREATE, 'DM_DEV_CREATE', b, name));
}

/** Loads a table into the device's inactive slot; DM_READONLY_FLAG opens the targets' devices read-only. */
export function dmLoadTable(name: string, targets: readonly DmTarget[], flags = 0): void {
  const specs = targets.map((t) => {
    if (Buffer.byteLength(t.type) >= DM_MAX_TYPE_NAME) throw new Error(`target type ${t.type} too long`);
    const params = Buffer.from(`${t.params}\0`, 'utf8');
    const size = align8(DM_TARGET_SPEC_SIZE + params.length);
    const s = Buffer.alloc(size);
    s.writeBigUInt64LE(BigInt(t.start), 0);
    s.writeBigUInt64LE(BigInt(t.length), 8);
    // `next`: offset from this spec to the next one (kernel's next_target()).
    s.writeUInt32LE(size, 20);
    s.write(t.type, 24, DM_MAX_TYPE_NAME - 1, 'utf8');
    params.copy(s, DM_TARGET_SPEC_SIZE);
    return s;
  });
  const body = Buffer.concat(specs);
  const b = header(DM_IOCTL_SIZE + body.length, name, flags);
  b.writeUInt32LE(targets.length, OFF_TARGET_COUNT);
  body.copy(b, DM_IOCTL_SIZE);
  dmIoctl(DM_TABLE_LOAD, 'DM_TABLE_LOAD', b, name);
}

/** Resumes the device: makes the loaded table live (DM_DEV_SUSPEND without DM_SUSPEND_FLAG). */
export function dmResume(name: string): void {
  dmIoctl(DM_DEV_SUSPEND, 'DM_DEV_SUSPEND', header(DM_IOCTL_SIZE, name, 0), name);
}

/**
 * Removes the device. With `deferred`, a device that is open is marked instead and removed by
 * the kernel when its last opener closes it (dm_deferred_remove() in drivers/md/dm.c); without
 * it, an open device fails with EBUSY.
 */
export function dmRemove(name: string, opts: { deferred?: boolean } = {}): void {
  dmIoctl(DM_DEV_REMOVE, 'DM_DEV_REMOVE', header(DM_IOCTL_SIZE, name, opts.deferred ? DM_DEFERRED_REMOVE : 0), name);
}

/** The device node devtmpfs made for a dm device: /dev/dm-<minor>. */
export function dmDevicePath(dev: DmDevice): string {
  return `/dev/dm-${dev.minor}`;
}

/** Names of the block devices a dm device's table holds open (/sys/block/dm-N/slaves), e.g. ['loop3']. */
export function dmSlaves(dev: DmDevice): string[] {
  try {
    return fs.readdirSync(`/sys/dev/block/${dev.major}:${dev.minor}/slaves`);
  } catch {
    return [];
  }
}
