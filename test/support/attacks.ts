// Attack harness for the userns-restrict policy tests (run in the kernel lab): the policy and a
// disk file system that host root mounted to aim at (policyLab), user namespaces mapped to a
// transient range, commands run inside them, the list of writes the policy must stop, tests
// that run a list (controlTests, denialTests), and a scan of that disk for anything that
// names a transient id.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { execFileSync, spawnSync } from 'node:child_process';
import { UsernsPolicy } from '../../src/bpf/policy.js';
import { isTransient } from '../../src/id-ranges.js';
import type { ChildProcess } from 'node:child_process';
import { spawnInNewUserns, killAndWait } from './userns.js';

/** Start of a container-range (transient) window per namespace; each ns gets 65536 ids. */
export const TRANSIENT_BASE = 524288 * 7;

export interface TransientNs {
  pid: number;
  /** nsfs inode of the namespace (what the policy is keyed on). */
  inode: number;
  base: number;
  child: ChildProcess;
  kill(): Promise<void>;
}

function writeMaps(pid: number, uidMap: string, gidMap: string): void {
  fs.writeFileSync(`/proc/${pid}/uid_map`, uidMap);
  fs.writeFileSync(`/proc/${pid}/gid_map`, gidMap);
}

/**
 * A user namespace (held open by `sleep`) with `map` written by host root as both its uid_map
 * and gid_map, as userdbd writes them (one write, every line). `base` is the host id of its root.
 */
export async function mappedNs(map: string, base: number): Promise<TransientNs> {
  const child = await spawnInNewUserns('unshare', ['--user', 'sleep', 'infinity']);
  writeMaps(child.pid, map, map);
  const inode = fs.statSync(`/proc/${child.pid}/ns/user`).ino;
  return { pid: child.pid, inode, base, child, kill: () => killAndWait(child) };
}

/** A user namespace whose ids 0..65535 are host ids base..base+65535 (held open by `sleep`). */
export async function transientNs(base: number = TRANSIENT_BASE): Promise<TransientNs> {
  return mappedNs(`0 ${base} 65536\n`, base);
}

/** A user namespace mapping `nsFirst..+count` to host ids `hostFirst..` (for idmapped mounts). */
export async function mappingNs(nsFirst: number, hostFirst: number, count: number): Promise<TransientNs> {
  const child = await spawnInNewUserns('unshare', ['--user', 'sleep', 'infinity']);
  const map = `${nsFirst} ${hostFirst} ${count}\n`;
  writeMaps(child.pid, map, map);
  const inode = fs.statSync(`/proc/${child.pid}/ns/user`).ino;
  return { pid: child.pid, inode, base: hostFirst, child, kill: () => killAndWait(child) };
}

export interface RunResult {
  code: number;
  stderr: string;
}

export function assertDenied(r: RunResult, what: string, refusal = /Operation not permitted|Permission denied/i): void {
  assert.notEqual(r.code, 0, `${what}: succeeded but must be denied`);
  assert.match(r.stderr, refusal, `${what}: ${r.stderr}`);
}

export function assertAllowed(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
}

/** A write to try, as `run(attack)` performs it (in some namespace, against some fixture). */
export interface Named {
  name: string;
  /** How the tool reports the refusal, when it is not EPERM/EACCES verbatim. */
  refusal?: RegExp;
}

/** One test per attack, named after it, each against a fresh fixture: all must succeed (the
 * control that shows a refusal elsewhere is the policy's). */
export function controlTests<A extends Named, S extends { cleanup(): void }>(attacks: A[], fixture: () => S, run: (attack: A, s: S) => RunResult): void {
  for (const attack of attacks) {
    it(attack.name, () => {
      const s = fixture();
      try {
        assertAllowed(run(attack, s), attack.name);
      } finally {
        s.cleanup();
      }
    });
  }
}

/** One test per attack, `denies: NAME`: each must be refused. */
export function denialTests<A extends Named>(attacks: A[], run: (attack: A) => RunResult): void {
  for (const attack of attacks) {
    it(`denies: ${attack.name}`, () => assertDenied(run(attack), attack.name, attack.refusal));
  }
}

/** Runs `sh -c script` as root of the namespace of `pid` (host mount namespace). */
export function inNs(pid: number, script: string): RunResult {
  const r = spawnSync('nsenter', ['-t', String(pid), '-U', '--', 'sh', '-c', script], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status ?? -1, stderr: (r.stderr ?? '').slice(0, 2000) };
}

/** Runs `sh -c script` as host root. */
export function onHost(script: string): RunResult {
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status ?? -1, stderr: (r.stderr ?? '').slice(0, 2000) };
}

/**
 * A scratch tree on the host root file system (init user namespace), prepared so that a
 * namespace with ids at `base` could write everything if no policy stopped it.
 */
export interface Scratch {
  dir: string;
  /** World-writable sticky directory. */
  host: string;
  /** Regular file owned by the namespace's root (for setfacl/setcap/chown). */
  owned: string;
  /** World-readable+writable root-owned file (hard-link source, read checks). */
  victim: string;
  /** Overlay layers: lower (host), upper and work owned by namespace root, merged mountpoint. */
  lower: string;
  upper: string;
  work: string;
  merged: string;
  cleanup(): void;
}

export function scratch(base: number, under: string = os.tmpdir()): Scratch {
  const dir = fs.mkdtempSync(path.join(under, 'mg-bpf-'));
  fs.chmodSync(dir, 0o755); // mkdtemp makes it 0700: the namespace could not even traverse it
  const p = (n: string): string => path.join(dir, n);
  fs.mkdirSync(p('host'), { mode: 0o1777 });
  fs.chmodSync(p('host'), 0o1777);
  fs.writeFileSync(p('host/owned'), 'x');
  fs.chownSync(p('host/owned'), base, base);
  fs.writeFileSync(p('host/victim'), 'victim');
  fs.chmodSync(p('host/victim'), 0o666);
  for (const d of ['lower', 'upper', 'work', 'merged']) fs.mkdirSync(p(d));
  for (const d of ['upper', 'work', 'merged']) fs.chownSync(p(d), base, base);
  return {
    dir,
    host: p('host'),
    owned: p('host/owned'),
    victim: p('host/victim'),
    lower: p('lower'),
    upper: p('upper'),
    work: p('work'),
    merged: p('merged'),
    cleanup: () => {
      spawnSync('umount', ['-R', '-l', p('merged')], { stdio: 'ignore' });
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Attack extends Named {
  script(s: Scratch): string;
}

/** Writes that would leave transient ids on the host file system. */
export const ATTACKS: Attack[] = [
  { name: 'mkdir in a host directory', script: (s) => `mkdir ${s.host}/d` },
  { name: 'mknod (fifo) in a host directory', script: (s) => `mknod ${s.host}/p p` },
  { name: 'create a regular file (open O_CREAT)', script: (s) => `: > ${s.host}/f` },
  { name: 'symlink in a host directory', script: (s) => `ln -s target ${s.host}/s` },
  { name: 'hard link in a host directory', script: (s) => `ln ${s.victim} ${s.host}/h` },
  { name: 'mkdir after unshare(CLONE_NEWNS)', script: (s) => `unshare -m mkdir ${s.host}/d2` },
  { name: 'regular file after unshare(CLONE_NEWNS)', script: (s) => `unshare -m sh -c ': > ${s.host}/f2'` },
  {
    name: 'overlay mount with a host upper dir',
    script: (s) => `unshare -m mount -t overlay overlay -o lowerdir=${s.lower},upperdir=${s.upper},workdir=${s.work} ${s.merged}`,
    // overlayfs cannot make its work directory (EPERM), falls back to a read-only overlay, and
    // sb_kern_mount refuses that too (its upper layer is on the host): mount(8) retried ro.
    refusal: /Operation not permitted|permission denied|cannot mount overlay read-only/i,
  },
  { name: 'setfacl naming a transient uid', script: (s) => `setfacl -m u:1000:rwx ${s.owned}` },
  { name: 'setcap with a transient v3 rootid', script: (s) => `setcap cap_net_raw+ep ${s.owned}` },
  { name: 'chown to a transient id', script: (s) => `chown 1000:1000 ${s.owned}` },
];

/** The same writes on a tmpfs the namespace mounts itself (dies with it): all allowed. */
export function tmpfsScript(s: Scratch): string {
  const m = s.merged;
  return `unshare -m sh -ec 'mount -t tmpfs t ${m}; mkdir ${m}/d; mknod ${m}/p p; : > ${m}/f; ln -s x ${m}/s; ln ${m}/f ${m}/h; setfacl -m u:1000:rwx ${m}/f; setcap cap_net_raw+ep ${m}/f; chown 1000:1000 ${m}/f'`;
}

export { isTransient };

/** An ext4 file system on a loop device, mounted by host root in the initial namespaces. */
export interface Disk {
  dir: string;
  cleanup(): void;
}

/** What a lab test file attacks with: the policy, and the disk (made before its tests). */
export interface PolicyLab {
  readonly policy: UsernsPolicy;
  readonly disk: Disk;
}

/**
 * The policy installed on `pinDir` when the file loads (nothing here skips: one that does not
 * attach fails the file) and an ext4 disk made before its tests; both removed after them.
 */
export function policyLab(pinDir: string): PolicyLab {
  const lab = { policy: UsernsPolicy.install({ pinDir, maxNamespaces: 256 }), disk: undefined as unknown as Disk };
  before(() => {
    lab.disk = ext4Disk();
  });
  after(() => {
    lab.policy.close();
    UsernsPolicy.uninstall(pinDir);
    lab.disk.cleanup();
  });
  return lab;
}

export function ext4Disk(sizeMiB = 64): Disk {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-disk-'));
  fs.chmodSync(work, 0o755); // the namespaces must reach the disk for their attacks to mean anything
  const img = path.join(work, 'disk.img');
  const dir = path.join(work, 'mnt');
  fs.mkdirSync(dir);
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, sizeMiB << 20);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  execFileSync('mount', ['-o', 'loop,acl', img, dir]);
  fs.chmodSync(dir, 0o755);
  return {
    dir,
    cleanup: () => {
      spawnSync('umount', ['-R', '-l', dir], { stdio: 'ignore' });
      fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

/** Every place under `root` (one file system) where an id of interest is stored. */
export interface TransientTrace {
  path: string;
  what: string;
}

/** Transient ids stored anywhere under `root` (except the owners of the inodes in `except`). */
export function transientTraces(root: string, except: ReadonlySet<number> = new Set()): TransientTrace[] {
  return idTraces(root, (id) => isTransient(id), except);
}

/**
 * Walks `root` with lstat for owners, getfacl for ACL entries and the raw security.capability
 * xattr for v3 root ids (VFS_CAP_REVISION_3: magic_etc, 2 x (permitted, inheritable), rootid),
 * reporting every id for which `bad(id, path)` holds. Inodes in `except` (made by the test as
 * host root) are exempt from the owner check only.
 */
export function idTraces(root: string, isBad: (id: number, path: string) => boolean, except: ReadonlySet<number> = new Set()): TransientTrace[] {
  const found: TransientTrace[] = [];
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    if (!except.has(st.ino) && (isBad(st.uid, p) || isBad(st.gid, p))) found.push({ path: p, what: `owner ${st.uid}:${st.gid}` });
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(root);
  const acl = execFileSync('getfacl', ['-R', '-P', '-n', '-p', '--skip-base', root], { encoding: 'utf8' });
  let file = '';
  for (const line of acl.split('\n')) {
    const f = /^# file: (.*)$/.exec(line);
    if (f) file = f[1]!;
    const e = /^(?:default:)?(user|group):(\d+):/.exec(line);
    if (e && isBad(Number(e[2]), file)) found.push({ path: file, what: `ACL ${line}` });
  }
  const caps = execFileSync('getfattr', ['-R', '-P', '-h', '--absolute-names', '-m', '^security\\.capability$', '-e', 'hex', '-d', root], { encoding: 'utf8' });
  for (const line of caps.split('\n')) {
    const f = /^# file: (.*)$/.exec(line);
    if (f) file = f[1]!;
    const v = /^security\.capability=0x([0-9a-f]+)$/.exec(line);
    if (!v) continue;
    const raw = Buffer.from(v[1]!, 'hex');
    if (raw.length >= 24 && raw.readUInt32LE(0) >>> 24 === 3 && isBad(raw.readUInt32LE(20), file)) {
      found.push({ path: file, what: `file capability rootid ${raw.readUInt32LE(20)}` });
    }
  }
  return found;
}

/** Inode numbers of everything under `root` now (what the test itself made). */
export function inodesUnder(root: string): Set<number> {
  const seen = new Set<number>();
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    seen.add(st.ino);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(root);
  return seen;
}
