import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { SysError } from '../../src/sys/errors.js';
import {
  AT_FDCWD,
  MOUNT_ATTR_NODEV,
  MOUNT_ATTR_NOSUID,
  MOUNT_ATTR_RDONLY,
  attachMount,
  fsconfigCreate,
  fsconfigSetFlag,
  fsconfigSetString,
  fsmount,
  fsopen,
  mountSetattrFd,
  openTree,
} from '../../src/sys/mount-api.js';
import { TMPFS_MAGIC, fdFlags, statfsType } from '../../src/sys/stat.js';
import { assertNoNewFds, openFds } from '../support/fds.js';

function makeTmpfs(): { fsFd: number; mntFd: number } {
  const fsFd = fsopen('tmpfs');
  fsconfigSetString(fsFd, 'size', '1M');
  fsconfigSetString(fsFd, 'mode', '0755');
  fsconfigCreate(fsFd);
  const mntFd = fsmount(fsFd, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
  return { fsFd, mntFd };
}

test('fsopen tmpfs -> create -> fsmount -> mount_setattr RDONLY', async () => {
  const before = openFds();
  const { fsFd, mntFd } = makeTmpfs();
  try {
    assert.equal(statfsType(mntFd), TMPFS_MAGIC);
    assert.equal(fdFlags(mntFd).path, true, 'fsmount returns an O_PATH fd');
    // The detached mount is reachable through the fd's magic link.
    const file = `/proc/self/fd/${mntFd}/a`;
    fs.writeFileSync(file, 'x');
    mountSetattrFd(mntFd, { attrSet: MOUNT_ATTR_RDONLY });
    assert.throws(() => fs.writeFileSync(`/proc/self/fd/${mntFd}/b`, 'x'), { code: 'EROFS' });
    assert.equal(fs.readFileSync(file, 'utf8'), 'x');
  } finally {
    fs.closeSync(mntFd);
    fs.closeSync(fsFd);
  }
  await assertNoNewFds(before);
});

test('bogus filesystem type gives SysError ENODEV', () => {
  assert.throws(
    () => fsopen('no-such-fs-mountgate'),
    (err: unknown) => err instanceof SysError && err.code === 'ENODEV' && err.syscall === 'fsopen' && err.errno === os.constants.errno.ENODEV,
  );
});

test('unknown fsconfig key gives SysError EINVAL', () => {
  const fsFd = fsopen('tmpfs');
  try {
    assert.throws(() => fsconfigSetFlag(fsFd, 'no-such-option'), { name: 'SysError', code: 'EINVAL', syscall: 'fsconfig' });
  } finally {
    fs.closeSync(fsFd);
  }
});

test('move_mount attaches and open_tree clones', async () => {
  const before = openFds();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-mnt-'));
  const { fsFd, mntFd } = makeTmpfs();
  let mounted = false;
  try {
    attachMount(mntFd, dir, AT_FDCWD);
    mounted = true;
    fs.writeFileSync(path.join(dir, 'hello'), 'world');
    const clone = openTree(AT_FDCWD, dir);
    try {
      assert.equal(fs.readFileSync(`/proc/self/fd/${clone}/hello`, 'utf8'), 'world');
      mountSetattrFd(clone, { attrSet: MOUNT_ATTR_RDONLY }, true);
      assert.throws(() => fs.writeFileSync(`/proc/self/fd/${clone}/x`, ''), { code: 'EROFS' });
      // The original mount is unaffected.
      fs.writeFileSync(path.join(dir, 'x'), '');
    } finally {
      fs.closeSync(clone);
    }
  } finally {
    // Close the mount fd first: it pins the attached mount (umount would say EBUSY).
    fs.closeSync(mntFd);
    fs.closeSync(fsFd);
    if (mounted) execFileSync('umount', [dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  await assertNoNewFds(before);
});
