import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { pidfdOpen, pidfdSendSignal } from '../../src/sys/pidfd.js';
import { O_PATH, PIDFS_MAGIC, fdFlags, fdStat, statfsType } from '../../src/sys/stat.js';
import { assertNoNewFds, openFds } from '../support/fds.js';

test('pidfd_open + pidfd_send_signal', async () => {
  const before = openFds();
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, s) => r(s)));
  const pidfd = pidfdOpen(child.pid!);
  try {
    const magic = statfsType(pidfd);
    assert.ok(magic === PIDFS_MAGIC || magic !== 0);
    pidfdSendSignal(pidfd, 15);
    assert.equal(await exited, 'SIGTERM');
    assert.throws(() => pidfdSendSignal(pidfd, 0), { name: 'SysError', code: 'ESRCH' });
  } finally {
    fs.closeSync(pidfd);
  }
  assert.throws(() => pidfdOpen(0x3fffffff), { name: 'SysError', code: 'ESRCH' });
  await assertNoNewFds(before);
});

test('fdFlags: access mode and O_PATH', async () => {
  const before = openFds();
  const r = fs.openSync('/etc/hostname', 'r');
  const p = fs.openSync('/etc', O_PATH);
  const w = fs.openSync('/dev/null', 'w');
  try {
    assert.deepEqual({ ...fdFlags(r), flags: 0 }, { flags: 0, path: false, readable: true, writable: false });
    assert.deepEqual({ ...fdFlags(w), flags: 0 }, { flags: 0, path: false, readable: false, writable: true });
    assert.equal(fdFlags(p).path, true);
    assert.equal(fdFlags(p).readable, false);
    assert.ok(fdStat(p).isDirectory);
    assert.throws(() => fdFlags(987654), { name: 'SysError', code: 'EBADF' });
  } finally {
    for (const fd of [r, p, w]) fs.closeSync(fd);
  }
  await assertNoNewFds(before);
});
