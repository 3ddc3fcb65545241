// What the systemd client tests share (clients-257.test.ts, clients-262.test.ts): systemd's own
// clients, from a Debian chroot that scripts/build-chroot makes per suite, run as uid 1000
// against mountgate's daemons. The daemons run on the host as root and are bound at the systemd
// socket paths inside the clients' mount namespace (enter.sh).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CONTAINER_SIZE, CONTAINER_WINDOW } from '../../src/userdbd/range-allocator.js';
import { startDaemon, stopDaemons } from '../support/daemons.js';
import { buildSignedImages, run, type SignedImages } from '../support/images.js';
import { exited, REPO, runCollecting, type UserRun } from '../support/processes.js';
import { waitFor } from '../support/wait.js';

export type Suite = 'trixie' | 'sid';
const ENTER = path.join(import.meta.dirname, 'enter.sh');
export const BUSYBOX = '/bin/busybox'; // Debian package busybox-static (scripts/setup)
const APPLETS = ['sh', 'id', 'cat', 'ls', 'sleep', 'true', 'echo', 'touch', 'stat'];
export const HELLO = 'hello from the image\n';
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
export const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/*
 * Stand-ins for what a booted systemd host provides and this CI VM (booted without systemd,
 * hybrid cgroups) does not. Each is one the clients fail without (tried):
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
 * - /run/user/1000 and XDG_RUNTIME_DIR, as logind makes them at login (enter.sh). nspawn 262:
 *   "Failed to create runtime directory: No such device or address".
 * Everything else is the daemons' and the clients' own.
 */

export interface Sockets {
  userdbd: string;
  mntfsd: string;
}

export interface ClientOptions {
  /** false: no daemon at the systemd paths (the reference a root client computes by itself). */
  daemons?: boolean;
  sockets?: Sockets;
}

/** The directory every harness of this process works in, and its images. */
export interface ClientHarness {
  suite: Suite;
  chroot: string;
  tmp: string;
  /** Seen as /images inside the chroot; uid 1000 may write there. */
  imageDir: string;
  /** The OS tree the images carry (busybox, os-release, /etc/hello). */
  tree: string;
  images: SignedImages;
  /** systemd-repart images of the tree, by file system. */
  repart: Record<'squashfs' | 'ext4', string>;
  sockets: Sockets;
  /** Runs ARGV in the chroot as uid AS with our daemons (or none) at the systemd paths. */
  client(as: 0 | 1000, argv: string[], opts?: ClientOptions): Promise<UserRun>;
  /** client(), asserting exit 0; returns stdout. */
  ok(as: 0 | 1000, argv: string[], opts?: ClientOptions): Promise<string>;
  /** Another pair of daemons on sockets named after TAG. */
  startDaemons(tag: string): Promise<Sockets & { stop(): Promise<void> }>;
  close(): Promise<void>;
}

/** The chroot of SUITE, as scripts/build-chroot makes it. */
export function chrootOf(suite: Suite): string {
  return suite === 'trixie' ? (process.env.MOUNTGATE_CHROOT ?? '/var/tmp/mountgate-chroots/trixie') : '/var/tmp/mountgate-chroots/sid';
}

/** An OS tree nspawn accepts: static busybox, os-release, the usual mount points, a file to read. */
export function makeTree(root: string): void {
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
 * by a key whose certificate goes into CERTS. The minimum of test/support/images.ts's
 * repartImage(), which always images its own sample tree, one without programs to run.
 */
function repartImages(tmp: string, tree: string, dir: string, certs: string): ClientHarness['repart'] {
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

/** Checks the chroot is there and as scripts/build-chroot last described it: a broken setup
 * fails, it never skips. */
function checkChroot(suite: Suite, chroot: string): void {
  assert.ok(fs.existsSync(path.join(chroot, 'usr/bin/systemd-nspawn')), `no systemd chroot (${suite}) at ${chroot}: run ./scripts/setup`);
  // build-chroot records the sha256 of itself and the suite.
  const recipe = sha256(Buffer.concat([fs.readFileSync(path.join(REPO, 'scripts/build-chroot')), Buffer.from(`${suite}\n`)]));
  assert.equal(fs.readFileSync(path.join(chroot, '.mountgate-recipe'), 'utf8').trim(), recipe, `the chroot at ${chroot} is older than scripts/build-chroot: run ./scripts/setup`);
  assert.ok(fs.existsSync(BUSYBOX), `${BUSYBOX} missing: run ./scripts/setup`);
}

/** Copies PROGRAMS of the chroot, and the libraries ldd says they load, into TREE at the same
 * paths: tools for a payload inside the container. */
function addPrograms(chroot: string, tree: string, programs: readonly string[]): void {
  const files = new Set(programs);
  for (const line of run('chroot', [chroot, 'ldd', ...programs]).split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) files.add(m[1]!);
  }
  for (const f of files) {
    const to = path.join(tree, f);
    fs.mkdirSync(path.dirname(to), { recursive: true, mode: 0o755 });
    fs.copyFileSync(path.join(chroot, f), to); // symlinks in the chroot are relative: followed inside it
    fs.chmodSync(to, 0o755);
  }
}

/** Builds the images, starts the udev stand-in and a pair of daemons (userdbd without the
 * policy this kernel cannot load, and an mntfsd registering with it). PROGRAMS of the chroot
 * go into the image tree too (with their libraries). */
export async function startClientHarness(suite: Suite, programs: readonly string[] = []): Promise<ClientHarness> {
  const chroot = chrootOf(suite);
  checkChroot(suite, chroot);
  const pinDir = `/sys/fs/bpf/mountgate-test-clients-${suite}-${process.pid}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `mountgate-clients-${suite}-`));
  fs.chmodSync(tmp, 0o755); // uid 1000 reaches the sockets
  const imageDir = path.join(tmp, 'images');
  fs.mkdirSync(imageDir);
  fs.chmodSync(imageDir, 0o1777); // stand-in: nspawn's lock file beside the image
  const tree = path.join(tmp, 'tree');
  makeTree(tree);
  if (programs.length > 0) addPrograms(chroot, tree, programs);
  const images = buildSignedImages(tree, imageDir);
  const repart = repartImages(tmp, tree, imageDir, images.certs);

  const machineId = path.join(tmp, 'machine-id');
  fs.writeFileSync(machineId, `${randomBytes(16).toString('hex')}\n`);
  // The udev stand-in runs as uid 1000: nspawn opens the listener's network namespace (through
  // its pid) to check that udev shares its own, which the caller may do only for its own processes.
  const udevDir = path.join(tmp, 'udev');
  fs.mkdirSync(udevDir);
  fs.chownSync(udevDir, 1000, 1000);
  const udevSocket = path.join(udevDir, 'control');
  const udev: ChildProcess = spawn('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'perl', '-e', UDEV_LISTENER, udevSocket], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitFor(() => fs.existsSync(udevSocket), 'the udev stand-in', 10_000);

  const tags: string[] = [];
  /**
   * userdbd and an mntfsd that registers its mounts with it, as root, on sockets named after
   * TAG, each with its unit's CapabilityBoundingSet= (nspawn calls AddControlGroupToUserNamespace,
   * which needs the userdbd unit's CAP_CHOWN and CAP_FOWNER).
   */
  const startDaemons = async (tag: string): Promise<Sockets & { stop(): Promise<void> }> => {
    tags.push(tag);
    const userdbd = path.join(tmp, `userdbd-${tag}.sock`);
    const mntfsd = path.join(tmp, `mntfsd-${tag}.sock`);
    // --allow-without-policy: this CI kernel cannot load the BPF-LSM policy.
    const u = await startDaemon(
      ['userdbd', '--listen', userdbd, '--state-dir', path.join(tmp, `state-${tag}`), '--bpf-pin-dir', `${pinDir}-${tag}`, '--userdb-link', 'none', '--allow-without-policy'],
      userdbd,
      { service: 'mountgate-userdbd.service' },
    );
    const m = await startDaemon(['mntfsd', '--listen', mntfsd, '--userdbd', userdbd, '--verity-certs', images.certs], mntfsd, { service: 'mountgate-mntfsd.service' });
    return { userdbd, mntfsd, stop: async () => void (await Promise.all([m.stop(), u.stop()])) };
  };
  const main = await startDaemons('main');
  let cgroups = 0;
  const client = (as: 0 | 1000, argv: string[], opts: ClientOptions = {}): Promise<UserRun> => {
    const daemons = opts.daemons ?? true;
    const sockets = opts.sockets ?? main;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      CHROOT: chroot,
      USERDBD_SOCKET: daemons ? sockets.userdbd : '',
      MNTFSD_SOCKET: daemons ? sockets.mntfsd : '',
      IMAGES: imageDir,
      MACHINE_ID: machineId,
      UDEV_SOCKET: udevSocket,
      CGROUP: `mountgate-clients-${process.pid}-${cgroups++}`,
    };
    return runCollecting([ENTER, String(as), '--', ...argv], { env });
  };
  const ok = async (as: 0 | 1000, argv: string[], opts?: ClientOptions): Promise<string> => {
    const r = await client(as, argv, opts);
    assert.equal(r.status, 0, `${argv.join(' ')} failed:\n${r.stderr.slice(-3000)}`);
    return r.stdout;
  };
  const close = async (): Promise<void> => {
    await stopDaemons();
    if (udev.exitCode === null) {
      udev.kill();
      await exited(udev);
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    for (const tag of tags) fs.rmSync(`${pinDir}-${tag}`, { recursive: true, force: true });
  };
  return { suite, chroot, tmp, imageDir, tree, images, repart, sockets: { userdbd: main.userdbd, mntfsd: main.mntfsd }, client, ok, startDaemons, close };
}

/** The image paths as the clients see them (the image directory is bound at /images). */
export const inChroot = (p: string): string => `/images/${path.basename(p)}`;

/** Asserts nspawn's payload (PAYLOAD) ran as uid 0 of a transient 64K range and read the image. */
export function assertTransientRoot(out: string): void {
  const [uid, map, hello] = out.trim().split('\n');
  assert.equal(uid, '0', out);
  const [inside, outside, count] = map!.trim().split(/\s+/).map(Number);
  assert.equal(inside, 0, map);
  assert.equal(count, CONTAINER_SIZE, map);
  assert.ok(outside! >= CONTAINER_WINDOW.min && outside! + count! - 1 <= CONTAINER_WINDOW.max, `transient range expected, got ${map}`);
  assert.equal(`${hello}\n`, HELLO);
}

/** What nspawn's payload prints for assertTransientRoot(). */
export const PAYLOAD = ['/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; cat /etc/hello'];

export interface DissectMount {
  designator: string;
  node: string | null;
  verity: string | null;
  [field: string]: unknown;
}
export interface DissectReport {
  mounts: DissectMount[];
  [field: string]: unknown;
}

/** Every path under DIR as `systemd-dissect --list` prints it (directories with a slash). */
export function listTree(dir: string, rel = ''): string[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const p = path.posix.join(rel, e.name);
    return e.isDirectory() ? [`${p}/`, ...listTree(dir, p)] : [p];
  });
}
