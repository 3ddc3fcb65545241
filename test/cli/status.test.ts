// `mountgate status` as uid 1000 against daemons started here on private paths: unreachable
// daemons are shown (exit 1 only if both are), mntfsd's counters follow a real MountImage, and
// userdbd lists a range it handed out with its owner and the state of the BPF policy.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { allocateUserRange, mountImage } from '../../src/client/index.js';
import type { Status } from '../../src/cli/status.js';
import { buildDdi } from '../../src/image-builder/build-ddi.js';
import { createUserNamespace } from '../../src/sys/nshelper.js';
import { fdStat } from '../../src/sys/stat.js';
import { cliAsUser, cliJsonAsUser } from '../support/clients.js';
import { startDaemon, stopDaemons } from '../support/daemons.js';
import type { UserRun } from '../support/processes.js';

let tmp = '';
let image = '';
let rootHash = '';
let mntfsdSocket = '';
let userdbdSocket = '';
const pinDir = `/sys/fs/bpf/mountgate-test-status-${process.pid}`;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-status-'));
  fs.chmodSync(tmp, 0o755);
  const tree = path.join(tmp, 'tree');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc/hello'), 'hello\n');
  const key = path.join(tmp, 'k.key');
  const cert = path.join(tmp, 'k.crt');
  spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=status'], { stdio: 'ignore' });
  const certs = path.join(tmp, 'certs');
  fs.mkdirSync(certs);
  fs.copyFileSync(cert, path.join(certs, 'status.crt'));
  image = path.join(tmp, 'image.raw');
  rootHash = (await buildDdi({ sourceDir: tree, output: image, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') })).rootHash;

  mntfsdSocket = path.join(tmp, 'mntfsd.sock');
  await startDaemon(['mntfsd', '--listen', mntfsdSocket, '--userdbd', 'none', '--verity-certs', certs], mntfsdSocket);
  userdbdSocket = path.join(tmp, 'userdbd.sock');
  // The opt-out only matters where the kernel refuses BPF-LSM programs; status reports either way.
  await startDaemon(
    ['userdbd', '--listen', userdbdSocket, '--state-dir', path.join(tmp, 'state'), '--bpf-pin-dir', pinDir, '--allow-without-policy'],
    userdbdSocket,
  );
});

after(async () => {
  await stopDaemons();
  fs.rmSync(pinDir, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const status = (args: string[]): Promise<UserRun> => cliAsUser('status', args);
const statusJson = (args: string[]) => cliJsonAsUser<Status>('status', args);

test('status: both daemons unreachable is exit 1 and says so; usage errors exit 2', async (t) => {
  const nowhere = ['--userdbd', path.join(tmp, 'no-userdbd.sock'), '--mntfsd', path.join(tmp, 'no-mntfsd.sock')];
  const { status: code, report } = await statusJson(nowhere);
  assert.equal(code, 1);
  assert.deepEqual([report.userdbd.state, report.mntfsd.state], ['unreachable', 'unreachable']);
  assert.equal(report.mntfsd.state === 'unreachable' && report.mntfsd.error, 'ENOENT');
  const human = await status(nowhere);
  assert.equal(human.status, 1);
  assert.match(human.stdout, /^mntfsd .*\n {2}not reachable: ENOENT$/m);
  assert.equal((await status(['--bogus'])).status, 2);
  assert.equal((await status(['extra'])).status, 2);
  assert.match((await status(['--help'])).stdout, /^Usage: mountgate status/);
});

test('status: mntfsd counts the mounts it handed out and lists the verified image', async (t) => {
  const args = ['--userdbd', path.join(tmp, 'no-userdbd.sock'), '--mntfsd', mntfsdSocket];
  const before = await statusJson(args);
  assert.equal(before.status, 0); // one daemon answered
  assert.equal(before.report.userdbd.state, 'unreachable');
  assert.ok(before.report.mntfsd.state === 'ok');
  const { copyMemoryBudget: budget, ...counts } = before.report.mntfsd.status;
  assert.ok(budget > 0, 'a memory budget for verified copies');
  assert.deepEqual(counts, { cachedImages: [], cacheHits: 0, verifications: 0, mountsHandedOut: 0, copyBytesInMemory: 0, copyBytesOnDisk: 0 });

  // Root may take host mounts (no user namespace): the simplest real MountImage.
  const fd = fs.openSync(image, 'r');
  try {
    for (let i = 0; i < 2; i++) {
      const m = await mountImage({ imageFd: fd, socket: mntfsdSocket });
      m.partitions.forEach((p) => fs.closeSync(p.mountFd));
    }
  } finally {
    fs.closeSync(fd);
  }
  const afterMount = (await statusJson(args)).report.mntfsd;
  assert.equal(afterMount.state, 'ok');
  assert.ok(afterMount.state === 'ok');
  const { copyBytesInMemory, ...rest } = afterMount.status;
  // This kernel has no device-mapper: the partition was verified into a copy in memory.
  assert.ok(copyBytesInMemory > 0, 'the verified copy is counted');
  assert.deepEqual(rest, {
    cachedImages: [{ rootHash, fileSystemType: 'erofs' }],
    cacheHits: 1,
    verifications: 1,
    mountsHandedOut: 2,
    copyBytesOnDisk: 0,
    copyMemoryBudget: budget,
  });
  const human = await status(args);
  assert.match(human.stdout, /Mounts handed out: +2/);
  assert.match(human.stdout, /Verified copies: +[\d.]+ MiB in memory \(budget [\d.]+ MiB\), 0\.0 MiB on disk/);
  assert.match(human.stdout, new RegExp(`^ +${rootHash} +erofs$`, 'm'));
});

test('status: userdbd lists a range in use with its owner, and the BPF policy state', async (t) => {
  const usernsFd = await createUserNamespace();
  try {
    const name = await allocateUserRange({ name: 'status-test', userNamespaceFd: usernsFd, socket: userdbdSocket });
    const { status: code, report } = await statusJson(['--userdbd', userdbdSocket, '--mntfsd', mntfsdSocket]);
    assert.equal(code, 0);
    assert.equal(report.userdbd.state, 'ok');
    if (report.userdbd.state !== 'ok') return;
    const { policy, namespaces } = report.userdbd.status;
    assert.equal(typeof policy.attached, 'boolean');
    // Not enforced must come with a reason.
    if (!policy.attached) assert.ok(policy.reason, 'an unattached policy must say why');
    const ns = namespaces.find((n) => n.name === name);
    assert.ok(ns, JSON.stringify(namespaces));
    assert.equal(ns.owner, 0);
    assert.equal(ns.size, 65536);
    assert.equal(ns.userNamespaceInode, fdStat(usernsFd).ino);
    assert.ok(ns.base >= 65536);
    const human = await status(['--userdbd', userdbdSocket, '--mntfsd', mntfsdSocket]);
    assert.match(human.stdout, /BPF policy: +(attached|NOT attached)/);
    assert.match(human.stdout, new RegExp(`^ +${name} +0 +${ns.userNamespaceInode} +${ns.base}-${ns.base + 65535} +-$`, 'm'));
  } finally {
    fs.closeSync(usernsFd);
  }
});
