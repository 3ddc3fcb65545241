// Trusted directories: real files, symlinks, renames and a bind mount over the name.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { checkTrustedImage, effectiveImagePolicy } from '../../src/mntfsd/trust.js';
import { ImagePolicyError, formatImagePolicy, parseImagePolicy } from '../../src/mntfsd/image-policy.js';

let tmp = '';
let trustedDir = '';

function withFd<T>(file: string, fn: (fd: number) => T, flags: string | number = 'r'): T {
  const fd = fs.openSync(file, flags);
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function image(file: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, 'image bytes');
  return file;
}

describe('trusted directories', () => {
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-trust-'));
    trustedDir = path.join(tmp, 'machines');
    fs.mkdirSync(trustedDir);
  });

  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('an image directly inside a trusted directory is trusted', () => {
    const img = image(path.join(trustedDir, 'good.raw'));
    const r = withFd(img, (fd) => checkTrustedImage(fd, ['/nonexistent', trustedDir]));
    assert.deepEqual(r, { trusted: true, path: img, directory: trustedDir });
    // O_RDWR fds and trusted directories configured through a symlink work too
    fs.symlinkSync(trustedDir, path.join(tmp, 'machines-link'));
    assert.equal(withFd(img, (fd) => checkTrustedImage(fd, [path.join(tmp, 'machines-link')]), 'r+').trusted, true);
  });

  it('is off without directories', () => {
    const img = image(path.join(trustedDir, 'off.raw'));
    assert.equal(withFd(img, (fd) => checkTrustedImage(fd, [])).trusted, false);
  });

  it('the identity of the file counts, not the name the client used', () => {
    const img = image(path.join(trustedDir, 'via-link.raw'));
    const link = path.join(tmp, 'client-link.raw');
    fs.symlinkSync(img, link);
    assert.equal(withFd(link, (fd) => checkTrustedImage(fd, [trustedDir])).trusted, true);
  });

  it('a symlink inside the trusted directory to a file outside is not trusted', () => {
    const outside = image(path.join(tmp, 'outside', 'evil.raw'));
    const link = path.join(trustedDir, 'evil.raw');
    fs.symlinkSync(outside, link);
    const r = withFd(link, (fd) => checkTrustedImage(fd, [trustedDir]));
    assert.equal(r.trusted, false);
  });

  it('files in subdirectories, .. tricks and prefix look-alikes are not trusted', () => {
    const sub = image(path.join(trustedDir, 'sub', 'nested.raw'));
    assert.equal(withFd(sub, (fd) => checkTrustedImage(fd, [trustedDir])).trusted, false);
    const sibling = image(path.join(tmp, 'sibling.raw'));
    assert.equal(withFd(path.join(trustedDir, '..', 'sibling.raw'), (fd) => checkTrustedImage(fd, [trustedDir])).trusted, false);
    assert.equal(withFd(sibling, (fd) => checkTrustedImage(fd, [trustedDir])).trusted, false);
    const lookalike = image(`${trustedDir}-evil/x.raw`);
    assert.equal(withFd(lookalike, (fd) => checkTrustedImage(fd, [trustedDir])).trusted, false);
  });

  it('directories and other non-regular files are not trusted', () => {
    fs.mkdirSync(path.join(trustedDir, 'dir.raw'));
    assert.equal(withFd(path.join(trustedDir, 'dir.raw'), (fd) => checkTrustedImage(fd, [trustedDir])).trusted, false);
    assert.equal(withFd('/dev/null', (fd) => checkTrustedImage(fd, ['/dev'])).trusted, false);
  });

  it('a file replaced after it was opened is not trusted', () => {
    const img = image(path.join(trustedDir, 'replaced.raw'));
    const fd = fs.openSync(img, 'r');
    try {
      const other = image(path.join(trustedDir, 'replacement.tmp'));
      fs.renameSync(other, img);
      const r = checkTrustedImage(fd, [trustedDir]);
      assert.equal(r.trusted, false);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a different inode under the same, still linked name is not trusted', () => {
    // A bind mount over the name keeps the fd's own path alive but re-opening finds another inode.
    const img = image(path.join(trustedDir, 'covered.raw'));
    const cover = image(path.join(tmp, 'cover.raw'));
    const fd = fs.openSync(img, 'r');
    let mounted = false;
    try {
      execFileSync('mount', ['--bind', cover, img]);
      mounted = true;
      assert.equal(fs.readlinkSync(`/proc/self/fd/${fd}`), img);
      const r = checkTrustedImage(fd, [trustedDir]);
      assert.equal(r.trusted, false);
      assert.match(r.trusted ? '' : r.reason, /no longer the file/);
    } finally {
      if (mounted) execFileSync('umount', [img]);
      fs.closeSync(fd);
    }
  });

  describe('policy', () => {
    it('trusted images get everything, untrusted ones need signed root/usr', () => {
      assert.equal(formatImagePolicy(effectiveImagePolicy(true, undefined)), '*');
      assert.equal(formatImagePolicy(effectiveImagePolicy(false, undefined)), 'root=signed+absent:usr=signed+absent');
    });

    it('the caller can only narrow it', () => {
      assert.equal(formatImagePolicy(effectiveImagePolicy(true, 'root=verity+signed:=ignore')), 'root=verity+signed');
      assert.equal(formatImagePolicy(effectiveImagePolicy(false, '*')), 'root=signed+absent:usr=signed+absent');
      assert.throws(() => effectiveImagePolicy(false, 'root=unprotected'), (e: unknown) => e instanceof ImagePolicyError && e.kind === 'impossible');
      assert.throws(() => effectiveImagePolicy(false, 'root=garbage'), (e: unknown) => e instanceof ImagePolicyError && e.kind === 'unknown-flag');
    });

    it('daemon defaults can be overridden', () => {
      const p = effectiveImagePolicy(false, undefined, { untrusted: parseImagePolicy('root=verity+signed+absent:=ignore') });
      assert.equal(formatImagePolicy(p), 'root=verity+signed+absent');
    });
  });
});
