// `mountgate run` end to end as uid 1000: both daemons running as root (with the capability
// bounding sets of their units), a signed image made by `mountgate build` from a directory
// holding a static busybox, and commands run inside it as root of a transient user namespace.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AT_FDCWD, MOUNT_ATTR_IDMAP, MOUNT_ATTR_RDONLY, mountSetattrFd, openTree } from '../../src/sys/mount-api.js';
import { createUserNamespace, ENTER_SETUP_FAILED, joinUserNamespace, spawnEnter } from '../../src/sys/nshelper.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = [process.execPath, '--import', 'tsx', path.join(repo, 'src/cli/main.ts')];
const AS_USER = ['setpriv', '--reuid=1000', '--regid=1000', '--clear-groups'];
const BUSYBOX = '/bin/busybox'; // Debian package busybox-static
const APPLETS = ['sh', 'ls', 'id', 'cat', 'true'];

let skipReason: string | undefined;
let tmp = '';
let trustedImage = '';
let untrustedImage = '';
let userdbdSocket = '';
const PIN_DIR = `/sys/fs/bpf/mountgate-test-run-${process.pid}`;
let mntfsdSocket = '';
const daemons: ChildProcess[] = [];

function sh(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** setpriv's form of the unit's CapabilityBoundingSet= (the daemon gets no more than that). */
function boundingSet(service: string): string {
  const m = /^CapabilityBoundingSet=(.+)$/m.exec(fs.readFileSync(path.join(repo, 'units', service), 'utf8'));
  assert.ok(m, `${service} has no CapabilityBoundingSet`);
  return ['-all', ...m[1].trim().split(/\s+/).map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
}

/** A small tree for the daemon-less test: busybox in bin/, plus empty mount points. */
function makeTree(root: string): void {
  for (const d of ['bin', 'dev', 'proc', 'usr', 'tmp']) fs.mkdirSync(path.join(root, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync(BUSYBOX, path.join(root, 'bin/busybox'));
  fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(root, 'bin', a));
}

function whyNotRunnable(): string | undefined {
  if (!fs.existsSync(BUSYBOX)) return `${BUSYBOX} missing (apt-get install busybox-static)`;
  if (!fs.existsSync(path.join(repo, 'src/userdbd/daemon.ts'))) return 'src/userdbd/daemon.ts does not exist yet';
  for (const cmd of ['userdbd', 'run']) {
    const r = spawnSync(CLI[0], [...CLI.slice(1), cmd, '--help'], { stdio: 'ignore' });
    if (r.status !== 0) return `'mountgate ${cmd}' is not wired into src/cli/main.ts yet`;
  }
  return undefined;
}

function makeKey(dir: string, cn: string): { key: string; cert: string } {
  const key = path.join(dir, `${cn}.key`);
  const cert = path.join(dir, `${cn}.crt`);
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=${cn}`]);
  return { key, cert };
}

/** Starts a daemon as root and waits until its socket exists. */
async function startDaemon(service: string, args: string[], socket: string): Promise<void> {
  const child = spawn('setpriv', [`--bounding-set=${boundingSet(service)}`, ...CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  daemons.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 16384) stderr += s;
  });
  const deadline = Date.now() + 20_000;
  while (!fs.existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${args[0]} did not start: ${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  skipReason = whyNotRunnable();
  if (skipReason) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-run-'));
  fs.chmodSync(tmp, 0o755); // uid 1000 reaches the sockets and images
  const tree = path.join(tmp, 'tree');
  makeTree(tree);
  fs.writeFileSync(path.join(tree, 'tmp/owned-by-1000'), 'x');
  fs.chownSync(path.join(tree, 'tmp/owned-by-1000'), 1000, 1000);

  const keys = fs.mkdtempSync(path.join(tmp, 'keys-'));
  const certs = path.join(tmp, 'certs');
  fs.mkdirSync(certs);
  const trusted = makeKey(keys, 'trusted');
  const untrusted = makeKey(keys, 'untrusted');
  fs.copyFileSync(trusted.cert, path.join(certs, 'trusted.crt'));
  trustedImage = path.join(tmp, 'trusted.raw');
  untrustedImage = path.join(tmp, 'untrusted.raw');
  for (const [image, k] of [
    [trustedImage, trusted],
    [untrustedImage, untrusted],
  ] as const) {
    sh(CLI[0], [...CLI.slice(1), 'build', tree, image, '--key', k.key, '--cert', k.cert]);
    fs.chmodSync(image, 0o644);
  }

  userdbdSocket = path.join(tmp, 'userdbd.sock');
  mntfsdSocket = path.join(tmp, 'mntfsd.sock');
  const state = path.join(tmp, 'userdbd-state');
  // --allow-without-policy only matters where the kernel refuses the BPF policy (this CI VM).
  await startDaemon('mountgate-userdbd.service', ['userdbd', '--listen', userdbdSocket, '--state-dir', state, '--bpf-pin-dir', PIN_DIR, '--allow-without-policy'], userdbdSocket);
  await startDaemon('mountgate-mntfsd.service', ['mntfsd', '--listen', mntfsdSocket, '--userdbd', userdbdSocket, '--verity-certs', certs], mntfsdSocket);
});

after(async () => {
  await Promise.all(
    daemons.map((d) => {
      if (d.exitCode !== null || d.signalCode !== null) return undefined;
      const done = new Promise((r) => d.once('exit', r));
      d.kill('SIGTERM');
      const killer = setTimeout(() => d.kill('SIGKILL'), 5000);
      return done.then(() => clearTimeout(killer));
    }),
  );
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(PIN_DIR, { recursive: true, force: true });
});

/** `mountgate run` as uid 1000 against the test daemons. */
function runAsUser(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(AS_USER[0], [...AS_USER.slice(1), ...CLI, 'run', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function runImage(image: string, command: string[]): ReturnType<typeof runAsUser> {
  return runAsUser([image, '--userdbd', userdbdSocket, '--mntfsd', mntfsdSocket, '--', ...command]);
}

test('run: ls -ln / inside the image shows its files owned by 0, as uid 1000 on the host', (t) => {
  if (skipReason) return t.skip(skipReason);
  const r = runImage(trustedImage, ['/bin/ls', '-ln', '/', '/tmp']);
  assert.equal(r.status, 0, r.stderr);
  for (const name of ['bin', 'usr', 'tmp']) {
    assert.match(r.stdout, new RegExp(`^d\\S+\\s+\\d+\\s+0\\s+0\\s+.* ${name}$`, 'm'), r.stdout);
  }
  // Host uid 1000 in the image is uid 1000 of the namespace.
  assert.match(r.stdout, /^-\S+\s+\d+\s+1000\s+1000\s+.* owned-by-1000$/m, r.stdout);
  // A fresh /proc and the host's /dev (both owned by host root: unmapped, so the overflow uid).
  for (const name of ['proc', 'dev']) assert.match(r.stdout, new RegExp(`^d\\S+\\s+\\d+\\s+65534\\s+65534\\s+.* ${name}$`, 'm'), r.stdout);
});

test('run: CMD runs as uid 0 of a transient range, PID 1 of its namespace; its status is ours', (t) => {
  if (skipReason) return t.skip(skipReason);
  const r = runImage(trustedImage, ['/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; echo pid=$$; exit 7']);
  assert.equal(r.status, 7, r.stderr);
  const [uid, map, pid] = r.stdout.trim().split('\n');
  assert.equal(uid, '0');
  const [inside, outside, count] = map.trim().split(/\s+/).map(Number);
  assert.equal(inside, 0);
  assert.equal(count, 65536);
  assert.ok(outside >= 65536 && outside !== 1000, `transient range expected, got ${map}`);
  assert.equal(pid, 'pid=1');
});

test('run: an image signed by an untrusted key fails with KeyNotFound and exit 1', (t) => {
  if (skipReason) return t.skip(skipReason);
  const r = runImage(untrustedImage, ['/bin/true']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /MountImage: io\.systemd\.MountFileSystem\.KeyNotFound/);
});

test('run: exit codes for a missing command, an unreachable daemon and usage errors', (t) => {
  if (skipReason) return t.skip(skipReason);
  assert.equal(runImage(trustedImage, ['/bin/nonexistent']).status, 127);
  const unreachable = runAsUser([trustedImage, '--userdbd', path.join(tmp, 'nothing.sock'), '--mntfsd', mntfsdSocket]);
  assert.equal(unreachable.status, 1);
  assert.match(unreachable.stderr, /AllocateUserRange: daemon not reachable/);
  const missing = runAsUser([]);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /missing IMAGE/);
  assert.equal(runAsUser(['--bogus', trustedImage]).status, 2);
  const help = runAsUser(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: mountgate run IMAGE/);
});

test('nshelper enter without daemons: idmapped root and a partition beneath it, CMD as uid 0, status passed on', async (t) => {
  if (!fs.existsSync(BUSYBOX)) return t.skip(`${BUSYBOX} missing (apt-get install busybox-static)`);
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
