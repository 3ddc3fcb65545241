// mntfsd on kernel dm-verity (runs in the kernel lab, where device-mapper and the verity target
// exist): the shipped daemon picks dm-verity by itself; signed squashfs/ext4/erofs images mount
// through it idmapped for a uid-1000 caller; the devices are visible to the kernel while
// mounted (/sys/block/dm-*/dm/name); a caller that rewrites its image after MountImage gets EIO
// for the blocks it changed while another caller with its own copy of the same image reads on;
// devices and loop devices go with the last mount, survive a SIGKILL of mntfsd for as long as a
// caller's mount needs them, and stale ones are removed at start-up; an image another user can
// rewrite gets a verified copy instead; a verity target that is not
// loaded yet is loaded by the kernel on demand.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { type Daemon, startDaemon } from '../support/daemons.js';
import { flipped, repartImage, sampleTree, testDir, testKey } from '../support/images.js';
import { userEval, userPackage } from '../support/user-package.js';
import { waitFor } from '../support/wait.js';
import { mappedHolder1000, type UsernsHolder } from '../support/userns.js';
import { tearDownFixture } from '../support/fixture.js';

const dir = testDir('mg-lab-verity-');
const msock = path.join(dir, 'mntfsd.sock');
const certs = path.join(dir, 'certs');
const PREFIX = 'mountgate-verity-';
/** Host uid that the holder namespace's uid 0 maps to. */
const BASE = 3_000_000;

// Daemon logs at info: the line that names the backend is part of what is checked.
process.env.MOUNTGATE_LOG_LEVEL = 'info';
const MNTFSD_ARGS = ['mntfsd', '--listen', msock, '--userdbd', 'none', '--verity-certs', certs];

/** mntfsd as shipped: the package's bundle, rebuilt from the current sources (user-package.ts). */
function startMntfsd(): Promise<Daemon> {
  return startDaemon([userPackage().bin, ...MNTFSD_ARGS], msock, { bin: process.execPath });
}

let mntfsd: Daemon;
let images: Record<'squashfs' | 'ext4' | 'erofs', string>;
let squashHash: string;
let ext4Hash: string;
let holder: UsernsHolder;
let clientScript: string;

/**
 * A uid-1000 caller that keeps its mounts: it calls MountImage once, prints the result as a
 * JSON line, then answers line commands (`read PATH`, `tamper`, `exit`) with one JSON line each.
 */
const CLIENT = `
import fs from 'node:fs';
import readline from 'node:readline';
import { createHash } from 'node:crypto';
import { mountImage, VarlinkError } from 'mountgate';
const [socket, image, pid, mode] = process.argv.slice(1);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const imageFd = fs.openSync(image, mode === 'rw' ? 'r+' : 'r');
const nsFd = fs.openSync('/proc/' + pid + '/ns/user', 'r');
let parts;
try {
  parts = (await mountImage({ socket, imageFd, userNamespaceFd: nsFd })).partitions;
} catch (err) {
  say({ error: err instanceof VarlinkError ? err.error : String(err) });
  process.exit(0);
}
const root = parts.find((p) => p.designator === 'root');
const at = (p) => '/proc/self/fd/' + root.mountFd + '/' + p;
const st = fs.statSync(at('etc/hello'));
// Metadata of the file the tamper test reads later, looked up now.
fs.statSync(at('usr/lib/bulk'));
say({ fileSystemType: root.fileSystemType, offset: root.offset, size: root.size, hostUid: st.uid, hello: fs.readFileSync(at('etc/hello'), 'utf8') });
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.split(' ');
  if (cmd === 'read') {
    try {
      say({ sha256: createHash('sha256').update(fs.readFileSync(at(arg))).digest('hex') });
    } catch (err) {
      say({ code: err.code ?? String(err) });
    }
  } else if (cmd === 'tamper') {
    // Every byte of the data partition after its first 4 KiB, inverted, in the caller's own file.
    const chunk = Buffer.alloc(1 << 20);
    for (let pos = 4096; pos < root.size; pos += chunk.length) {
      const n = fs.readSync(imageFd, chunk, 0, Math.min(chunk.length, root.size - pos), root.offset + pos);
      for (let i = 0; i < n; i++) chunk[i] ^= 0xff;
      fs.writeSync(imageFd, chunk, 0, n, root.offset + pos);
    }
    fs.fsyncSync(imageFd);
    say({ tampered: true });
  } else if (cmd === 'exit') {
    for (const p of parts) fs.closeSync(p.mountFd);
    process.exit(0);
  }
});
`;

interface Mounted {
  error?: string;
  fileSystemType?: string;
  hostUid?: number;
  hello?: string;
}

interface Caller {
  result: Mounted;
  send(cmd: string): Promise<Record<string, unknown>>;
  /** Closes its mounts and exits. */
  exit(): Promise<void>;
}

/** Starts a uid-1000 caller mounting IMAGE into the holder namespace and keeping the mounts. */
async function caller(image: string, mode: 'ro' | 'rw' = 'ro'): Promise<Caller> {
  const child = spawn('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', process.execPath, clientScript, msock, image, String(holder.pid), mode], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const lines = readline.createInterface({ input: child.stdout! });
  const queue: string[] = [];
  const waiting: Array<(l: string) => void> = [];
  lines.on('line', (l) => (waiting.length ? waiting.shift()!(l) : queue.push(l)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const next = (): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`caller silent: ${stderr.slice(-1500)}`)), 120_000);
      const take = (l: string): void => {
        clearTimeout(timer);
        resolve(JSON.parse(l) as Record<string, unknown>);
      };
      if (queue.length) take(queue.shift()!);
      else {
        waiting.push(take);
        void exited.then(() => setTimeout(() => reject(new Error(`caller exited: ${stderr.slice(-1500)}`)), 100));
      }
    });
  const result = (await next()) as Mounted;
  return {
    result,
    send: (cmd) => {
      child.stdin!.write(`${cmd}\n`);
      return next();
    },
    exit: async () => {
      if (child.exitCode === null && child.signalCode === null) child.stdin!.write('exit\n');
      await exited;
    },
  };
}

/** Names of the device-mapper devices, as the kernel lists them in sysfs. */
function dmNames(): string[] {
  return fs
    .readdirSync('/sys/block')
    .filter((d) => d.startsWith('dm-'))
    .flatMap((d) => {
      try {
        return [fs.readFileSync(`/sys/block/${d}/dm/name`, 'utf8').trim()];
      } catch {
        return [];
      }
    });
}

/** Waits for mntfsd's log (pino writes asynchronously) to show PATTERN. */
async function logged(pattern: RegExp): Promise<void> {
  try {
    await waitFor(() => pattern.test(mntfsd.stderr()), String(pattern), 10_000);
  } catch {
    assert.fail(`mntfsd logged no ${pattern}: ${mntfsd.stderr().slice(-2000)}`);
  }
}

const ourDevices = (): string[] => dmNames().filter((n) => n.startsWith(PREFIX));

/** Loop devices whose backing file lies in this test's directory. */
function ourLoops(): string[] {
  return fs.readdirSync('/sys/block').filter((d) => {
    try {
      return fs.readFileSync(`/sys/block/${d}/loop/backing_file`, 'utf8').startsWith(dir);
    } catch {
      return false;
    }
  });
}

const sha256 = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** A copy of SRC in the test directory, readable by everybody, owned by OWNER. */
function copyOf(src: string, name: string, owner = 0): string {
  const out = path.join(dir, name);
  fs.copyFileSync(src, out);
  fs.chownSync(out, owner, owner);
  fs.chmodSync(out, 0o644);
  return out;
}

before(async () => {
  const { key, cert } = testKey();
  fs.mkdirSync(certs);
  fs.copyFileSync(cert, path.join(certs, 'trusted.crt'));
  const erofs = path.join(dir, 'built.raw');
  execFileSync(process.execPath, [userPackage().bin, 'build', sampleTree(), erofs, '--key', key, '--cert', cert], { stdio: ['ignore', 'ignore', 'pipe'] });
  const squash = repartImage('squashfs');
  squashHash = squash.rootHash;
  const ext4 = repartImage('ext4');
  ext4Hash = ext4.rootHash;
  images = { squashfs: copyOf(squash.path, 'squashfs.raw'), ext4: copyOf(ext4.path, 'ext4.raw'), erofs: copyOf(erofs, 'erofs.raw') };
  clientScript = userEval('verity-caller', CLIENT);
  mntfsd = await startMntfsd();
  holder = await mappedHolder1000(BASE);
});

after(() => tearDownFixture(holder, dir));

describe('mntfsd on kernel dm-verity', () => {
  it('picks dm-verity by itself where device-mapper has the verity target', async () => {
    assert.ok(fs.existsSync('/dev/mapper/control'));
    await logged(/"verity":"dm-verity".*"msg":"listening"|"msg":"listening".*"verity":"dm-verity"/);
  });

  for (const kind of ['squashfs', 'ext4', 'erofs'] as const) {
    it(`a signed ${kind} image mounts through a dm-verity device, idmapped for uid 1000`, async () => {
      const c = await caller(images[kind]);
      try {
        assert.equal(c.result.error, undefined, JSON.stringify(c.result));
        assert.equal(c.result.fileSystemType, kind);
        assert.equal(c.result.hostUid, BASE, "root's files are the namespace's root");
        assert.equal(c.result.hello, 'hello\n');
        // While mounted, the kernel lists a verity device named by the protocol's prefix.
        const devices = ourDevices();
        assert.ok(devices.length >= 1, JSON.stringify(dmNames()));
        assert.ok(devices.every((n) => /^mountgate-verity-[0-9a-f]{64}-\d+$/.test(n)), devices.join());
        await logged(/dm-verity device set up/);
        // The kernel holds no key for a verity.d certificate, so the signature is not offered to it
        // (or, offered, it is refused), and the table is loaded on the userspace verdict. No key
        // stays behind.
        await logged(/the kernel (checked|could not check) the root hash signature/);
        await waitFor(() => !fs.readFileSync('/proc/keys', 'utf8').includes('mountgate:verity:'), 'the signature key to go', 10_000);
        // Their tables are the verity target over two loop devices (dmsetup: DM_TABLE_STATUS).
        for (const name of devices) {
          const table = execFileSync('dmsetup', ['table', name], { encoding: 'utf8' });
          assert.match(table, /^0 \d+ verity 1 7:\d+ 7:\d+ \d+ \d+ \d+ \d+ sha256 [0-9a-f]{64} /, table);
        }
      } finally {
        await c.exit();
      }
    });
  }

  it('the same image file again is served from the same device; a different copy gets its own', async () => {
    const before = ourDevices().filter((n) => n.includes(squashHash));
    const a = await caller(images.squashfs);
    const b = await caller(images.squashfs);
    const copy = await caller(copyOf(images.squashfs, 'squashfs-copy.raw'));
    try {
      for (const c of [a, b, copy]) assert.equal(c.result.error, undefined, JSON.stringify(c.result));
      const now = ourDevices().filter((n) => n.includes(squashHash));
      assert.equal(before.length, 1, 'the earlier test left its cached device');
      assert.equal(now.length, 2, now.join());
    } finally {
      await Promise.all([a.exit(), b.exit(), copy.exit()]);
    }
  });

  it('a caller that rewrites its image after MountImage reads EIO; another caller with its own copy reads on', async () => {
    const bulk = sha256(path.join(sampleTree(), 'usr/lib/bulk'));
    const mine = copyOf(images.squashfs, 'tenant-a.raw', 1000);
    const theirs = copyOf(images.squashfs, 'tenant-b.raw');
    const a = await caller(mine, 'rw');
    const b = await caller(theirs);
    try {
      assert.equal(a.result.error, undefined, JSON.stringify(a.result));
      assert.equal(b.result.error, undefined, JSON.stringify(b.result));
      assert.deepEqual(await a.send('tamper'), { tampered: true });
      assert.deepEqual(await a.send('read usr/lib/bulk'), { code: 'EIO' }, 'tampered blocks fail, never return other bytes');
      assert.deepEqual(await b.send('read usr/lib/bulk'), { sha256: bulk });
      assert.deepEqual(await b.send('read etc/user-file'), { sha256: sha256(path.join(sampleTree(), 'etc/user-file')) });
    } finally {
      await Promise.all([a.exit(), b.exit()]);
    }
  });

  it("another user's image, which its owner can still rewrite, is served from a verified copy: the owner's rewrite changes nothing", async () => {
    const bulk = sha256(path.join(sampleTree(), 'usr/lib/bulk'));
    const theirs = copyOf(images.squashfs, 'owned-by-1001.raw', 1001);
    const devices = ourDevices();
    const c = await caller(theirs);
    try {
      assert.equal(c.result.error, undefined, JSON.stringify(c.result));
      assert.deepEqual(ourDevices(), devices, 'no dm-verity device over a file uid 1001 can write');
      await logged(/verified copy instead of dm-verity/);
      // Its owner rewrites the data partition (root does it here, to the same effect).
      const { start } = JSON.parse(execFileSync('sfdisk', ['-J', theirs], { encoding: 'utf8' })).partitiontable.partitions[0];
      const fd = fs.openSync(theirs, 'r+');
      try {
        fs.writeSync(fd, Buffer.alloc(4 << 20, 0xa5), 0, 4 << 20, start * 512 + 4096);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      assert.deepEqual(await c.send('read usr/lib/bulk'), { sha256: bulk });
    } finally {
      await c.exit();
    }
  });

  it('an image whose file system superblock does not match its hash tree → VerityFailure, no device or loop left', async () => {
    const devices = ourDevices();
    const loops = ourLoops();
    // Byte 8 of the squashfs superblock (inode count): dissection still sees squashfs.
    const offset = JSON.parse(execFileSync('sfdisk', ['-J', images.squashfs], { encoding: 'utf8' })).partitiontable.partitions[0].start * 512 + 8;
    const bad = copyOf(flipped(images.squashfs, offset, 'bad-superblock.raw'), 'bad-superblock.raw');
    const c = await caller(bad);
    await c.exit();
    assert.equal(c.result.error, 'io.systemd.MountFileSystem.VerityFailure', JSON.stringify(c.result));
    await waitFor(() => ourDevices().length === devices.length && ourLoops().length === loops.length, 'no new device or loop', 10_000);
  });

  it("after SIGKILL of mntfsd a caller's mount keeps working, also across the restart; its device and loops go with its last mount", async () => {
    const c = await caller(images.ext4);
    try {
      assert.equal(c.result.error, undefined, JSON.stringify(c.result));
      assert.ok(ourDevices().some((n) => n.includes(ext4Hash)));
      await killMntfsd();
      // mntfsd's cached base mounts went with it: devices no caller mounts are gone, the caller's stays.
      await waitFor(() => ourDevices().length === 1 && ourDevices()[0]!.includes(ext4Hash), 'unmounted devices to go', 10_000);
      mntfsd = await startMntfsd();
      assert.deepEqual(await c.send('read usr/lib/bulk'), { sha256: sha256(path.join(sampleTree(), 'usr/lib/bulk')) });
      assert.ok(ourDevices().length >= 1, 'still there while mounted');
    } finally {
      await c.exit();
    }
    await waitFor(() => ourDevices().length === 0, 'the device to go with its last mount', 10_000);
    await waitFor(() => ourLoops().length === 0, 'its loop devices to go', 10_000);
  });

  it('start-up removes stale mountgate-verity-* devices and their loops, nothing else', async () => {
    const loop = (file: string): string => execFileSync('losetup', ['--read-only', '--find', '--show', file], { encoding: 'utf8' }).trim();
    const staleLoop = loop(images.erofs);
    const otherLoop = loop(images.ext4);
    const stale = `${PREFIX}${'ab'.repeat(32)}-7`;
    const other = `mg-lab-other-${process.pid}`;
    const dmsetup = (...args: string[]): string => execFileSync('dmsetup', ['--noudevsync', ...args], { encoding: 'utf8' });
    try {
      dmsetup('create', stale, '--readonly', '--table', `0 8 linear ${staleLoop} 0`);
      dmsetup('create', other, '--readonly', '--table', `0 8 linear ${otherLoop} 0`);
      assert.ok(dmNames().includes(stale) && dmNames().includes(other));
      await killMntfsd();
      mntfsd = await startMntfsd();
      await waitFor(() => !dmNames().includes(stale), 'the stale device to go', 10_000);
      await waitFor(() => !ourLoops().includes(path.basename(staleLoop)), 'its loop device to go', 10_000);
      assert.ok(dmNames().includes(other), 'a device of somebody else stays');
      assert.ok(ourLoops().includes(path.basename(otherLoop)), 'and so does its loop device');
      await logged(/removed stale dm-verity devices/);
    } finally {
      if (dmNames().includes(stale)) dmsetup('remove', stale);
      if (dmNames().includes(other)) dmsetup('remove', other);
      // Nodes dmsetup made itself (no udev in the lab).
      for (const n of [stale, other]) fs.rmSync(`/dev/mapper/${n}`, { force: true });
      execFileSync('losetup', ['-d', otherLoop]);
      if (ourLoops().includes(path.basename(staleLoop))) execFileSync('losetup', ['-d', staleLoop]);
    }
  });

  it('mntfsd stopping releases every device and loop it cached', async () => {
    const c = await caller(images.erofs);
    await c.exit();
    assert.equal(c.result.error, undefined, JSON.stringify(c.result));
    assert.ok(ourDevices().length >= 1, 'the cached base mount holds its device');
    await mntfsd.stop();
    await waitFor(() => ourDevices().length === 0 && ourLoops().length === 0, 'devices and loops to go', 10_000);
  });

  it('with the verity target not loaded, mntfsd has the kernel load it and still picks dm-verity', async () => {
    execFileSync('rmmod', ['dm_verity']);
    assert.equal(fs.existsSync('/sys/module/dm_verity'), false);
    fs.rmSync(msock, { force: true });
    mntfsd = await startMntfsd();
    await logged(/"verity":"dm-verity"/);
    assert.ok(fs.existsSync('/sys/module/dm_verity'));
    assert.deepEqual(ourDevices(), [], 'the probe device is gone');
    const c = await caller(images.erofs);
    await c.exit();
    assert.equal(c.result.error, undefined, JSON.stringify(c.result));
    assert.equal(c.result.fileSystemType, 'erofs');
    await mntfsd.stop();
    await waitFor(() => ourDevices().length === 0 && ourLoops().length === 0, 'devices and loops to go', 10_000);
  });
});

async function killMntfsd(): Promise<void> {
  const pid = daemonPid();
  process.kill(pid, 'SIGKILL');
  await mntfsd.stop();
  fs.rmSync(msock, { force: true });
}

/** The shipped mntfsd serving msock. */
function daemonPid(): number {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (argv.includes('mntfsd') && argv.includes(msock)) return Number(e);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no mntfsd for ${msock}`);
}
