import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { SysError } from '../../src/sys/errors.js';
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  addSeals,
  getSeals,
  memfdCreate,
} from '../../src/sys/memfd.js';
import { fdFlags } from '../../src/sys/stat.js';
import { assertNoNewFds, openFds } from '../support/fds.js';

test('memfd seals: write after F_SEAL_WRITE fails with EPERM', async () => {
  const before = openFds();
  const fd = memfdCreate('mountgate-test');
  try {
    assert.ok(fdFlags(fd).writable);
    assert.equal(fs.readlinkSync(`/proc/self/fd/${fd}`), '/memfd:mountgate-test (deleted)');
    fs.writeSync(fd, 'hello');
    assert.equal(getSeals(fd), 0);
    addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    assert.equal(getSeals(fd), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    assert.throws(() => fs.writeSync(fd, 'x', 0), { code: 'EPERM' });
    assert.throws(() => fs.ftruncateSync(fd, 0), { code: 'EPERM' });
    const buf = Buffer.alloc(5);
    fs.readSync(fd, buf, 0, 5, 0);
    assert.equal(buf.toString(), 'hello');
    addSeals(fd, F_SEAL_SEAL);
    assert.throws(() => addSeals(fd, F_SEAL_WRITE), (e: unknown) => e instanceof SysError && e.code === 'EPERM');
  } finally {
    fs.closeSync(fd);
  }
  await assertNoNewFds(before);
});

test('memfd without MFD_ALLOW_SEALING cannot be sealed', () => {
  const fd = memfdCreate('nosealing', 1 /* MFD_CLOEXEC */);
  try {
    assert.ok(getSeals(fd) & F_SEAL_SEAL);
    assert.throws(() => addSeals(fd, F_SEAL_WRITE), { name: 'SysError', code: 'EPERM' });
  } finally {
    fs.closeSync(fd);
  }
});
