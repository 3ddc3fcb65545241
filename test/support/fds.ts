// File descriptors: what this process holds (to prove a test closed what it opened), and small
// fd plumbing the kernel API lacks in Node.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { waitFor } from './wait.js';

/** Node has no fs.constants.O_PATH. */
export const O_PATH = 0o10000000;

/** The open fds of process `pid` (this one by default) and what each points to. */
export function openFds(pid: number | 'self' = 'self'): Map<number, string> {
  const fds = new Map<number, string>();
  for (const name of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      fds.set(Number(name), fs.readlinkSync(`/proc/${pid}/fd/${name}`));
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
  await waitFor(() => fresh().length === 0, 'fds to close', timeoutMs, 20).catch(() => undefined);
  assert.deepEqual(fresh(), [], 'fds left open');
}

export function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  }
}

/** A pipe [read, write] (Node has no pipe(2); a FIFO opened both ways is the same kind of fd). */
export function fifoPipe(dir: string): [number, number] {
  const fifo = path.join(dir, `fifo-${Math.random().toString(16).slice(2)}`);
  execFileSync('mkfifo', [fifo]);
  const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  fs.rmSync(fifo);
  return [r, w];
}
