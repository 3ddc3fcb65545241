// The userns-restrict policy for the namespaces AllocateUserRange makes with `type: "self"`
// (the caller's own id, here with a delegated transient range) and `mapForeign: true` (the
// foreign range 0x7FFE0000… mapped 1:1 beside the transient 64K range). Runs in the kernel lab,
// as root, attacking an ext4 file system that host root mounted from a loop device (as
// policy.test.ts does). The rule under test (userns-restrict.bpf.c): foreign ids may be stored
// only inside a foreign tree (a foreign-owned directory, or a tree's root itself), transient
// ids nowhere that outlives the namespace. Every refusal is also tried from an unmanaged
// namespace with the same maps, where it must succeed, so the EPERM is the policy's. Nothing
// here skips: a policy that does not attach is a failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { FOREIGN_RANGE, isForeign } from '../../src/id-ranges.js';
import { AT_FDCWD, MOUNT_ATTR_IDMAP, attachMount, mountSetattrFd, openTree } from '../../src/sys/mount-api.js';
import { TRANSIENT_BASE, assertAllowed, assertDenied, controlTests, denialTests, idTraces, inNs, inodesUnder, mappedNs, mappingNs, onHost, policyLab, transientTraces } from '../support/attacks.js';
import type { Named, TransientNs } from '../support/attacks.js';
import { killAndWait } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const PIN_DIR = `/sys/fs/bpf/mountgate-foreign-${process.pid}`;
/** The foreign range's first id: a shifted image's root. */
const FB = FOREIGN_RANGE.start;
/** Transient ranges of this file's namespaces (apart from policy.test.ts's). */
const base = (n: number): number => TRANSIENT_BASE + (8 + n) * 65536;
/** A non-root user of the host, as the caller of a `self` allocation. */
const SELF_UID = 1000;
const RANGE = 65536;

const lab = policyLab(PIN_DIR);
const { policy } = lab;

/** `cmd` as uid=gid=`id` inside the namespace (no setgroups: a `self` namespace denies it). */
function as(id: number, cmd: string): string {
  return `setpriv --reuid=${id} --regid=${id} --keep-groups sh -ec '${cmd}'`;
}

/**
 * security.capability as VFS_CAP_REVISION_3 with the effective flag, cap_net_raw permitted and
 * `rootid` (linux/capability.h: magic_etc, 2 x {permitted, inheritable}, rootid; little-endian).
 */
function v3Cap(rootid: number): string {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0x03000000 | 0x1, 0);
  b.writeUInt32LE(1 << 13, 4);
  b.writeUInt32LE(rootid, 20);
  return `0x${b.toString('hex')}`;
}

/** The fixtures every attack aims at, made by host root on the disk. */
interface Scene {
  dir: string;
  /** A world-writable sticky host directory, like /tmp. */
  host: string;
  /** A foreign-owned file wrongly placed in `host` (so chown/ACL/caps have something to aim at). */
  stray: string;
  /** A file of the `self` caller in `host`. */
  mine: string;
  /** A root-owned file in a world-writable directory without the sticky bit (free to rename). */
  plain: string;
  /** A foreign tree: its root (foreign-owned, in a root-owned directory), a file and a subdirectory. */
  tree: string;
  file: string;
  sub: string;
  cleanup(): void;
}

function scene(): Scene {
  const dir = fs.mkdtempSync(path.join(lab.disk.dir, 'mg-foreign-'));
  fs.chmodSync(dir, 0o755);
  const p = (n: string): string => path.join(dir, n);
  fs.mkdirSync(p('host'));
  fs.chmodSync(p('host'), 0o1777);
  for (const [f, id] of [['host/stray', FB + 1], ['host/mine', SELF_UID]] as const) {
    fs.writeFileSync(p(f), 'x');
    fs.chmodSync(p(f), 0o644);
    fs.chownSync(p(f), id, id);
  }
  fs.mkdirSync(p('open'));
  fs.chmodSync(p('open'), 0o777);
  fs.writeFileSync(p('open/plain'), 'x');
  for (const d of ['tree', 'tree/sub', 'tree/up', 'tree/work', 'merged', 'lower']) fs.mkdirSync(p(d));
  fs.writeFileSync(p('tree/file'), 'x');
  fs.writeFileSync(p('tree/sub/moveme'), 'x');
  for (const f of ['tree', 'tree/sub', 'tree/up', 'tree/work', 'tree/file', 'tree/sub/moveme']) fs.chownSync(p(f), FB, FB);
  return {
    dir,
    host: p('host'),
    stray: p('host/stray'),
    mine: p('host/mine'),
    plain: p('open/plain'),
    tree: p('tree'),
    file: p('tree/file'),
    sub: p('tree/sub'),
    cleanup: () => {
      onHost(`umount -R -l ${p('merged')} 2>/dev/null`);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface Attack extends Named {
  script(s: Scene): string;
}

/** renameat2(RENAME_EXCHANGE) on its two arguments (no tool in Debian 12 does it). */
const exchange = `python3 -c 'import ctypes, os, sys; c = ctypes.CDLL(None, use_errno=True); r = c.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), 2); sys.exit(0 if r == 0 else "renameat2: " + os.strerror(ctypes.get_errno()))'`;

/**
 * Makes an O_TMPFILE in `dir` as fsuid=fsgid=`owner` (no LSM hook sees that), then links it at
 * `target` as fsuid=fsgid=`linker` (linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N, the way
 * open(2) documents): an inode made by one id, named by another.
 */
const tmpfileLink = (owner: number, linker: number, dir: string, target: string): string =>
  `python3 -c 'import ctypes, os, sys; c = ctypes.CDLL(None, use_errno=True); o, l = int(sys.argv[1]), int(sys.argv[2]); c.setfsgid(o); c.setfsuid(o); fd = os.open(sys.argv[3], os.O_TMPFILE | os.O_WRONLY, 0o600); os.fchmod(fd, 0o666); c.setfsgid(l); c.setfsuid(l); r = c.linkat(-100, b"/proc/self/fd/%d" % fd, -100, sys.argv[4].encode(), 0x400); sys.exit(0 if r == 0 else "linkat: " + os.strerror(ctypes.get_errno()))' ${owner} ${linker} ${dir} ${target}`;

/** A mapForeign namespace: transient 0..65535 plus the foreign range 1:1 (what userdbd writes). */
const foreignMap = (b: number): string => `0 ${b} ${RANGE}\n${FB} ${FB} ${FOREIGN_RANGE.size}\n`;

/** What a mapForeign namespace must not do on a file system that outlives it. */
const FOREIGN_ATTACKS: Attack[] = [
  { name: 'mkdir as a foreign uid in a host directory', script: (s) => as(FB, `mkdir ${s.host}/d`) },
  { name: 'create a file as a foreign uid in a host directory', script: (s) => as(FB, `: > ${s.host}/f`) },
  { name: 'mknod (fifo) as a foreign uid in a host directory', script: (s) => as(FB, `mknod ${s.host}/p p`) },
  { name: 'symlink as a foreign uid in a host directory', script: (s) => as(FB, `ln -s x ${s.host}/s`) },
  { name: 'create a file as a foreign uid after unshare(CLONE_NEWNS)', script: (s) => `unshare -m ${as(FB, `: > ${s.host}/f2`)}` },
  { name: 'hard-link a tree file into a host directory', script: (s) => `ln ${s.file} ${s.host}/h` },
  { name: 'rename a tree file into a host directory', script: (s) => `mv ${s.sub}/moveme ${s.host}/moved` },
  { name: 'rename a tree directory into a host directory', script: (s) => `mv ${s.sub} ${s.host}/sub` },
  // The host file moves into the tree (fine), the tree file out of it: only the second half is refused.
  { name: 'exchange a host file with a tree file (RENAME_EXCHANGE)', script: (s) => `${exchange} ${s.plain} ${s.file}` },
  { name: 'chown a stray foreign file to other foreign ids', script: (s) => `chown ${FB + 2}:${FB + 2} ${s.stray}` },
  { name: 'setfacl naming a foreign uid outside a tree', script: (s) => `setfacl -m u:${FB + 3}:rwx ${s.stray}` },
  { name: 'setfacl naming a foreign gid outside a tree', script: (s) => `setfacl -m g:${FB + 3}:rx ${s.stray}` },
  { name: 'v3 file capability with a foreign root id outside a tree', script: (s) => `setfattr -n security.capability -v ${v3Cap(FB)} ${s.stray}` },
  // Transient ids stay refused inside a foreign tree too.
  { name: 'mkdir as the transient root inside a tree', script: (s) => `mkdir ${s.tree}/t` },
  { name: 'link a transient-owned O_TMPFILE into a tree as a foreign uid', script: (s) => tmpfileLink(0, FB, s.tree, `${s.tree}/tmp`) },
  { name: 'chown a tree file to a transient id', script: (s) => `chown 1000:1000 ${s.file}` },
  { name: 'setfacl naming a transient uid inside a tree', script: (s) => `setfacl -m u:1000:rwx ${s.file}` },
  { name: 'setcap (transient v3 root id) inside a tree', script: (s) => `setcap cap_net_raw+ep ${s.file}` },
  {
    name: 'overlay mount with its upper layer in a foreign tree (no idmapped mount)',
    script: (s) => `unshare -m mount -t overlay overlay -o lowerdir=${s.dir}/lower,upperdir=${s.tree}/up,workdir=${s.tree}/work ${s.dir}/merged`,
    refusal: /Operation not permitted|permission denied|cannot mount overlay read-only/i,
  },
];

/** What a mapForeign namespace may do inside a foreign tree it can reach. */
function inTreeScript(s: Scene): string {
  const t = s.tree;
  return [
    as(FB, `mkdir ${t}/d; chmod 1777 ${t}/d; : > ${t}/f; mknod ${t}/p p; ln -s x ${t}/s; ln ${t}/file ${t}/h; : > ${t}/sub/g`),
    as(FB + 7, `mkdir ${t}/d/other`),
    `chown ${FB + 1}:${FB + 1} ${t}/file`,
    `setfacl -m u:${FB + 2}:rwx,g:${FB + 2}:rx ${t}/file`,
    `setfattr -n security.capability -v ${v3Cap(FB)} ${t}/file`,
    `mv ${t}/sub/moveme ${t}/moved`,
    `chown ${FB}:${FB} ${t}`,
    `setfacl -d -m u:${FB + 5}:rwx ${t}`,
  ].join(' && ');
}

/** A foreign id stored outside the tree (its root and everything below it). */
function strayForeign(s: Scene): (id: number, p: string) => boolean {
  return (id, p) => isForeign(id) && p !== s.tree && !p.startsWith(`${s.tree}/`);
}

describe('mapForeign: control, an unmanaged namespace with the same maps can do all of it', () => {
  let ns: TransientNs;
  before(async () => {
    ns = await mappedNs(foreignMap(base(0)), base(0));
  });
  after(async () => {
    await ns.kill();
  });
  controlTests(FOREIGN_ATTACKS, scene, (attack, s) => inNs(ns.pid, attack.script(s)));
});

describe('mapForeign: managed namespace, attacking an ext4 disk that host root mounted', () => {
  let ns: TransientNs;
  let s: Scene;
  let fixtures: Set<number>;
  before(async () => {
    assert.equal(policy.status().attached, true, `policy not attached: ${policy.status().reason}`);
    ns = await mappedNs(foreignMap(base(1)), base(1));
    policy.manage(ns.inode);
    s = scene();
    fixtures = inodesUnder(lab.disk.dir);
  });
  after(async () => {
    s.cleanup();
    await ns.kill();
  });

  denialTests(FOREIGN_ATTACKS, (attack) => inNs(ns.pid, attack.script(s)));

  it('allows foreign-owned creation, chown, ACLs, v3 caps and renames inside a foreign tree', () => {
    assertAllowed(inNs(ns.pid, inTreeScript(s)), 'in the tree');
    assert.equal(fs.statSync(path.join(s.tree, 'd')).uid, FB);
    assert.equal(fs.statSync(path.join(s.tree, 'd/other')).uid, FB + 7);
    assert.equal(fs.statSync(s.file).uid, FB + 1);
  });

  it('allows the namespace its own (transient) writes on a tmpfs it mounted', () =>
    assertAllowed(inNs(ns.pid, `unshare -m sh -ec 'mount -t tmpfs t ${s.dir}/merged; mkdir ${s.dir}/merged/d; chown 1000:${FB} ${s.dir}/merged/d'`), 'tmpfs'));

  it('leaves no transient id anywhere, and foreign ids only inside the tree', () => {
    assert.deepEqual(fs.readdirSync(s.host).sort(), ['mine', 'stray']);
    assert.deepEqual(fs.readdirSync(path.join(s.tree, 'work')), [], 'overlayfs left its work directory behind');
    assert.deepEqual(transientTraces(lab.disk.dir, fixtures), []);
    assert.deepEqual(idTraces(lab.disk.dir, strayForeign(s), fixtures), []);
  });
});

describe('idmapped mounts onto foreign ids (what MountDirectory hands a plain managed namespace)', () => {
  /** Mounts `src` idmapped so that the namespace's 0..65535 are stored as the foreign range. */
  async function withForeignIdmap(ns: TransientNs, src: string, dst: string, body: () => void): Promise<void> {
    const idns = await mappingNs(FB, ns.base, RANGE);
    const usernsFd = fs.openSync(`/proc/${idns.pid}/ns/user`, 'r');
    const mnt = openTree(AT_FDCWD, src);
    try {
      mountSetattrFd(mnt, { attrSet: MOUNT_ATTR_IDMAP, usernsFd });
      attachMount(mnt, dst);
      body();
    } finally {
      fs.closeSync(mnt);
      fs.closeSync(usernsFd);
      onHost(`umount -l ${dst}`);
      await idns.kill();
    }
  }

  it('allows writes into a foreign tree: they land foreign-owned', async () => {
    const ns = await mappedNs(`0 ${base(2)} ${RANGE}\n`, base(2));
    policy.manage(ns.inode);
    const s = scene();
    try {
      await withForeignIdmap(ns, s.tree, `${s.dir}/merged`, () => {
        const m = `${s.dir}/merged`;
        assertAllowed(inNs(ns.pid, `mkdir ${m}/d && : > ${m}/f && chown 1000:1000 ${m}/f && setfacl -m u:1000:rwx ${m}/f && setcap cap_net_raw+ep ${m}/f`), 'idmapped tree');
      });
      assert.equal(fs.statSync(path.join(s.tree, 'd')).uid, FB);
      assert.equal(fs.statSync(path.join(s.tree, 'f')).uid, FB + 1000);
      assert.deepEqual(transientTraces(s.dir), []);
    } finally {
      s.cleanup();
      await ns.kill();
    }
  });

  it('denies them into a directory that is not foreign-owned (no new foreign tree roots)', async () => {
    const ns = await mappedNs(`0 ${base(3)} ${RANGE}\n`, base(3));
    policy.manage(ns.inode);
    const s = scene();
    try {
      await withForeignIdmap(ns, s.host, `${s.dir}/merged`, () => {
        const m = `${s.dir}/merged`;
        assertDenied(inNs(ns.pid, `mkdir ${m}/d`), 'mkdir');
        assertDenied(inNs(ns.pid, `: > ${m}/f`), 'create');
      });
      assert.deepEqual(fs.readdirSync(s.host).sort(), ['mine', 'stray']);
    } finally {
      s.cleanup();
      await ns.kill();
    }
  });
});

/**
 * A `self` namespace (caller's uid as root) with one delegated transient range mapped 1:1, and
 * a descendant namespace its root made and mapped onto that range (nothing managed about it:
 * the policy finds the `self` namespace above it).
 */
interface SelfScene {
  self: TransientNs;
  child: TransientNs;
  delegated: number;
  kill(): Promise<void>;
}

async function selfScene(n: number, managed: boolean): Promise<SelfScene> {
  const delegated = base(n);
  const self = await mappedNs(`0 ${SELF_UID} 1\n${delegated} ${delegated} ${RANGE}\n`, SELF_UID);
  if (managed) {
    policy.manage(self.inode);
    policy.denySetgroups(self.inode); // what userdbd does for "self"
  }
  const proc = spawn('nsenter', ['-t', String(self.pid), '-U', '--', 'unshare', '--user', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = proc.pid;
  if (pid === undefined) throw new Error('spawn nsenter failed');
  const selfNs = fs.readlinkSync(`/proc/${self.pid}/ns/user`);
  await waitFor(() => {
    try {
      return fs.readlinkSync(`/proc/${pid}/exe`).endsWith('/sleep') && fs.readlinkSync(`/proc/${pid}/ns/user`) !== selfNs;
    } catch {
      return false;
    }
  }, 'the descendant namespace', 20_000);
  // Mapped by the self namespace's root, from inside it: only ids it holds can be handed down.
  const m = `0 ${delegated} ${RANGE}`;
  assertAllowed(inNs(self.pid, `echo '${m}' > /proc/${pid}/uid_map && echo '${m}' > /proc/${pid}/gid_map`), 'map the descendant');
  const child: TransientNs = { pid, inode: fs.statSync(`/proc/${pid}/ns/user`).ino, base: delegated, child: proc, kill: () => killAndWait(proc) };
  return {
    self,
    child,
    delegated,
    kill: async () => {
      await child.kill();
      await self.kill();
    },
  };
}

interface SelfAttack {
  name: string;
  /** Run in the self namespace or in its descendant. */
  in: 'self' | 'child';
  script(s: Scene, delegated: number): string;
}

const SELF_ATTACKS: SelfAttack[] = [
  { name: 'a delegated transient uid creates a file', in: 'self', script: (s, d) => as(d, `: > ${s.host}/t`) },
  { name: 'a delegated transient uid makes a directory', in: 'self', script: (s, d) => as(d + 5, `mkdir ${s.host}/td`) },
  { name: 'chown of the caller\'s file to a delegated id', in: 'self', script: (s, d) => `chown ${d}:${d} ${s.mine}` },
  { name: 'setfacl naming a delegated id', in: 'self', script: (s, d) => `setfacl -m u:${d}:rwx ${s.mine}` },
  { name: 'the caller\'s own id links an O_TMPFILE a delegated id made', in: 'self', script: (s, d) => tmpfileLink(d, 0, s.host, `${s.host}/tl`) },
  { name: 'the descendant\'s root makes a directory', in: 'child', script: (s) => `mkdir ${s.host}/cd` },
  { name: 'the descendant\'s root creates a file after unshare(CLONE_NEWNS)', in: 'child', script: (s) => `unshare -m sh -c ': > ${s.host}/cf'` },
  { name: 'the descendant\'s root makes a symlink', in: 'child', script: (s) => `ln -s x ${s.host}/cs` },
  { name: 'the descendant\'s uid 1000 creates a file', in: 'child', script: (s) => as(1000, `: > ${s.host}/cu`) },
];

describe('self with a delegated range: control, unmanaged, the same writes all succeed', () => {
  let sc: SelfScene;
  before(async () => {
    sc = await selfScene(4, false);
  });
  after(async () => {
    await sc.kill();
  });
  controlTests(SELF_ATTACKS, scene, (attack, s) => inNs(sc[attack.in].pid, attack.script(s, sc.delegated)));
});

describe('self with a delegated range: managed, no transient id leaks through it or its descendants', () => {
  let sc: SelfScene;
  let s: Scene;
  let fixtures: Set<number>;
  before(async () => {
    assert.equal(policy.status().attached, true, `policy not attached: ${policy.status().reason}`);
    sc = await selfScene(5, true);
    s = scene();
    fixtures = inodesUnder(lab.disk.dir);
  });
  after(async () => {
    s.cleanup();
    await sc.kill();
  });

  denialTests(SELF_ATTACKS, (attack) => inNs(sc[attack.in].pid, attack.script(s, sc.delegated)));

  it('allows the caller\'s own id (not transient) to write as usual', () => {
    assertAllowed(inNs(sc.self.pid, `mkdir ${s.host}/own && : > ${s.host}/own/f && chown 0:0 ${s.mine}`), 'own id');
    assert.equal(fs.statSync(path.join(s.host, 'own/f')).uid, SELF_UID);
  });

  it('denies setgroups in the namespace and in its descendant', () => {
    assertDenied(inNs(sc.self.pid, 'setpriv --groups 0 true'), 'self');
    assertDenied(inNs(sc.child.pid, 'setpriv --groups 0 true'), 'descendant');
  });

  it('leaves no transient id on the disk', () => {
    assert.deepEqual(transientTraces(lab.disk.dir, fixtures), []);
  });
});
