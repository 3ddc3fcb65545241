// Sealed memory files: contents handed to another party that must not change afterwards.
import { check } from './errors.js';
import { NR, fcntl, syscall } from './libc.js';

export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;

const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;
/** Everything needed to make the contents immutable for good. */
export const F_SEAL_ALL_DATA = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

/** `name` is only a debugging label (shows up as /memfd:<name>). */
export function memfdCreate(name: string, flags: number = MFD_CLOEXEC | MFD_ALLOW_SEALING): number {
  return check(syscall(NR.memfd_create, 'str', name, 'uint', flags), 'memfd_create', name);
}

/** Adds seals; F_SEAL_WRITE fails with EBUSY while writable shared mappings exist. */
export function addSeals(fd: number, seals: number): void {
  check(fcntl(fd, F_ADD_SEALS, 'int', seals), 'fcntl(F_ADD_SEALS)');
}

export function getSeals(fd: number): number {
  return check(fcntl(fd, F_GET_SEALS), 'fcntl(F_GET_SEALS)');
}
