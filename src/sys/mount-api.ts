// The new mount API (fsopen/fsconfig/fsmount/open_tree/move_mount/mount_setattr).
// Mounts are built detached as fds and attached with move_mount, so nothing is visible in
// the mount table until it is fully configured (and attributes like idmap are applied).
import { AT_EMPTY_PATH } from './dirfd.js';
import { check } from './errors.js';
import { NR, syscall } from './libc.js';

// The *at() flags are dirfd.ts's; callers of this module get them here too.
export { AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW } from './dirfd.js';

export const AT_FDCWD = -100;
const AT_RECURSIVE = 0x8000;

const FSOPEN_CLOEXEC = 0x1;
const FSMOUNT_CLOEXEC = 0x1;
const FSPICK_CLOEXEC = 0x1;
const FSPICK_EMPTY_PATH = 0x8;

const FSCONFIG_SET_FLAG = 0;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_CMD_CREATE = 6;
const FSCONFIG_CMD_RECONFIGURE = 7;

export const OPEN_TREE_CLONE = 0x1;
export const OPEN_TREE_CLOEXEC = 0o2000000; // == O_CLOEXEC

const MOVE_MOUNT_F_EMPTY_PATH = 0x4;

// Mount attributes, shared by fsmount(attr_flags) and mount_setattr.
export const MOUNT_ATTR_RDONLY = 0x1;
export const MOUNT_ATTR_NOSUID = 0x2;
export const MOUNT_ATTR_NODEV = 0x4;
export const MOUNT_ATTR_NOEXEC = 0x8;
export const MOUNT_ATTR_IDMAP = 0x100000;
export const MOUNT_ATTR_NOSYMFOLLOW = 0x200000;

// Propagation types for MountAttr.propagation.
export const MS_PRIVATE = 1 << 18;

/** sizeof(struct mount_attr), MOUNT_ATTR_SIZE_VER0. */
const MOUNT_ATTR_SIZE = 32;

/** Opens a filesystem context for `fsType`; ENODEV if the kernel does not know the type. */
export function fsopen(fsType: string, flags: number = FSOPEN_CLOEXEC): number {
  return check(syscall(NR.fsopen, 'str', fsType, 'uint', flags), 'fsopen', fsType);
}

/** Raw fsconfig; prefer the typed helpers below. */
export function fsconfig(fsFd: number, cmd: number, key: string | null, value: string | Buffer | null, aux: number): void {
  const valueArg: [string, string | Buffer | null] = typeof value === 'string' ? ['str', value] : ['void *', value];
  check(syscall(NR.fsconfig, 'int', fsFd, 'uint', cmd, 'str', key, valueArg[0], valueArg[1], 'int', aux), 'fsconfig', key ?? undefined);
}

export function fsconfigSetString(fsFd: number, key: string, value: string): void {
  fsconfig(fsFd, FSCONFIG_SET_STRING, key, value, 0);
}

export function fsconfigSetFlag(fsFd: number, key: string): void {
  fsconfig(fsFd, FSCONFIG_SET_FLAG, key, null, 0);
}

/** Passes an fd as an option value (e.g. "source" for filesystems that accept fds). */
/** Creates the superblock from the configured context. */
export function fsconfigCreate(fsFd: number): void {
  fsconfig(fsFd, FSCONFIG_CMD_CREATE, null, null, 0);
}

/** Applies the options set on a context from fspick() to the live superblock. */
export function fsconfigReconfigure(fsFd: number): void {
  fsconfig(fsFd, FSCONFIG_CMD_RECONFIGURE, null, null, 0);
}

/** Opens a context for reconfiguring the superblock behind a mount fd (fspick with AT_EMPTY_PATH). */
export function fspickFd(mountFd: number): number {
  return check(syscall(NR.fspick, 'int', mountFd, 'str', '', 'uint', FSPICK_EMPTY_PATH | FSPICK_CLOEXEC), 'fspick');
}

/** Turns a created context into a detached mount fd. `attrFlags` are MOUNT_ATTR_* values. */
export function fsmount(fsFd: number, attrFlags = 0, flags: number = FSMOUNT_CLOEXEC): number {
  return check(syscall(NR.fsmount, 'int', fsFd, 'uint', flags, 'uint', attrFlags), 'fsmount');
}

/** open_tree; the default clones the whole subtree into a detached mount (close-on-exec). */
export function openTree(dirFd: number, path: string, flags: number = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE): number {
  return check(syscall(NR.open_tree, 'int', dirFd, 'str', path, 'uint', flags), 'open_tree', path);
}

function moveMount(fromDirFd: number, fromPath: string, toDirFd: number, toPath: string, flags: number): void {
  check(syscall(NR.move_mount, 'int', fromDirFd, 'str', fromPath, 'int', toDirFd, 'str', toPath, 'uint', flags), 'move_mount', toPath);
}

/** Attaches a detached mount fd (from fsmount/open_tree) at `target`. */
export function attachMount(mountFd: number, target: string, toDirFd = AT_FDCWD): void {
  moveMount(mountFd, '', toDirFd, target, MOVE_MOUNT_F_EMPTY_PATH);
}

export interface MountAttr {
  attrSet?: number;
  attrClr?: number;
  propagation?: number;
  /** Required with MOUNT_ATTR_IDMAP: a user namespace fd whose mapping is applied to the mount. */
  usernsFd?: number;
}

/** struct mount_attr as mount_setattr and open_tree_attr take it. */
function packMountAttr(attr: MountAttr): Buffer {
  const buf = Buffer.alloc(MOUNT_ATTR_SIZE);
  buf.writeBigUInt64LE(BigInt(attr.attrSet ?? 0), 0);
  buf.writeBigUInt64LE(BigInt(attr.attrClr ?? 0), 8);
  buf.writeBigUInt64LE(BigInt(attr.propagation ?? 0), 16);
  buf.writeBigUInt64LE(BigInt(attr.usernsFd ?? 0), 24);
  return buf;
}

/** Changes mount attributes. Use path '' + AT_EMPTY_PATH to target a mount fd itself. */
function mountSetattr(dirFd: number, path: string, flags: number, attr: MountAttr): void {
  const buf = packMountAttr(attr);
  check(
    syscall(NR.mount_setattr, 'int', dirFd, 'str', path, 'uint', flags, 'void *', buf, 'size_t', MOUNT_ATTR_SIZE),
    'mount_setattr',
    path || undefined,
  );
}

/** mount_setattr on a mount fd (detached or attached). */
export function mountSetattrFd(mountFd: number, attr: MountAttr, recursive = false): void {
  mountSetattr(mountFd, '', AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), attr);
}

/** open_tree_attr(2) (Linux 6.15): not in libc.ts's table, only used here. */
const NR_OPEN_TREE_ATTR = 467;

/**
 * open_tree_attr: open_tree(OPEN_TREE_CLONE) that applies `attr` to the clone before returning
 * it; unlike mount_setattr it may clear or replace an idmapping the source mount carries.
 * ENOSYS before Linux 6.15.
 */
export function openTreeAttr(dirFd: number, path: string, flags: number, attr: MountAttr): number {
  const buf = packMountAttr(attr);
  return check(
    syscall(NR_OPEN_TREE_ATTR, 'int', dirFd, 'str', path, 'uint', flags, 'void *', buf, 'size_t', MOUNT_ATTR_SIZE),
    'open_tree_attr',
    path || undefined,
  );
}
