// Process fds: a stable handle on a process that cannot be confused by pid reuse.
import { check } from './errors.js';
import { NR, syscall } from './libc.js';

/** pidfd_open; the returned fd is always close-on-exec. ESRCH if the pid does not exist. */
export function pidfdOpen(pid: number, flags = 0): number {
  return check(syscall(NR.pidfd_open, 'int', pid, 'uint', flags), 'pidfd_open');
}

/** Signals the process referred to by a pidfd (ESRCH once it has exited). */
export function pidfdSendSignal(pidfd: number, signal: number): void {
  check(syscall(NR.pidfd_send_signal, 'int', pidfd, 'int', signal, 'void *', null, 'uint', 0), 'pidfd_send_signal');
}
