// Kernel keyrings: a `user` key holding data the kernel reads by description (dm-verity's
// root_hash_sig_key_desc), added and invalidated, as cryptsetup's keyring utilities do.
import { check } from './errors.js';
import { syscall } from './libc.js';

// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
const NR_ADD_KEY = 248;
const NR_KEYCTL = 250;
/** The calling process's keyring: the kernel finds keys there for any of its threads (request_key()). */
const KEY_SPEC_PROCESS_KEYRING = -2;
const KEYCTL_INVALIDATE = 21;

/** add_key("user", description, payload) into `keyring`; returns the key's serial. */
export function addUserKey(description: string, payload: Buffer, keyring: number = KEY_SPEC_PROCESS_KEYRING): number {
  return check(syscall(NR_ADD_KEY, 'str', 'user', 'str', description, 'void *', payload, 'long', payload.length, 'int', keyring), 'add_key', description);
}

/** keyctl(KEYCTL_INVALIDATE): the key is gone from every keyring at once. */
export function invalidateKey(serial: number): void {
  check(syscall(NR_KEYCTL, 'int', KEYCTL_INVALIDATE, 'int', serial), 'keyctl(KEYCTL_INVALIDATE)');
}
