// Which verity backend mntfsd runs on this host: without device-mapper it must be the verified
// copy, proven by where a returned mount's superblock lives (a loop device over the private
// copy); dm-verity cannot be forced where there is none. The dm-verity side is proven in the
// kernel lab (test/lab/verity.test.ts).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { mountImage } from '../../src/client/index.js';
import { startMntfsd, type Mntfsd } from '../../src/mntfsd/daemon.js';
import { dmVerityAvailable } from '../../src/mntfsd/dm-verity.js';
import { FILE_NAME } from '../../src/mntfsd/verified-copy.js';
import { dmAvailable } from '../../src/sys/dm.js';
import { removeImages, repartImage, testCertDir, testDir } from '../support/images.js';

const REPO = path.resolve(import.meta.dirname, '../..');
let dir: string;
let certs: string;
let daemon: Mntfsd | undefined;

/** major:minor of the block device a mount's superblock sits on (glibc's dev_t layout). */
function blockDevice(fd: number): string {
  const dev = fs.fstatSync(fd).dev;
  return `${((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff)}:${(dev & 0xff) | ((dev >>> 12) & 0xfff00)}`;
}

before(() => {
  dir = testDir('mntfsd-backend-');
  certs = testCertDir(dir);
});

after(() => {
  daemon?.close();
  fs.rmSync(dir, { recursive: true, force: true });
  removeImages();
});

describe('verity backend on this host (no device-mapper)', () => {
  test('this kernel has no device-mapper: /dev/mapper/control does not answer, dm-verity is unavailable', () => {
    // The node may exist (libdevmapper's tools create it); the kernel behind it does not.
    assert.equal(dmAvailable(), false);
    assert.equal(dmVerityAvailable(), false);
  });

  test('mntfsd picks the verified copy, and a MountImage is served from a loop device over it', async () => {
    const sock = path.join(dir, 'mntfsd.sock');
    daemon = startMntfsd({ listen: sock, userdbd: null, certificateDirectories: [certs] });
    assert.equal(daemon.verity, 'copy');
    const image = repartImage('squashfs');
    const imageFd = fs.openSync(image.path, 'r');
    try {
      const { partitions } = await mountImage({ socket: sock, imageFd });
      const root = partitions.find((p) => p.designator === 'root');
      assert.ok(root);
      try {
        assert.equal(fs.readFileSync(`/proc/self/fd/${root.mountFd}/etc/hello`, 'utf8'), 'hello\n');
        // The superblock's device is a loop device whose backing file is the private copy.
        const sys = `/sys/dev/block/${blockDevice(root.mountFd)}`;
        assert.match(fs.readlinkSync(sys), /\/loop\d+$/);
        assert.ok(fs.readFileSync(`${sys}/loop/backing_file`, 'utf8').trim().endsWith(`/${FILE_NAME}`));
        assert.deepEqual(daemon.cache.list(), [{ rootHash: image.rootHash, fileSystemType: 'squashfs', verity: 'copy' }]);
      } finally {
        partitions.forEach((p) => fs.closeSync(p.mountFd));
      }
    } finally {
      fs.closeSync(imageFd);
      daemon.close();
      daemon = undefined;
    }
  });

  test('asking for dm-verity here fails at start, naming what is missing, instead of copying silently', () => {
    assert.throws(() => startMntfsd({ listen: path.join(dir, 'never.sock'), userdbd: null, verity: 'dm-verity' }), /dm-verity.*\/dev\/mapper\/control/);
    assert.equal(fs.existsSync(path.join(dir, 'never.sock')), false);
  });

  test('mountgate mntfsd --verity takes auto, dm-verity or copy only', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/cli/main.ts'), 'mntfsd', '--verity', 'fast'], { encoding: 'utf8', cwd: REPO });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--verity must be auto, dm-verity or copy/);
  });
});
