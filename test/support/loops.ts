// Loop devices: which are bound and to what, to prove a daemon let go of the ones it made.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { FILE_NAME } from '../../src/mntfsd/verified-copy.js';
import { waitFor } from './wait.js';

/** How long a daemon may take to let go of what a finished or abandoned call held. */
export const SETTLE_MS = 20_000;

/** Bound loop devices and their backing files. */
export function loopDevices(): Map<string, string> {
  const out = new Map<string, string>();
  for (const d of fs.readdirSync('/sys/block')) {
    if (!d.startsWith('loop')) continue;
    try {
      out.set(d, fs.readFileSync(`/sys/block/${d}/loop/backing_file`, 'utf8').trim());
    } catch {
      // unbound
    }
  }
  return out;
}

/** Backing files of the loops mntfsd makes for the tests: verified copies, or images in
 * testDir('hostile-…') directories. (Other suites running on the machine at the same time bind
 * loops of their own files.) */
export const TEST_LOOPS = new RegExp(`^/${FILE_NAME}$|/hostile-`);

/** Loop devices bound now that were not in `before` (loops we made that are still there). */
export function newLoops(before: Map<string, string>, ours = TEST_LOOPS): string[] {
  return [...loopDevices()].filter(([d, f]) => before.get(d) !== f && ours.test(f)).map(([d, f]) => `${d}:${f}`);
}

/** Waits until no loop device of ours beyond `before` is bound (autoclear runs after the last mount goes). */
export async function assertNoNewLoops(before: Map<string, string>, what: string, ours = TEST_LOOPS): Promise<void> {
  try {
    await waitFor(() => newLoops(before, ours).length === 0, what, SETTLE_MS);
  } catch {
    assert.fail(`${what}: loop devices left: ${newLoops(before, ours).join(', ')}`);
  }
}
