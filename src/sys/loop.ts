// Loop devices: attach a backing file (by fd) to a free /dev/loopN in one LOOP_CONFIGURE call.
import fs from 'node:fs';
import { SysError, check } from './errors.js';
import { ioctl } from './libc.js';

const LOOP_CLR_FD = 0x4c01;
const LOOP_CONFIGURE = 0x4c0a;
const LOOP_CTL_GET_FREE = 0x4c82;

const LO_FLAGS_READ_ONLY = 1;
const LO_FLAGS_AUTOCLEAR = 4;
const LO_FLAGS_DIRECT_IO = 16;

// struct loop_config (linux/loop.h): u32 fd; u32 block_size; struct loop_info64 info; u64 __reserved[8].
// loop_info64 starts at 8 and is 232 bytes; offsets below are relative to loop_config.
const LOOP_CONFIG_SIZE = 304;
const CFG_FD = 0;
const CFG_BLOCK_SIZE = 4;
const INFO = 8;
const INFO_OFFSET = INFO + 24; // lo_offset (after lo_device, lo_inode, lo_rdevice)
const INFO_SIZELIMIT = INFO + 32; // lo_sizelimit
const INFO_FLAGS = INFO + 52; // lo_flags (after lo_number, lo_encrypt_type, lo_encrypt_key_size)
const INFO_FILE_NAME = INFO + 56; // lo_file_name[64]
const LO_NAME_SIZE = 64;

const GET_FREE_ATTEMPTS = 16;

export interface LoopOptions {
  /** Byte offset into the backing file. */
  offset?: number | bigint;
  /** Bytes to expose from `offset` (0/undefined = to the end of the file). */
  size?: number | bigint;
  readOnly?: boolean;
  /** Detach automatically when the last reference to the device is closed (or unmounted). */
  autoclear?: boolean;
  directIo?: boolean;
  /** Logical block size (512..4096); 0/undefined = kernel default. */
  blockSize?: number;
}

export interface LoopDevice {
  /** Open fd on the loop device; with autoclear, closing it before mounting detaches the device. */
  fd: number;
  devPath: string;
  number: number;
}

function buildConfig(backingFd: number, opts: LoopOptions): Buffer {
  const buf = Buffer.alloc(LOOP_CONFIG_SIZE);
  buf.writeUInt32LE(backingFd, CFG_FD);
  buf.writeUInt32LE(opts.blockSize ?? 0, CFG_BLOCK_SIZE);
  buf.writeBigUInt64LE(BigInt(opts.offset ?? 0), INFO_OFFSET);
  buf.writeBigUInt64LE(BigInt(opts.size ?? 0), INFO_SIZELIMIT);
  let flags = 0;
  if (opts.readOnly) flags |= LO_FLAGS_READ_ONLY;
  if (opts.autoclear) flags |= LO_FLAGS_AUTOCLEAR;
  if (opts.directIo) flags |= LO_FLAGS_DIRECT_IO;
  buf.writeUInt32LE(flags, INFO_FLAGS);
  // Informational only (shown by losetup / sysfs backing_file is taken from the file itself).
  let name = '';
  try {
    name = fs.readlinkSync(`/proc/self/fd/${backingFd}`);
  } catch {
    // not fatal
  }
  buf.write(name.slice(0, LO_NAME_SIZE - 1), INFO_FILE_NAME, LO_NAME_SIZE - 1, 'utf8');
  return buf;
}

/** Finds a free loop device number (creating one if needed). */
function loopGetFree(): number {
  const ctl = fs.openSync('/dev/loop-control', fs.constants.O_RDWR);
  try {
    return check(ioctl(ctl, LOOP_CTL_GET_FREE), 'ioctl(LOOP_CTL_GET_FREE)');
  } finally {
    fs.closeSync(ctl);
  }
}

/**
 * Attaches `backingFd` to a free loop device. GET_FREE and CONFIGURE are not atomic: another
 * process may bind the same device in between (EBUSY), in which case we pick another one.
 */
export function attachLoop(backingFd: number, opts: LoopOptions = {}): LoopDevice {
  const config = buildConfig(backingFd, opts);
  let lastErr: unknown;
  for (let attempt = 0; attempt < GET_FREE_ATTEMPTS; attempt++) {
    const number = loopGetFree();
    const devPath = `/dev/loop${number}`;
    const fd = fs.openSync(devPath, opts.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR);
    try {
      check(ioctl(fd, LOOP_CONFIGURE, 'void *', config), 'ioctl(LOOP_CONFIGURE)', devPath);
      return { fd, devPath, number };
    } catch (err) {
      fs.closeSync(fd);
      if (err instanceof SysError && err.code === 'EBUSY') {
        lastErr = err;
        continue;
      }
      throw err;
    }
  }
  throw lastErr;
}

/** Detaches the loop device (with autoclear the kernel defers this until the last close). */
export function loopClearFd(loopFd: number): void {
  check(ioctl(loopFd, LOOP_CLR_FD), 'ioctl(LOOP_CLR_FD)');
}

/** Detaches and closes a device returned by attachLoop. */
export function detachLoop(dev: LoopDevice): void {
  try {
    loopClearFd(dev.fd);
  } finally {
    fs.closeSync(dev.fd);
  }
}
