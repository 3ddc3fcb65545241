// systemd 257's own clients (Debian trixie's systemd-nspawn, systemd-dissect, userdbctl and
// nss-systemd, from the chroot scripts/build-chroot makes) run as uid 1000 against mountgate's
// daemons, which run on the host as root and are bound at the systemd socket paths inside the
// clients' mount namespace (enter.sh). What a 257 client can do against systemd-nsresourced and
// systemd-mountfsd, it must be able to do against ours.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CONTAINER_SIZE, CONTAINER_WINDOW } from '../../src/userdbd/range-allocator.js';
import { buildSignedImages, exited, REPO, runCollecting, startDaemon, stopDaemons, type SignedImages, type UserRun } from '../e2e/daemons.js';
import { UserdbdAgent } from '../hostile/util.js';
import { run } from '../mntfsd/images.js';
import { waitFor } from '../sys/util.js';

const CHROOT = process.env.MOUNTGATE_CHROOT ?? '/var/tmp/mountgate-chroots/trixie';
const ENTER = path.join(import.meta.dirname, 'enter.sh');
const BUSYBOX = '/bin/busybox'; // Debian package busybox-static (scripts/setup)
const APPLETS = ['sh', 'id', 'cat', 'ls', 'sleep', 'true'];
const HELLO = 'hello from the image\n';
/** Listens on ARGV[0] as udevd's control socket does (SOCK_SEQPACKET) and never answers; exits
 * when its parent (this test process) is gone, even if after() never ran.
 * Perl: Node has no SOCK_SEQPACKET, and perl-base is Essential on Debian. */
const UDEV_LISTENER = `
use Socket;
my $p = $ARGV[0];
socket(my $s, AF_UNIX, SOCK_SEQPACKET, 0) or die "socket: $!";
bind($s, pack_sockaddr_un("$p.tmp")) or die "bind: $!";
listen($s, 64) or die "listen: $!";
rename("$p.tmp", $p) or die "rename: $!";
my $parent = getppid();
sleep 1 while getppid() == $parent;
`;
const PIN_DIR = `/sys/fs/bpf/mountgate-test-clients-${process.pid}`;
const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/*
 * Stand-ins for what a booted systemd host provides and this CI VM (booted without systemd,
 * hybrid cgroups) does not. Each is one the 257 clients fail without (tried):
 * - /etc/machine-id: a fresh id bound over the chroot's empty one. systemd-nspawn: "Failed to
 *   retrieve machine ID: No medium found".
 * - /run/udev/control with a SOCK_SEQPACKET listener behind it, run by uid 1000. nspawn
 *   --image= refuses to run without udev ("requires access to the host's /run/ hierarchy"),
 *   then opens the listener's network namespace through its pid to check it shares udev's,
 *   which an unprivileged caller may only do for its own processes.
 * - /run/systemd/dissect-root, mode 0000 (enter.sh; systemd-tmpfiles makes it at boot).
 *   systemd-dissect: "Failed generate private mount directory: Permission denied".
 * - cgroup2 at /sys/fs/cgroup with a group delegated to uid 1000, as its user manager would
 *   have (enter.sh). nspawn: "Unprivileged operation only supported in unified cgroupv2 mode";
 *   it puts the payload in a group beneath and hands that to the range
 *   (AddControlGroupToUserNamespace).
 * - an image directory uid 1000 may write to. nspawn: "Failed to create image lock".
 * Everything else is the daemons' and the clients' own.
 */

let tmp = '';
let images: SignedImages;
/** systemd-repart images, by file system. */
let repart: Record<'squashfs' | 'ext4', string>;
let userdbdSocket = '';
let mntfsdSocket = '';
let machineId = '';
let udevSocket = '';
let udev: ChildProcess | undefined;
let cgroups = 0;

/**
 * Runs ARGV inside the chroot as uid AS (enter.sh), with our daemons (`sockets`, default the
 * ones before() starts) at the systemd paths or, with `daemons: false`, with none: the
 * reference that a root client computes by itself. Each run gets a cgroup of its own.
 */
function client(as: 0 | 1000, argv: string[], opts: { daemons?: boolean; sockets?: Sockets } = {}): Promise<UserRun> {
  const daemons = opts.daemons ?? true;
  const sockets = opts.sockets ?? { userdbd: userdbdSocket, mntfsd: mntfsdSocket };
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    CHROOT,
    USERDBD_SOCKET: daemons ? sockets.userdbd : '',
    MNTFSD_SOCKET: daemons ? sockets.mntfsd : '',
    IMAGES: path.join(tmp, 'images'),
    MACHINE_ID: machineId,
    UDEV_SOCKET: udevSocket,
    CGROUP: `mountgate-clients-${process.pid}-${cgroups++}`,
  };
  return runCollecting([ENTER, String(as), '--', ...argv], { env });
}

/** Asserts a client exited 0 and returns its stdout. */
async function ok(as: 0 | 1000, argv: string[], opts?: Parameters<typeof client>[2]): Promise<string> {
  const r = await client(as, argv, opts);
  assert.equal(r.status, 0, `${argv.join(' ')} failed:\n${r.stderr.slice(-3000)}`);
  return r.stdout;
}

/** An OS tree nspawn accepts: static busybox, os-release, the usual mount points, a file to read. */
function makeTree(root: string): void {
  for (const d of ['bin', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'usr/lib', 'var']) fs.mkdirSync(path.join(root, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync(BUSYBOX, path.join(root, 'bin/busybox'));
  fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(root, 'bin', a));
  fs.writeFileSync(path.join(root, 'etc/hello'), HELLO);
  fs.writeFileSync(path.join(root, 'usr/lib/os-release'), 'ID=mgtest\nNAME=mgtest\nVERSION_ID=1\n');
  fs.symlinkSync('../usr/lib/os-release', path.join(root, 'etc/os-release'));
}

/**
 * Signed DDIs of TREE by the host's systemd-repart (Debian 12's 252), one per file system, signed
 * by a key whose certificate goes into CERTS. The minimum of test/mntfsd/images.ts's
 * repartImage(), copied because that one always images its own sample tree, which has no
 * programs to run.
 */
function repartImages(tree: string, dir: string, certs: string): typeof repart {
  const key = path.join(tmp, 'repart.key');
  const cert = path.join(certs, 'repart.crt');
  run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=repart']);
  const build = (format: 'squashfs' | 'ext4'): string => {
    const defs = path.join(tmp, `repart-${format}.d`);
    const out = path.join(dir, `repart-${format}.raw`);
    fs.mkdirSync(defs);
    const common = 'VerityMatchKey=root\n';
    fs.writeFileSync(path.join(defs, '10-root.conf'), `[Partition]\nType=root\nFormat=${format}\nCopyFiles=${tree}:/\nVerity=data\n${common}`);
    fs.writeFileSync(path.join(defs, '20-verity.conf'), `[Partition]\nType=root-verity\nVerity=hash\n${common}`);
    fs.writeFileSync(path.join(defs, '30-sig.conf'), `[Partition]\nType=root-verity-sig\nVerity=signature\n${common}`);
    run('systemd-repart', [`--definitions=${defs}`, '--empty=create', '--size=auto', '--dry-run=no', `--private-key=${key}`, `--certificate=${cert}`, out]);
    fs.chmodSync(out, 0o644);
    return out;
  };
  return { squashfs: build('squashfs'), ext4: build('ext4') };
}

interface Sockets {
  userdbd: string;
  mntfsd: string;
}

/**
 * Starts userdbd and an mntfsd that registers its mounts with it, as root, on sockets in tmp
 * named after TAG, each with its unit's CapabilityBoundingSet= (nspawn calls
 * AddControlGroupToUserNamespace, which needs the userdbd unit's CAP_CHOWN and CAP_FOWNER).
 */
async function startDaemons(tag: string): Promise<Sockets & { stop(): Promise<void> }> {
  const userdbd = path.join(tmp, `userdbd-${tag}.sock`);
  const mntfsd = path.join(tmp, `mntfsd-${tag}.sock`);
  // --allow-without-policy: this CI kernel cannot load the BPF-LSM policy.
  const u = await startDaemon(
    ['userdbd', '--listen', userdbd, '--state-dir', path.join(tmp, `state-${tag}`), '--bpf-pin-dir', `${PIN_DIR}-${tag}`, '--userdb-link', 'none', '--allow-without-policy'],
    userdbd,
    { service: 'mountgate-userdbd.service' },
  );
  const m = await startDaemon(['mntfsd', '--listen', mntfsd, '--userdbd', userdbd, '--verity-certs', images.certs], mntfsd, { service: 'mountgate-mntfsd.service' });
  return { userdbd, mntfsd, stop: async () => void (await Promise.all([m.stop(), u.stop()])) };
}

before(async () => {
  // scripts/setup builds the chroot: its absence is a broken setup, not a reason to skip.
  assert.ok(fs.existsSync(path.join(CHROOT, 'usr/bin/systemd-nspawn')), `no systemd 257 chroot at ${CHROOT}: run ./scripts/setup`);
  // ... and rebuilds it when scripts/build-chroot changed (the hash it records is of itself).
  const recipe = sha256(fs.readFileSync(path.join(REPO, 'scripts/build-chroot')));
  assert.equal(fs.readFileSync(path.join(CHROOT, '.mountgate-recipe'), 'utf8').trim(), recipe, `the chroot at ${CHROOT} is older than scripts/build-chroot: run ./scripts/setup`);
  assert.ok(fs.existsSync(BUSYBOX), `${BUSYBOX} missing: run ./scripts/setup`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-clients-'));
  fs.chmodSync(tmp, 0o755); // uid 1000 reaches the sockets
  const dir = path.join(tmp, 'images');
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o1777); // stand-in: nspawn's lock file beside the image
  const tree = path.join(tmp, 'tree');
  makeTree(tree);
  images = buildSignedImages(tree, dir);
  repart = repartImages(tree, dir, images.certs);

  machineId = path.join(tmp, 'machine-id');
  fs.writeFileSync(machineId, `${randomBytes(16).toString('hex')}\n`);
  // The udev stand-in runs as uid 1000: nspawn opens the listener's network namespace (through its pid) to
  // check that udev shares its own, which the caller may do only for its own processes.
  const udevDir = path.join(tmp, 'udev');
  fs.mkdirSync(udevDir);
  fs.chownSync(udevDir, 1000, 1000);
  udevSocket = path.join(udevDir, 'control');
  udev = spawn('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'perl', '-e', UDEV_LISTENER, udevSocket], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitFor(() => fs.existsSync(udevSocket), 'the udev stand-in', 10_000);

  ({ userdbd: userdbdSocket, mntfsd: mntfsdSocket } = await startDaemons('main'));
});

after(async () => {
  await stopDaemons();
  if (udev && udev.exitCode === null) {
    udev.kill();
    await exited(udev);
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  for (const tag of ['main', 'unit']) fs.rmSync(`${PIN_DIR}-${tag}`, { recursive: true, force: true });
});

/** The image paths as the clients see them (IMAGES is bound at /images). */
const inChroot = (p: string): string => `/images/${path.basename(p)}`;

/** Asserts nspawn's payload ran as uid 0 of a transient 64K range and read the image. */
function assertTransientRoot(out: string): void {
  const [uid, map, hello] = out.trim().split('\n');
  assert.equal(uid, '0', out);
  const [inside, outside, count] = map!.trim().split(/\s+/).map(Number);
  assert.equal(inside, 0, map);
  assert.equal(count, CONTAINER_SIZE, map);
  assert.ok(outside! >= CONTAINER_WINDOW.min && outside! + count! - 1 <= CONTAINER_WINDOW.max, `transient range expected, got ${map}`);
  assert.equal(`${hello}\n`, HELLO);
}

/** --register=no: machined is on D-Bus, which this host lacks (nspawn fails there after every
 * daemon call succeeded); --keep-unit: no scope from a user manager; --console=pipe: plain
 * output instead of a pty's CRLF. */
const NSPAWN = ['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--console=pipe'];
const PAYLOAD = ['/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; cat /etc/hello'];

test('systemd-nspawn --image= of a `mountgate build` image: CMD runs as uid 0 of a transient range', async () => {
  assertTransientRoot(await ok(1000, [...NSPAWN, `--image=${inChroot(images.trusted)}`, ...PAYLOAD]));
});

test('systemd-nspawn --image= of systemd-repart images (squashfs, ext4): CMD runs as uid 0 of a transient range', async () => {
  for (const img of Object.values(repart)) assertTransientRoot(await ok(1000, [...NSPAWN, `--image=${inChroot(img)}`, ...PAYLOAD]));
});

interface DissectMount {
  designator: string;
  node: string | null;
  verity: string | null;
  [field: string]: unknown;
}
interface DissectReport {
  mounts: DissectMount[];
  [field: string]: unknown;
}

test('systemd-dissect --json=short: what root computes without daemons, less what MountImage does not tell', async () => {
  for (const img of [images.trusted, repart.squashfs, repart.ext4]) {
    const ours = JSON.parse(await ok(1000, ['systemd-dissect', '--json=short', inChroot(img)])) as DissectReport;
    const reference = JSON.parse(await ok(0, ['systemd-dissect', '--json=short', inChroot(img)], { daemons: false })) as DissectReport;
    assert.ok(reference.mounts.some((m) => m.designator === 'root' && m.verity === 'signed'), JSON.stringify(reference));
    const expected: DissectReport = {
      ...reference,
      mounts: reference.mounts
        // MountImage replies with the partitions it mounted: the verity hash and signature
        // partitions were consumed by the daemon's verification, not handed out.
        .filter((m) => !/-verity(-sig)?$/.test(m.designator))
        // node: the client got mount fds, no block device of its own.
        // verity: MountImage's PartitionInfo has no verity field, so 257 says "no" although
        // mntfsd checked the signature (the same as against upstream's mountfsd).
        .map((m) => ({ ...m, node: null, verity: 'no' })),
    };
    assert.deepEqual(ours, expected, `${path.basename(img)}: through the daemons vs as root without them`);
  }
});

/** Every path under DIR as `systemd-dissect --list` prints it (directories with a slash). */
function listTree(dir: string, rel = ''): string[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const p = path.posix.join(rel, e.name);
    return e.isDirectory() ? [`${p}/`, ...listTree(dir, p)] : [p];
  });
}


test('systemd-dissect --list and --mtree show the image tree, owned by root, with its checksums', async () => {
  const tree = path.join(tmp, 'tree');
  const files = listTree(tree).sort();
  for (const img of [images.trusted, repart.squashfs]) {
    const list = (await ok(1000, ['systemd-dissect', '--list', inChroot(img)])).trim().split('\n');
    assert.deepEqual(list.sort(), files, `--list ${path.basename(img)}`);
    const mtree = (await ok(1000, ['systemd-dissect', '--mtree', inChroot(img)])).trim().split('\n');
    assert.deepEqual(mtree.map((l) => l.split(' ')[0]).sort(), ['./', ...files.map((f) => `./${f}`)].sort(), `--mtree ${path.basename(img)}`);
    for (const l of mtree) assert.match(l, / uid=0 gid=0( |$)/, l); // idmapped: the image's own owners
    assert.ok(mtree.includes(`./etc/hello type=file mode=0644 uid=0 gid=0 size=${HELLO.length} sha256sum=${sha256(HELLO)}`), mtree.join('\n'));
    const busybox = fs.readFileSync(BUSYBOX);
    assert.ok(mtree.includes(`./bin/busybox type=file mode=0755 uid=0 gid=0 size=${busybox.length} sha256sum=${sha256(busybox)}`), mtree.join('\n'));
  }
});

test('systemd-dissect --copy-from copies a file out of the image', async () => {
  for (const img of [images.trusted, repart.squashfs]) {
    const out = await ok(1000, ['sh', '-c', `systemd-dissect --copy-from ${inChroot(img)} /etc/hello /tmp/hello && cat /tmp/hello`]);
    assert.equal(out, HELLO, path.basename(img));
  }
});

test('an image signed by an untrusted key → KeyNotFound, surfaced by systemd-dissect and systemd-nspawn', async () => {
  const dissect = await client(1000, ['systemd-dissect', inChroot(images.untrusted)]);
  assert.equal(dissect.status, 1, dissect.stderr);
  assert.match(dissect.stderr, /MountImage\(\) varlink call: io\.systemd\.MountFileSystem\.KeyNotFound/);
  const nspawn = await client(1000, [...NSPAWN, `--image=${inChroot(images.untrusted)}`, '/bin/true']);
  assert.equal(nspawn.status, 1, nspawn.stderr);
  assert.match(nspawn.stderr, /io\.systemd\.MountFileSystem\.KeyNotFound/);
});

test('userdbctl user and getent passwd (nss-systemd) resolve the transient users of a namespace userdbd allocated', async () => {
  // A client of ours (uid 1000) allocates a range for a namespace it keeps alive meanwhile.
  const agent = await UserdbdAgent.start(1000, userdbdSocket);
  try {
    const ns = await agent.userns();
    const reply = await agent.call('io.systemd.NamespaceResource.AllocateUserRange', { name: 'clients257', size: CONTAINER_SIZE, userNamespaceFileDescriptor: 0 }, [ns.fd]);
    assert.deepEqual(reply, { parameters: { name: '1000-clients257' } });
    const maps = (await agent.req({ op: 'maps', fd: ns.fd })) as { uid: number[][] };
    const base = maps.uid[0]![1]!;
    const user = 'ns-1000-clients257-0';

    const record = await ok(1000, ['userdbctl', 'user', user]);
    for (const field of [`User name: ${user}`, `UID: ${base}`, 'Disposition: container', 'Service: io.systemd.NamespaceResource']) {
      assert.match(record, new RegExp(`^\\s*${field}$`, 'm'), record);
    }
    const last = await ok(1000, ['userdbctl', 'user', String(base + CONTAINER_SIZE - 1)]);
    assert.match(last, /^\s*User name: ns-1000-clients257-65535$/m, last);
    const [name, , uid] = (await ok(1000, ['getent', 'passwd', user])).trim().split(':');
    assert.deepEqual([name, Number(uid)], [user, base]);
  } finally {
    await agent.stop();
  }
});
