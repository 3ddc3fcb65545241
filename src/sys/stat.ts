// fd inspection: what an fd is (fstat), how it was opened (fcntl F_GETFL) and what
// filesystem it lives on (fstatfs f_type). Used to validate fds received from clients.
import fs from 'node:fs';
import { O_PATH, O_RDONLY } from './dirfd.js';
import { check } from './errors.js';
import { fcntl, fstatfs } from './libc.js';

export { O_PATH } from './dirfd.js';

const F_GETFL = 3;
const F_DUPFD_CLOEXEC = 1030;
const O_ACCMODE = 0o3;
const O_WRONLY = 0o1;
const O_RDWR = 0o2;

export const NSFS_MAGIC = 0x6e736673;
export const PROC_SUPER_MAGIC = 0x9fa0;
export const TMPFS_MAGIC = 0x01021994;
export const PIDFS_MAGIC = 0x50494446;

export interface FdStat {
  dev: number;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  isFile: boolean;
  isDirectory: boolean;
  isBlockDevice: boolean;
}

/** fstat via Node (throws Node's own errno-coded errors). */
export function fdStat(fd: number): FdStat {
  const st = fs.fstatSync(fd);
  return {
    dev: st.dev,
    ino: st.ino,
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    rdev: st.rdev,
    isFile: st.isFile(),
    isDirectory: st.isDirectory(),
    isBlockDevice: st.isBlockDevice(),
  };
}

export interface FdFlags {
  /** Raw F_GETFL result. */
  flags: number;
  /** O_PATH fds carry no read/write access. */
  path: boolean;
  readable: boolean;
  writable: boolean;
}

/** A close-on-exec duplicate of fd. */
export function dupCloexec(fd: number): number {
  return check(fcntl(fd, F_DUPFD_CLOEXEC, 'int', 3), 'fcntl(F_DUPFD_CLOEXEC)');
}

export function fdFlags(fd: number): FdFlags {
  const flags = check(fcntl(fd, F_GETFL), 'fcntl(F_GETFL)');
  const path = (flags & O_PATH) !== 0;
  const acc = flags & O_ACCMODE;
  return {
    flags,
    path,
    readable: !path && (acc === O_RDONLY || acc === O_RDWR),
    writable: !path && (acc === O_WRONLY || acc === O_RDWR),
  };
}

/** sizeof(struct statfs) on x86-64; f_type is the first field (long). */
const STATFS_SIZE = 120;

/** Filesystem magic (statfs f_type) of the filesystem holding `fd`. */
export function statfsType(fd: number): number {
  const buf = Buffer.alloc(STATFS_SIZE);
  check(fstatfs(fd, buf), 'fstatfs');
  return Number(buf.readBigUInt64LE(0));
}
