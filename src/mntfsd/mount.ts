// Turns verified partition bytes into detached mounts: a read-only loop device over the
// private copy, the new mount API, and an idmapped clone per caller.
import * as fs from 'node:fs';
import { attachLoop } from '../sys/loop.js';
import {
  AT_EMPTY_PATH,
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
  OPEN_TREE_CLOEXEC,
  OPEN_TREE_CLONE,
  openTree,
} from '../sys/mount-api.js';

/** File systems the daemon lets a kernel driver parse (systemd's default list, minus f2fs). */
export const ALLOWED_FILE_SYSTEMS: ReadonlySet<string> = new Set(['btrfs', 'erofs', 'ext4', 'squashfs', 'vfat', 'xfs']);

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
export function mountAttributes(req: MountRequest): number {
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
 * Mounts the partition as a detached, not yet idmapped mount. The loop device is configured
 * with autoclear and its fd closed once the superblock holds it, so it goes away with the
 * last mount.
 */
export function mountPartition(src: MountSource, req: MountRequest): number {
  if (!ALLOWED_FILE_SYSTEMS.has(req.fileSystemType)) throw new Error(`file system ${req.fileSystemType} is not allowed`);
  const loop = attachLoop(src.fd, { offset: src.offset, size: src.size, readOnly: req.readOnly, autoclear: true });
  let fsFd = -1;
  try {
    fsFd = fsopen(req.fileSystemType);
    fsconfigSetString(fsFd, 'source', loop.devPath);
    configure(fsFd, req);
    fsconfigCreate(fsFd);
    return fsmount(fsFd, mountAttributes(req));
  } finally {
    if (fsFd >= 0) fs.closeSync(fsFd);
    fs.closeSync(loop.fd);
  }
}

/**
 * A new detached mount of the same superblock for one caller, idmapped to its user
 * namespace when given. The base mount stays un-idmapped so the cache can clone it again.
 */
export function cloneForCaller(baseMountFd: number, usernsFd: number | null, readOnly: boolean): number {
  const fd = openTree(baseMountFd, '', OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
  try {
    let attrSet = readOnly ? MOUNT_ATTR_RDONLY : 0;
    if (usernsFd !== null) attrSet |= MOUNT_ATTR_IDMAP;
    if (attrSet) mountSetattrFd(fd, { attrSet, usernsFd: usernsFd ?? undefined });
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}
