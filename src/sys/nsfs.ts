// Namespace file (nsfs) ioctls and namespace constants. Works on fds from /proc/<pid>/ns/*.
import fs from 'node:fs';
import os from 'node:os';
import { SysError, check } from './errors.js';
import { NR, ioctl, syscall } from './libc.js';

export const CLONE_NEWNS = 0x00020000;
export const CLONE_NEWUSER = 0x10000000;
export const CLONE_NEWNET = 0x40000000;

const NS_GET_USERNS = 0xb701;
const NS_GET_PARENT = 0xb702;
const NS_GET_NSTYPE = 0xb703;
const NS_GET_OWNER_UID = 0xb704;
/** _IOR(0xb7, 0xd, __u64); only on newer kernels (ENOTTY otherwise). */
export const NS_GET_ID = 0x8008b70d;

/** Returns a new fd for the user namespace owning the namespace `nsFd`. */
export function nsGetUserns(nsFd: number): number {
  return check(ioctl(nsFd, NS_GET_USERNS), 'ioctl(NS_GET_USERNS)');
}

/** Returns a new fd for the parent of a user or pid namespace (EPERM at the top we can see). */
export function nsGetParent(nsFd: number): number {
  return check(ioctl(nsFd, NS_GET_PARENT), 'ioctl(NS_GET_PARENT)');
}

/** Returns the CLONE_NEW* type of the namespace. */
export function nsGetType(nsFd: number): number {
  return check(ioctl(nsFd, NS_GET_NSTYPE), 'ioctl(NS_GET_NSTYPE)');
}

/** Owner uid (as seen from our user namespace) of a user namespace fd. */
export function nsGetOwnerUid(usernsFd: number): number {
  const buf = Buffer.alloc(4);
  check(ioctl(usernsFd, NS_GET_OWNER_UID, 'void *', buf), 'ioctl(NS_GET_OWNER_UID)');
  return buf.readUInt32LE(0);
}

/** 64-bit namespace id; throws SysError ENOTTY on kernels without NS_GET_ID. */
function nsGetId(nsFd: number): bigint {
  const buf = Buffer.alloc(8);
  check(ioctl(nsFd, NS_GET_ID, 'void *', buf), 'ioctl(NS_GET_ID)');
  return buf.readBigUInt64LE(0);
}

/**
 * setns(2). Note: joining a user or mount namespace fails with EINVAL from the multi-threaded
 * Node process; use nshelper.ts for those.
 */
export function setns(nsFd: number, nstype: number): void {
  check(syscall(NR.setns, 'int', nsFd, 'int', nstype), 'setns');
}

export interface UserNamespaceInfo {
  /** nsfs inode number (what /proc/<pid>/ns/user links to). */
  inode: number;
  nstype: number;
  ownerUid: number;
  /** Present when the kernel supports NS_GET_ID. */
  id?: bigint;
}

/** Inspects a user namespace fd; throws SysError EINVAL if it is not one. */
export function userNamespaceInfo(fd: number): UserNamespaceInfo {
  const nstype = nsGetType(fd);
  if (nstype !== CLONE_NEWUSER) {
    throw new SysError(os.constants.errno.EINVAL, 'userNamespaceInfo', `not a user namespace (nstype 0x${nstype.toString(16)})`);
  }
  const info: UserNamespaceInfo = { inode: fs.fstatSync(fd).ino, nstype, ownerUid: nsGetOwnerUid(fd) };
  try {
    info.id = nsGetId(fd);
  } catch (err) {
    if (!(err instanceof SysError && err.code === 'ENOTTY')) throw err;
  }
  return info;
}

/** Magic dirfd meaning "the nsfs root" for open_by_handle_at (include/uapi/linux/fcntl.h). */
const FD_NSFS_ROOT = -10003;
const FILEID_NSFS = 0xf1;

export type Liveness = 'alive' | 'dead' | 'unknown';

/**
 * Is a user namespace still alive, knowing only its inode and NS_GET_ID, without holding an fd
 * (which would keep it alive)? Since Linux 6.18 nsfs supports file handles: open_by_handle_at()
 * on {ns_id, CLONE_NEWUSER, inode} opens the namespace if it exists and fails with ESTALE once
 * it is gone. A recycled inode has a different ns_id, so it never looks alive.
 */
export function userNamespaceLiveness(nsId: string, inode: number): Liveness {
  if (!nsId) return 'unknown';
  try {
    fs.closeSync(openUserNamespaceByHandle(nsId, inode));
    return 'alive';
  } catch (e) {
    if (e instanceof SysError && e.code === 'ESTALE') return 'dead';
    return 'unknown'; // older kernel or no permission: never reap what is not provably dead
  }
}

/** Opens the user namespace {nsId, inode} by its nsfs file handle (ESTALE once it is gone). */
export function openUserNamespaceByHandle(nsId: string, inode: number): number {
  // struct file_handle { u32 handle_bytes; int handle_type; struct nsfs_file_handle { u64 ns_id; u32 ns_type; u32 ns_inum; } }
  const fh = Buffer.alloc(24);
  fh.writeUInt32LE(16, 0);
  fh.writeInt32LE(FILEID_NSFS, 4);
  fh.writeBigUInt64LE(BigInt(nsId), 8);
  fh.writeUInt32LE(CLONE_NEWUSER, 16);
  fh.writeUInt32LE(inode >>> 0, 20);
  return check(syscall(NR.open_by_handle_at, 'int', FD_NSFS_ROOT, 'void *', fh, 'int', 0 /* O_RDONLY */), 'open_by_handle_at');
}
