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
const rawSocket: (domain: number, type: number, protocol: number) => number = lib.func('int socket(int domain, int type, int protocol)');
const rawSendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number | bigint = lib.func(
  'long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)',
);
const rawRecv: (fd: number, buf: Buffer, len: number, flags: number) => number | bigint = lib.func('long recv(int fd, void *buf, size_t len, int flags)');

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

/** Raw socket(2), for the families Node has no API for (AF_NETLINK): -1 with errno set on failure. */
export function socket(domain: number, type: number, protocol: number): number {
  return rawSocket(domain, type, protocol);
}

/** Raw sendto(2) of the whole buffer to the sockaddr in `addr`: -1 with errno set on failure. */
export function sendto(fd: number, buf: Buffer, flags: number, addr: Buffer): number {
  return Number(rawSendto(fd, buf, buf.length, flags, addr, addr.length));
}

/** Raw recv(2) into `buf`: the byte count, or -1 with errno set on failure. */
export function recv(fd: number, buf: Buffer, flags: number): number {
  return Number(rawRecv(fd, buf, buf.length, flags));
}
