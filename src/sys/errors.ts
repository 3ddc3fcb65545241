// Errors from raw kernel calls, carrying the errno name so callers can match on `code`
// the same way they do for Node's own fs errors. errno is positive, as the kernel's, here and in
// the addon's errors (mg_throw_errno() in native/helpers.c); ipc/errors.ts toVarlinkError() answers
// any of them as io.systemd.System.
import os from 'node:os';
import koffi from 'koffi';

// errno number -> name. Several names share a number; prefer the kernel's spelling.
const preferred: Record<number, string> = {
  [os.constants.errno.EAGAIN]: 'EAGAIN',
  [os.constants.errno.EDEADLK]: 'EDEADLK',
  [os.constants.errno.EOPNOTSUPP]: 'EOPNOTSUPP',
};
const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(os.constants.errno)) {
  if (!errnoNames.has(num)) errnoNames.set(num, preferred[num] ?? name);
}
// The key errors (the kernel's keyring and its signature checks, e.g. dm-verity's) are not in
// Node's table; Linux's asm-generic/errno.h numbers them.
for (const [num, name] of [[126, 'ENOKEY'], [127, 'EKEYEXPIRED'], [128, 'EKEYREVOKED'], [129, 'EKEYREJECTED']] as const) {
  if (!errnoNames.has(num)) errnoNames.set(num, name);
}

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

export class SysError extends Error {
  /** errno name, e.g. 'EPERM'. */
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;

  constructor(errno: number, syscall: string, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` (${detail})` : ''}: ${code} (errno ${errno})`);
    this.name = 'SysError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

/**
 * Throws a SysError built from koffi.errno() when a libc/syscall return value is negative.
 * Must be called immediately after the foreign call, before anything else can touch errno.
 */
export function check(ret: number | bigint, syscall: string, detail?: string): number {
  const n = Number(ret);
  if (n < 0) throw new SysError(koffi.errno(), syscall, detail);
  return n;
}

export function isSysError(err: unknown, code?: string): err is SysError {
  return err instanceof SysError && (code === undefined || err.code === code);
}
