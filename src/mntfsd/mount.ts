// Turns verified partition bytes into detached mounts: a read-only loop device over the
// private copy (or a dm-verity device), the new mount API, and an idmapped mount of the same
// superblock per caller.
import * as fs from 'node:fs';
import { attachLoop } from '../sys/loop.js';
import {
  fsconfigCreate,
  fsconfigSetFlag,
  fsconfigSetString,
  fsmount,
  fsopen,
  MOUNT_ATTR_IDMAP,
  MOUNT_ATTR_NODEV,
  MOUNT_ATTR_NOEXEC,
  MOUNT_ATTR_NOSUID,
  MOUNT_ATTR_NOSYMFOLLOW,
  MOUNT_ATTR_RDONLY,
  mountSetattrFd,
} from '../sys/mount-api.js';

/** File systems the daemon lets a kernel driver parse (systemd's default list, minus f2fs). */
const ALLOWED_FILE_SYSTEMS: ReadonlySet<string> = new Set(['btrfs', 'erofs', 'ext4', 'squashfs', 'vfat', 'xfs']);

export interface MountSource {
  /** Backing fd (a read-only private copy, or a trusted image fd). */
  fd: number;
  offset: number;
  size: number;
}

export interface MountRequest {
  designator: string;
  fileSystemType: string;
  readOnly: boolean;
}

/** Per-mount attributes: always nodev; boot partitions and tmp get systemd's extra restrictions. */
function mountAttributes(req: MountRequest): number {
  let attrs = MOUNT_ATTR_NODEV;
  if (req.readOnly) attrs |= MOUNT_ATTR_RDONLY;
  if (req.designator === 'tmp') attrs |= MOUNT_ATTR_NOSUID;
  if (req.designator === 'esp' || req.designator === 'xbootldr') attrs |= MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSYMFOLLOW;
  return attrs;
}

function configure(fsFd: number, req: MountRequest): void {
  if (req.readOnly) fsconfigSetFlag(fsFd, 'ro');
  // A read-only mount must never replay a journal: that would write to the image.
  if (req.readOnly && (req.fileSystemType === 'ext4' || req.fileSystemType === 'xfs')) fsconfigSetFlag(fsFd, 'norecovery');
  if (req.readOnly && req.fileSystemType === 'btrfs') fsconfigSetString(fsFd, 'rescue', 'nologreplay');
  if (req.designator === 'esp' || req.designator === 'xbootldr') fsconfigSetString(fsFd, 'umask', '0077');
}

/**
 * A mounted partition: a read-only (or trusted writable) loop device and a detached mount
 * that pins its superblock. Callers never get this mount; each gets its own (mountForCaller).
 */
export interface PartitionMount {
  /** Detached, un-idmapped mount: keeps the superblock, and through it the loop device, alive. */
  readonly baseFd: number;
  /** The loop or dm-verity device: how a caller's mount finds the same superblock. */
  readonly devPath: string;
  readonly request: MountRequest;
}

function newMount(source: string, req: MountRequest, attrs: number): number {
  const fsFd = fsopen(req.fileSystemType);
  try {
    fsconfigSetString(fsFd, 'source', source);
    configure(fsFd, req);
    fsconfigCreate(fsFd);
    return fsmount(fsFd, attrs);
  } finally {
    fs.closeSync(fsFd);
  }
}

/**
 * Mounts the partition. The loop device is configured with autoclear, so it goes away once
 * the last mount of its superblock and releasePartitionMount() have let go of it.
 */
export function mountPartition(src: MountSource, req: MountRequest): PartitionMount {
  checkAllowed(req);
  const loop = attachLoop(src.fd, { offset: src.offset, size: src.size, readOnly: req.readOnly, autoclear: true });
  try {
    return mountBlockDevice(loop.devPath, req);
  } finally {
    fs.closeSync(loop.fd);
  }
}

function checkAllowed(req: MountRequest): void {
  if (!ALLOWED_FILE_SYSTEMS.has(req.fileSystemType)) throw new Error(`file system ${req.fileSystemType} is not allowed`);
}

/**
 * Mounts the file system on a block device that is already set up (a loop device, or a
 * dm-verity device over loop devices: dm-verity.ts). The base mount keeps the device open.
 */
export function mountBlockDevice(devPath: string, req: MountRequest): PartitionMount {
  checkAllowed(req);
  return { baseFd: newMount(devPath, req, mountAttributes(req)), devPath, request: req };
}

export function releasePartitionMount(m: PartitionMount): void {
  fs.closeSync(m.baseFd);
}

/**
 * A new detached mount of the partition's superblock for one caller, idmapped to its user
 * namespace when given. It is a fresh fsmount() of the same block device, which the kernel
 * resolves to the existing superblock (sget_fc() in get_tree_bdev()): nothing is read or
 * verified again. Cloning the detached base mount with open_tree(OPEN_TREE_CLONE) would be
 * shorter, but kernels before 6.15 refuse to clone a mount that is in no mount namespace
 * (EINVAL), and Debian 13 runs 6.12. `extraAttrs` (MOUNT_ATTR_*) restrict this caller's mount
 * beyond the partition's own attributes.
 */
export function mountForCaller(m: PartitionMount, usernsFd: number | null, readOnly: boolean, extraAttrs = 0): number {
  const req = { ...m.request, readOnly: m.request.readOnly || readOnly };
  const fd = newMount(m.devPath, req, mountAttributes(req) | extraAttrs);
  try {
    // The base mount holds the device, so its name cannot have been reused; still, hand
    // out nothing but the very superblock that was verified.
    if (fs.fstatSync(fd).dev !== fs.fstatSync(m.baseFd).dev) throw new Error(`${m.devPath} no longer holds the mounted partition`);
    if (usernsFd !== null) mountSetattrFd(fd, { attrSet: MOUNT_ATTR_IDMAP, usernsFd });
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}
