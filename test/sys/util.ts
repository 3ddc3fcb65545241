// Shared helpers for the src/sys tests (real kernel, run as root).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';

/** This process's open fds and what each points to. */
export function openFds(): Map<number, string> {
  const fds = new Map<number, string>();
  for (const name of fs.readdirSync('/proc/self/fd')) {
    try {
      fds.set(Number(name), fs.readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // closed between readdir and readlink (e.g. the readdir's own fd)
    }
  }
  return fds;
}

/**
 * Asserts that every fd open now was open at `before` (same number, same target): what the
 * test opened is closed again. Node's own fds may come and go meanwhile (loader, child
 * process plumbing), so a missing fd is not an error and a new one gets a moment to close.
 */
export async function assertNoNewFds(before: Map<number, string>, timeoutMs = 2000): Promise<void> {
  const fresh = (): string[] => [...openFds()].filter(([fd, target]) => before.get(fd) !== target).map(([fd, target]) => `${fd} -> ${target}`);
  const deadline = Date.now() + timeoutMs;
  while (fresh().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(fresh(), [], 'fds left open');
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
