import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { SysError } from '../../src/sys/errors.js';
import {
  CLONE_NEWNET,
  CLONE_NEWUSER,
  nsGetParent,
  nsGetType,
  nsGetUserns,
  userNamespaceInfo,
} from '../../src/sys/nsfs.js';
import { NSFS_MAGIC, statfsType } from '../../src/sys/stat.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { killAndWait, spawnInNewUserns } from '../support/userns.js';

test('own user namespace: CLONE_NEWUSER, owner uid 0, no visible parent', async () => {
  const before = openFds();
  const fd = fs.openSync('/proc/self/ns/user', 'r');
  try {
    assert.equal(statfsType(fd), NSFS_MAGIC);
    const info = userNamespaceInfo(fd);
    assert.equal(info.nstype, CLONE_NEWUSER);
    assert.equal(info.ownerUid, 0);
    assert.equal(info.inode, fs.statSync('/proc/self/ns/user').ino);
    if (info.id !== undefined) assert.ok(info.id > 0n);
    assert.throws(() => nsGetParent(fd), { name: 'SysError', code: 'EPERM' });
  } finally {
    fs.closeSync(fd);
  }
  await assertNoNewFds(before);
});

test('net namespace: type, owning user namespace, and userNamespaceInfo rejects it', async () => {
  const before = openFds();
  const net = fs.openSync('/proc/self/ns/net', 'r');
  try {
    assert.equal(nsGetType(net), CLONE_NEWNET);
    const owner = nsGetUserns(net);
    try {
      assert.equal(fs.fstatSync(owner).ino, fs.statSync('/proc/self/ns/user').ino);
    } finally {
      fs.closeSync(owner);
    }
    assert.throws(() => userNamespaceInfo(net), (e: unknown) => e instanceof SysError && e.code === 'EINVAL');
  } finally {
    fs.closeSync(net);
  }
  await assertNoNewFds(before);
});

test('user namespace created by uid 1000: owner 1000, parent is the init userns', async () => {
  const before = openFds();
  const child = await spawnInNewUserns('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'unshare', '--user', 'sleep', '5']);
  const fd = fs.openSync(`/proc/${child.pid}/ns/user`, 'r');
  try {
    const info = userNamespaceInfo(fd);
    assert.equal(info.nstype, CLONE_NEWUSER);
    assert.equal(info.ownerUid, 1000);
    assert.notEqual(info.inode, fs.statSync('/proc/self/ns/user').ino);
    const parent = nsGetParent(fd);
    try {
      assert.equal(fs.fstatSync(parent).ino, fs.statSync('/proc/self/ns/user').ino);
    } finally {
      fs.closeSync(parent);
    }
  } finally {
    fs.closeSync(fd);
    await killAndWait(child);
  }
  await assertNoNewFds(before);
});
