import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { joinUserNamespace, nshelperPath, spawnInNamespaces } from '../../src/sys/nshelper.js';
import { fdCount, killAndWait, spawnInNewUserns } from './util.js';

const norm = (s: string): string => s.trim().split(/\s+/).join(' ');

test('nshelper binary is built', () => {
  fs.accessSync(nshelperPath, fs.constants.X_OK);
});

test('joinUserNamespace: write uid_map/gid_map through the helper', async () => {
  const before = fdCount();
  const holder = await spawnInNewUserns('unshare', ['--user', 'sleep', '30']);
  const usernsFd = fs.openSync(`/proc/${holder.pid}/ns/user`, 'r');
  try {
    const member = await joinUserNamespace(usernsFd);
    try {
      assert.equal(fs.readlinkSync(`/proc/${member.pid}/ns/user`), fs.readlinkSync(`/proc/${holder.pid}/ns/user`));
      fs.writeFileSync(`/proc/${member.pid}/uid_map`, '0 100000 1\n');
      fs.writeFileSync(`/proc/${member.pid}/setgroups`, 'deny');
      fs.writeFileSync(`/proc/${member.pid}/gid_map`, '0 100000 1\n');
      assert.equal(norm(fs.readFileSync(`/proc/${member.pid}/uid_map`, 'utf8')), '0 100000 1');
      // The map belongs to the namespace, so every member sees it.
      assert.equal(norm(fs.readFileSync(`/proc/${holder.pid}/uid_map`, 'utf8')), '0 100000 1');
      assert.equal(norm(fs.readFileSync(`/proc/${holder.pid}/gid_map`, 'utf8')), '0 100000 1');
    } finally {
      await member.release();
      await member.release(); // idempotent
    }
    // exec-in: the map is visible from a process started inside the namespace.
    const child = spawnInNamespaces({ usernsFd }, 'cat', ['/proc/self/uid_map']);
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
    const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
    assert.equal(code, 0);
    assert.equal(norm(out), '0 100000 1');
  } finally {
    fs.closeSync(usernsFd);
    await killAndWait(holder);
  }
  assert.equal(fdCount(), before);
});

test('joinUserNamespace rejects a non-userns fd with the helper error', async () => {
  const before = fdCount();
  const net = fs.openSync('/proc/self/ns/net', 'r');
  try {
    await assert.rejects(joinUserNamespace(net), /setns\(userns fd 3\): Invalid argument/);
  } finally {
    fs.closeSync(net);
  }
  assert.equal(fdCount(), before);
});

test('exec-in usage and exec errors', async () => {
  const run = (args: string[]): Promise<number | null> => {
    const c = spawnInNamespaces({}, args[0]!, args.slice(1), 'ignore');
    return new Promise((r) => c.once('exit', (code) => r(code)));
  };
  assert.equal(await run(['true']), 0);
  assert.equal(await run(['/nonexistent/mountgate']), 127);
});
