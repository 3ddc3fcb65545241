// Directory-fd relative file calls (openat, mkdirat, renameat2, unlinkat) and statx. Node's fs
// only takes paths; a daemon working in a directory a client handed in must never re-resolve
// a path, so these act on the client's fd and a single name component.
import { check } from './errors.js';
import { syscall } from './libc.js';

/** x86-64 syscall numbers (not in libc.ts's table: only this file uses them). */
const NR_OPENAT = 257;
const NR_MKDIRAT = 258;
const NR_UNLINKAT = 263;
const NR_RENAMEAT2 = 316;
const NR_STATX = 332;

export const O_RDONLY = 0o0;
export const O_NONBLOCK = 0o4000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_LARGEFILE = 0o100000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;

export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;
export const RENAME_NOREPLACE = 0x1;

export const STATX_TYPE = 0x1;
export const STATX_UID = 0x8;
export const STATX_GID = 0x10;
export const STATX_INO = 0x100;
export const STATX_MNT_ID = 0x1000;
/** stx_attributes: the file is the root of a mount. */
export const STATX_ATTR_MOUNT_ROOT = 0x2000;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/** openat(2); the fd is the caller's to close. */
export function openat(dirFd: number, name: string, flags: number, mode = 0): number {
  return check(syscall(NR_OPENAT, 'int', dirFd, 'str', name, 'int', flags | O_CLOEXEC, 'uint', mode), 'openat', name);
}

export function mkdirat(dirFd: number, name: string, mode: number): void {
  check(syscall(NR_MKDIRAT, 'int', dirFd, 'str', name, 'uint', mode), 'mkdirat', name);
}

export function unlinkat(dirFd: number, name: string, flags: number): void {
  check(syscall(NR_UNLINKAT, 'int', dirFd, 'str', name, 'int', flags), 'unlinkat', name);
}

/** renameat2(2) within or across directory fds; RENAME_NOREPLACE fails with EEXIST. */
export function renameat2(fromDirFd: number, from: string, toDirFd: number, to: string, flags: number): void {
  check(syscall(NR_RENAMEAT2, 'int', fromDirFd, 'str', from, 'int', toDirFd, 'str', to, 'uint', flags), 'renameat2', to);
}

export interface Statx {
  /** Fields the kernel filled (STATX_*). */
  mask: number;
  attributes: bigint;
  /** Attributes this file system reports at all. */
  attributesMask: bigint;
  uid: number;
  gid: number;
  mode: number;
  ino: bigint;
  /** The file system's device (stx_dev_major:stx_dev_minor). */
  dev: string;
  mntId: bigint;
  isDirectory: boolean;
  isSymlink: boolean;
}

/** sizeof(struct statx). */
const STATX_SIZE = 256;

/** statx(2) of `name` relative to dirFd, or of dirFd itself with name '' (AT_EMPTY_PATH is added). */
export function statx(dirFd: number, name: string, flags: number, mask: number): Statx {
  const buf = Buffer.alloc(STATX_SIZE);
  check(syscall(NR_STATX, 'int', dirFd, 'str', name, 'int', flags | (name === '' ? AT_EMPTY_PATH : 0), 'uint', mask, 'void *', buf), 'statx', name || undefined);
  const mode = buf.readUInt16LE(28);
  return {
    mask: buf.readUInt32LE(0),
    attributes: buf.readBigUInt64LE(8),
    uid: buf.readUInt32LE(20),
    gid: buf.readUInt32LE(24),
    mode,
    ino: buf.readBigUInt64LE(32),
    attributesMask: buf.readBigUInt64LE(56),
    dev: `${buf.readUInt32LE(136)}:${buf.readUInt32LE(140)}`,
    mntId: buf.readBigUInt64LE(144),
    isDirectory: (mode & S_IFMT) === S_IFDIR,
    isSymlink: (mode & S_IFMT) === S_IFLNK,
  };
}
