// The userns-restrict policy on a real kernel. Runs in the kernel lab (scripts/test boots a
// Debian kernel for it; this machine's kernel refuses every BPF-LSM program), as root: the
// attacker is root of a namespace mapped to a transient range, aiming at an ext4 file system
// that host root mounted from a loop device. Every attack is also run from an *unmanaged*
// namespace with the same mapping, where it must succeed: that proves the EPERM comes from the
// policy. Nothing here skips: a policy that does not attach is a failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { UsernsPolicy } from '../../src/bpf/policy.js';
import type { NamespaceDeath } from '../../src/bpf/policy.js';
import * as bpf from '../../src/bpf/libbpf.js';
import { AT_FDCWD, MOUNT_ATTR_IDMAP, attachMount, mountSetattrFd, openTree } from '../../src/sys/mount-api.js';
import { nsGetParent } from '../../src/sys/nsfs.js';
import { projectRoot } from '../../src/native/index.js';
import { ATTACKS, TRANSIENT_BASE, assertAllowed, assertDenied, controlTests, denialTests, inNs, inodesUnder, mappingNs, onHost, policyLab, scratch, tmpfsScript, transientNs, transientTraces } from '../support/attacks.js';
import type { Scratch, TransientNs } from '../support/attacks.js';
import { killAndWait, spawnInNewUserns } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const PIN_DIR = `/sys/fs/bpf/mountgate-test-${process.pid}`;
/** Every program the object has, by hook, in the object's order (the death probe this kernel has comes last). */
const HOOKS = [
  'path_mkdir', 'path_mknod', 'path_symlink', 'path_link', 'path_rename',
  'inode_mkdir', 'inode_create', 'inode_mknod', 'inode_symlink', 'inode_link',
  'path_chown', 'inode_set_acl', 'inode_setxattr', 'sb_kern_mount', 'task_fix_setgroups',
];
/** How long a death event may take: a range is freed within 1 s of its namespace's death. */
const DEATH_DEADLINE_MS = 1000;

const lab = policyLab(PIN_DIR);
const { policy } = lab;

describe('loader', () => {
  it('attaches and pins every hook of the policy on this kernel', () => {
    const st = policy.status();
    assert.equal(st.lsm, true, "'bpf' must be an active LSM in the lab");
    assert.equal(st.reason, undefined, `not attached: ${st.reason}`);
    assert.equal(st.attached, true);
    assert.equal(st.pinned, true);
    assert.deepEqual(st.hooks.slice(0, HOOKS.length), HOOKS);
    assert.match(st.hooks[HOOKS.length] ?? '', /^(retire_userns_sysctls|free_user_ns)$/);
    for (const hook of st.hooks) assert.ok(fs.existsSync(path.join(PIN_DIR, 'links', hook)), hook);
  });

  it('rejects bad inode numbers and pin directories', () => {
    assert.throws(() => policy.manage(0), RangeError);
    assert.throws(() => policy.manage(2 ** 32), RangeError);
    assert.throws(() => UsernsPolicy.install({ pinDir: '/tmp/x' }), RangeError);
    assert.throws(() => UsernsPolicy.install({ pinDir: '/sys/fs/bpf/a.b' }), RangeError);
    assert.throws(() => UsernsPolicy.install({ pinDir: PIN_DIR, maxNamespaces: 0 }), RangeError);
  });
});

describe('control: an unmanaged namespace on a transient range can write everything', () => {
  let ns: TransientNs;
  before(async () => {
    ns = await transientNs(TRANSIENT_BASE + 65536);
  });
  after(async () => {
    await ns.kill();
  });
  controlTests(ATTACKS, () => scratch(ns.base, lab.disk.dir), (attack, s) => inNs(ns.pid, attack.script(s)));
});

describe('managed namespace, attacking an ext4 disk that host root mounted', () => {
  let ns: TransientNs;
  let s: Scratch;
  let fixtures: Set<number>;
  before(async () => {
    ns = await transientNs();
    policy.manage(ns.inode);
    s = scratch(ns.base, lab.disk.dir);
    fixtures = inodesUnder(lab.disk.dir);
  });
  after(async () => {
    s.cleanup();
    await ns.kill();
  });

  denialTests(ATTACKS, (attack) => inNs(ns.pid, attack.script(s)));

  it('leaves no inode, ACL entry or file capability naming a transient id on the disk', () => {
    assert.deepEqual(fs.readdirSync(s.host).sort(), ['owned', 'victim']);
    // overlayfs makes work/work in ovl_fill_super(), before sb_kern_mount: the inode hooks stop it.
    assert.deepEqual(fs.readdirSync(s.work), [], 'overlayfs left its work directory behind');
    assert.deepEqual(transientTraces(lab.disk.dir, fixtures), []);
  });

  it('allows everything on a tmpfs the namespace mounted', () => assertAllowed(inNs(ns.pid, tmpfsScript(s)), 'tmpfs'));

  it('allows an overlay whose upper layer is on a tmpfs the namespace mounted', () => {
    const t = s.merged;
    const script = `unshare -m sh -ec 'mount -t tmpfs t ${t}; mkdir ${t}/u ${t}/w ${t}/m; mount -t overlay o -o lowerdir=${s.lower},upperdir=${t}/u,workdir=${t}/w ${t}/m; mkdir ${t}/m/d; : > ${t}/m/f'`;
    assertAllowed(inNs(ns.pid, script), 'overlay on own tmpfs');
  });

  it('allows reading host files', () => assertAllowed(inNs(ns.pid, `cat ${s.victim} >/dev/null && ls ${s.host} >/dev/null`), 'read'));

  it('allows writes through an idmapped mount that maps the transient range away', async () => {
    const onDisk = 100000; // neither dynamic nor container range
    const idns = await mappingNs(onDisk, ns.base, 65536);
    const src = path.join(s.dir, 'idsrc');
    const dst = path.join(s.dir, 'idmnt');
    fs.mkdirSync(src);
    fs.mkdirSync(dst);
    fs.chownSync(src, onDisk, onDisk);
    const usernsFd = fs.openSync(`/proc/${idns.pid}/ns/user`, 'r');
    const mnt = openTree(AT_FDCWD, src);
    try {
      mountSetattrFd(mnt, { attrSet: MOUNT_ATTR_IDMAP, usernsFd });
      attachMount(mnt, dst);
      assertAllowed(
        inNs(ns.pid, `mkdir ${dst}/d && : > ${dst}/f && mknod ${dst}/p p && ln -s x ${dst}/s && ln ${dst}/f ${dst}/h && chown 1000:1000 ${dst}/f`),
        'idmapped writes',
      );
      assert.equal(fs.statSync(path.join(src, 'd')).uid, onDisk);
      assert.equal(fs.statSync(path.join(src, 'f')).uid, onDisk + 1000);
    } finally {
      fs.closeSync(mnt);
      fs.closeSync(usernsFd);
      onHost(`umount -l ${dst}`);
      await idns.kill();
    }
  });

  it('does not restrict processes outside managed namespaces', () => {
    const id = ns.base + 1000;
    assertAllowed(
      onHost(
        `mkdir ${s.dir}/hd && : > ${s.dir}/hf && chown ${id}:${id} ${s.dir}/hf && setfacl -m u:${id}:rwx ${s.dir}/hf && setcap cap_net_raw+ep ${s.dir}/hf`,
      ),
      'host root',
    );
  });

  it('denies setgroups only when asked to', () => {
    assertAllowed(inNs(ns.pid, 'setpriv --groups 1,2 true'), 'setgroups allowed');
    policy.denySetgroups(ns.inode);
    assertDenied(inNs(ns.pid, 'setpriv --groups 1,2 true'), 'setgroups denied');
  });
});

/** The next death event, and how long after `since` (ms) it arrived. */
async function nextDeath(it: AsyncIterator<NamespaceDeath>, since: bigint): Promise<NamespaceDeath & { ms: number }> {
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no death event within 5 s')), 5000).unref());
  const r = await Promise.race([it.next(), timeout]);
  if (r.done) throw new Error('death stream ended');
  return { ...r.value, ms: Number(process.hrtime.bigint() - since) / 1e6 };
}

describe('namespace death', () => {
  it(`reports a managed namespace within ${DEATH_DEADLINE_MS} ms, never an unmanaged one`, async (t) => {
    const deaths = policy.deaths()[Symbol.asyncIterator]();
    const unmanaged = await transientNs(TRANSIENT_BASE + 2 * 65536);
    await unmanaged.kill();

    const single = await transientNs();
    policy.manage(single.inode);
    const killed = process.hrtime.bigint();
    await single.kill();
    const ev = await nextDeath(deaths, killed);
    t.diagnostic(`death event ${ev.ms.toFixed(1)} ms after SIGKILL`);
    assert.equal(ev.inode, single.inode);
    assert.ok(ev.ms <= DEATH_DEADLINE_MS, `${ev.ms} ms`);
    await deaths.return?.();
  });

  it(`reports a parent and a child that die together, both within ${DEATH_DEADLINE_MS} ms`, async (t) => {
    const deaths = policy.deaths()[Symbol.asyncIterator]();
    // One process, two nested namespaces: the parent is only referenced by the child. The outer
    // one maps root so the inner unshare is allowed (an unmapped creator gets EPERM).
    const nested = await spawnInNewUserns('unshare', ['--user', '--map-root-user', 'unshare', '--user', 'sleep', 'infinity']);
    await waitFor(() => fs.readlinkSync(`/proc/${nested.pid}/exe`).endsWith('/sleep'), 'nested unshare', 20_000);
    const childFd = fs.openSync(`/proc/${nested.pid}/ns/user`, 'r');
    const parentFd = nsGetParent(childFd);
    const inodes = [fs.fstatSync(childFd).ino, fs.fstatSync(parentFd).ino];
    fs.closeSync(childFd);
    fs.closeSync(parentFd);
    assert.notEqual(inodes[0], inodes[1]);
    for (const inode of inodes) policy.manage(inode);
    const killed = process.hrtime.bigint();
    await killAndWait(nested);
    const first = await nextDeath(deaths, killed);
    const second = await nextDeath(deaths, killed);
    t.diagnostic(`death events ${first.ms.toFixed(1)} and ${second.ms.toFixed(1)} ms after SIGKILL`);
    assert.deepEqual([first.inode, second.inode].sort(), [...inodes].sort());
    assert.ok(second.ms <= DEATH_DEADLINE_MS, `${second.ms} ms`);
    await deaths.return?.();
  });
});

/** A process that keeps trying to create a directory on the disk from `ns` until stopped. */
function prober(ns: TransientNs, dir: string): { stop(): Promise<{ tries: number; leaks: number }> } {
  const script = `n=0; l=0; while [ ! -e ${dir}/.stop ]; do n=$((n+1)); if mkdir ${dir}/p 2>/dev/null; then l=$((l+1)); rmdir ${dir}/p; fi; done; echo "$n $l"`;
  const child = spawn('nsenter', ['-t', String(ns.pid), '-U', '--', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  const done = new Promise<void>((r) => child.once('close', () => r()));
  return {
    async stop() {
      fs.writeFileSync(path.join(dir, '.stop'), '');
      await done;
      const [tries, leaks] = out.trim().split(' ').map(Number);
      return { tries: tries ?? 0, leaks: leaks ?? -1 };
    },
  };
}

describe('restart and upgrade', () => {
  it('keeps denying after the loader is killed with SIGKILL, and a new loader adopts the pins', async () => {
    const ns = await transientNs();
    const s = scratch(ns.base, lab.disk.dir);
    try {
      const script = `import { UsernsPolicy } from ${JSON.stringify(path.join(projectRoot, 'src/bpf/policy.ts'))};
        const p = UsernsPolicy.install({ pinDir: ${JSON.stringify(PIN_DIR)} });
        p.manage(${ns.inode}); process.stdout.write('ready'); setInterval(() => {}, 1000);`;
      const loader = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        loader.stdout?.once('data', () => resolve());
        loader.once('exit', (code) => reject(new Error(`loader exited with ${code}`)));
      });
      const linkIno = fs.statSync(path.join(PIN_DIR, 'links', 'path_mkdir')).ino;
      await killAndWait(loader);
      assertDenied(inNs(ns.pid, `mkdir ${s.host}/d`), 'after loader death');

      const again = UsernsPolicy.install({ pinDir: PIN_DIR });
      try {
        assert.equal(again.status().attached, true);
        assert.equal(fs.statSync(path.join(PIN_DIR, 'links', 'path_mkdir')).ino, linkIno, 'pins adopted, not replaced');
        again.unmanage(ns.inode);
        assertAllowed(inNs(ns.pid, `mkdir ${s.host}/d`), 'after unmanage');
      } finally {
        again.close();
      }
    } finally {
      s.cleanup();
      await ns.kill();
    }
  });

  it('a newer policy build replaces every program with no moment without a policy', async (t) => {
    const ns = await transientNs();
    const s = scratch(ns.base, lab.disk.dir);
    policy.manage(ns.inode);
    try {
      const before = new Map(policy.status().hooks.map((h) => [h, fs.statSync(path.join(PIN_DIR, 'links', h)).ino]));
      // What a daemon of another build finds: pins whose owner digest is not its object's.
      const meta = bpf.objGet(path.join(PIN_DIR, 'maps', 'meta'));
      try {
        bpf.mapUpdate(meta, Buffer.alloc(4), Buffer.alloc(32, 0xee));
      } finally {
        fs.closeSync(meta);
      }
      const probe = prober(ns, s.host);
      await new Promise((r) => setTimeout(r, 300));
      const newer = UsernsPolicy.install({ pinDir: PIN_DIR });
      await new Promise((r) => setTimeout(r, 300));
      const { tries, leaks } = await probe.stop();
      try {
        t.diagnostic(`${tries} creation attempts during the replacement, ${leaks} succeeded`);
        assert.ok(tries > 0, 'the prober ran');
        assert.equal(leaks, 0);
        assert.equal(newer.status().attached, true);
        for (const [hook, ino] of before) assert.notEqual(fs.statSync(path.join(PIN_DIR, 'links', hook)).ino, ino, `${hook} replaced`);
        assertDenied(inNs(ns.pid, `mkdir ${s.host}/d`), 'after the upgrade');
      } finally {
        newer.close();
      }
    } finally {
      s.cleanup();
      await ns.kill();
    }
  });
});
