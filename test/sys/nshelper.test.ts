import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { nshelperPath, spawnInNamespaces } from '../../src/sys/nshelper.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { killAndWait, spawnInNewUserns } from '../support/userns.js';

const norm = (s: string): string => s.trim().split(/\s+/).join(' ');

test('nshelper binary is built', () => {
  fs.accessSync(nshelperPath, fs.constants.X_OK);
});

test('exec-in: a process started inside a mapped namespace sees its map', async () => {
  const before = openFds();
  const holder = await spawnInNewUserns('unshare', ['--user', '--map-root-user', 'sleep', '30']);
  const usernsFd = fs.openSync(`/proc/${holder.pid}/ns/user`, 'r');
  try {
    const child = spawnInNamespaces({ usernsFd }, 'cat', ['/proc/self/uid_map']);
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
    const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
    assert.equal(code, 0);
    assert.equal(norm(out), '0 0 1');
  } finally {
    fs.closeSync(usernsFd);
    await killAndWait(holder);
  }
  await assertNoNewFds(before);
});

test('exec-in usage and exec errors', async () => {
  const run = (args: string[]): Promise<number | null> => {
    const c = spawnInNamespaces({}, args[0]!, args.slice(1), 'ignore');
    return new Promise((r) => c.once('exit', (code) => r(code)));
  };
  assert.equal(await run(['true']), 0);
  assert.equal(await run(['/nonexistent/mountgate']), 127);
});
