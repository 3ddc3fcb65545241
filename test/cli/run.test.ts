// `mountgate run` end to end as uid 1000: both daemons running as root (with the capability
// bounding sets of their units), a signed image made by `mountgate build` from a directory
// holding a static busybox, and commands run inside it as root of a transient user namespace.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { AT_FDCWD, MOUNT_ATTR_IDMAP, MOUNT_ATTR_RDONLY, mountSetattrFd, openTree } from '../../src/sys/mount-api.js';
import { createUserNamespace, ENTER_SETUP_FAILED, spawnEnter } from '../../src/sys/nshelper.js';
import { joinUserNamespace } from '../../src/sys/userns-joiner.js';
import { cliAsUser } from '../support/clients.js';
import { startDaemon, stopDaemons } from '../support/daemons.js';
import { buildSignedImages, type SignedImages } from '../support/images.js';
import type { UserRun } from '../support/processes.js';

const BUSYBOX = '/bin/busybox'; // Debian package busybox-static
const APPLETS = ['sh', 'ls', 'id', 'cat', 'true'];

let tmp = '';
let images: SignedImages;
let userdbdSocket = '';
const PIN_DIR = `/sys/fs/bpf/mountgate-test-run-${process.pid}`;
let mntfsdSocket = '';

/** A small tree for the daemon-less test: busybox in bin/, plus empty mount points. */
function makeTree(root: string): void {
  for (const d of ['bin', 'dev', 'proc', 'usr', 'tmp']) fs.mkdirSync(path.join(root, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync(BUSYBOX, path.join(root, 'bin/busybox'));
  fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(root, 'bin', a));
}

before(async () => {
  // scripts/setup installs busybox-static; without it the image has no programs to run.
  assert.ok(fs.existsSync(BUSYBOX), `${BUSYBOX} missing: run ./scripts/setup`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-run-'));
  fs.chmodSync(tmp, 0o755); // uid 1000 reaches the sockets and images
  const tree = path.join(tmp, 'tree');
  makeTree(tree);
  fs.writeFileSync(path.join(tree, 'tmp/owned-by-1000'), 'x');
  fs.chownSync(path.join(tree, 'tmp/owned-by-1000'), 1000, 1000);
  images = buildSignedImages(tree, tmp);

  userdbdSocket = path.join(tmp, 'userdbd.sock');
  mntfsdSocket = path.join(tmp, 'mntfsd.sock');
  const state = path.join(tmp, 'userdbd-state');
  // --allow-without-policy only matters where the kernel refuses the BPF policy (this CI VM).
  await startDaemon(['userdbd', '--listen', userdbdSocket, '--state-dir', state, '--bpf-pin-dir', PIN_DIR, '--allow-without-policy'], userdbdSocket, {
    service: 'mountgate-userdbd.service',
  });
  await startDaemon(['mntfsd', '--listen', mntfsdSocket, '--userdbd', userdbdSocket, '--verity-certs', images.certs], mntfsdSocket, {
    service: 'mountgate-mntfsd.service',
  });
});

after(async () => {
  await stopDaemons();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(PIN_DIR, { recursive: true, force: true });
});

/** `mountgate run` as uid 1000. */
function run(args: string[]): Promise<UserRun> {
  return cliAsUser('run', args);
}

/** `mountgate run IMAGE -- COMMAND` as uid 1000 against the test daemons. */
function runImage(image: string, command: string[]): Promise<UserRun> {
  return run([image, '--userdbd', userdbdSocket, '--mntfsd', mntfsdSocket, '--', ...command]);
}

test('run: ls -ln / inside the image shows its files owned by 0, as uid 1000 on the host', async (t) => {
  const r = await runImage(images.trusted, ['/bin/ls', '-ln', '/', '/tmp']);
  assert.equal(r.status, 0, r.stderr);
  for (const name of ['bin', 'usr', 'tmp']) {
    assert.match(r.stdout, new RegExp(`^d\\S+\\s+\\d+\\s+0\\s+0\\s+.* ${name}$`, 'm'), r.stdout);
  }
  // Host uid 1000 in the image is uid 1000 of the namespace.
  assert.match(r.stdout, /^-\S+\s+\d+\s+1000\s+1000\s+.* owned-by-1000$/m, r.stdout);
  // A fresh /proc and the host's /dev (both owned by host root: unmapped, so the overflow uid).
  for (const name of ['proc', 'dev']) assert.match(r.stdout, new RegExp(`^d\\S+\\s+\\d+\\s+65534\\s+65534\\s+.* ${name}$`, 'm'), r.stdout);
});

test('run: CMD runs as uid 0 of a transient range, PID 1 of its namespace; its status is ours', async (t) => {
  const r = await runImage(images.trusted, ['/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; echo pid=$$; exit 7']);
  assert.equal(r.status, 7, r.stderr);
  const [uid, map, pid] = r.stdout.trim().split('\n');
  assert.equal(uid, '0');
  const [inside, outside, count] = map.trim().split(/\s+/).map(Number);
  assert.equal(inside, 0);
  assert.equal(count, 65536);
  assert.ok(outside >= 65536 && outside !== 1000, `transient range expected, got ${map}`);
  assert.equal(pid, 'pid=1');
});

test('run: an image signed by an untrusted key fails with KeyNotFound and exit 1', async (t) => {
  const r = await runImage(images.untrusted, ['/bin/true']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /MountImage: io\.systemd\.MountFileSystem\.KeyNotFound/);
});

test('run: exit codes for a missing command, an unreachable daemon and usage errors', async (t) => {
  assert.equal((await runImage(images.trusted, ['/bin/nonexistent'])).status, 127);
  const unreachable = await run([images.trusted, '--userdbd', path.join(tmp, 'nothing.sock'), '--mntfsd', mntfsdSocket]);
  assert.equal(unreachable.status, 1);
  assert.match(unreachable.stderr, /AllocateUserRange: daemon not reachable/);
  const missing = await run([]);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /missing IMAGE/);
  assert.equal((await run(['--bogus', images.trusted])).status, 2);
  const help = await run(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: mountgate run IMAGE/);
});

test('nshelper enter without daemons: idmapped root and a partition beneath it, CMD as uid 0, status passed on', async () => {
  // scripts/setup installs busybox-static; without it the image has no programs to run.
  assert.ok(fs.existsSync(BUSYBOX), `${BUSYBOX} missing: run ./scripts/setup`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-enter-'));
  const fds: number[] = [];
  try {
    makeTree(path.join(dir, 'root'));
    fs.mkdirSync(path.join(dir, 'usr-part'));
    fs.writeFileSync(path.join(dir, 'usr-part/marker'), 'usr partition\n');
    // What userdbd does: map a namespace (created by us, root) to a range; here by hand.
    const usernsFd = await createUserNamespace();
    fds.push(usernsFd);
    const member = await joinUserNamespace(usernsFd);
    try {
      fs.writeFileSync(`/proc/${member.pid}/uid_map`, '0 1879048192 65536\n');
      fs.writeFileSync(`/proc/${member.pid}/gid_map`, '0 1879048192 65536\n');
    } finally {
      await member.release();
    }
    // What mntfsd does: detached, read-only mounts idmapped into that namespace.
    const idmapped = (p: string): number => {
      const fd = openTree(AT_FDCWD, path.join(dir, p));
      fds.push(fd);
      mountSetattrFd(fd, { attrSet: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, usernsFd });
      return fd;
    };
    const enter = (command: string, args: string[], mounts = [{ path: 'usr', fd: idmapped('usr-part') }]) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = spawnEnter({ usernsFd, rootMountFd: idmapped('root'), mounts, command, args });
        let out = '';
        let err = '';
        child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
        child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
        child.once('close', (code) => resolve({ code, out, err }));
      });
    const r = await enter('/bin/sh', ['-c', 'id -u; cat /usr/marker; ls -ln / | grep -c " 0 *0 "; echo pid=$$; exit 5']);
    assert.equal(r.code, 5, r.err);
    const [uid, marker, rootOwned, pid] = r.out.trim().split('\n');
    assert.equal(uid, '0');
    assert.equal(marker, 'usr partition');
    assert.ok(Number(rootOwned) >= 3, r.out); // bin, tmp, usr: root-owned in the image, uid 0 inside
    assert.equal(pid, 'pid=1');
    assert.equal((await enter('/bin/nonexistent', [])).code, 127);
    const bad = await enter('/bin/true', [], [{ path: '../escape', fd: idmapped('usr-part') }]);
    assert.equal(bad.code, ENTER_SETUP_FAILED);
    assert.match(bad.err, /usage: mountgate-nshelper enter/);
  } finally {
    fds.forEach((fd) => fs.closeSync(fd));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
