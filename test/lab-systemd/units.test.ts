// The units under systemd as PID 1 (runs in the kernel lab's systemd boot: test/lab-systemd/run).
// A Debian sid host with systemd 262 installs the packed tarball as a user would
// (`npm install -g`), copies the shipped units to /etc/systemd/system and enables both sockets;
// then, as uid 1000: socket activation answers AllocateUserRange and MountImage with every
// hardening directive of the units in effect, systemd-nspawn --image= starts a container, also
// from the user's own manager with the machine registered in machined, a SIGKILLed userdbd
// comes back by Restart= with its namespaces, mntfsd exits when idle if a drop-in says so, and
// the journal holds the daemons' JSON logs.
// Runs as root in the guest with sid's own node (this file is bundled by the launcher).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { FOREIGN_RANGE } from '../../src/id-ranges.js';
import { CONTAINER_SIZE, CONTAINER_WINDOW } from '../../src/userdbd/range-allocator.js';

/** This checkout, read-only through the lab's view of the host (test/lab-systemd/run). */
const CHECKOUT = path.join(process.env.LAB_HOST ?? '/run/lab/host', process.env.MOUNTGATE_LAB_CHECKOUT ?? '/nonexistent');
const PREFIX = '/usr'; // where the units' ExecStart= looks (Debian's npm defaults to /usr/local)
const PACKAGE = `${PREFIX}/lib/node_modules/mountgate`;
const USERDBD = 'mountgate-userdbd.service';
const MNTFSD = 'mountgate-mntfsd.service';
const SOCKETS = ['mountgate-userdbd.socket', 'mountgate-mntfsd.socket'];
const HOME = '/home/tester';
const FOREIGN_UID = FOREIGN_RANGE.start;
const IMAGES = `${HOME}/images`;
const IMAGE = `${IMAGES}/app.raw`;
const HELLO = 'hello from the image\n';
const APPLETS = ['sh', 'id', 'cat', 'ls', 'sleep', 'true'];
/** As uid 1000 with a clean environment, as a login would run it (no capabilities). */
const AS_USER = ['setpriv', '--reuid=1000', '--regid=1000', '--init-groups', '--inh-caps=-all', '--', 'env', '-i', 'PATH=/usr/bin:/bin', `HOME=${HOME}`];
const PAYLOAD = ['/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; cat /etc/hello'];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(argv: string[], timeout = 120_000, cwd?: string): Run {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** ARGV's stdout; fails the test with its stderr unless it exits 0. */
function ok(argv: string[], timeout?: number, cwd?: string): string {
  const r = run(argv, timeout, cwd);
  assert.equal(r.status, 0, `${argv.join(' ')} exited ${r.status}:\n${r.stderr.slice(-3000)}${r.stdout.slice(-1000)}`);
  return r.stdout;
}

const show = (unit: string, prop: string): string => ok(['systemctl', 'show', '-P', prop, unit]).trim();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => T | undefined | false, seconds = 60): Promise<T> {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) assert.fail(`timed out after ${seconds} s waiting for ${what}`);
    await sleep(250);
  }
}

interface Status {
  userdbd: { state: string; status?: { policy: { attached: boolean }; namespaces: { name: string; owner: number; userNamespaceInode: number; base: number }[] } };
  mntfsd: { state: string };
}
const status = (): Status => JSON.parse(ok(['mountgate', 'status', '--json'])) as Status;

/** Asserts the payload ran as uid 0 of a transient 64K range and read the image's file. */
function assertTransientRoot(out: string): void {
  const [uid, map, hello] = out.trim().split('\n');
  assert.equal(uid, '0', out);
  const [inside, outside, count] = map!.trim().split(/\s+/).map(Number);
  assert.deepEqual([inside, count], [0, CONTAINER_SIZE], map);
  assert.ok(outside! >= CONTAINER_WINDOW.min && outside! + count! - 1 <= CONTAINER_WINDOW.max, `transient range expected, got ${map}`);
  assert.equal(`${hello}\n`, HELLO);
}

/** The shell blocks of the README's "Install on a host", as a reader copies them. */
function readmeInstallBlocks(): string[] {
  const readme = fs.readFileSync(path.join(CHECKOUT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((part) => part.startsWith('Install on a host\n'));
  assert.ok(section, 'README.md has an "Install on a host" section');
  const blocks = [...section.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
  assert.equal(blocks.length, 2, 'the section has two shell blocks: install, then first container');
  return blocks;
}

/** The unit's daemon's own output in the journal (not PID 1's lines about it). */
function journal(unit: string): string[] {
  ok(['journalctl', '--sync']);
  return ok(['journalctl', `_SYSTEMD_UNIT=${unit}`, '-o', 'cat', '--no-pager']).split('\n').filter((l) => l.trim() !== '');
}

before(async () => {
  // The lab starts this after multi-user.target (the boot's last job is this test itself, so
  // `systemctl is-system-running --wait` would wait for it).
  assert.equal(show('multi-user.target', 'ActiveState'), 'active');
  const failed = ok(['systemctl', '--failed', '--no-legend', '--plain']).trim();
  if (failed) console.log(`# failed units at boot: ${failed.replace(/\n/g, '; ')}`);

  // The package as a host gets it: the README's install block, run as written, in a writable
  // view of this checkout (npm pack writes its tarball there; the guest has no network).
  fs.mkdirSync('/root/overlay', { recursive: true });
  ok(['mount', '-t', 'tmpfs', 'tmpfs', '/root/overlay']);
  for (const d of ['upper', 'work', 'checkout']) fs.mkdirSync(`/root/overlay/${d}`);
  ok(['mount', '-t', 'overlay', '-o', `lowerdir=${CHECKOUT},upperdir=/root/overlay/upper,workdir=/root/overlay/work`, 'overlay', '/root/overlay/checkout']);
  const [install] = readmeInstallBlocks();
  ok(['bash', '-euxo', 'pipefail', '-c', install!], 600_000, '/root/overlay/checkout');
  assert.equal(fs.realpathSync(`${PREFIX}/bin/mountgate`), `${PACKAGE}/dist/bundle/main.mjs`);
  for (const f of [...SOCKETS, USERDBD, MNTFSD]) assert.ok(fs.existsSync(`/etc/systemd/system/${f}`), f);
  for (const sock of SOCKETS) assert.equal(show(sock, 'UnitFileState'), 'enabled', sock);

  // A signing key whose certificate the host trusts, and a signed image of a busybox tree that
  // uid 1000 owns (nspawn puts its lock file beside the image).
  fs.mkdirSync('/root/keys', { mode: 0o700, recursive: true });
  ok(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', '/root/keys/lab.key', '-out', '/root/keys/lab.crt', '-days', '30', '-subj', '/CN=mountgate-lab']);
  fs.mkdirSync('/etc/verity.d', { recursive: true });
  fs.copyFileSync('/root/keys/lab.crt', '/etc/verity.d/lab.crt');
  const tree = '/root/tree';
  for (const d of ['bin', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'usr/lib', 'var']) fs.mkdirSync(path.join(tree, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync('/bin/busybox', path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(tree, 'bin', a));
  fs.writeFileSync(path.join(tree, 'etc/hello'), HELLO);
  fs.writeFileSync(path.join(tree, 'usr/lib/os-release'), 'ID=mglab\nNAME=mglab\nVERSION_ID=1\n');
  fs.symlinkSync('../usr/lib/os-release', path.join(tree, 'etc/os-release'));
  fs.mkdirSync(IMAGES, { recursive: true });
  ok(['mountgate', 'build', tree, IMAGE, '--key', '/root/keys/lab.key', '--cert', '/root/keys/lab.crt']);
  fs.chownSync(IMAGES, 1000, 1000);
  fs.chmodSync(IMAGE, 0o644);
});

// MOUNTGATE_LAB_DIAG=1: the daemons' journal and the policy status after the run, to debug a failure.
after(() => {
  if (process.env.MOUNTGATE_LAB_DIAG !== '1') return;
  for (const u of [USERDBD, MNTFSD]) {
    const j = run(['journalctl', '-u', u, '--no-pager', '-o', 'short-monotonic']);
    console.error(`--- ${u}\n${j.stdout.split('\n').slice(-25).join('\n')}`);
  }
  console.error(run(['systemctl', '--failed', '--no-pager']).stdout);
  console.error(run(['mountgate', 'status']).stdout);
});

test('sockets enabled and listening at the systemd paths; no daemon runs before the first call', () => {
  for (const s of SOCKETS) assert.equal(show(s, 'ActiveState'), 'active', s);
  assert.ok(fs.statSync('/run/systemd/io.systemd.NamespaceResource').isSocket());
  assert.ok(fs.statSync('/run/systemd/io.systemd.MountFileSystem').isSocket());
  assert.equal(fs.readlinkSync('/run/systemd/userdb/io.systemd.NamespaceResource'), '/run/systemd/io.systemd.NamespaceResource');
  for (const u of [USERDBD, MNTFSD]) assert.equal(show(u, 'ActiveState'), 'inactive', u);
});

test('README "Install on a host", second block as written: trust a key, build a signed image, run it as alice', () => {
  const [, first] = readmeInstallBlocks();
  const [asRoot, asAlice] = first!.split(/^# as alice:$/m);
  assert.ok(asRoot && asAlice, 'the block says which lines run "as alice"');
  ok(['useradd', '-m', '-s', '/bin/sh', 'alice']);
  // What the reader brings: an OS tree in rootfs/ (here busybox's).
  const work = '/root/readme';
  const tree = path.join(work, 'rootfs');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'usr/lib', 'var']) fs.mkdirSync(path.join(tree, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync('/bin/busybox', path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(tree, 'bin', a));
  ok(['bash', '-euxo', 'pipefail', '-c', asRoot], 300_000, work);
  const out = ok(['setpriv', '--reuid=alice', '--regid=alice', '--init-groups', '--inh-caps=-all', '--', 'env', '-i', 'PATH=/usr/bin:/bin', 'HOME=/home/alice',
    'bash', '-euo', 'pipefail', '-c', `cd && ${asAlice.trim()}`], 300_000);
  const [uid, map] = out.trim().split('\n');
  assert.equal(uid, '0', out);
  const [inside, outside, count] = map!.trim().split(/\s+/).map(Number);
  assert.deepEqual([inside, count], [0, CONTAINER_SIZE], map);
  assert.ok(outside! >= CONTAINER_WINDOW.min && outside! <= CONTAINER_WINDOW.max, map);
});

test('uid 1000: `mountgate run` gets a transient range (AllocateUserRange) and the signed image (MountImage) from the socket-activated daemons', () => {
  assertTransientRoot(ok([...AS_USER, 'mountgate', 'run', IMAGE, '--', ...PAYLOAD]));
  for (const u of [USERDBD, MNTFSD]) {
    assert.equal(show(u, 'ActiveState'), 'active', u);
    assert.match(show(u, 'TriggeredBy'), /\.socket/, u);
  }
  const s = status();
  assert.equal(s.userdbd.status?.policy.attached, true, 'the BPF-LSM policy is attached');
});

/** CAP_* numbers, in linux/capability.h order. */
const CAPS: Record<string, number> = Object.fromEntries(
  [
    'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP', 'LINUX_IMMUTABLE',
    'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE',
    'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE', 'AUDIT_WRITE',
    'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF',
    'CHECKPOINT_RESTORE',
  ].map((name, bit) => [`CAP_${name}`, bit]),
);

test('the shipped units run unchanged, and their hardening is in effect in the running daemons', () => {
  for (const u of [USERDBD, MNTFSD]) {
    const shipped = fs.readFileSync(`${PACKAGE}/units/${u}`, 'utf8');
    assert.equal(show(u, 'DropInPaths'), '', `${u}: no drop-in`);
    assert.equal(fs.readFileSync(show(u, 'FragmentPath'), 'utf8'), shipped, `${u}: the shipped file`);
    const pid = Number(show(u, 'MainPID'));
    assert.ok(pid > 0, u);
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (k: string): string => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(st)![1]!;
    const names = /^CapabilityBoundingSet=(.*)$/m.exec(shipped)![1]!.trim().split(/\s+/);
    const mask = names.reduce((m, n) => m | (1n << BigInt(CAPS[n]!)), 0n);
    assert.equal(BigInt(`0x${field('CapBnd')}`), mask, `${u}: bounding set ${names.join(' ')}`);
    assert.equal(field('NoNewPrivs'), '1', `${u}: NoNewPrivileges=`);
    assert.equal(field('Seccomp'), '2', `${u}: SystemCallFilter=`);
    // PrivateNetwork=, ProtectSystem= etc.: namespaces of its own.
    // userdbd stays in the host's network namespace: AddNetworkToUserNamespace creates host-side links.
    for (const ns of u === USERDBD ? ['mnt', 'uts'] : ['net', 'mnt', 'uts']) assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/${ns}`), fs.readlinkSync(`/proc/1/ns/${ns}`), `${u}: ${ns} namespace`);
    const mounts = fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n');
    const root = mounts.find((l) => l.split(' ')[4] === '/')!;
    assert.match(root.split(' ')[5]!, /(^|,)ro(,|$)/, `${u}: ProtectSystem=strict makes / read-only`);
  }
});

/**
 * uid 1000's own manager and runtime directory, as a login makes them (nspawn 262 keeps its
 * state in $XDG_RUNTIME_DIR). Not in before(): the manager's start looks users up through
 * userdb, which would activate userdbd before the first test has checked that nothing runs.
 */
async function userManager(): Promise<void> {
  // Stand-in, as in upstream's own unprivileged nspawn tests (TEST-13-NSPAWN): polkit grants
  // org.freedesktop.machine1.register-machine to active local sessions only, and the test user
  // has a lingering manager, not a session on a console.
  fs.mkdirSync('/etc/polkit-1/rules.d', { recursive: true });
  fs.writeFileSync(
    '/etc/polkit-1/rules.d/50-mglab-register-machine.rules',
    'polkit.addRule(function(action, subject) {\n  if (action.id == "org.freedesktop.machine1.register-machine" && subject.user == "tester") return polkit.Result.YES;\n});\n',
  );
  ok(['loginctl', 'enable-linger', 'tester']);
  await waitFor('tester\'s user manager', () => run(['systemctl', 'is-active', 'user@1000.service']).stdout.trim() === 'active', 120);
}

/*
 * --register=no --keep-unit: here nspawn runs in a system service of uid 1000's, with no user
 * manager to make its scope or session for polkit to judge; the next test runs it the way a
 * logged-in user does, registered.
 */
const NSPAWN = ['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--console=pipe', '--timezone=off'];

test('uid 1000: systemd-nspawn --image= starts a container from the signed image through the units (range, mounts and cgroup delegation)', async () => {
  await userManager();
  // A service of its own as uid 1000 with its cgroup delegated, as a user manager's would be.
  const out = ok([
    'systemd-run', '--uid=tester', '--gid=tester', '--property=Delegate=yes', '--wait', '--pipe', '--quiet', '--collect',
    `--setenv=HOME=${HOME}`, '--setenv=XDG_RUNTIME_DIR=/run/user/1000', '--',
    ...NSPAWN, `--image=${IMAGE}`, ...PAYLOAD,
  ], 300_000);
  assertTransientRoot(out);
  // nspawn handed its delegated cgroup to the range: userdbd's unit has the capabilities for it.
  const calls = journal(USERDBD).map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(calls.some((r) => r.method === 'io.systemd.NamespaceResource.AddControlGroupToUserNamespace' && r.uid === 1000 && r.error === undefined), 'AddControlGroupToUserNamespace from uid 1000 succeeded');
});

test('uid 1000: systemd-nspawn --image= from the user\'s own manager, with the machine registered in machined', async () => {
  await userManager();
  // No --register=no, no --keep-unit: nspawn makes its scope in the user's manager and
  // registers the machine with the system's machined.
  const nspawn = spawn('systemd-run', [
    '--user', '--machine=tester@', '--wait', '--pipe', '--quiet', '--collect', '--',
    'systemd-nspawn', '-q', '--console=pipe', '--timezone=off', '--machine=mglab', `--image=${IMAGE}`,
    '/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; cat /etc/hello; sleep 20',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  nspawn.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  nspawn.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = new Promise<number | null>((resolve) => nspawn.once('exit', (code) => resolve(code)));
  try {
    const machine = await waitFor('the machine registered', () => {
      const r = run(['machinectl', 'show', 'mglab', '--property=Class', '--property=Leader', '--property=State']);
      return r.status === 0 ? r.stdout : undefined;
    }, 180);
    assert.match(machine, /^Class=container$/m, machine);
    const leader = Number(/^Leader=(\d+)$/m.exec(machine)?.[1]);
    assert.ok(leader > 0, machine);
    // The registered leader is the container's init, in a transient range userdbd handed out.
    const map = fs.readFileSync(`/proc/${leader}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
    assert.deepEqual([map[0], map[2]], [0, CONTAINER_SIZE], String(map));
    assert.ok(map[1]! >= CONTAINER_WINDOW.min && map[1]! <= CONTAINER_WINDOW.max, String(map));
    const status = ok(['machinectl', 'status', 'mglab', '--no-pager']);
    assert.match(status, /UID: 1000\b/, status);
  } finally {
    const code = await Promise.race([exit, sleep(60_000).then(() => 'timeout' as const)]);
    if (code === 'timeout') nspawn.kill('SIGKILL');
    assert.equal(code, 0, `nspawn: ${stderr.slice(-3000)}`);
  }
  assertTransientRoot(stdout);
  await waitFor('the machine gone', () => run(['machinectl', 'show', 'mglab']).status !== 0, 60);
});

test('uid 1000: systemd-nspawn --directory= of a foreign-owned tree through the units (MountDirectory from the caller\'s mount namespace)', async () => {
  await userManager();
  // A tree at rest in the foreign range, below a directory of the caller's, as
  // `systemd-dissect --shift DIR foreign` leaves it.
  // On a tmpfs of uid 1000's: the lab's root is overlayfs over 9p, which refuses idmapped
  // mounts (mount_setattr EINVAL); a real home is on ext4, btrfs or xfs, which take them.
  const dir = `${HOME}/machines/fdir`;
  fs.mkdirSync(`${HOME}/machines`, { recursive: true });
  ok(['mount', '-t', 'tmpfs', '-o', 'uid=1000,gid=1000,mode=0755', 'tmpfs', `${HOME}/machines`]);
  fs.cpSync('/root/tree', dir, { recursive: true, verbatimSymlinks: true });
  ok(['chown', '-hR', `${FOREIGN_UID}:${FOREIGN_UID}`, dir]);
  const out = ok([
    'systemd-run', '--user', '--machine=tester@', '--wait', '--pipe', '--quiet', '--collect', '--',
    'systemd-nspawn', '-q', '--console=pipe', '--timezone=off', '--register=no', `--directory=${dir}`,
    '/bin/sh', '-c', 'id -u; cat /etc/hello; echo w >/written',
  ], 300_000);
  assert.equal(out, `0\n${HELLO}`);
  const st = fs.statSync(`${dir}/written`);
  assert.deepEqual([st.uid, st.gid], [FOREIGN_UID, FOREIGN_UID], 'written as the container\'s root, stored foreign-owned');
});

test('systemctl kill -s KILL mountgate-userdbd.service: Restart= brings it back, still holding the namespace; its death then frees the range', async () => {
  ok(['systemd-run', '--uid=tester', '--gid=tester', '--unit=mglab-holder', '--collect', '--', 'mountgate', 'run', IMAGE, '--', '/bin/sleep', '600']);
  const held = await waitFor('the holder\'s range', () => status().userdbd.status?.namespaces.find((n) => n.owner === 1000), 120);
  const pid = Number(show(USERDBD, 'MainPID'));
  const restarts = Number(show(USERDBD, 'NRestarts'));
  ok(['systemctl', 'kill', '-s', 'KILL', USERDBD]);
  await waitFor('userdbd restarted', () => {
    const now = Number(show(USERDBD, 'MainPID'));
    return now !== 0 && now !== pid && show(USERDBD, 'ActiveState') === 'active';
  });
  assert.equal(Number(show(USERDBD, 'NRestarts')), restarts + 1);
  const after = status().userdbd.status!;
  assert.deepEqual(after.namespaces.find((n) => n.userNamespaceInode === held.userNamespaceInode), held, 'the namespace is still registered, same range');
  assert.equal(after.policy.attached, true);
  ok(['systemctl', 'kill', '-s', 'KILL', 'mglab-holder.service']);
  await waitFor('the range freed', () => !status().userdbd.status?.namespaces.some((n) => n.userNamespaceInode === held.userNamespaceInode), 60);
});

test('idle exit: with a drop-in adding --idle-exit, mntfsd exits cleanly when idle and the socket starts it again', async () => {
  const dir = `/etc/systemd/system/${MNTFSD}.d`;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(`${dir}/idle-exit.conf`, `[Service]\nExecStart=\nExecStart=${PREFIX}/bin/mountgate mntfsd --idle-exit 3\n`);
  ok(['systemctl', 'daemon-reload']);
  ok(['systemctl', 'stop', MNTFSD]);
  try {
    for (let round = 0; round < 2; round++) {
      assertTransientRoot(ok([...AS_USER, 'mountgate', 'run', IMAGE, '--', ...PAYLOAD]));
      await waitFor('mntfsd idle exit', () => show(MNTFSD, 'ActiveState') === 'inactive', 60);
      assert.equal(show(MNTFSD, 'Result'), 'success');
      assert.equal(show('mountgate-mntfsd.socket', 'ActiveState'), 'active');
    }
    assert.ok(journal(MNTFSD).some((l) => l.includes('"idle, exiting"')), 'mntfsd logged its idle exit');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    ok(['systemctl', 'daemon-reload']);
  }
});

test('journalctl: the daemons log one JSON record per line, uid 1000\'s calls among them', () => {
  const expected = [
    [USERDBD, 'ready', 'io.systemd.NamespaceResource.AllocateUserRange'],
    [MNTFSD, 'listening', 'io.systemd.MountFileSystem.MountImage'],
  ] as const;
  for (const [unit, started, method] of expected) {
    const lines = journal(unit);
    assert.ok(lines.length > 0, unit);
    const records = lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return assert.fail(`${unit}: not a JSON record: ${l}`);
      }
    });
    for (const r of records) for (const k of ['level', 'time', 'pid', 'msg']) assert.ok(k in r, `${unit}: ${k} missing in ${JSON.stringify(r)}`);
    assert.ok(records.some((r) => r.msg === started), `${unit}: ${started}`);
    assert.ok(records.some((r) => r.msg === 'call' && r.method === method && r.uid === 1000 && r.error === undefined), `${unit}: ${method} from uid 1000`);
  }
});
