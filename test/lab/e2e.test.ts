// The whole product on a Debian kernel with no opt-out (runs in the kernel lab): userdbd with
// its BPF policy and without --allow-without-policy, mntfsd, both as shipped (the bundle), and
// every client call made as uid 1000 from a namespace it created itself: AllocateUserRange,
// MountImage of squashfs, ext4 (systemd-repart) and erofs (mountgate build) images idmapped
// into that namespace, the cached second mount, the attack list against a disk host root
// mounted, `mountgate status`, and a daemon killed with SIGKILL and restarted.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { type Daemon, startDaemon, stopDaemons } from '../support/daemons.js';
import { cliJsonAsUser, e2eClientAs1000 } from '../support/clients.js';
import { removeImages, repartImage, sampleTree, testDir, testKey } from '../support/images.js';
import { AS_1000, REPO, runAsUser } from '../support/processes.js';
import { spawnInNewUserns, type UsernsHolder } from '../support/userns.js';
import { waitFor } from '../support/wait.js';
import { ATTACKS, ext4Disk, inodesUnder, scratch, transientTraces, type Disk } from '../support/attacks.js';

const dir = testDir('mg-lab-e2e-');
const sock = path.join(dir, 'userdbd.sock');
const msock = path.join(dir, 'mntfsd.sock');
const state = path.join(dir, 'state');
const pinDir = `/sys/fs/bpf/mountgate-lab-${process.pid}`;
const USERDBD_ARGS = ['userdbd', '--listen', sock, '--state-dir', state, '--bpf-pin-dir', pinDir, '--userdb-link', 'none'];
const SHIPPED = { shipped: true } as const;

let userdbd: Daemon;
let disk: Disk;
let images: Record<'squashfs' | 'ext4' | 'erofs', string>;
/** `sleep` as uid 1000 in a user namespace of its own: the container's future init. */
let holder: UsernsHolder;

interface MountReport {
  partitions?: Array<{ designator: string; fileSystemType: string; host: { uid: number } | null; insideUid: number | null }>;
  error?: string;
}

/** `sh -c SCRIPT` as root of the holder's namespace, entered by its owner, uid 1000. */
function inHolderNs(script: string): Promise<{ status: number | null; stderr: string }> {
  return runAsUser(['nsenter', '-t', String(holder.pid), '-U', '--', 'sh', '-c', script]);
}

function firstHostUid(pid: number): number {
  const [inside, outside, count] = fs.readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
  assert.deepEqual([inside, count], [0, 65536]);
  return outside!;
}

function findDaemonPid(socket: string): number {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (argv.includes('userdbd') && argv.includes(socket) && argv.some((a) => a.endsWith('main.mjs'))) return Number(e);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no userdbd process for ${socket}`);
}

async function statusJson(): Promise<{ userdbd: { state: string; status?: { policy: { attached: boolean; hooks: string[]; managed: number }; namespaces: Array<{ name: string; base: number }> } }; mntfsd: { status?: { cacheHits: number; verifications: number } } }> {
  return (await cliJsonAsUser<never>('status', ['--userdbd', sock, '--mntfsd', msock])).report;
}

before(async () => {
  fs.mkdirSync(state);
  const { key, cert } = testKey();
  const certs = path.join(dir, 'certs');
  fs.mkdirSync(certs);
  fs.copyFileSync(cert, path.join(certs, 'trusted.crt'));
  const erofs = path.join(dir, 'built.raw');
  execFileSync(process.execPath, [path.join(REPO, 'dist/bundle/main.mjs'), 'build', sampleTree(), erofs, '--key', key, '--cert', cert], { stdio: ['ignore', 'ignore', 'pipe'] });
  images = { squashfs: repartImage('squashfs').path, ext4: repartImage('ext4').path, erofs };
  for (const img of Object.values(images)) {
    fs.chmodSync(img, 0o644);
    fs.chmodSync(path.dirname(img), 0o755);
  }
  userdbd = await startDaemon(USERDBD_ARGS, sock, SHIPPED);
  await startDaemon(['mntfsd', '--listen', msock, '--userdbd', sock, '--verity-certs', certs], msock, SHIPPED);
  holder = await spawnInNewUserns('setpriv', [...AS_1000, 'unshare', '--user', 'sleep', 'infinity'], 20_000);
  disk = ext4Disk();
});

after(async () => {
  holder?.kill('SIGKILL');
  await stopDaemons();
  disk?.cleanup();
  fs.rmSync(pinDir, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
  removeImages();
});

describe('end to end on the lab kernel, no opt-out', () => {
  let base: number;

  it('mountgate status (as uid 1000) shows the policy attached, with every hook', async () => {
    const st = await statusJson();
    assert.equal(st.userdbd.state, 'ok');
    assert.equal(st.userdbd.status?.policy.attached, true, JSON.stringify(st.userdbd));
    assert.ok((st.userdbd.status?.policy.hooks.length ?? 0) >= 15, JSON.stringify(st.userdbd.status?.policy.hooks));
  });

  it('AllocateUserRange as uid 1000 maps a transient 64K range into its namespace', async () => {
    const r = await e2eClientAs1000<{ name?: string; error?: string }>(['allocate', sock, 'lab', String(holder.pid)]);
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.name, '1000-lab');
    base = firstHostUid(holder.pid);
    assert.ok(base >= 0x80000 && base % 65536 === 0, String(base));
    const st = await statusJson();
    assert.equal(st.userdbd.status?.policy.managed, 1);
  });

  for (const kind of ['squashfs', 'ext4', 'erofs'] as const) {
    it(`MountImage of a signed ${kind} image, idmapped into the caller's namespace`, async () => {
      const r = await e2eClientAs1000<MountReport>(['mount', msock, images[kind], String(holder.pid)]);
      assert.equal(r.error, undefined, JSON.stringify(r));
      const root = r.partitions?.find((p) => p.designator === 'root');
      assert.equal(root?.fileSystemType, kind);
      assert.equal(root?.insideUid, 0, 'root-owned files are root inside');
      assert.equal(root?.host?.uid, base, 'and the range base on the host');
    });
  }

  it('the second MountImage of an image is served from the verified-mount cache', async () => {
    const before = (await statusJson()).mntfsd.status!;
    const r = await e2eClientAs1000<MountReport>(['mount', msock, images.squashfs, String(holder.pid)]);
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.partitions?.find((p) => p.designator === 'root')?.insideUid, 0);
    const after = (await statusJson()).mntfsd.status!;
    assert.equal(after.verifications, before.verifications);
    assert.equal(after.cacheHits, before.cacheHits + 1);
  });

  describe('the attack list, as uid 1000 from its allocated namespace, against a disk host root mounted', () => {
    let fixtures: Set<number>;
    let s: ReturnType<typeof scratch>;
    before(() => {
      s = scratch(base, disk.dir);
      fixtures = inodesUnder(disk.dir);
    });
    after(() => s.cleanup());

    for (const attack of ATTACKS) {
      it(`refused: ${attack.name}`, async () => {
        const r = await inHolderNs(attack.script(s));
        assert.notEqual(r.status, 0, `${attack.name} succeeded`);
        assert.match(r.stderr, attack.refusal ?? /Operation not permitted|Permission denied/i, r.stderr);
      });
    }

    it('nothing on the disk names a transient id afterwards', () => {
      assert.deepEqual(fs.readdirSync(s.work), [], 'overlayfs work directory');
      assert.deepEqual(transientTraces(disk.dir, fixtures), []);
    });

    it("writes to the namespace's own tmpfs still work", async () => {
      const t = s.merged;
      const r = await inHolderNs(`unshare -m sh -ec 'mount -t tmpfs t ${t}; mkdir ${t}/d; : > ${t}/f; chown 1000:1000 ${t}/f'`);
      assert.equal(r.status, 0, r.stderr);
    });
  });

  it('after SIGKILL of userdbd the pinned policy keeps denying; the restarted daemon adopts the pins and the namespace', async () => {
    const link = path.join(pinDir, 'links', 'path_mkdir');
    const linkIno = fs.statSync(link).ino;
    const pid = findDaemonPid(sock);
    process.kill(pid, 'SIGKILL');
    await waitFor(() => dead(pid), 'userdbd to die', 10_000);
    const target = path.join(disk.dir, 'after-kill');
    fs.mkdirSync(target, { mode: 0o777 });
    fs.chmodSync(target, 0o777);
    const r = await inHolderNs(`mkdir ${target}/d`);
    assert.notEqual(r.status, 0, 'created a directory while the daemon was dead');
    await userdbd.stop();
    fs.rmSync(sock, { force: true });
    userdbd = await startDaemon(USERDBD_ARGS, sock, SHIPPED);
    const st = await statusJson();
    assert.equal(st.userdbd.status?.policy.attached, true);
    assert.equal(fs.statSync(link).ino, linkIno, 'the pinned programs were adopted, not reloaded');
    assert.deepEqual(st.userdbd.status?.namespaces.map((n) => [n.name, n.base]), [['1000-lab', base]]);
  });

  it('the namespace dies: the BPF death event frees its range within a second', async () => {
    holder.kill('SIGKILL');
    const t0 = Date.now();
    await waitFor(() => !registryRecords().length, 'the registry record to go', 5000);
    const ms = Date.now() - t0;
    assert.ok(ms <= 1000, `${ms} ms`);
    const st = await statusJson();
    assert.deepEqual(st.userdbd.status?.namespaces, []);
    assert.equal(st.userdbd.status?.policy.managed, 0);
  });
});

/** Namespace records (i<inode>.userns) anywhere in userdbd's state directory. */
function registryRecords(): string[] {
  return (fs.readdirSync(state, { recursive: true }) as string[]).filter((f) => /(^|\/)i\d+\.userns$/.test(f));
}

/** Gone, or a zombie nobody reaped yet. */
function dead(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
