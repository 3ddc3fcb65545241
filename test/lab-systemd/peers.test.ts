// mountgate beside systemd 262's own systemd-nsresourced and systemd-mountfsd, in one
// boot of the kernel lab with systemd as PID 1 (test/lab-systemd/run). Both run socket-activated
// on sockets of their own (peers-lab.ts); one uid-1000 client (peers-agent.ts) calls both.
//   1. Security: the same attacks from a namespace each side allocated, at an ext4 file system
//      host root mounted from a loop device; per attack, refused or allowed and what stays on
//      the disk after the namespace died. Asserted for mountgate (nothing transient-owned stays),
//      recorded for systemd.
//   2. Error parity: the same bad calls against both; both replies in a table, mountgate's
//      asserted.
//   3. Benchmarks (bench/peers.ts), printed with ratios.
// Authorization on systemd's side: polkit's shipped defaults, no rule added. uid 1000 has no
// login session here; io.systemd.namespace-resource.allocate-user-namespace and
// io.systemd.mount-file-system.mount-image-privately are allow_any=yes, so AllocateUserRange and
// MountImage into an allocated namespace are granted; the *-untrusted-* actions are auth_admin,
// which without an agent is a refusal, as on a host where nobody answers a prompt.
// Runs as root in the guest with sid's own node (bundled by the launcher).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { isTransient } from '../../src/id-ranges.js';
import { benchPeers } from '../../bench/peers.js';
import type { FdSpec, CallResult } from './peers-agent.js';
import { Agent, MOUNTGATE, MOUNTGATE_SIDE, SIDES, SYSTEMD_SIDE, USER, hostTool, hostToolSh, installUnits, nsRoot, ok, removeUnits, run, show, table, type Side } from './peers-lab.js';

const WORK = '/var/tmp/peers'; // 0755 path: the namespaces must reach the disk for the attacks to mean anything
const KEYS = '/root/peers-keys';
const IMAGES = `${USER.home}/peers-images`;
const SMALL = `${IMAGES}/small.raw`;
const UNTRUSTED = `${IMAGES}/untrusted.raw`;
const LARGE = `${IMAGES}/large.raw`;
const LARGE_MIB = 500; // payload; with erofs and the verity tree the image is ~512 MiB
const SETFACL = hostToolSh('/usr/bin/setfacl');

let agent: Agent;
let foreign: ChildProcess;
let foreignFd: number;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A busybox tree signed into a DDI with `mountgate build` (the same image for both sides). */
function buildImage(out: string, key: string, extra?: (tree: string) => void): void {
  const tree = fs.mkdtempSync(path.join(WORK, 'tree-'));
  for (const d of ['bin', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'usr/lib', 'var']) fs.mkdirSync(path.join(tree, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync('/bin/busybox', path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  fs.writeFileSync(path.join(tree, 'etc/hello'), 'hello\n');
  fs.writeFileSync(path.join(tree, 'usr/lib/os-release'), 'ID=peers\nNAME=peers\nVERSION_ID=1\n');
  extra?.(tree);
  try {
    ok([...MOUNTGATE, 'build', tree, out, '--key', `${KEYS}/${key}.key`, '--cert', `${KEYS}/${key}.crt`], 900_000);
  } finally {
    fs.rmSync(tree, { recursive: true, force: true });
  }
  fs.chownSync(out, USER.uid, USER.gid);
  fs.chmodSync(out, 0o644);
}

before(async () => {
  assert.equal(show('multi-user.target', 'ActiveState'), 'active');
  fs.mkdirSync(WORK, { recursive: true, mode: 0o755 });
  fs.chmodSync(WORK, 0o755);
  fs.mkdirSync(KEYS, { recursive: true, mode: 0o700 });
  for (const k of ['trusted', 'untrusted']) {
    ok(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${KEYS}/${k}.key`, '-out', `${KEYS}/${k}.crt`, '-days', '30', '-subj', `/CN=peers-${k}`]);
  }
  // Both verify signatures against /etc/verity.d (systemd-mountfsd in userspace, as its
  // DISSECT_IMAGE_ALLOW_USERSPACE_VERITY allows, when the kernel keyring does not hold the key).
  fs.mkdirSync('/etc/verity.d', { recursive: true });
  fs.copyFileSync(`${KEYS}/trusted.crt`, '/etc/verity.d/peers.crt');
  fs.mkdirSync(IMAGES, { recursive: true });
  fs.chownSync(IMAGES, USER.uid, USER.gid);
  buildImage(SMALL, 'trusted');
  buildImage(UNTRUSTED, 'untrusted');
  installUnits();
  // A user namespace uid 1000 does not own (root's), handed to the agent as its fd 3.
  foreign = spawn('unshare', ['--user', 'sleep', 'infinity'], { stdio: 'ignore' });
  const self = fs.readlinkSync('/proc/self/ns/user');
  for (let i = 0; fs.readlinkSync(`/proc/${foreign.pid}/ns/user`) === self; i++) {
    assert.ok(i < 2000, 'unshare --user');
    await sleep(5);
  }
  foreignFd = fs.openSync(`/proc/${foreign.pid}/ns/user`, 'r');
  agent = Agent.start([foreignFd]);
});

after(async () => {
  await agent?.close();
  foreign?.kill('SIGKILL');
  if (process.env.MOUNTGATE_LAB_DIAG === '1') {
    for (const s of SIDES) for (const u of [s.nsService, s.mntService]) console.error(`--- ${u}\n${run(['journalctl', '-u', u, '--no-pager', '-o', 'short-monotonic']).stdout.split('\n').slice(-30).join('\n')}`);
  }
  removeUnits();
});

// ---------------------------------------------------------------------------------------------
// 1. Security side by side

interface Scratch {
  dir: string;
  host: string;
  victim: string;
  /** Files owned by the namespace's root (made by host root), one per attack on an owned file. */
  owned: Record<'acl' | 'cap' | 'chown', string>;
  lower: string;
  upper: string;
  work: string;
  merged: string;
}

/** An ext4 file system on a loop device, mounted by host root with ACLs, outliving every namespace. */
function ext4Disk(): string {
  const img = path.join(WORK, 'disk.img');
  const dir = path.join(WORK, 'disk');
  fs.mkdirSync(dir, { recursive: true });
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 64 << 20);
  ok([...hostTool('/usr/sbin/mke2fs'), '-q', '-F', '-t', 'ext4', img]);
  ok(['mount', '-o', 'loop,acl', img, dir]);
  fs.chmodSync(dir, 0o755);
  return dir;
}

function scratch(disk: string, side: Side, base: number): Scratch {
  const dir = path.join(disk, side.name);
  fs.mkdirSync(dir, { mode: 0o755 });
  const p = (n: string): string => path.join(dir, n);
  fs.mkdirSync(p('host'));
  fs.chmodSync(p('host'), 0o1777);
  fs.writeFileSync(p('victim'), 'victim');
  fs.chmodSync(p('victim'), 0o666);
  const owned = { acl: p('owned-acl'), cap: p('owned-cap'), chown: p('owned-chown') };
  for (const f of Object.values(owned)) {
    fs.writeFileSync(f, 'x');
    fs.chownSync(f, base, base);
  }
  for (const d of ['lower', 'upper', 'work', 'merged']) fs.mkdirSync(p(d));
  for (const d of ['upper', 'work', 'merged']) fs.chownSync(p(d), base, base);
  return { dir, host: p('host'), victim: p('victim'), owned, lower: p('lower'), upper: p('upper'), work: p('work'), merged: p('merged') };
}

interface Attack {
  name: string;
  script(s: Scratch): string;
  /** Where what it would leave lies. */
  targets(s: Scratch): string[];
}

const ATTACKS: Attack[] = [
  { name: 'mkdir in a world-writable host dir', script: (s) => `mkdir ${s.host}/d`, targets: (s) => [`${s.host}/d`] },
  { name: 'mknod (fifo)', script: (s) => `mknod ${s.host}/p p`, targets: (s) => [`${s.host}/p`] },
  { name: 'create a file (O_CREAT)', script: (s) => `: > ${s.host}/f`, targets: (s) => [`${s.host}/f`] },
  { name: 'symlink', script: (s) => `ln -s target ${s.host}/s`, targets: (s) => [`${s.host}/s`] },
  { name: 'hard link to a root-owned file', script: (s) => `ln ${s.victim} ${s.host}/h`, targets: (s) => [`${s.host}/h`] },
  { name: 'mkdir after unshare(CLONE_NEWNS)', script: (s) => `unshare -m mkdir ${s.host}/d2`, targets: (s) => [`${s.host}/d2`] },
  { name: 'create after unshare(CLONE_NEWNS)', script: (s) => `unshare -m sh -c ': > ${s.host}/f2'`, targets: (s) => [`${s.host}/f2`] },
  {
    name: 'overlay mount, host upper and work dir (after unshare(CLONE_NEWNS)), then write through it',
    script: (s) => `unshare -m sh -c 'mount -t overlay overlay -o lowerdir=${s.lower},upperdir=${s.upper},workdir=${s.work} ${s.merged} && mkdir ${s.merged}/od && : > ${s.merged}/of'`,
    targets: (s) => [`${s.work}/work`, `${s.upper}/od`, `${s.upper}/of`],
  },
  { name: "setfacl naming a transient uid on overlayfs's work/work (if left)", script: (s) => `${SETFACL} -m u:1000:rwx ${s.work}/work`, targets: (s) => [`${s.work}/work`] },
  { name: 'setfacl naming a transient uid (own file)', script: (s) => `${SETFACL} -m u:1000:rwx ${s.owned.acl}`, targets: (s) => [s.owned.acl] },
  { name: 'setcap, v3 with a transient rootid (own file)', script: (s) => `setcap cap_net_raw+ep ${s.owned.cap}`, targets: (s) => [s.owned.cap] },
  { name: 'chown to another transient id (own file)', script: (s) => `chown 1000:1000 ${s.owned.chown}`, targets: (s) => [s.owned.chown] },
];

/** The errno a tool's message names, short. */
function refusal(stderr: string): string {
  const known: [RegExp, string][] = [[/Operation not permitted/i, 'EPERM'], [/Permission denied/i, 'EACCES'], [/No such file/i, 'ENOENT'], [/Read-only file system/i, 'EROFS']];
  return known.find(([re]) => re.test(stderr))?.[1] ?? stderr.slice(-80);
}

/** As uid 1000, root of the namespace of `pid` (nsenter -U: uid/gid 0 inside), host mount namespace. */
function inNs(pid: number, script: string): { code: number; stderr: string } {
  const r = run(['setpriv', `--reuid=${USER.uid}`, `--regid=${USER.gid}`, '--init-groups', '--inh-caps=-all', '--', 'nsenter', '-t', String(pid), '-U', '--', 'sh', '-c', script], 60_000);
  return { code: r.status ?? -1, stderr: r.stderr.trim() };
}

/** What `p` holds that names a transient id: owner, ACL entries, a v3 file capability's rootid. */
function traces(p: string): string[] {
  const out: string[] = [];
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return out;
  }
  if (isTransient(st.uid) || isTransient(st.gid)) out.push(`owner ${st.uid}:${st.gid}`);
  if (st.isSymbolicLink()) return out;
  const acl = run([...hostTool('/usr/bin/getfacl'), '-n', '-p', '--skip-base', p]).stdout;
  for (const m of acl.matchAll(/^(?:default:)?(?:user|group):(\d+):\S*/gm)) if (isTransient(Number(m[1]))) out.push(`ACL ${m[0]}`);
  const cap = run([...hostTool('/usr/bin/getfattr'), '-h', '--absolute-names', '-n', 'security.capability', '-e', 'hex', p]).stdout;
  const v = /security\.capability=0x([0-9a-f]+)/.exec(cap);
  if (v) {
    const raw = Buffer.from(v[1]!, 'hex');
    if (raw.length >= 24 && raw.readUInt32LE(0) >>> 24 === 3 && isTransient(raw.readUInt32LE(20))) out.push(`v3 capability rootid ${raw.readUInt32LE(20)}`);
  }
  return out;
}

/** Every path under `root` with a transient trace, except the owners of `fixtures` (made by host root). */
function allTraces(root: string, fixtures: Map<string, string>): string[] {
  const found: string[] = [];
  const walk = (p: string): void => {
    const t = traces(p).filter((x) => !(x.startsWith('owner ') && fixtures.get(p) === x.slice(6)));
    for (const x of t) found.push(`${path.relative(root, p)}: ${x}`);
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(root);
  return found;
}

interface SideOutcome {
  base: number;
  results: { allowed: boolean; detail: string; left: string[] }[];
  traces: string[];
}

async function attackFrom(side: Side, disk: string): Promise<SideOutcome> {
  const [pid] = await agent.userns(1);
  await agent.allocate(side, pid!, `${side.prefix}-attack`);
  const base = nsRoot(pid!);
  assert.ok(base !== undefined && isTransient(base), `${side.name}: transient root expected, uid_map ${fs.readFileSync(`/proc/${pid}/uid_map`, 'utf8')}`);
  const s = scratch(disk, side, base);
  const fixtures = new Map<string, string>();
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    fixtures.set(p, `${st.uid}:${st.gid}`);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(s.dir);
  const raw = ATTACKS.map((a) => {
    const r = inNs(pid!, a.script(s));
    return { allowed: r.code === 0, detail: r.code === 0 ? 'allowed' : `refused (${refusal(r.stderr)})` };
  });
  // The disk outlives the namespace: look after it died (and the daemon saw it die).
  run(['umount', '-R', '-l', s.merged]);
  await agent.kill([pid!]);
  await sleep(2000);
  const results = ATTACKS.map((a, i) => ({
    ...raw[i]!,
    left: a.targets(s).flatMap((t) => {
      if (!fs.existsSync(t) && !fs.lstatSync(t, { throwIfNoEntry: false })) return [];
      const st = fs.lstatSync(t);
      const tr = traces(t).filter((x) => !(x.startsWith('owner ') && fixtures.get(t) === x.slice(6)));
      const isNew = !fixtures.has(t);
      if (!isNew && tr.length === 0) return [];
      return [`${path.relative(s.dir, t)}${isNew ? ` (new, owner ${st.uid}:${st.gid})` : ''}${tr.length ? `: ${tr.join(', ')}` : ''}`];
    }),
  }));
  return { base, results, traces: allTraces(s.dir, fixtures) };
}

test('security side by side: the same attacks from a namespace each allocated, at a host ext4 disk', async (t) => {
  const disk = ext4Disk();
  try {
    const out = {} as Record<Side['name'], SideOutcome>;
    for (const side of SIDES) out[side.name] = await attackFrom(side, disk);
    const cell = (o: SideOutcome, i: number): string => `${o.results[i]!.detail}; left: ${o.results[i]!.left.join('; ') || 'nothing'}`;
    const rows = ATTACKS.map((a, i) => [a.name, cell(out.mountgate, i), cell(out.systemd, i)]);
    const text = table(['attack (uid 1000, root in its namespace)', 'mountgate', 'systemd 262'], rows);
    for (const line of text.split('\n')) t.diagnostic(line);
    for (const side of SIDES) t.diagnostic(`${side.name}: namespace root ${out[side.name].base}; transient traces on the disk after its death: ${out[side.name].traces.join('; ') || 'none'}`);

    // mountgate: every write refused, nothing on the disk names a transient id.
    for (const [i, a] of ATTACKS.entries()) {
      const r = out.mountgate.results[i]!;
      // work/work may not exist for mountgate (the overlay never got that far): setfacl fails with ENOENT, also a refusal.
      assert.equal(r.allowed, false, `mountgate allowed: ${a.name}`);
    }
    assert.deepEqual(out.mountgate.traces, [], 'mountgate: transient traces left on the host disk');
    // systemd: recorded above. Stable across runs on 6.12: the plain path attacks are refused.
    for (const i of [0, 1, 2, 3, 5, 6]) assert.equal(out.systemd.results[i]!.allowed, false, `systemd allowed: ${ATTACKS[i]!.name}`);
  } finally {
    run(['umount', '-l', disk]);
  }
});

// ---------------------------------------------------------------------------------------------
// 2. Error parity

interface ParityCtx {
  /** A namespace of uid 1000 that this side gave a range. */
  allocated: number;
  /** An unmapped namespace of uid 1000 of its own for each call that names one (a call that
   * wrongly succeeds must not change what the next one sees). */
  fresh(): number;
}

interface BadCall {
  name: string;
  daemon: 'ns' | 'mnt';
  method: string;
  parameters: Record<string, unknown>;
  fds(c: ParityCtx): FdSpec[];
  /** mountgate's reply as describeReply() prints it; '' for any error. */
  expect: string;
}

const NR = 'io.systemd.NamespaceResource';
const MFS = 'io.systemd.MountFileSystem';
const alloc = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ name, size: 65536, userNamespaceFileDescriptor: 0, ...extra });
const img = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ imageFileDescriptor: 0, userNamespaceFileDescriptor: 1, ...extra });

const BAD_CALLS: BadCall[] = [
  { name: 'AllocateUserRange, no fd pushed', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('pa'), fds: () => [], expect: 'org.varlink.service.InvalidParameter {"parameter":"userNamespaceFileDescriptor"}' },
  { name: 'AllocateUserRange, fd is a regular file', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('pb'), fds: () => [{ open: '/etc/os-release' }], expect: 'org.varlink.service.InvalidParameter {"parameter":"userNamespaceFileDescriptor"}' },
  { name: 'AllocateUserRange, fd is a mount namespace', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('pc'), fds: () => [{ open: '/proc/self/ns/mnt' }], expect: 'org.varlink.service.InvalidParameter {"parameter":"userNamespaceFileDescriptor"}' },
  { name: "AllocateUserRange, foreign namespace (root's)", daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('pd'), fds: () => [{ inherited: 3 }], expect: 'org.varlink.service.PermissionDenied' },
  { name: 'AllocateUserRange, namespace that already has a range', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('pe'), fds: (c) => [{ userns: c.allocated }], expect: 'io.systemd.NamespaceResource.UserNamespaceExists' },
  { name: 'AllocateUserRange, name taken', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('parity'), fds: (c) => [{ userns: c.fresh() }], expect: 'io.systemd.NamespaceResource.NameExists' },
  { name: "AllocateUserRange, invalid name 'a/b'", daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('a/b'), fds: (c) => [{ userns: c.fresh() }], expect: 'org.varlink.service.InvalidParameter {"parameter":"name"}' },
  { name: 'AllocateUserRange, size 1000', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('pf', { size: 1000 }), fds: (c) => [{ userns: c.fresh() }], expect: 'org.varlink.service.InvalidParameter {"parameter":"size"}' },
  { name: 'AllocateUserRange, no name', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: { size: 65536, userNamespaceFileDescriptor: 0 }, fds: (c) => [{ userns: c.fresh() }], expect: 'org.varlink.service.InvalidParameter {"parameter":"name"}' },
  { name: 'AllocateUserRange, unknown field', daemon: 'ns', method: `${NR}.AllocateUserRange`, parameters: alloc('pg', { bogus: true }), fds: (c) => [{ userns: c.fresh() }], expect: 'success (0 fds)' },
  { name: 'unknown method (NamespaceResource)', daemon: 'ns', method: `${NR}.Frobnicate`, parameters: {}, fds: () => [], expect: 'org.varlink.service.MethodNotFound {"method":"io.systemd.NamespaceResource.Frobnicate"}' },
  { name: 'unknown interface', daemon: 'ns', method: 'com.example.Nope.Call', parameters: {}, fds: () => [], expect: 'org.varlink.service.MethodNotFound {"method":"com.example.Nope.Call"}' },
  { name: 'MountImage, no fds pushed', daemon: 'mnt', method: `${MFS}.MountImage`, parameters: img(), fds: () => [], expect: 'org.varlink.service.InvalidParameter {"parameter":"imageFileDescriptor"}' },
  { name: 'MountImage, image fd is a directory', daemon: 'mnt', method: `${MFS}.MountImage`, parameters: img(), fds: (c) => [{ open: '/' }, { userns: c.allocated }], expect: 'org.varlink.service.InvalidParameter {"parameter":"imageFileDescriptor"}' },
  { name: 'MountImage, image fd is a text file', daemon: 'mnt', method: `${MFS}.MountImage`, parameters: img(), fds: (c) => [{ open: '/etc/os-release' }, { userns: c.allocated }], expect: 'io.systemd.MountFileSystem.IncompatibleImage' },
  { name: 'MountImage, userns fd is a regular file', daemon: 'mnt', method: `${MFS}.MountImage`, parameters: img(), fds: () => [{ open: SMALL }, { open: '/etc/os-release' }], expect: 'org.varlink.service.InvalidParameter {"parameter":"userNamespaceFileDescriptor"}' },
  { name: 'MountImage, untrusted signer', daemon: 'mnt', method: `${MFS}.MountImage`, parameters: img(), fds: (c) => [{ open: UNTRUSTED }, { userns: c.allocated }], expect: 'io.systemd.MountFileSystem.KeyNotFound' },
  { name: 'MountImage, namespace without a range', daemon: 'mnt', method: `${MFS}.MountImage`, parameters: img(), fds: (c) => [{ open: SMALL }, { userns: c.fresh() }], expect: '' },
  { name: "MountImage, foreign namespace (root's)", daemon: 'mnt', method: `${MFS}.MountImage`, parameters: img(), fds: () => [{ open: SMALL }, { inherited: 3 }], expect: 'org.varlink.service.PermissionDenied' },
  { name: 'MountImage, no namespace (into the host, as uid 1000)', daemon: 'mnt', method: `${MFS}.MountImage`, parameters: { imageFileDescriptor: 0 }, fds: () => [{ open: SMALL }], expect: 'success (1 fds)' },
  { name: 'unknown method (MountFileSystem)', daemon: 'mnt', method: `${MFS}.Frobnicate`, parameters: {}, fds: () => [], expect: 'org.varlink.service.MethodNotFound {"method":"io.systemd.MountFileSystem.Frobnicate"}' },
];

const describeReply = (r: CallResult): string =>
  r.error ? `${r.error}${r.errorParameters && Object.keys(r.errorParameters).length ? ` ${JSON.stringify(r.errorParameters)}` : ''}` : `success (${r.replyFds ?? 0} fds)`;

test('error parity: the same bad calls against both, both replies recorded', async (t) => {
  const replies = {} as Record<Side['name'], CallResult[]>;
  for (const side of SIDES) {
    const pids = await agent.userns(BAD_CALLS.length + 1);
    const allocated = pids[BAD_CALLS.length]!;
    await agent.allocate(side, allocated, 'parity');
    let next = 0;
    const c: ParityCtx = { allocated, fresh: () => pids[next++]! };
    replies[side.name] = [];
    for (const b of BAD_CALLS) {
      replies[side.name].push(await agent.call(b.daemon === 'ns' ? side.nsSocket : side.mntSocket, b.method, b.parameters, b.fds(c)));
    }
    await agent.kill(pids);
  }
  const rows = BAD_CALLS.map((b, i) => {
    const [m, s] = [replies.mountgate[i]!, replies.systemd[i]!];
    return [b.name, describeReply(m), describeReply(s), m.error === s.error ? 'same' : 'differs'];
  });
  for (const line of table(['bad call (uid 1000)', 'mountgate', 'systemd 262', ''], rows).split('\n')) t.diagnostic(line);
  for (const [i, b] of BAD_CALLS.entries()) {
    const m = replies.mountgate[i]!;
    assert.ok(!m.error?.startsWith('(client)'), `${b.name}: mountgate answered ${describeReply(m)}`);
    if (b.expect) assert.equal(describeReply(m), b.expect, b.name);
    else assert.ok(m.error, `${b.name}: mountgate answered ${describeReply(m)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// 3. Benchmarks

// Benchmarks are not tests: only `npm run bench` (figure 10, bench/run.ts) sets
// MOUNTGATE_PEERS_BENCH=1; CI's run of this file proves behaviour only, and skips nothing.
if (process.env.MOUNTGATE_PEERS_BENCH === '1') test('benchmarks side by side (bench/peers.ts)', { timeout: 3_600_000 }, async (t) => {
  let large: string | undefined;
  try {
    buildImage(LARGE, 'trusted', (tree) => {
      // Payload erofs stores uncompressed (mkfs.erofs without -z), written in 16 MiB chunks.
      const fd = fs.openSync(path.join(tree, 'payload'), 'w');
      const chunk = Buffer.alloc(16 << 20);
      for (let i = 0; i < LARGE_MIB / 16; i++) {
        for (let j = 0; j < chunk.length; j += 4096) chunk.writeUInt32LE((i * 7919 + j) >>> 0, j);
        fs.writeSync(fd, chunk);
      }
      fs.closeSync(fd);
    });
    large = LARGE;
    t.diagnostic(`large image: ${(fs.statSync(LARGE).size / (1 << 20)).toFixed(0)} MiB`);
  } catch (e) {
    t.diagnostic(`large image not built: ${(e as Error).message.slice(0, 300)}`);
  }
  const figures = await benchPeers(agent, [MOUNTGATE_SIDE, SYSTEMD_SIDE], { small: SMALL, large }, (s) => t.diagnostic(s));
  assert.ok(figures.length > 0);
});

// ---------------------------------------------------------------------------------------------
// Last: the services above were stopped and activated again many times; a daemon must never
// die by a signal on the way (systemd logs "Main process exited, code=killed|dumped").
test('no daemon of either side died by a signal during these runs', (t) => {
  ok(['journalctl', '--sync']);
  const crashes = (units: string[]): string[] =>
    run(['journalctl', ...units.flatMap((u) => ['-u', u]), '--no-pager', '-o', 'cat']).stdout.split('\n').filter((l) => /code=(killed|dumped)/.test(l));
  const upstream = crashes([SYSTEMD_SIDE.nsService, SYSTEMD_SIDE.mntService]);
  t.diagnostic(`systemd side: ${upstream.join('; ') || 'none'}`);
  assert.deepEqual(crashes([MOUNTGATE_SIDE.nsService, MOUNTGATE_SIDE.mntService]), []);
});
