// The end of a lab test file's fixture, in one place: its uid-1000 namespace holder, the daemons
// it started, its directory, and the images it borrowed (test/support/images.ts).
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { stopDaemons } from './daemons.js';
import { removeImages } from './images.js';
import { killAndWait } from './userns.js';

export async function tearDownFixture(holder: ChildProcess | undefined, dir: string): Promise<void> {
  if (holder) await killAndWait(holder);
  await stopDaemons();
  fs.rmSync(dir, { recursive: true, force: true });
  removeImages();
}
