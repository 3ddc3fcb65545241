// Hostile MountImage callers against a real mntfsd (child process): every kind of wrong fd for
// each fd parameter, someone else's namespace, disconnects in the middle of a verification or a
// userdbd registration, and parallel calls. After each case: the documented error, the
// daemon's fd count back where it was, no new loop device, and the daemon still serving.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildDdi } from '../../src/image-builder/build-ddi.js';
import { parseInterface } from '../../src/ipc/idl.js';
import { VarlinkServer } from '../../src/ipc/server.js';
import { FILE_NAME } from '../../src/mntfsd/verified-copy.js';
import { native } from '../../src/native/index.js';
import { memfdCreate } from '../../src/sys/memfd.js';
import { pidfdOpen } from '../../src/sys/pidfd.js';
import { e2eClientAs1000 } from '../support/clients.js';
import { MntfsdProcess } from '../support/daemons.js';
import { closeAll, fifoPipe, O_PATH } from '../support/fds.js';
import { gptImage, imageDir, publish, removeImages, run, sampleTree, testCertDir, testDir, testKey, verityFormat, verityUuids } from '../support/images.js';
import { assertNoNewLoops, loopDevices, newLoops } from '../support/loops.js';
import { rawPeer, type RawPeer } from '../support/raw-peer.js';
import { userEval } from '../support/user-package.js';
import { killAndWait, spawnInNewUserns } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const MOUNT = 'io.systemd.MountFileSystem.MountImage';
const INVALID = 'org.varlink.service.InvalidParameter';
const BAD_FLAGS = 'io.systemd.MountFileSystem.BadFileDescriptorFlags';
const INCOMPATIBLE = 'io.systemd.MountFileSystem.IncompatibleImage';
const AS_1000 = ['--reuid=1000', '--regid=1000', '--clear-groups'];
const BASE = 524288 * 41;

let dir: string;
let trusted: string;
let certs: string;
let daemon: MntfsdProcess;
let signed: string;
let bigImage: string;
let bigBroken: string;
let baseFds: number;
let loops0: Map<string, string>;
let ns1000: ChildProcess & { pid: number };
let rootOwnedNs: ChildProcess & { pid: number };

async function signedImage(name: string, extra = ''): Promise<string> {
  const { key, cert } = testKey();
  const tree = path.join(imageDir(), `${name}-tree`);
  fs.cpSync(sampleTree(), tree, { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc/unique'), `${name} ${extra}\n`);
  const out = path.join(imageDir(), `${name}.raw`);
  await buildDdi({ sourceDir: tree, output: out, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8') });
  return publish(out, dir, `${name}.raw`);
}

/** A trusted, unsigned Verity image with a large, mostly empty ext4: verification takes a while. */
function bigVerityImage(): { good: string; broken: string } {
  const data = path.join(imageDir(), 'big.ext4');
  fs.writeFileSync(data, '');
  fs.truncateSync(data, 768 << 20);
  run('mkfs.ext4', ['-q', '-d', sampleTree(), data]);
  const v = verityFormat(data, 4096, 4096);
  const u = verityUuids(v.rootHash);
  const img = gptImage('big.raw', [
    { designator: 'root', file: data, uuid: u.data, label: 'root_1' },
    { designator: 'root-verity', file: v.hash, uuid: u.hash, label: 'root_1-verity' },
  ]);
  const good = publish(img, trusted, 'big.raw');
  // The same image with one bit flipped in the last data block: fails only at the very end.
  const broken = publish(img, trusted, 'big-broken.raw');
  const fd = fs.openSync(broken, 'r+');
  const b = Buffer.alloc(1);
  const pos = (1 << 20) + (768 << 20) - 100;
  fs.readSync(fd, b, 0, 1, pos);
  b.writeUInt8(b.readUInt8(0) ^ 1, 0);
  fs.writeSync(fd, b, 0, 1, pos);
  fs.closeSync(fd);
  return { good, broken };
}

/**
 * Runs a MountImage call as uid 1000 with a user namespace fd it inherited (fd 3): uid 1000
 * could not open another user's namespace itself, but may have been handed one.
 */
async function mountAs1000WithInheritedNs(image: string, nsFd: number): Promise<string> {
  const script = `
    import { VarlinkClient } from '${path.resolve(import.meta.dirname, '../../src/ipc/client.js')}';
    import fs from 'node:fs';
    const c = await VarlinkClient.connect(process.argv[1]);
    try {
      await c.call('${MOUNT}', { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 }, { fds: [fs.openSync(process.argv[2], 'r'), 3] });
      console.log('ok');
    } catch (e) { console.log(e.error ?? String(e)); }
    c.close();
  `;
  const child = spawn('setpriv', [...AS_1000, process.execPath, userEval('hostile-mntfsd-ns', script), daemon.sock, image], { stdio: ['ignore', 'pipe', 'pipe', nsFd] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise((r) => child.once('exit', r));
  assert.ok(out.trim(), `no output: ${err.slice(-1000)}`);
  return out.trim();
}

before(async () => {
  dir = testDir('hostile-mntfsd-');
  trusted = path.join(dir, 'trusted');
  fs.mkdirSync(trusted, { mode: 0o755 });
  certs = testCertDir(dir);
  signed = await signedImage('signed');
  ({ good: bigImage, broken: bigBroken } = bigVerityImage());
  ns1000 = await spawnInNewUserns('setpriv', [...AS_1000, 'unshare', '--user', 'sleep', 'infinity']);
  fs.writeFileSync(`/proc/${ns1000.pid}/uid_map`, `0 ${BASE} 65536\n`);
  fs.writeFileSync(`/proc/${ns1000.pid}/gid_map`, `0 ${BASE} 65536\n`);
  rootOwnedNs = await spawnInNewUserns('unshare', ['--user', 'sleep', 'infinity']);
  loops0 = loopDevices();
  daemon = await MntfsdProcess.start(dir, { certificateDirectories: [certs], trustedDirectories: [trusted] });
  // Warm the cache with the signed image so the fd cases compare against a steady state.
  const p = rawPeer(daemon.sock);
  const img = fs.openSync(signed, 'r');
  p.call(MOUNT, { imageFileDescriptor: 0 }, [img]);
  fs.closeSync(img);
  assert.equal((await p.nextReply()).error, undefined);
  p.close();
  baseFds = await daemon.quietFdCount();
});

after(async () => {
  await daemon?.stop();
  if (ns1000) await killAndWait(ns1000);
  if (rootOwnedNs) await killAndWait(rootOwnedNs);
  if (loops0) await assertNoNewLoops(loops0, 'after stopping mntfsd');
  removeImages();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function afterCase(what: string, expectedFds = baseFds): Promise<void> {
  await daemon.settleFds(expectedFds, what);
  await daemon.assertServing();
  await daemon.settleFds(expectedFds, `${what} (after a GetInfo)`);
}

/** One MountImage call over a raw connection; the test's copies of `fds` are closed after sending. */
async function mountRaw(params: Record<string, unknown>, fds: number[]): Promise<{ reply: Record<string, unknown>; mountFds: number[] }> {
  const p = rawPeer(daemon.sock);
  p.call(MOUNT, params, fds);
  closeAll(fds);
  const reply = await p.nextReply();
  const mountFds = [...p.fdsReceived];
  p.fdsReceived.length = 0;
  p.close();
  return { reply, mountFds };
}

const openImage = (flags: number | string = 'r'): number => fs.openSync(signed, flags);

describe('wrong fds for imageFileDescriptor', () => {
  const cases: Array<[string, () => number, string | string[], string?]> = [
    ['a regular file of garbage', () => {
      const f = path.join(dir, 'garbage');
      fs.writeFileSync(f, Buffer.alloc(1 << 20, 0x5a));
      return fs.openSync(f, 'r');
    }, INCOMPATIBLE],
    ['an empty file', () => {
      const f = path.join(dir, 'empty');
      fs.writeFileSync(f, '');
      return fs.openSync(f, 'r');
    }, INCOMPATIBLE],
    ['the read end of a pipe', () => {
      const [r, w] = fifoPipe(dir);
      fs.closeSync(w);
      return r;
    }, INVALID, 'imageFileDescriptor'],
    ['the write end of a pipe', () => {
      const [r, w] = fifoPipe(dir);
      fs.closeSync(r);
      return w;
    }, BAD_FLAGS, 'imageFileDescriptor'],
    ['an O_PATH fd of a good image', () => fs.openSync(signed, O_PATH), BAD_FLAGS, 'imageFileDescriptor'],
    ['a write-only fd of a good image', () => fs.openSync(signed, fs.constants.O_WRONLY), BAD_FLAGS, 'imageFileDescriptor'],
    ['an O_APPEND fd of a good image', () => fs.openSync(signed, fs.constants.O_RDWR | fs.constants.O_APPEND), BAD_FLAGS, 'imageFileDescriptor'],
    ['an O_DIRECT fd of a good image', () => fs.openSync(signed, fs.constants.O_RDONLY | fs.constants.O_DIRECT), BAD_FLAGS, 'imageFileDescriptor'],
    ['a network namespace', () => fs.openSync('/proc/self/ns/net', 'r'), INVALID, 'imageFileDescriptor'],
    ['a user namespace', () => fs.openSync(`/proc/${ns1000.pid}/ns/user`, 'r'), INVALID, 'imageFileDescriptor'],
    ['a procfs file', () => fs.openSync('/proc/self/status', 'r'), INVALID, 'imageFileDescriptor'],
    ['a pidfd', () => pidfdOpen(ns1000.pid), [INVALID, BAD_FLAGS], 'imageFileDescriptor'],
    ['a directory', () => fs.openSync(dir, 'r'), [INVALID, BAD_FLAGS], 'imageFileDescriptor'],
    ['a socket', () => {
      const [a, b] = native.socketpair();
      fs.closeSync(b);
      return a;
    }, INVALID, 'imageFileDescriptor'],
    ['/dev/null', () => fs.openSync('/dev/null', 'r'), INVALID, 'imageFileDescriptor'],
    ['/dev/zero', () => fs.openSync('/dev/zero', 'r'), INVALID, 'imageFileDescriptor'],
  ];
  for (const [name, make, error, parameter] of cases) {
    test(`${name} → ${Array.isArray(error) ? error.join(' or ') : error}`, async () => {
      const { reply, mountFds } = await mountRaw({ imageFileDescriptor: 0 }, [make()]);
      const errors = Array.isArray(error) ? error : [error];
      assert.ok(errors.includes(reply.error as string), JSON.stringify(reply));
      if (parameter) assert.deepEqual(reply.parameters, { parameter });
      assert.equal(mountFds.length, 0);
      await afterCase(name);
    });
  }

  test('an unsealed memfd holding a signed image mounts (a copy the caller can change is verified like a file)', async () => {
    const m = memfdCreate('hostile-image');
    fs.writeFileSync(m, fs.readFileSync(signed));
    const { reply, mountFds } = await mountRaw({ imageFileDescriptor: 0 }, [m]);
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    assert.equal(fs.readFileSync(`/proc/self/fd/${mountFds[0]}/etc/hello`, 'utf8'), 'hello\n');
    closeAll(mountFds);
    await afterCase('memfd');
  });

  test('the client closes its copy of the fd right after sending: the daemon has its own', async () => {
    const { reply, mountFds } = await mountRaw({ imageFileDescriptor: 0 }, [openImage()]);
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    closeAll(mountFds);
    await afterCase('closed copy');
  });

  test('no fds at all, index 0 → InvalidParameter', async () => {
    const { reply } = await mountRaw({ imageFileDescriptor: 0 }, []);
    assert.deepEqual(reply, { error: INVALID, parameters: { parameter: 'imageFileDescriptor' } });
    await afterCase('no fds');
  });
});

describe('wrong fds for userNamespaceFileDescriptor', () => {
  const cases: Array<[string, () => number]> = [
    ['a regular file', () => fs.openSync(signed, 'r')],
    ['a pipe', () => fifoPipe(dir)[0]],
    ['an O_PATH fd of a user namespace', () => fs.openSync(`/proc/${ns1000.pid}/ns/user`, O_PATH)],
    ['a network namespace', () => fs.openSync('/proc/self/ns/net', 'r')],
    ['a mount namespace', () => fs.openSync('/proc/self/ns/mnt', 'r')],
    ['a pid namespace', () => fs.openSync('/proc/self/ns/pid', 'r')],
    ['a pidfd', () => pidfdOpen(ns1000.pid)],
    ['/dev/null', () => fs.openSync('/dev/null', 'r')],
  ];
  for (const [name, make] of cases) {
    test(`${name} → InvalidParameter(userNamespaceFileDescriptor)`, async () => {
      const { reply, mountFds } = await mountRaw({ imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 }, [openImage(), make()]);
      assert.deepEqual(reply, { error: INVALID, parameters: { parameter: 'userNamespaceFileDescriptor' } });
      assert.equal(mountFds.length, 0);
      await afterCase(name);
    });
  }

  test('root may idmap into a namespace uid 1000 owns', async () => {
    const { reply, mountFds } = await mountRaw({ imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 }, [openImage(), fs.openSync(`/proc/${ns1000.pid}/ns/user`, 'r')]);
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    assert.equal(fs.statSync(`/proc/self/fd/${mountFds[0]}/etc/hello`).uid, BASE);
    closeAll(mountFds);
    await afterCase('idmapped');
  });

  test('uid 1000 passing a namespace owned by root → PermissionDenied', async () => {
    const nsFd = fs.openSync(`/proc/${rootOwnedNs.pid}/ns/user`, 'r');
    try {
      assert.equal(await mountAs1000WithInheritedNs(signed, nsFd), 'org.varlink.service.PermissionDenied');
      // The same call with uid 1000's own namespace passes, so it was the owner that counted.
      const own = fs.openSync(`/proc/${ns1000.pid}/ns/user`, 'r');
      assert.equal(await mountAs1000WithInheritedNs(signed, own), 'ok');
      fs.closeSync(own);
    } finally {
      fs.closeSync(nsFd);
    }
    await afterCase('root-owned namespace');
  });

  test('uid 1000 without a namespace (host ids): a trusted signed image is served read-only, as the host owns it', async () => {
    const r = await e2eClientAs1000(['mount', daemon.sock, signed, 'none']);
    assert.equal(r.error, undefined, JSON.stringify(r));
    const parts = r.partitions as Array<{ canWrite: boolean; host: { uid: number } | null }>;
    assert.ok(parts.length > 0, JSON.stringify(r));
    for (const p of parts) {
      assert.equal(p.canWrite, false, JSON.stringify(p));
      assert.equal(p.host?.uid, 0, JSON.stringify(p));
    }
    await afterCase('no namespace');
  });

  test('uid 1000 with its own namespace is served', async () => {
    const r = await e2eClientAs1000(['mount', daemon.sock, signed, String(ns1000.pid)]);
    assert.equal(r.error, undefined, JSON.stringify(r));
    await afterCase('own namespace');
  });
});

/** Waits until the daemon holds a verified copy (it is being written). */
async function untilCopying(): Promise<void> {
  await waitFor(() => daemon.fds().some((l) => l.includes(`/${FILE_NAME}`)), 'the daemon to start copying', 30_000);
}

describe('fd hoarding', () => {
  test('calls pipelined behind a slow MountImage are not all read in (fds stay bounded)', async () => {
    const p = rawPeer(daemon.sock);
    const fd = fs.openSync(bigBroken, 'r');
    p.call(MOUNT, { imageFileDescriptor: 0 }, [fd]);
    fs.closeSync(fd);
    await untilCopying();
    // 40 calls × 253 fds = 10,120 fds offered while the first call is busy.
    const nulls = Array.from({ length: 253 }, () => fs.openSync('/dev/null', 'r'));
    let peak = 0;
    try {
      for (let i = 0; i < 40; i++) {
        p.call('org.varlink.service.GetInfo', undefined, nulls);
        peak = Math.max(peak, daemon.fdCount());
      }
      await sleep(100);
      peak = Math.max(peak, daemon.fdCount());
    } catch {
      // the daemon may hang up on us
    } finally {
      closeAll(nulls);
      p.close();
    }
    await afterCase('fd hoarding');
    assert.ok(peak - baseFds < 2 * 253 + 10, `one connection made the daemon hold ${peak - baseFds} extra fds`);
  });
});

describe('disconnect mid-call', () => {
  test('during verification of a corrupt 768 MiB image: no memfd, loop device, mount or fd left', async () => {
    const before = await daemon.status();
    const loops = loopDevices();
    const mounts = daemon.mountinfoLines();
    const p = rawPeer(daemon.sock);
    const fd = fs.openSync(bigBroken, 'r');
    p.call(MOUNT, { imageFileDescriptor: 0 }, [fd]);
    fs.closeSync(fd);
    try {
      await untilCopying();
    } finally {
      p.close();
    }
    await waitFor(() => !daemon.fds().some((l) => l.includes(`/${FILE_NAME}`)), 'the copy to be dropped', 10_000);
    const after = await daemon.status();
    assert.equal(after.verifications, before.verifications + 1);
    assert.equal(after.cachedImages.length, before.cachedImages.length);
    assert.deepEqual(newLoops(loops), []);
    assert.equal(daemon.mountinfoLines(), mounts);
    await afterCase('disconnect during failing verification');
  });

  test('during verification of a good 768 MiB image: the verified image is cached once, nothing else is left', async () => {
    const before = await daemon.status();
    const loops = loopDevices();
    const p = rawPeer(daemon.sock);
    const fd = fs.openSync(bigImage, 'r');
    p.call(MOUNT, { imageFileDescriptor: 0 }, [fd]);
    fs.closeSync(fd);
    await untilCopying();
    p.close();
    await waitFor(() => !daemon.fds().some((l) => l.includes(`/${FILE_NAME}`)), 'the copy to finish', 10_000);
    const after = await daemon.status();
    assert.equal(after.verifications, before.verifications + 1);
    assert.equal(after.cachedImages.length, before.cachedImages.length + 1);
    // Exactly one new loop device (under the cached mount) and one more fd (the cached base mount).
    assert.equal(newLoops(loops).length, 1, newLoops(loops).join());
    await afterCase('disconnect during verification', baseFds + 1);
    // It is served from the cache now.
    const { reply, mountFds } = await mountRaw({ imageFileDescriptor: 0 }, [fs.openSync(bigImage, 'r')]);
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    closeAll(mountFds);
    assert.equal((await daemon.status()).verifications, after.verifications);
    baseFds += 1;
  });

  test('while mntfsd registers the mount with userdbd: the mount fd is released once, no other fd is closed', async () => {
    // A userdbd that holds AddMountToUserNamespace until told to answer.
    const fakeSock = path.join(dir, 'fake-userdbd.sock');
    let arrived = 0;
    let answer!: () => void;
    const gate = new Promise<void>((r) => (answer = r));
    const fake = new VarlinkServer();
    fake.addService({
      iface: parseInterface('interface io.systemd.NamespaceResource\nmethod AddMountToUserNamespace(userNamespaceFileDescriptor: int, mountFileDescriptor: int) -> ()\nerror UserNamespaceNotRegistered()\n'),
      handlers: {
        AddMountToUserNamespace: async () => {
          arrived++;
          await gate;
          return { parameters: {} };
        },
      },
    });
    fake.listenPath(fakeSock);
    const d = await MntfsdProcess.start(dir, { certificateDirectories: [certs], trustedDirectories: [trusted], userdbd: fakeSock });
    const others: RawPeer[] = [];
    try {
      const a = rawPeer(d.sock);
      a.call(MOUNT, { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 }, [openImage(), fs.openSync(`/proc/${ns1000.pid}/ns/user`, 'r')]);
      await waitFor(() => arrived === 1, 'the registration call', 10_000);
      const fdsBefore = d.fdCount();
      a.close();
      // The daemon drops A's socket and releases the mount fd: two fd numbers become free...
      await waitFor(() => d.fdCount() <= fdsBefore - 2, 'the daemon to see the disconnect', 10_000);
      // ...and two new connections take them.
      for (let i = 0; i < 2; i++) others.push(rawPeer(d.sock));
      await sleep(100);
      answer();
      await sleep(200);
      for (const o of others) {
        assert.ok(!o.isClosed(), 'the daemon closed a bystander connection (its fd number was closed a second time)');
        o.call('org.varlink.service.GetInfo');
        assert.ok((await o.nextReply(5000)).parameters);
      }
    } finally {
      others.forEach((o) => o.close());
      await d.stop();
      fake.close();
    }
  });
});

describe('concurrency', () => {
  test('20 parallel MountImage calls of one new image: one verification, 20 equal idmapped mounts', async () => {
    const img = await signedImage('parallel', String(Date.now()));
    const before = await daemon.status();
    const loops = loopDevices();
    const results = await Promise.all(
      Array.from({ length: 20 }, () => mountRaw({ imageFileDescriptor: 0, userNamespaceFileDescriptor: 1 }, [fs.openSync(img, 'r'), fs.openSync(`/proc/${ns1000.pid}/ns/user`, 'r')])),
    );
    try {
      for (const { reply, mountFds } of results) {
        assert.equal(reply.error, undefined, JSON.stringify(reply));
        assert.equal(mountFds.length, 1);
        const st = fs.statSync(`/proc/self/fd/${mountFds[0]}/etc/unique`);
        assert.equal(st.uid, BASE);
        assert.match(fs.readFileSync(`/proc/self/fd/${mountFds[0]}/etc/unique`, 'utf8'), /^parallel /);
      }
      const parts = results.map((r) => JSON.stringify(r.reply.parameters));
      assert.equal(new Set(parts).size, 1, 'all replies equal');
      const after = await daemon.status();
      assert.equal(after.verifications, before.verifications + 1);
      assert.equal(after.cacheHits, before.cacheHits + 19);
      assert.equal(after.mountsHandedOut, before.mountsHandedOut + 20);
      assert.equal(newLoops(loops).length, 1);
    } finally {
      results.forEach((r) => closeAll(r.mountFds));
    }
    baseFds += 1;
    await afterCase('20 parallel');
  });

  test('parallel MountImage calls of 4 different images, 3 callers each: 4 verifications', async () => {
    const imgs = await Promise.all([0, 1, 2, 3].map((i) => signedImage(`multi-${i}`, String(Date.now()))));
    const before = await daemon.status();
    const results = await Promise.all(imgs.flatMap((img) => [0, 1, 2].map(async () => ({ img, ...(await mountRaw({ imageFileDescriptor: 0 }, [fs.openSync(img, 'r')])) }))));
    try {
      for (const { img, reply, mountFds } of results) {
        assert.equal(reply.error, undefined, JSON.stringify(reply));
        assert.equal(fs.readFileSync(`/proc/self/fd/${mountFds[0]}/etc/unique`, 'utf8').split(' ')[0], path.basename(img, '.raw'));
      }
      const after = await daemon.status();
      assert.equal(after.verifications, before.verifications + 4);
      assert.equal(after.cacheHits, before.cacheHits + 8);
    } finally {
      results.forEach((r) => closeAll(r.mountFds));
    }
    baseFds += 4;
    await afterCase('different images');
  });
});
