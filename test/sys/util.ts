// Shared helpers for the src/sys tests (real kernel, run as root).
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';

/** Number of open fds in this process. */
export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Spawns `cmd` (which must create a new user namespace, e.g. via unshare --user) and waits
 * until the child's user namespace differs from ours, i.e. unshare has happened.
 */
export async function spawnInNewUserns(cmd: string, args: string[]): Promise<ChildProcess & { pid: number }> {
  const child = spawn(cmd, args, { stdio: 'ignore' });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`spawn ${cmd} failed`);
  const ours = fs.readlinkSync('/proc/self/ns/user');
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`${cmd} exited early with ${child.exitCode}`);
    try {
      return fs.readlinkSync(`/proc/${pid}/ns/user`) !== ours;
    } catch {
      return false;
    }
  }, `${cmd} to unshare its user namespace`);
  return Object.assign(child, { pid });
}

export async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  child.kill('SIGKILL');
  await exited;
}
