// AllocateUserRange's systemd 262 additions against a real userdbd, called by uid 1000 with its
// own fresh `unshare --user` namespaces: type "self" (the caller's own uid/gid mapped, to
// itself or to 0) and mapForeign (the foreign range mapped 1:1 besides the transient range).
// The maps are read off the kernel; records, user records, policy calls, restart and release
// are checked as well.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { FOREIGN_RANGE } from '../../src/id-ranges.js';
import { VarlinkClient } from '../../src/ipc/client.js';
import { VarlinkError } from '../../src/ipc/errors.js';
import { CONTAINER_WINDOW } from '../../src/userdbd/range-allocator.js';
import { STEPS_CLIENT } from '../support/clients.js';
import { startTestUserdbd, type TestUserdbd } from '../support/daemons.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { REPO, runAsUser } from '../support/processes.js';
import { type Reply, type Step, steps } from '../support/steps.js';
import { userScript } from '../support/user-package.js';
import { kill, nsInode, readMap } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const NR = 'io.systemd.NamespaceResource';
const ALLOC = `${NR}.AllocateUserRange`;
const INVALID = 'org.varlink.service.InvalidParameter';
const SERVICE = 'io.systemd.NamespaceResource';
const FOREIGN_LINE = [FOREIGN_RANGE.start, FOREIGN_RANGE.start, FOREIGN_RANGE.size];

let t: TestUserdbd;
const pids = new Set<number>();

/** One fresh namespace of uid 1000 and one AllocateUserRange for it; the namespace stays alive. */
async function allocate(params: Record<string, unknown>): Promise<{ pid: number; reply: Reply }> {
  const r = await steps(t.sock, [{ spawn: 'user' }, { call: ALLOC, params: { userNamespaceFileDescriptor: 0, ...params }, fds: ['user'] }]);
  const pid = r.pids[0]!;
  pids.add(pid);
  return { pid, reply: r.replies[0]! };
}

async function userRecord(params: Record<string, unknown>): Promise<Record<string, unknown> | string> {
  const c = await VarlinkClient.connect(t.sock);
  try {
    return (await c.call('io.systemd.UserDatabase.GetUserRecord', { ...params, service: SERVICE })).parameters.record as Record<string, unknown>;
  } catch (e) {
    if (e instanceof VarlinkError) return e.error;
    throw e;
  } finally {
    c.close();
  }
}

before(async () => {
  t = await startTestUserdbd('self-foreign');
  // Warm-up: the first call starts the daemon's namespace joiner and bundles the client, whose
  // fds stay open for good; the fd checks below start after it.
  await allocate({ name: 'warm-up', size: 1 });
});

after(async () => {
  for (const pid of pids) kill(pid);
  await t?.close();
});

describe('type "self"', () => {
  test('target unset: uid 1000 and gid 1000 are mapped to themselves, setgroups denied, no range held', async () => {
    const fds = openFds();
    const { pid, reply } = await allocate({ name: 'self-id', size: 1, type: 'self' });
    assert.deepEqual(reply.ok, { name: '1000-self-id' });
    assert.deepEqual(readMap(pid, 'uid_map'), [[1000, 1000, 1]]);
    assert.deepEqual(readMap(pid, 'gid_map'), [[1000, 1000, 1]]);
    const inode = nsInode(pid);
    const rec = t.daemon.registry.byUserns(inode);
    assert.equal(rec?.type, 'self');
    assert.deepEqual([rec?.size, rec?.start, rec?.target, rec?.startGid, rec?.targetGid, rec?.pending], [1, 1000, 1000, 1000, 1000, undefined]);
    // Under the policy before the maps, then setgroups() denied (the BPF hook, not /proc/…/setgroups).
    assert.deepEqual(t.policy.calls.filter(([, i]) => i === inode), [['manage', inode], ['denySetgroups', inode]]);
    assert.equal(t.daemon.registry.findUidStart(1000), undefined);
    await assertNoNewFds(fds);
  });

  test('target 0: uid/gid 1000 become root inside ("0 1000 1"), as `unshare --map-root-user` would', async () => {
    const { pid, reply } = await allocate({ name: 'self-root', size: 1, target: 0, type: 'self' });
    assert.deepEqual(reply.ok, { name: '1000-self-root' });
    assert.deepEqual(readMap(pid, 'uid_map'), [[0, 1000, 1]]);
    assert.deepEqual(readMap(pid, 'gid_map'), [[0, 1000, 1]]);
  });

  test('UserDatabase: the user "ns-<name>-0" is the caller\'s uid by name (as upstream), never by number', async () => {
    await allocate({ name: 'self-udb', size: 1, type: 'self' });
    const rec = await userRecord({ userName: 'ns-1000-self-udb-0' });
    assert.deepEqual(rec, {
      userName: 'ns-1000-self-udb-0',
      uid: 1000,
      gid: 65534,
      realName: 'Allocated Namespace 1000-self-udb',
      homeDirectory: '/',
      shell: '/usr/sbin/nologin',
      locked: true,
      service: SERVICE,
      disposition: 'dynamic',
    });
    assert.equal(await userRecord({ uid: 1000 }), 'io.systemd.UserDatabase.NoRecordFound');
    assert.equal(await userRecord({ userName: 'ns-1000-self-udb-1' }), 'io.systemd.UserDatabase.NoRecordFound');
  });

  test('with delegated ranges: the own ids plus each 64K range 1:1', async () => {
    const { pid, reply } = await allocate({ name: 'self-deleg', size: 1, type: 'self', delegateContainerRanges: 2 });
    assert.ok(reply.ok, JSON.stringify(reply));
    const [first, ...rest] = readMap(pid, 'uid_map');
    assert.deepEqual(first, [1000, 1000, 1]);
    assert.equal(rest.length, 2);
    for (const [inside, outside, count] of rest) {
      assert.equal(inside, outside);
      assert.equal(count, 65536);
      assert.ok(outside! >= CONTAINER_WINDOW.min && outside! + 65535 <= CONTAINER_WINDOW.max);
    }
  });

  test('refusals: size 65536, size 2, target 5 and an unknown type → InvalidParameter; nothing registered', async () => {
    const before = t.daemon.registry.size;
    const fds = openFds();
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ size: 65536, type: 'self' }, 'size'],
      [{ size: 2, type: 'self' }, 'size'],
      [{ size: 1, target: 5, type: 'self' }, 'target'],
      [{ size: 1, target: 1000, type: 'self' }, 'target'],
      [{ size: 1, type: 'identity' }, 'type'],
    ];
    for (const [params, parameter] of cases) {
      const { reply } = await allocate({ name: 'refused', ...params });
      assert.equal(reply.error, INVALID, JSON.stringify(reply));
      assert.deepEqual(reply.parameters, { parameter }, JSON.stringify(params));
    }
    assert.equal(t.daemon.registry.size, before);
    await assertNoNewFds(fds);
  });
});

describe('mapForeign', () => {
  test('managed 64K: the transient range, then the foreign range 1:1, in both maps', async () => {
    const fds = openFds();
    const { pid, reply } = await allocate({ name: 'foreign', size: 65536, mapForeign: true });
    assert.deepEqual(reply.ok, { name: '1000-foreign' });
    const uid = readMap(pid, 'uid_map');
    assert.equal(uid.length, 2);
    const [inside, base, count] = uid[0]!;
    assert.deepEqual([inside, count], [0, 65536]);
    assert.ok(base! >= CONTAINER_WINDOW.min && base! + 65535 <= CONTAINER_WINDOW.max);
    assert.deepEqual(uid[1], FOREIGN_LINE);
    assert.deepEqual(readMap(pid, 'gid_map'), [[0, base, 65536], FOREIGN_LINE]);
    const rec = t.daemon.registry.byUserns(nsInode(pid));
    assert.equal(rec?.mapForeign, true);
    assert.equal(rec?.type, undefined);
    assert.equal(t.daemon.registry.findUidStart(base!)?.userns, nsInode(pid));
    await assertNoNewFds(fds);
  });

  test('with delegations: transient range, delegated ranges, foreign range last', async () => {
    const { pid, reply } = await allocate({ name: 'foreign-deleg', size: 65536, mapForeign: true, delegateContainerRanges: 1 });
    assert.ok(reply.ok, JSON.stringify(reply));
    const uid = readMap(pid, 'uid_map');
    assert.equal(uid.length, 3);
    assert.equal(uid[1]![0], uid[1]![1]);
    assert.deepEqual(uid[2], FOREIGN_LINE);
  });

  test('with type "self" and target 0 (`unshare --map-foreign --map-root-user`): "0 1000 1" and the foreign range', async () => {
    const { pid, reply } = await allocate({ name: 'self-foreign', size: 1, target: 0, type: 'self', mapForeign: true });
    assert.deepEqual(reply.ok, { name: '1000-self-foreign' });
    assert.deepEqual(readMap(pid, 'uid_map'), [[0, 1000, 1], FOREIGN_LINE]);
    assert.deepEqual(readMap(pid, 'gid_map'), [[0, 1000, 1], FOREIGN_LINE]);
    const rec = t.daemon.registry.byUserns(nsInode(pid));
    assert.deepEqual([rec?.type, rec?.mapForeign], ['self', true]);
  });

  test('a target inside the foreign range → InvalidParameter(target); false is the same as absent', async () => {
    const { reply } = await allocate({ name: 'foreign-clash', size: 65536, target: FOREIGN_RANGE.start, mapForeign: true });
    assert.equal(reply.error, INVALID);
    assert.deepEqual(reply.parameters, { parameter: 'target' });
    assert.equal(t.daemon.registry.findName('1000-foreign-clash'), undefined);
    const plain = await allocate({ name: 'foreign-false', size: 65536, mapForeign: false });
    assert.equal(readMap(plain.pid, 'uid_map').length, 1);
    assert.equal(t.daemon.registry.byUserns(nsInode(plain.pid))?.mapForeign, undefined);
    const notBool = await allocate({ name: 'foreign-str', size: 65536, mapForeign: 'yes' });
    assert.deepEqual(notBool.reply.parameters, { parameter: 'mapForeign' });
  });
});

describe('nested: calls from the root of a managed namespace (the socket bind-mounted in)', () => {
  /** Runs steps-client as root of the namespace of `pid` (its owner uid 1000 enters it). */
  async function inside(pid: number, list: Step[]): Promise<{ pids: number[]; replies: Reply[] }> {
    const script = [
      'set -e',
      'mount -t tmpfs tmpfs /mnt',
      'touch /mnt/sock',
      `mount --bind ${t.sock} /mnt/sock`,
      `TMPDIR=/mnt exec ${process.execPath} ${userScript(STEPS_CLIENT)} /mnt/sock '${JSON.stringify(list)}'`,
    ].join('\n');
    const r = await runAsUser(['nsenter', '--target', String(pid), '--user', '--mount', '--', 'sh', '-c', script], { cwd: REPO });
    const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? 'null') as { pids: number[]; replies: Reply[] } | null;
    if (!out?.replies) throw new Error(`inner client failed (${r.status}): ${r.stdout}${r.stderr}`);
    out.pids.forEach((p) => pids.add(p));
    return out;
  }

  test('"self" maps the caller (the outer root) as its parent sees it; mapForeign needs the parent to map the range', async () => {
    const plain = await steps(t.sock, [{ spawn: 'user+mount' }, { call: ALLOC, params: { name: 'outer-plain', size: 65536, userNamespaceFileDescriptor: 0 }, fds: ['user'] }]);
    const foreign = await steps(t.sock, [{ spawn: 'user+mount' }, { call: ALLOC, params: { name: 'outer-foreign', size: 65536, mapForeign: true, userNamespaceFileDescriptor: 0 }, fds: ['user'] }]);
    [...plain.pids, ...foreign.pids].forEach((p) => pids.add(p));
    const plainBase = readMap(plain.pids[0]!, 'uid_map')[0]![1]!;
    const foreignBase = readMap(foreign.pids[0]!, 'uid_map')[0]![1]!;
    const self = (name: string, extra: Record<string, unknown> = {}): Step[] => [
      { spawn: 'user' },
      { call: ALLOC, params: { name, size: 1, type: 'self', userNamespaceFileDescriptor: 0, ...extra }, fds: ['user'] },
    ];

    const a = await inside(plain.pids[0]!, [...self('inner-self'), ...self('inner-self-foreign', { mapForeign: true })]);
    assert.deepEqual(a.replies[0]?.ok, { name: `${plainBase}-inner-self` }, JSON.stringify(a.replies));
    // Read from the host, the outside column is the host's view: the outer root is plainBase.
    assert.deepEqual(readMap(a.pids[0]!, 'uid_map'), [[0, plainBase, 1]]);
    assert.deepEqual(readMap(a.pids[0]!, 'gid_map'), [[0, plainBase, 1]]);
    const rec = t.daemon.registry.byUserns(nsInode(a.pids[0]!));
    assert.deepEqual([rec?.type, rec?.start, rec?.target, rec?.parent], ['self', plainBase, 0, nsInode(plain.pids[0]!)]);
    // The outer namespace does not map the foreign range: ERANGE, as upstream's write_userns().
    assert.equal(a.replies[1]?.error, 'io.systemd.System', JSON.stringify(a.replies[1]));
    assert.equal(a.replies[1]?.parameters?.errnoName, 'ERANGE');
    assert.equal(t.daemon.registry.findName(`${plainBase}-inner-self-foreign`), undefined);

    const b = await inside(foreign.pids[0]!, self('inner-foreign', { mapForeign: true, target: 0 }));
    assert.deepEqual(b.replies[0]?.ok, { name: `${foreignBase}-inner-foreign` }, JSON.stringify(b.replies));
    assert.deepEqual(readMap(b.pids[0]!, 'uid_map'), [[0, foreignBase, 1], FOREIGN_LINE]);
  });
});

describe('restart and release', () => {
  test('after a restart "self" and foreign namespaces are managed again (setgroups denied again); dead ones are released', async () => {
    const self = await allocate({ name: 'self-restart', size: 1, type: 'self' });
    const foreign = await allocate({ name: 'foreign-restart', size: 65536, mapForeign: true });
    const selfInode = nsInode(self.pid);
    const foreignInode = nsInode(foreign.pid);
    await t.restart();
    assert.deepEqual(
      t.policy.calls.filter(([, i]) => i === selfInode || i === foreignInode).sort(),
      [['denySetgroups', selfInode], ['manage', foreignInode], ['manage', selfInode]].sort(),
    );
    assert.equal(t.daemon.registry.byUserns(selfInode)?.type, 'self');
    assert.equal(t.daemon.registry.byUserns(foreignInode)?.mapForeign, true);
    // Still registered: a second allocation for the same namespace is refused.
    const nsFd = fs.openSync(`/proc/${self.pid}/ns/user`, 'r');
    try {
      const again = await steps(t.sock, [{ call: ALLOC, params: { name: 'again', size: 1, type: 'self', userNamespaceFileDescriptor: 0 }, fds: ['fd:3'] }], { inherit: [nsFd] });
      assert.equal(again.replies[0]?.error, `${NR}.UserNamespaceExists`);
    } finally {
      fs.closeSync(nsFd);
    }

    kill(self.pid);
    kill(foreign.pid);
    await waitFor(() => !t.daemon.registry.byUserns(selfInode) && !t.daemon.registry.byUserns(foreignInode), 'release of the dead namespaces', 10_000);
    assert.equal(t.daemon.registry.findName('1000-self-restart'), undefined);
    assert.equal(await userRecord({ userName: 'ns-1000-self-restart-0' }), 'io.systemd.UserDatabase.NoRecordFound');
  });
});
