// The one place libc is loaded through koffi. Everything else goes through these typed entry
// points and checks results with errors.ts:check() right after the call (errno is per-call).
import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

/** Variadic argument list for koffi: alternating C type names and values, e.g. 'int', 3, 'str', 'x'. */
export type VarArgs = Array<string | number | bigint | Buffer | null>;

/** x86-64 syscall numbers used by src/sys (glibc may lack wrappers for the newer ones). */
export const NR = {
  memfd_create: 319,
  setns: 308,
  open_by_handle_at: 304,
  pidfd_send_signal: 424,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  pidfd_open: 434,
  mount_setattr: 442,
} as const;

const rawSyscall: (nr: number, ...args: VarArgs) => number | bigint = lib.func('long syscall(long number, ...)');
const rawIoctl: (fd: number, request: number, ...args: VarArgs) => number = lib.func('int ioctl(int fd, unsigned long request, ...)');
const rawFcntl: (fd: number, cmd: number, ...args: VarArgs) => number = lib.func('int fcntl(int fd, int cmd, ...)');
const rawFstatfs: (fd: number, buf: Buffer) => number = lib.func('int fstatfs(int fd, void *buf)');

/** Raw syscall(2): returns -1 with errno set on failure. */
export function syscall(nr: number, ...args: VarArgs): number {
  return Number(rawSyscall(nr, ...args));
}

/** Raw ioctl(2): returns -1 with errno set on failure. */
export function ioctl(fd: number, request: number, ...args: VarArgs): number {
  return rawIoctl(fd, request, ...args);
}

/** Raw fcntl(2): returns -1 with errno set on failure. */
export function fcntl(fd: number, cmd: number, ...args: VarArgs): number {
  return rawFcntl(fd, cmd, ...args);
}

/** Raw fstatfs(2) into a caller-provided struct statfs buffer (120 bytes on x86-64). */
export function fstatfs(fd: number, buf: Buffer): number {
  return rawFstatfs(fd, buf);
}
