// MountDirectory and MakeDirectory end to end: mntfsd and userdbd run here (root, userdbd
// without the BPF policy as the e2e tests start it); the client is uid 1000 with a user
// namespace userdbd mapped, calling through the Varlink client bundled into the unpacked
// package. Ownership is looked at from the host and, through the returned mount, from inside
// the namespace (stat run there via nsenter).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { VarlinkClient } from '../../src/ipc/client.js';
import { parseInterface } from '../../src/ipc/idl.js';
import { VarlinkServer } from '../../src/ipc/server.js';
import { FOREIGN_RANGE } from '../../src/id-ranges.js';
import { startMntfsd, type Mntfsd } from '../../src/mntfsd/daemon.js';
import { NamespaceResource } from '../../src/ipc/interfaces/io.systemd.NamespaceResource.js';
import { callerWithRange, evalAs1000 } from '../support/clients.js';
import { type Daemon, startDaemon, startTestUserdbd, type TestUserdbd } from '../support/daemons.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { AS_1000, REPO } from '../support/processes.js';
import { killAndWait, spawnInNewUserns, type UsernsHolder } from '../support/userns.js';

const F = FOREIGN_RANGE.start;
const NOBODY = 65534;
const SYSTEM = 'io.systemd.System';
const DENIED = 'org.varlink.service.PermissionDenied';
const INVALID = 'org.varlink.service.InvalidParameter';
const BAD_FLAGS = 'io.systemd.MountFileSystem.BadFileDescriptorFlags';

let dir: string;
let sock: string;
let daemon: Mntfsd;
let userdbd: TestUserdbd;
/** First host uid of the range userdbd mapped into the caller's namespace. */
let BASE: number;
let ns: UsernsHolder;
/** A namespace uid 1000 mapped itself ("0 1000 1"): not shaped like a userdbd allocation. */
let selfMapped: UsernsHolder;
let home: string;
let bound: string | null = null;

/** An fd the client opens: a path with open flags, the caller's namespace, or another namespace. */
type FdSpec = { path: string; flags?: 'opath' | 'nonblock' | 'file' } | 'ns' | 'self-mapped-ns' | 'host-ns' | 'own-ns';

interface Call {
  method: 'MountDirectory' | 'MakeDirectory';
  params: Record<string, unknown>;
  fds: FdSpec[];
  /** MountDirectory: paths below the mount to stat, from the host and from inside the namespace. */
  probes?: string[];
  /** MountDirectory: a file to create from inside the namespace (as its root) through the mount. */
  write?: string;
}

interface Outcome {
  error?: string;
  parameter?: string;
  errnoName?: string;
  /** MountDirectory: "hostUid/insideUid" per probe. */
  probes?: Record<string, string>;
  /** MountDirectory: whether the write from inside worked. */
  wrote?: boolean;
  /** MakeDirectory: the returned fd's owner, mode and name. */
  made?: { uid: number; gid: number; mode: string; name: string };
}

// The caller's side: one client, the calls in order, one JSON line of outcomes.
const SCRIPT = `
  import { VarlinkClient } from '${path.resolve(import.meta.dirname, '../../src/ipc/client.js')}';
  import { spawnSync } from 'node:child_process';
  import fs from 'node:fs';
  import path from 'node:path';
  const [sockPath, nsPid, selfPid, json] = process.argv.slice(1);
  const O_PATH = 0o10000000, O_NONBLOCK = 0o4000, O_DIRECTORY = 0o200000;
  const open = (f) => {
    if (f === 'ns') return fs.openSync('/proc/' + nsPid + '/ns/user', 'r');
    if (f === 'self-mapped-ns') return fs.openSync('/proc/' + selfPid + '/ns/user', 'r');
    if (f === 'host-ns' || f === 'own-ns') return fs.openSync('/proc/self/ns/user', 'r');
    const flags = f.flags === 'opath' ? O_PATH : f.flags === 'nonblock' ? O_NONBLOCK | O_DIRECTORY : f.flags === 'file' ? 0 : O_DIRECTORY;
    return fs.openSync(f.path, flags);
  };
  const inside = (fd, cmd) => spawnSync('nsenter', ['-t', nsPid, '-U', '--', 'sh', '-c', cmd], { stdio: ['ignore', 'pipe', 'pipe', fd], encoding: 'utf8' });
  const c = await VarlinkClient.connect(sockPath);
  const out = [];
  for (const call of JSON.parse(json)) {
    const fds = call.fds.map(open);
    try {
      const r = await c.call('io.systemd.MountFileSystem.' + call.method, call.params, { fds });
      const fd = r.fds[0];
      const o = {};
      if (call.method === 'MountDirectory') {
        o.probes = {};
        for (const p of call.probes ?? []) {
          const host = p === '.' ? fs.fstatSync(fd).uid : fs.statSync('/proc/self/fd/' + fd + '/' + p).uid;
          const s = inside(fd, 'stat -c %u /proc/self/fd/3/' + p);
          o.probes[p] = host + '/' + (s.status === 0 ? s.stdout.trim() : 'error');
        }
        if (call.write) o.wrote = inside(fd, 'echo x > /proc/self/fd/3/' + call.write).status === 0;
      } else {
        const st = fs.fstatSync(fd);
        o.made = { uid: st.uid, gid: st.gid, mode: (st.mode & 0o7777).toString(8), name: path.basename(fs.readlinkSync('/proc/self/fd/' + fd)) };
      }
      r.fds.forEach((f) => fs.closeSync(f));
      out.push(o);
    } catch (e) {
      out.push(e.error ? { error: e.error, parameter: e.parameters?.parameter, errnoName: e.parameters?.errnoName } : { error: String(e) });
    }
    fds.forEach((f) => fs.closeSync(f));
  }
  console.log(JSON.stringify(out));
  c.close();
`;

/** WRAP runs the client inside, e.g. in namespaces of its own; OUTER runs setpriv (as root) inside. */
async function callsAs1000(calls: Call[], wrap: string[] = [], outer: string[] = []): Promise<Outcome[]> {
  return evalAs1000<Outcome[]>('directory-calls', SCRIPT, [sock, String(ns.pid), String(selfMapped.pid), JSON.stringify(calls)], { wrap, outer, opening: '[' });
}

const one = async (call: Call): Promise<Outcome> => (await callsAs1000([call]))[0]!;
const mountDir = (p: string, params: Record<string, unknown> = {}, probes: string[] = ['.'], extra: Partial<Call> = {}): Call => ({
  method: 'MountDirectory',
  params: { directoryFileDescriptor: 0, userNamespaceFileDescriptor: 1, ...params },
  fds: [{ path: p }, 'ns'],
  probes,
  ...extra,
});
const makeDir = (parent: string, params: Record<string, unknown>, flags?: 'opath' | 'file'): Call => ({
  method: 'MakeDirectory',
  params: { parentFileDescriptor: 0, ...params },
  fds: [{ path: parent, flags }],
});

function mkdirOwned(p: string, uid: number, mode = 0o755): string {
  fs.mkdirSync(p);
  fs.chownSync(p, uid, uid);
  fs.chmodSync(p, mode);
  return p;
}
function writeOwned(p: string, uid: number): void {
  fs.writeFileSync(p, 'x\n');
  fs.chownSync(p, uid, uid);
}
const leftovers = (d: string): string[] => fs.readdirSync(d).filter((n) => n.startsWith('.#mountfsd'));

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mntfsd-dir-'));
  fs.chmodSync(dir, 0o755);
  sock = path.join(dir, 'mntfsd.sock');
  userdbd = await startTestUserdbd('mntfsd-dir', { dir, sock: path.join(dir, 'userdbd.sock'), state: path.join(dir, 'userdbd-state') });
  daemon = startMntfsd({ listen: sock, userdbd: userdbd.sock });
  ({ ns, base: BASE } = await callerWithRange(userdbd.sock, 'mntfs-dir'));
  selfMapped = await spawnInNewUserns('setpriv', [...AS_1000, 'unshare', '--user', '--map-root-user', 'sleep', 'infinity']);

  // The caller's home: its own tree, and a foreign-owned container tree two levels deep.
  home = mkdirOwned(path.join(dir, 'home1000'), 1000);
  mkdirOwned(path.join(home, 'own'), 1000);
  writeOwned(path.join(home, 'own/f'), 1000);
  mkdirOwned(path.join(home, 'ctree'), F);
  writeOwned(path.join(home, 'ctree/f'), F + 5);
  mkdirOwned(path.join(home, 'ctree/sub'), F);
  writeOwned(path.join(home, 'ctree/sub/g'), F + 7);
  writeOwned(path.join(home, 'plain-file'), 1000);
  fs.symlinkSync('own', path.join(home, 'link'));
  // Someone else's home, with its own foreign-owned tree.
  const other = mkdirOwned(path.join(dir, 'home1001'), 1001);
  mkdirOwned(path.join(other, 'own1001'), 1001);
  mkdirOwned(path.join(other, 'ctree2'), F);
  writeOwned(path.join(other, 'ctree2/f'), F + 5);
  // A foreign-owned tree directly below root's directory, and root's own.
  mkdirOwned(path.join(dir, 'orphan'), F);
  mkdirOwned(path.join(dir, 'rootdir'), 0);
  writeOwned(path.join(dir, 'rootdir/f'), 0);
  // The other user's tree bind-mounted below a directory the caller owns: the mount root stops the search.
  bound = mkdirOwned(path.join(home, 'bind'), 1000);
  execFileSync('mount', ['--bind', path.join(other, 'ctree2'), bound]);
});

after(async () => {
  if (bound) execFileSync('umount', [bound]);
  await killAndWait(ns);
  await killAndWait(selfMapped);
  daemon.close();
  await userdbd.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('MountDirectory: mapping modes, seen from the host and from inside the namespace', () => {
  test('each mode maps as 262 declares it', async () => {
    const out = await callsAs1000([
      // auto on the caller's own tree → root: the caller is root inside, BASE on the host.
      mountDir(path.join(home, 'own'), {}, ['.', 'f']),
      mountDir(path.join(home, 'own'), { mode: 'root' }, ['.', 'f']),
      // auto on a foreign-owned tree below the caller's directory → foreign: F+k becomes k.
      mountDir(path.join(home, 'ctree'), {}, ['.', 'f', 'sub/g']),
      mountDir(path.join(home, 'ctree'), { mode: 'foreign' }, ['f']),
      // Two foreign-owned levels below the caller's directory.
      mountDir(path.join(home, 'ctree/sub'), { mode: 'auto' }, ['.', 'g']),
      // identity: the ids stay; none of them is mapped in the namespace.
      mountDir(path.join(home, 'own'), { mode: 'identity' }, ['f']),
      mountDir(path.join(home, 'ctree'), { mode: 'identity' }, ['f']),
      // foreign on the caller's own tree: its uid is outside the map.
      mountDir(path.join(home, 'own'), { mode: 'foreign' }, ['f']),
      // root on a foreign tree: the foreign ids are outside the map.
      mountDir(path.join(home, 'ctree'), { mode: 'root' }, ['f']),
    ]);
    assert.deepEqual(
      out.map((o) => o.probes ?? o),
      [
        { '.': `${BASE}/0`, f: `${BASE}/0` },
        { '.': `${BASE}/0`, f: `${BASE}/0` },
        { '.': `${BASE}/0`, f: `${BASE + 5}/5`, 'sub/g': `${BASE + 7}/7` },
        { f: `${BASE + 5}/5` },
        { '.': `${BASE}/0`, g: `${BASE + 7}/7` },
        { f: `1000/${NOBODY}` },
        { f: `${F + 5}/${NOBODY}` },
        { f: `${NOBODY}/${NOBODY}` },
        { f: `${NOBODY}/${NOBODY}` },
      ],
    );
  });

  test('readOnly: writes from inside fail; otherwise they land on disk as the mapped owner', async () => {
    const [ro, rw, made] = await callsAs1000([
      mountDir(path.join(home, 'own'), { readOnly: true }, [], { write: 'ro-probe' }),
      mountDir(path.join(home, 'own'), { readOnly: false }, [], { write: 'rw-probe' }),
      mountDir(path.join(home, 'ctree'), {}, [], { write: 'fw-probe' }),
    ]);
    assert.equal(ro!.wrote, false);
    assert.equal(rw!.wrote, true);
    assert.equal(made!.wrote, true);
    assert.ok(!fs.existsSync(path.join(home, 'own/ro-probe')));
    assert.equal(fs.statSync(path.join(home, 'own/rw-probe')).uid, 1000);
    assert.equal(fs.statSync(path.join(home, 'ctree/fw-probe')).uid, F);
  });

  test('an O_PATH directory fd is accepted, as upstream (access comes from ownership, not the fd)', async () => {
    const o = await one({ ...mountDir(path.join(home, 'own'), {}, ['f']), fds: [{ path: path.join(home, 'own'), flags: 'opath' }, 'ns'] });
    assert.deepEqual(o.probes, { f: `${BASE}/0` });
  });

  test('root may mount anything, in the host id space too (start 0)', async () => {
    const c = await VarlinkClient.connect(sock);
    try {
      const results: Array<number | string> = [];
      for (const [p, mode, probe] of [
        [path.join(dir, 'rootdir'), 'auto', 'f'],
        [path.join(home, 'ctree'), 'foreign', 'f'],
        [path.join(dir, 'home1001/own1001'), 'identity', '.'],
      ] as const) {
        const fd = fs.openSync(p, fs.constants.O_DIRECTORY);
        try {
          const r = await c.call('io.systemd.MountFileSystem.MountDirectory', { directoryFileDescriptor: 0, mode }, { fds: [fd] });
          results.push(fs.statSync(`/proc/self/fd/${r.fds[0]}/${probe}`).uid);
          r.fds.forEach((x) => fs.closeSync(x));
        } catch (e) {
          results.push(String(e));
        } finally {
          fs.closeSync(fd);
        }
      }
      assert.deepEqual(results, [0, 5, 1001]);
    } finally {
      c.close();
    }
  });
});

describe('MountDirectory: refusals', () => {
  test('trees that are not the caller’s, bad fds and bad namespaces get upstream’s errors', async () => {
    const own = path.join(home, 'own');
    const out = await callsAs1000([
      mountDir(path.join(dir, 'home1001/own1001')),
      mountDir(path.join(dir, 'home1001/ctree2')),
      mountDir(path.join(dir, 'orphan')),
      mountDir(path.join(home, 'bind')),
      mountDir(path.join(dir, 'rootdir')),
      mountDir(path.join(dir, 'rootdir'), { mode: 'identity' }),
      // No namespace, or the host's: a mount in the host id space is root's alone.
      { method: 'MountDirectory', params: { directoryFileDescriptor: 0 }, fds: [{ path: own }] },
      { ...mountDir(own), fds: [{ path: own }, 'host-ns'] },
      // Not a directory, opened normally and with O_PATH.
      { ...mountDir(own), fds: [{ path: path.join(home, 'plain-file'), flags: 'file' }, 'ns'] },
      { ...mountDir(own), fds: [{ path: path.join(home, 'plain-file'), flags: 'opath' }, 'ns'] },
      // Flags fd_verify_safe_flags() does not allow.
      { ...mountDir(own), fds: [{ path: own, flags: 'nonblock' }, 'ns'] },
      // A namespace not shaped like a userdbd allocation: refused where a map is built, fine for identity.
      { ...mountDir(own, { mode: 'root' }), fds: [{ path: own }, 'self-mapped-ns'] },
      { ...mountDir(path.join(home, 'ctree'), { mode: 'foreign' }), fds: [{ path: path.join(home, 'ctree') }, 'self-mapped-ns'] },
      { ...mountDir(own, { mode: 'identity' }, []), fds: [{ path: own }, 'self-mapped-ns'] },
      // Not a namespace at all; indexes out of range; an unknown mode.
      { ...mountDir(own), fds: [{ path: own }, { path: own }] },
      { ...mountDir(own, { directoryFileDescriptor: 5 }), fds: [{ path: own }, 'ns'] },
      mountDir(own, { mode: 'bogus' }),
    ]);
    const E = (error: string, parameter?: string, errnoName?: string): Outcome => ({ error, ...(parameter && { parameter }), ...(errnoName && { errnoName }) });
    assert.deepEqual(out.map((o) => (o.error ? o : 'ok')), [
      E(DENIED),
      E(DENIED),
      E(DENIED),
      E(DENIED),
      E(DENIED),
      E(DENIED),
      E(DENIED),
      E(DENIED),
      E(SYSTEM, undefined, 'ENOTDIR'),
      E(SYSTEM, undefined, 'ENOTDIR'),
      E(BAD_FLAGS, 'directoryFileDescriptor'),
      E(INVALID, 'userNamespaceFileDescriptor'),
      E(INVALID, 'userNamespaceFileDescriptor'),
      'ok',
      E(INVALID, 'userNamespaceFileDescriptor'),
      E(INVALID, 'directoryFileDescriptor'),
      E(INVALID, 'mode'),
    ]);
  });

  test('a caller in mount and user namespaces of its own: the directory is cloned in its mount namespace (open_tree cannot from the daemon\'s)', async () => {
    const own = path.join(home, 'own');
    const [o] = await callsAs1000([{ ...mountDir(own, { mode: 'identity' }, ['f']), fds: [{ path: own }, 'own-ns'] }], ['unshare', '--user', '--map-root-user', '--mount', '--']);
    // From the caller's side the host's uid 1000 is its root; nsenter into the allocated namespace is not its to do.
    assert.deepEqual(o, { probes: { f: '0/error' } });
  });

  test('mounts are registered with userdbd for the caller’s namespace', async () => {
    // A stand-in userdbd that records AddMountToUserNamespace, for a second mntfsd.
    const seen: Array<{ userns: number; mountIsDir: boolean }> = [];
    const fake = new VarlinkServer({ product: 'fake userdbd' });
    fake.addService({
      iface: parseInterface(NamespaceResource.idl),
      handlers: {
        AddMountToUserNamespace: async (_p, ctx) => {
          seen.push({ userns: fs.fstatSync(ctx.fd(0, 'userNamespaceFileDescriptor')).ino, mountIsDir: fs.fstatSync(ctx.fd(1, 'mountFileDescriptor')).isDirectory() });
          return { parameters: {} };
        },
      },
    });
    const fakeSock = path.join(dir, 'fake-userdbd.sock');
    fake.listenPath(fakeSock);
    const second = startMntfsd({ listen: path.join(dir, 'mntfsd2.sock'), userdbd: fakeSock });
    const saved = sock;
    sock = path.join(dir, 'mntfsd2.sock');
    try {
      const out = await callsAs1000([mountDir(path.join(home, 'own')), mountDir(path.join(home, 'ctree')), mountDir(path.join(dir, 'orphan'))]);
      assert.deepEqual(out.map((o) => o.error ?? 'ok'), ['ok', 'ok', DENIED]);
      assert.deepEqual(seen, [
        { userns: fs.statSync(`/proc/${ns.pid}/ns/user`).ino, mountIsDir: true },
        { userns: fs.statSync(`/proc/${ns.pid}/ns/user`).ino, mountIsDir: true },
      ]);
    } finally {
      sock = saved;
      second.close();
      fake.close();
    }
  });
});

describe('MakeDirectory', () => {
  test('a foreign-owned directory, mode filtered, renamed into place; the fd refers to it', async () => {
    const out = await callsAs1000([
      makeDir(home, { name: 'c1' }),
      makeDir(home, { name: 'c2', mode: 0o7777 }),
      makeDir(home, { name: 'c3', mode: 0o755 }),
      makeDir(home, { name: 'n'.repeat(255) }),
    ]);
    assert.deepEqual(
      out.map((o) => o.made ?? o),
      [
        { uid: F, gid: F, mode: '700', name: 'c1' },
        { uid: F, gid: F, mode: '775', name: 'c2' },
        { uid: F, gid: F, mode: '755', name: 'c3' },
        { uid: F, gid: F, mode: '700', name: 'n'.repeat(255) },
      ],
    );
    assert.equal(fs.statSync(path.join(home, 'c1')).uid, F);
    assert.deepEqual(leftovers(home), []);
  });

  test('what systemd-import --user does next: MountDirectory auto of the new directory maps it to root inside', async () => {
    // The new directory is 0700 and the foreign range's: the caller reaches it with O_PATH only.
    const imported = path.join(home, 'imported');
    const [made, mounted] = await callsAs1000([makeDir(home, { name: 'imported' }), { ...mountDir(imported, {}, ['.'], { write: 'etc' }), fds: [{ path: imported, flags: 'opath' }, 'ns'] }]);
    assert.equal(made!.made?.uid, F);
    assert.deepEqual(mounted!.probes, { '.': `${BASE}/0` }, JSON.stringify(mounted));
    assert.equal(mounted!.wrote, true);
    assert.equal(fs.statSync(path.join(home, 'imported/etc')).uid, F);
  });

  test('bad names and modes, parents the caller does not own, and bad fds are refused; nothing is left behind', async () => {
    const out = await callsAs1000([
      ...['', '.', '..', 'a/b', 'x'.repeat(256), 'a\0b', '\uD800'].map((name) => makeDir(home, { name })),
      makeDir(home, { name: 'm', mode: 0o10000 }),
      makeDir(home, { name: 'm', mode: -1 }),
      makeDir(home, { name: 'm', mode: 1.5 }),
      // Existing names, a symlink among them: EEXIST, the symlink untouched.
      makeDir(home, { name: 'c1' }),
      makeDir(home, { name: 'link' }),
      makeDir(path.join(dir, 'home1001'), { name: 'x' }),
      makeDir(path.join(dir, 'rootdir'), { name: 'x' }),
      makeDir(home, { name: 'x' }, 'opath'),
      makeDir(path.join(home, 'plain-file'), { name: 'x' }, 'file'),
      { ...makeDir(home, { name: 'x' }), params: { parentFileDescriptor: 3, name: 'x' } },
    ]);
    const E = (error: string, parameter?: string, errnoName?: string): Outcome => ({ error, ...(parameter && { parameter }), ...(errnoName && { errnoName }) });
    assert.deepEqual(out, [
      ...Array.from({ length: 7 }, () => E(INVALID, 'name')),
      E(INVALID, 'mode'),
      E(INVALID, 'mode'),
      E(INVALID, 'mode'),
      E(SYSTEM, undefined, 'EEXIST'),
      E(SYSTEM, undefined, 'EEXIST'),
      E(DENIED),
      E(DENIED),
      E(BAD_FLAGS, 'parentFileDescriptor'),
      E(SYSTEM, undefined, 'ENOTDIR'),
      E(INVALID, 'parentFileDescriptor'),
    ]);
    assert.equal(fs.readlinkSync(path.join(home, 'link')), 'own');
    assert.deepEqual(leftovers(home), []);
    assert.ok(!fs.existsSync(path.join(dir, 'home1001/x')) && !fs.existsSync(path.join(dir, 'rootdir/x')) && !fs.existsSync(path.join(home, 'm')) && !fs.existsSync(path.join(home, 'x')));
  });
});

describe('mntfsd as its unit runs it: the unit\'s capability bounding set, a mount namespace of its own', () => {
  let unitSock: string;
  let unitDaemon: Daemon;
  let saved: string;

  before(async () => {
    // ProtectSystem=, ProtectHome= and PrivateTmp= give the daemon a mount namespace of its own.
    const wrapper = path.join(dir, 'mntfsd-own-mntns');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec unshare --mount --propagation private -- ${process.execPath} --import tsx ${path.join(REPO, 'src/cli/main.ts')} "$@"\n`, { mode: 0o755 });
    unitSock = path.join(dir, 'mntfsd-unit.sock');
    unitDaemon = await startDaemon(['mntfsd', '--listen', unitSock, '--userdbd', userdbd.sock], unitSock, { service: 'mountgate-mntfsd.service', bin: wrapper, cwd: REPO });
    saved = sock;
    sock = unitSock;
  });

  after(async () => {
    sock = saved;
    await unitDaemon?.stop();
  });

  // A uid-1000 caller in the host's mount namespace, and one in a private mount namespace of
  // its own (a container manager's or chroot's, as test/systemd-clients/enter.sh makes).
  for (const where of ['the host\'s mount namespace', 'a private mount namespace'] as const) {
    test(`a caller in ${where}: MakeDirectory, then MountDirectory of the foreign-owned tree in it, seen with the namespace's ids`, async () => {
      const name = where.startsWith('the host') ? 'unit-host' : 'unit-private';
      const made = path.join(home, name);
      const outer = where.startsWith('the host') ? [] : ['unshare', '--mount', '--propagation', 'private', '--'];
      const [mk, mountedEmpty] = await callsAs1000([makeDir(home, { name }), { ...mountDir(made, {}, ['.'], { write: 'f' }), fds: [{ path: made, flags: 'opath' }, 'ns'] }], [], outer);
      assert.deepEqual(mk, { made: { uid: F, gid: F, mode: '700', name } }, `${JSON.stringify(mk)} ${unitDaemon.stderr().slice(-1500)}`);
      assert.deepEqual(mountedEmpty, { probes: { '.': `${BASE}/0` }, wrote: true }, `${JSON.stringify(mountedEmpty)} ${unitDaemon.stderr().slice(-1500)}`);
      assert.equal(fs.statSync(path.join(made, 'f')).uid, F);
      const [foreign] = await callsAs1000([mountDir(path.join(home, 'ctree'), { mode: 'foreign' }, ['.', 'f', 'sub/g'])], [], outer);
      assert.deepEqual(foreign, { probes: { '.': `${BASE}/0`, f: `${BASE + 5}/5`, 'sub/g': `${BASE + 7}/7` } }, unitDaemon.stderr().slice(-1500));
    });
  }
});

describe('resources', () => {
  test('after all of the above and a burst of calls the daemon holds no new fd and no helper', async () => {
    const before = openFds();
    await callsAs1000(Array.from({ length: 10 }, (_, i) => (i % 2 ? mountDir(path.join(home, 'ctree'), {}, []) : mountDir(path.join(dir, 'orphan'), {}, []))));
    // Clones made through the nshelper in the caller's mount namespace leave nothing either.
    const own = path.join(home, 'own');
    const inOwnNs = await callsAs1000(
      Array.from({ length: 4 }, () => ({ ...mountDir(own, { mode: 'identity' }, []), fds: [{ path: own }, 'own-ns'] as FdSpec[] })),
      ['unshare', '--user', '--map-root-user', '--mount', '--'],
    );
    assert.deepEqual(inOwnNs, Array.from({ length: 4 }, () => ({ probes: {} })));
    await assertNoNewFds(before);
    // The joiner stays (shared, one process); its members and the userns-new helpers are gone.
    const helpers = execFileSync('ps', ['-o', 'args=', '--ppid', String(process.pid)], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('mountgate-nshelper') && !l.includes('joiner'));
    assert.deepEqual(helpers, []);
  });
});
