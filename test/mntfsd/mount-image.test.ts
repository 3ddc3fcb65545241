// MountImage end to end: mntfsd runs here (root); the client is uid 1000 with its own user
// namespace, using the public client library (test/support/e2e-client.ts). Images come from
// systemd-repart, sfdisk + mkfs + veritysetup, and `mountgate build`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildDdi } from '../../src/image-builder/build-ddi.js';
import { startMntfsd, type Mntfsd } from '../../src/mntfsd/daemon.js';
import { FILE_NAME } from '../../src/mntfsd/verified-copy.js';
import { callerWithRange, e2eClientAs1000, evalAs1000 } from '../support/clients.js';
import { startTestUserdbd, type TestUserdbd } from '../support/daemons.js';
import { flipped, handVerityImage, imageDir, makeFileSystem, publish as publishIn, removeImages, repartImage, run, sampleTree, testCertDir, testDir, testKey } from '../support/images.js';
import { loopDevices } from '../support/loops.js';
import { killAndWait, type UsernsHolder } from '../support/userns.js';
import { waitFor } from '../support/wait.js';


interface PartitionResult {
  designator: string;
  fileSystemType: string;
  writable: boolean;
  canWrite: boolean;
  rootUid: number;
  host: { uid: number; gid: number; content: string } | null;
  insideUid: number | null;
}
interface MountResult {
  error?: string;
  message?: string;
  partitions?: PartitionResult[];
  imagePolicy?: string;
}

let dir: string;
let sock: string;
let trustedDir: string;
let daemon: Mntfsd;
let userdbd: TestUserdbd;
/** First host uid of the range userdbd mapped into the caller's namespace. */
let BASE: number;
let ns: UsernsHolder;

async function mountAs1000(image: string, ...flags: string[]): Promise<MountResult> {
  return e2eClientAs1000<MountResult>(['mount', sock, image, String(ns.pid), ...flags]);
}

/** Byte offsets of the partitions, as sfdisk (not our parser) reads them. */
function partitions(image: string): Array<{ start: number; size: number; name: string }> {
  const j = JSON.parse(run('sfdisk', ['-J', image])) as { partitiontable: { sectorsize?: number; partitions: Array<{ start: number; size: number; name?: string }> } };
  const ss = j.partitiontable.sectorsize ?? 512;
  return j.partitiontable.partitions.map((p) => ({ start: p.start * ss, size: p.size * ss, name: p.name ?? '' }));
}

/** A copy readable by uid 1000 (the image dir itself is private). */
const publish = (src: string, name: string, owner = 0): string => publishIn(src, dir, name, owner);

/** Loop devices bound to a verified copy. */
const loopsBackedByCopies = (): number => [...loopDevices().values()].filter((f) => f.endsWith(`/${FILE_NAME}`)).length;

before(async () => {
  dir = testDir('mntfsd-e2e-');
  sock = path.join(dir, 'mntfsd.sock');
  trustedDir = path.join(dir, 'trusted');
  fs.mkdirSync(trustedDir, { mode: 0o755 });
  const certs = testCertDir(dir);
  userdbd = await startTestUserdbd('mntfsd-e2e', { dir, sock: path.join(dir, 'userdbd.sock'), state: path.join(dir, 'userdbd-state') });
  daemon = startMntfsd({ listen: sock, userdbd: userdbd.sock, certificateDirectories: [certs], trustedDirectories: [trustedDir] });
  // The caller (uid 1000) creates its namespace and has userdbd map a transient range into it.
  ({ ns, base: BASE } = await callerWithRange(userdbd.sock, 'mntfs-e2e'));
});

after(async () => {
  await killAndWait(ns);
  daemon.close();
  await userdbd.close();
  removeImages();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('signed images mount idmapped', () => {
  for (const format of ['squashfs', 'ext4'] as const) {
    test(`systemd-repart ${format}: root in the namespace, BASE on the host, read-only`, async () => {
      const img = publish(repartImage(format).path, `repart-${format}.raw`);
      const r = await mountAs1000(img);
      assert.equal(r.error, undefined, JSON.stringify(r));
      assert.equal(r.partitions!.length, 1);
      const p = r.partitions![0]!;
      assert.equal(p.designator, 'root');
      assert.equal(p.fileSystemType, format);
      assert.deepEqual(p.host, { uid: BASE, gid: BASE, content: 'hello\n' });
      assert.equal(p.insideUid, 0);
      assert.equal(p.writable, false);
      assert.equal(p.canWrite, false);
    });
  }

  test('erofs image from `mountgate build`', async () => {
    const { key, cert } = testKey();
    const out = path.join(imageDir(), 'built.raw');
    await buildDdi({ sourceDir: sampleTree(), output: out, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
    const r = await mountAs1000(publish(out, 'built.raw'));
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.partitions![0]!.fileSystemType, 'erofs');
    assert.equal(r.partitions![0]!.host!.uid, BASE);
  });

  test('the second MountImage of an image is served from the cache', async () => {
    const img = publish(repartImage('squashfs').path, 'repart-cache.raw');
    const before = { ...daemon.cache.stats };
    assert.equal((await mountAs1000(img)).error, undefined);
    assert.equal((await mountAs1000(img)).error, undefined);
    assert.equal(daemon.cache.stats.misses, before.misses, 'no verification ran again');
    assert.equal(daemon.cache.stats.hits, before.hits + 2);
  });

  test('writing to the image fd after MountImage changes nothing the mount shows', async () => {
    const { key, cert } = testKey();
    // A fresh image (not in the cache), owned by the caller so it can scribble over it.
    const out = path.join(imageDir(), 'scribble.raw');
    const tree = path.join(imageDir(), 'scribble-tree');
    fs.cpSync(sampleTree(), tree, { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc/hello'), 'hello\n');
    fs.writeFileSync(path.join(tree, 'etc/unique'), `${process.pid}-${Date.now()}\n`);
    await buildDdi({ sourceDir: tree, output: out, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
    const img = publish(out, 'scribble.raw', 1000);
    const r = await mountAs1000(img, '--rw-image', '--scribble');
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.partitions![0]!.host!.content, 'hello\n');
    // The scribble really happened: the image itself is no longer mountable.
    assert.notEqual((await mountAs1000(img)).error, undefined);
  });
});

describe('file systems', () => {
  for (const kind of ['ext4', 'erofs', 'squashfs', 'btrfs', 'xfs'] as const) {
    test(`${kind} with verity, trusted by location`, async () => {
      const img = publish(handVerityImage(kind).path, `trusted/${kind}-verity.raw`);
      const r = await mountAs1000(img);
      assert.equal(r.error, undefined, JSON.stringify(r));
      const p = r.partitions!.find((x) => x.designator === 'root')!;
      assert.equal(p.fileSystemType, kind);
      // The root directory is owned by 0 in every image (mkfs.xfs makes an empty one).
      assert.equal(p.rootUid, BASE);
    });
  }

  test('a bare file system in a trusted directory mounts; outside it is refused', async () => {
    const trusted = publish(makeFileSystem('erofs'), 'trusted/bare.erofs');
    const r = await mountAs1000(trusted);
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.partitions![0]!.fileSystemType, 'erofs');
    assert.equal((await mountAs1000(publish(makeFileSystem('erofs'), 'bare.erofs'))).error, 'io.systemd.MountFileSystem.DeniedByImagePolicy');
  });
});

describe('refused images', () => {
  test('unsigned verity image outside trusted directories → DeniedByImagePolicy', async () => {
    assert.equal((await mountAs1000(publish(handVerityImage('erofs').path, 'unsigned.raw'))).error, 'io.systemd.MountFileSystem.DeniedByImagePolicy');
  });

  test('signed by a certificate that is not trusted → KeyNotFound', async () => {
    const key = path.join(imageDir(), 'other.key');
    const cert = path.join(imageDir(), 'other.crt');
    run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=untrusted']);
    const out = path.join(imageDir(), 'untrusted.raw');
    await buildDdi({ sourceDir: sampleTree(), output: out, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
    assert.equal((await mountAs1000(publish(out, 'untrusted.raw'))).error, 'io.systemd.MountFileSystem.KeyNotFound');
  });

  test('the caller policy can only narrow: root=verity on a signed image is refused', async () => {
    const img = publish(repartImage('squashfs').path, 'repart-policy.raw');
    assert.equal((await mountAs1000(img, '--policy', 'root=unprotected')).error, 'io.systemd.MountFileSystem.DeniedByImagePolicy');
    assert.equal((await mountAs1000(img, '--policy', 'root=bogus')).error, 'org.varlink.service.InvalidParameter');
  });

  describe('one flipped byte', () => {
    // A fresh image per test so the cache cannot answer for it.
    async function freshImage(tag: string): Promise<string> {
      const { key, cert } = testKey();
      const tree = path.join(imageDir(), `flip-tree-${tag}`);
      fs.cpSync(sampleTree(), tree, { recursive: true });
      fs.writeFileSync(path.join(tree, 'etc/tag'), `${tag}\n`);
      const out = path.join(imageDir(), `flip-${tag}.raw`);
      await buildDdi({ sourceDir: tree, output: out, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
      return out;
    }
    const cases: Array<[string, (parts: ReturnType<typeof partitions>) => number, string | RegExp]> = [
      ['data', (p) => p[0]!.start + p[0]!.size - 4096 - 100, 'io.systemd.MountFileSystem.VerityFailure'],
      ['hash tree', (p) => p[1]!.start + 4096 + 7, 'io.systemd.MountFileSystem.VerityFailure'],
      // Dissection already reads the JSON to pair partitions, so broken JSON is an unusable image.
      ['signature JSON', (p) => p[2]!.start + 2, /^(io\.systemd\.System|io\.systemd\.MountFileSystem\.(KeyNotFound|IncompatibleImage))$/],
      ['signature', (p) => p[2]!.start + 200, /^(io\.systemd\.System|io\.systemd\.MountFileSystem\.KeyNotFound)$/],
      ['GPT header', () => 512 + 90, /^io\.systemd\.MountFileSystem\.(IncompatibleImage|RootPartitionNotFound)$/],
    ];
    for (const [what, offset, expected] of cases) {
      test(what, async () => {
        const src = await freshImage(what.replace(/\W/g, ''));
        const parts = partitions(src);
        const img = publish(flipped(src, offset(parts), `flipped-${what.replace(/\W/g, '')}.raw`), `flipped-${what.replace(/\W/g, '')}.raw`);
        const r = await mountAs1000(img);
        if (typeof expected === 'string') assert.equal(r.error, expected, JSON.stringify(r));
        else assert.match(r.error ?? '', expected, JSON.stringify(r));
      });
    }
  });
});

describe("systemd 262's MountImage inputs", () => {
  /** Runs MountImage calls as uid 1000 straight through the Varlink client (the public
   * mountImage() only sends what it knows). Each entry of `calls` is sent with the image fd at
   * index 0 and the caller's namespace at index 1; prints one result per call. */
  async function callsAs1000(image: string, calls: Array<Record<string, unknown>>): Promise<string[]> {
    const script = `
      import { VarlinkClient } from '${path.resolve(import.meta.dirname, '../../src/ipc/client.js')}';
      import fs from 'node:fs';
      const [sockPath, image, nsPath, json] = process.argv.slice(1);
      const c = await VarlinkClient.connect(sockPath);
      const out = [];
      for (const params of JSON.parse(json)) {
        const fds = [fs.openSync(image, 'r'), fs.openSync(nsPath, 'r'), fs.openSync(image, 'r')];
        try {
          const r = await c.call('io.systemd.MountFileSystem.MountImage', params, { fds });
          const root = r.parameters.partitions.find((p) => p.designator === 'root');
          const fd = r.fds[root.mountFileDescriptor];
          out.push('ok ' + JSON.stringify(root.mountPoint) + ' ' + fs.readFileSync('/proc/self/fd/' + fd + '/etc/hello', 'utf8').trim());
          r.fds.forEach((f) => fs.closeSync(f));
        } catch (e) {
          out.push(e.error ? e.error + ' ' + (e.parameters?.parameter ?? '') : String(e));
        }
        fds.forEach((f) => fs.closeSync(f));
      }
      console.log(JSON.stringify(out));
      c.close();
    `;
    return evalAs1000<string[]>('mount-image-e', script, [sock, image, `/proc/${ns.pid}/ns/user`, JSON.stringify(calls)], { opening: '[' });
  }
  const base = { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 };
  const INVALID = 'org.varlink.service.InvalidParameter';

  test('what 262 always sends (relaxExtensionReleaseChecks, veritySharing) mounts a signed image as uid 1000', async () => {
    const img = publish(repartImage('squashfs').path, 'repart-262.raw');
    // The parameters systemd 262's dissect-image.c client sends for `systemd-dissect IMG`.
    const call262 = { ...base, readOnly: true, growFileSystems: false, relaxExtensionReleaseChecks: true, veritySharing: true, allowInteractiveAuthentication: false };
    assert.deepEqual(await callsAs1000(img, [call262, { ...call262, relaxExtensionReleaseChecks: false, veritySharing: false }, { ...base, mountOptions: {}, verityRootHash: '', verityRootHashSignature: null, verityDataFileDescriptor: null }]), [
      'ok ["/"] hello',
      'ok ["/"] hello',
      'ok ["/"] hello',
    ]);
  });

  test('inputs newer than 262 are ignored: the mount still works', async () => {
    const img = publish(repartImage('squashfs').path, 'repart-future.raw');
    assert.deepEqual(await callsAs1000(img, [{ ...base, someFutureOption: { nested: [1] }, anotherOne: 'x' }]), ['ok ["/"] hello']);
  });

  test('each refused or malformed input gets its precise error', async () => {
    const img = publish(repartImage('squashfs').path, 'repart-refused.raw');
    const hash = 'ab'.repeat(32);
    const cases: Array<[Record<string, unknown>, string]> = [
      // Not supported: per-partition mount options.
      [{ mountOptions: { root: 'noatime' } }, `${INVALID} mountOptions`],
      // External Verity data: the consistency rules of mountwork.c, then "not supported".
      [{ verityRootHash: hash }, `${INVALID} verityDataFileDescriptor`],
      [{ verityDataFileDescriptor: 2 }, `${INVALID} verityDataFileDescriptor`],
      [{ verityRootHashSignature: 'AAAA' }, `${INVALID} verityRootHashSignature`],
      [{ verityDataFileDescriptor: 2, verityRootHash: hash, verityRootHashSignature: 'AAAA' }, `${INVALID} verityDataFileDescriptor`],
      [{ verityDataFileDescriptor: 2, verityRootHash: hash }, `${INVALID} verityDataFileDescriptor`],
      [{ verityDataFileDescriptor: 2, verityRootHash: 'xyz' }, `${INVALID} verityRootHash`],
      [{ verityDataFileDescriptor: 2, verityRootHash: 'abc' }, `${INVALID} verityRootHash`],
      [{ verityDataFileDescriptor: 2, verityRootHash: hash, verityRootHashSignature: '!!!' }, `${INVALID} verityRootHashSignature`],
      // Declared inputs keep their types.
      [{ relaxExtensionReleaseChecks: 'yes' }, `${INVALID} relaxExtensionReleaseChecks`],
      [{ veritySharing: 1 }, `${INVALID} veritySharing`],
      [{ mountOptions: { root: 5 } }, `${INVALID} mountOptions`],
      [{ mountOptions: ['ro'] }, `${INVALID} mountOptions`],
      [{ verityDataFileDescriptor: 0.5, verityRootHash: hash }, `${INVALID} verityDataFileDescriptor`],
    ];
    assert.deepEqual(
      await callsAs1000(img, cases.map(([p]) => ({ ...base, relaxExtensionReleaseChecks: true, veritySharing: true, ...p }))),
      cases.map(([, e]) => e),
    );
  });
});

describe('callers', () => {
  test('without a user namespace a non-root caller gets a signed image read-only in the host id space (mount-image-no-userns.test.ts has the rest)', async () => {
    const img = publish(repartImage('squashfs').path, 'repart-nons.raw');
    const r = await e2eClientAs1000<MountResult>(['mount', sock, img, 'none']);
    const p = r.partitions?.[0];
    assert.deepEqual(p && { host: p.host, writable: p.writable, canWrite: p.canWrite }, { host: { uid: 0, gid: 0, content: 'hello\n' }, writable: false, canWrite: false }, JSON.stringify(r));
  });

  test('wrong fd types are InvalidParameter or BadFileDescriptorFlags, and the daemon keeps serving', async () => {
    const script = `
      import { VarlinkClient } from '${path.resolve(import.meta.dirname, '../../src/ipc/client.js')}';
      import fs from 'node:fs';
      const c = await VarlinkClient.connect(process.argv[1]);
      const out = [];
      const tryFds = async (fds, params) => {
        try { await c.call('io.systemd.MountFileSystem.MountImage', params, { fds }); out.push('ok'); }
        catch (e) { out.push(e.error ?? String(e)); }
      };
      await tryFds([fs.openSync('/proc/self/ns/user', 'r'), fs.openSync(process.argv[3], 'r')], { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 });
      await tryFds([fs.openSync('/dev/null', 'r')], { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 });
      await tryFds([fs.openSync(process.argv[2], 0o10000000 /* O_PATH */), fs.openSync(process.argv[3], 'r')], { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 });
      await tryFds([], { imageFileDescriptor: 3 });
      await tryFds([fs.openSync(process.argv[2], 'r'), fs.openSync('/dev/null', 'r')], { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 });
      console.log(JSON.stringify(out));
      c.close();
    `;
    const img = publish(repartImage('squashfs').path, 'repart-fds.raw');
    assert.deepEqual(await evalAs1000<string[]>('mount-image-e', script, [sock, img, `/proc/${ns.pid}/ns/user`], { opening: '[' }), [
      'org.varlink.service.InvalidParameter',
      'org.varlink.service.InvalidParameter',
      'io.systemd.MountFileSystem.BadFileDescriptorFlags',
      'org.varlink.service.InvalidParameter',
      'org.varlink.service.InvalidParameter',
    ]);
  });

  test('closing everything leaves no loop device or fd behind', async () => {
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    daemon.cache.clear();
    // Loop devices autoclear once the last mount of their superblock is gone.
    await waitFor(() => loopsBackedByCopies() === 0, 'the loop devices to autoclear', 5000, 50).catch(() => undefined);
    assert.equal(loopsBackedByCopies(), 0);
    assert.ok(fs.readdirSync('/proc/self/fd').length <= fdsBefore);
  });
});
