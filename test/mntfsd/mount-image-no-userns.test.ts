// MountImage without a user namespace from uid 1000 (systemd 262's `systemd-dissect --copy-from`,
// `--copy-to`, `--with`): only images a trusted certificate signed, read-only, nosuid and nodev,
// in the host's id space; everything else refused with the error saying why.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { buildDdi } from '../../src/image-builder/build-ddi.js';
import { VarlinkClient } from '../../src/ipc/client.js';
import { startMntfsd, type Mntfsd } from '../../src/mntfsd/daemon.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { evalAs1000 } from '../support/clients.js';
import { handVerityImage, imageDir, makeFileSystem, publish as publishIn, removeImages, repartImage, run, sampleTree, testCertDir, testDir, testKey } from '../support/images.js';

// statfs f_flags (ST_*): what the returned mount enforces.
const ST_RDONLY = 1;
const ST_NOSUID = 2;
const ST_NODEV = 4;

let dir: string;
let sock: string;
let daemon: Mntfsd;

interface Outcome {
  error?: string;
  /** statfs f_flags & (ST_RDONLY|ST_NOSUID|ST_NODEV) of the root partition's mount. */
  flags?: number;
  writable?: boolean;
  /** etc/hello's owner as the host sees it, and its content. */
  uid?: number;
  content?: string;
}

const SCRIPT = `
  import { VarlinkClient } from '${path.resolve(import.meta.dirname, '../../src/ipc/client.js')}';
  import { fstatfs } from '${path.resolve(import.meta.dirname, '../../src/sys/libc.js')}';
  import fs from 'node:fs';
  const [sockPath, json] = process.argv.slice(1);
  const c = await VarlinkClient.connect(sockPath);
  const out = [];
  for (const { image, rw, params, hostNs } of JSON.parse(json)) {
    const fds = [fs.openSync(image, rw ? 'r+' : 'r'), ...(hostNs ? [fs.openSync('/proc/self/ns/user', 'r')] : [])];
    try {
      const r = await c.call('io.systemd.MountFileSystem.MountImage', { imageFileDescriptor: 0, ...(hostNs ? { userNamespaceFileDescriptor: 1 } : {}), ...params }, { fds });
      const root = r.parameters.partitions.find((p) => p.designator === 'root');
      const fd = r.fds[root.mountFileDescriptor];
      const buf = Buffer.alloc(120);
      if (fstatfs(fd, buf) !== 0) throw new Error('fstatfs');
      const st = fs.statSync('/proc/self/fd/' + fd + '/etc/hello');
      out.push({ flags: Number(buf.readBigUInt64LE(80)) & 7, writable: root.writable, uid: st.uid, content: fs.readFileSync('/proc/self/fd/' + fd + '/etc/hello', 'utf8') });
      r.fds.forEach((f) => fs.closeSync(f));
    } catch (e) {
      out.push({ error: e.error ?? String(e) });
    }
    fds.forEach((f) => fs.closeSync(f));
  }
  console.log(JSON.stringify(out));
  c.close();
`;

interface Case {
  image: string;
  rw?: boolean;
  params?: Record<string, unknown>;
  hostNs?: boolean;
}

function mountAs1000(cases: Case[]): Promise<Outcome[]> {
  return evalAs1000<Outcome[]>('mount-no-userns', SCRIPT, [sock, JSON.stringify(cases)], { opening: '[' });
}

/** A copy readable by uid 1000, owned by `owner`, in `sub` of the test directory. */
const publish = (src: string, name: string, owner = 0): string => publishIn(src, dir, name, owner);

let trustedDir: string;
before(() => {
  dir = testDir('mntfsd-nons-');
  sock = path.join(dir, 'mntfsd.sock');
  trustedDir = path.join(dir, 'trusted');
  fs.mkdirSync(trustedDir, { mode: 0o755 });
  const certs = testCertDir(dir);
  daemon = startMntfsd({ listen: sock, userdbd: null, certificateDirectories: [certs], trustedDirectories: [trustedDir] });
});

after(() => {
  daemon.close();
  removeImages();
  fs.rmSync(dir, { recursive: true, force: true });
});

const OK = { flags: ST_RDONLY | ST_NOSUID | ST_NODEV, writable: false, uid: 0, content: 'hello\n' };

test('a signed image mounts read-only, nosuid, nodev, with host ids; writable is refused', async () => {
  const signed = publish(repartImage('squashfs').path, 'signed.raw');
  const own = publish(repartImage('ext4').path, 'own.raw', 1000);
  const out = await mountAs1000([
    // What `systemd-dissect --copy-from` sends (readOnly true), and a caller that says nothing.
    { image: signed, params: { readOnly: true, growFileSystems: false, relaxExtensionReleaseChecks: true, veritySharing: true } },
    { image: signed },
    // The caller's own image, opened read-write: still read-only.
    { image: own, rw: true },
    // The daemon's (here: init's) user namespace counts as none.
    { image: signed, hostNs: true },
    // `--copy-to` and `--with` without --read-only ask for a writable mount.
    { image: signed, params: { readOnly: false } },
    { image: own, rw: true, params: { readOnly: false } },
  ]);
  const denied = { error: 'org.varlink.service.PermissionDenied' };
  assert.deepEqual(out, [OK, OK, OK, OK, denied, denied]);
});

test('unsigned, untrusted-signer and bare images are refused, in trusted directories too', async () => {
  const { key, cert } = testKey();
  const otherKey = path.join(imageDir(), 'nons-other.key');
  const otherCert = path.join(imageDir(), 'nons-other.crt');
  run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', otherKey, '-out', otherCert, '-days', '1', '-subj', '/CN=untrusted']);
  const untrustedOut = path.join(imageDir(), 'nons-untrusted.raw');
  await buildDdi({ sourceDir: sampleTree(), output: untrustedOut, keyPem: fs.readFileSync(otherKey, 'utf8'), certPem: fs.readFileSync(otherCert, 'utf8') });
  const built = path.join(imageDir(), 'nons-built.raw');
  await buildDdi({ sourceDir: sampleTree(), output: built, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
  const out = await mountAs1000([
    { image: publish(untrustedOut, 'untrusted.raw') },
    { image: publish(handVerityImage('erofs').path, 'unsigned.raw') },
    // Trusted by location gets a caller with a namespace of its own everything; here it gets nothing extra.
    { image: publish(handVerityImage('erofs').path, 'trusted/unsigned.raw') },
    { image: publish(makeFileSystem('erofs'), 'trusted/bare.erofs') },
    // The caller's policy only narrows.
    { image: publish(built, 'built.raw'), params: { imagePolicy: 'root=unprotected' } },
    { image: publish(built, 'built2.raw') },
  ]);
  assert.deepEqual(
    out.map((o) => o.error ?? o),
    [
      'io.systemd.MountFileSystem.KeyNotFound',
      'io.systemd.MountFileSystem.DeniedByImagePolicy',
      'io.systemd.MountFileSystem.DeniedByImagePolicy',
      'io.systemd.MountFileSystem.DeniedByImagePolicy',
      'io.systemd.MountFileSystem.DeniedByImagePolicy',
      OK,
    ],
  );
});

test('root keeps its own rules: a bare file system in a trusted directory mounts writable-capable, without nosuid', async () => {
  const bare = publish(makeFileSystem('ext4'), 'trusted/root-bare.ext4');
  const c = await VarlinkClient.connect(sock);
  const fd = fs.openSync(bare, 'r+');
  try {
    const r = await c.call('io.systemd.MountFileSystem.MountImage', { imageFileDescriptor: 0, readOnly: false }, { fds: [fd] });
    const p = (r.parameters.partitions as Array<{ writable: boolean; mountFileDescriptor: number }>)[0]!;
    assert.equal(p.writable, true);
    const { fstatfs } = await import('../../src/sys/libc.js');
    const buf = Buffer.alloc(120);
    assert.equal(fstatfs(r.fds[p.mountFileDescriptor]!, buf), 0);
    assert.equal(Number(buf.readBigUInt64LE(80)) & ST_NOSUID, 0);
    r.fds.forEach((x) => fs.closeSync(x));
  } finally {
    fs.closeSync(fd);
    c.close();
  }
});

test('the daemon holds no new fd after all of that', async () => {
  const before = openFds();
  const signed = path.join(dir, 'signed.raw');
  await mountAs1000([{ image: signed }, { image: signed, params: { readOnly: false } }, { image: path.join(dir, 'unsigned.raw') }]);
  daemon.cache.clear();
  await assertNoNewFds(before);
});
