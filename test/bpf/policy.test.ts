// userns-restrict policy on the real kernel, as root. The attacker is root of a namespace
// mapped to a transient range. Every attack is also run from an *unmanaged* namespace with the
// same mapping, where it must succeed: that proves the EPERM comes from the policy.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { UsernsPolicy } from '../../src/bpf/policy.js';
import type { NamespaceDeath } from '../../src/bpf/policy.js';
import { AT_FDCWD, MOUNT_ATTR_IDMAP, attachMount, mountSetattrFd, openTree } from '../../src/sys/mount-api.js';
import { nsGetParent, userNamespaceInfo } from '../../src/sys/nsfs.js';
import { projectRoot } from '../../src/native/index.js';
import { spawnInNewUserns, killAndWait, waitFor } from '../sys/util.js';
import { ATTACKS, TRANSIENT_BASE, inNs, mappingNs, onHost, scratch, tmpfsScript, transientNs } from './harness.js';
import type { Scratch, TransientNs } from './harness.js';

const PIN_DIR = `/sys/fs/bpf/mountgate-test-${process.pid}`;

const build = spawnSync(path.join(projectRoot, 'scripts', 'build-bpf'), { encoding: 'utf8' });
assert.equal(build.status, 0, `scripts/build-bpf failed: ${build.stderr}`);

// Installed once up front so the suites below know whether the kernel lets us attach.
const policy = UsernsPolicy.install({ pinDir: PIN_DIR, maxNamespaces: 256 });
const installed = policy.status();
const skipReason = installed.attached ? false : `policy not attached on this kernel: ${installed.reason ?? 'unknown'}`;

after(() => {
  policy.close();
  UsernsPolicy.uninstall(PIN_DIR);
});

function assertDenied(r: { code: number; stderr: string }, what: string): void {
  assert.notEqual(r.code, 0, `${what}: succeeded but must be denied`);
  assert.match(r.stderr, /Operation not permitted|Permission denied/i, `${what}: ${r.stderr}`);
}

function assertAllowed(r: { code: number; stderr: string }, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
}

describe('loader', () => {
  it('reports the LSM state from securityfs', () => {
    const lsm = fs.readFileSync('/sys/kernel/security/lsm', 'utf8').split(',').includes('bpf');
    assert.equal(UsernsPolicy.lsmAvailable(), lsm);
    assert.equal(installed.lsm, lsm);
  });

  it('either attaches and pins everything, or says why and leaves no pins behind', () => {
    if (installed.attached) {
      assert.equal(installed.pinned, true);
      assert.equal(installed.reason, undefined);
      assert.ok(fs.existsSync(path.join(PIN_DIR, 'links', 'path_mkdir')));
    } else {
      assert.equal(installed.pinned, false);
      assert.ok(installed.reason && installed.reason.length > 0);
      assert.equal(fs.existsSync(PIN_DIR), false);
      assert.throws(() => policy.manage(1234), /userns policy unavailable/);
    }
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
  for (const attack of ATTACKS) {
    it(attack.name, () => {
      const s = scratch(ns.base);
      try {
        assertAllowed(inNs(ns.pid, attack.script(s)), attack.name);
      } finally {
        s.cleanup();
      }
    });
  }
});

describe('managed namespace', { skip: skipReason }, () => {
  let ns: TransientNs;
  let s: Scratch;
  before(async () => {
    ns = await transientNs();
    policy.manage(ns.inode);
    s = scratch(ns.base);
  });
  after(async () => {
    s.cleanup();
    await ns.kill();
  });

  for (const attack of ATTACKS) {
    it(`denies: ${attack.name}`, () => assertDenied(inNs(ns.pid, attack.script(s)), attack.name));
  }

  it('leaves no inode, ACL entry or capability on the host', () => {
    assert.deepEqual(fs.readdirSync(s.host).sort(), ['owned', 'victim']);
    assert.equal(fs.statSync(s.owned).uid, ns.base);
    assert.equal(onHost(`getfattr -n security.capability ${s.owned}`).code === 0, false);
    assert.doesNotMatch(spawnSync('getfacl', ['-cn', s.owned], { encoding: 'utf8' }).stdout, /^user:\d+:/m);
  });

  it('allows everything on a tmpfs the namespace mounted', () => assertAllowed(inNs(ns.pid, tmpfsScript(s)), 'tmpfs'));

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
      assertAllowed(inNs(ns.pid, `mkdir ${dst}/d && : > ${dst}/f && chown 1000:1000 ${dst}/f`), 'idmapped writes');
      assert.equal(fs.statSync(path.join(src, 'd')).uid, onDisk);
      assert.equal(fs.statSync(path.join(src, 'f')).uid, onDisk + 1000);
    } finally {
      fs.closeSync(mnt);
      fs.closeSync(usernsFd);
      spawnSync('umount', ['-l', dst], { stdio: 'ignore' });
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

async function nextDeath(it: AsyncIterator<NamespaceDeath>): Promise<NamespaceDeath> {
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no death event within 5 s')), 5000).unref());
  const r = await Promise.race([it.next(), timeout]);
  if (r.done) throw new Error('death stream ended');
  return r.value;
}

describe('namespace death', { skip: skipReason }, () => {
  it('reports managed namespaces (also parent and child freed together), never unmanaged ones', async () => {
    const deaths = policy.deaths()[Symbol.asyncIterator]();
    const unmanaged = await transientNs(TRANSIENT_BASE + 2 * 65536);
    await unmanaged.kill();

    const single = await transientNs();
    const fd = fs.openSync(`/proc/${single.pid}/ns/user`, 'r');
    const info = userNamespaceInfo(fd);
    fs.closeSync(fd);
    policy.manage(single.inode);
    await single.kill();
    const ev = await nextDeath(deaths);
    assert.equal(ev.inode, single.inode);
    if (ev.nsId !== undefined && info.id !== undefined) assert.equal(ev.nsId, info.id);

    // One process, two nested namespaces: the parent is only referenced by the child.
    const nested = await spawnInNewUserns('unshare', ['--user', 'unshare', '--user', 'sleep', 'infinity']);
    await waitFor(() => fs.readlinkSync(`/proc/${nested.pid}/exe`).endsWith('/sleep'), 'nested unshare');
    const childFd = fs.openSync(`/proc/${nested.pid}/ns/user`, 'r');
    const parentFd = nsGetParent(childFd);
    const inodes = [fs.fstatSync(childFd).ino, fs.fstatSync(parentFd).ino];
    fs.closeSync(childFd);
    fs.closeSync(parentFd);
    for (const inode of inodes) policy.manage(inode);
    await killAndWait(nested);
    const got = [(await nextDeath(deaths)).inode, (await nextDeath(deaths)).inode];
    assert.deepEqual(got.sort(), [...inodes].sort());
    await deaths.return?.();
  });
});

describe('restart', { skip: skipReason }, () => {
  it('keeps denying after the loader process dies, and a new loader adopts the pins', async () => {
    const ns = await transientNs();
    const s = scratch(ns.base);
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
});
