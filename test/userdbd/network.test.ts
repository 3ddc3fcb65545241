// AddNetworkToUserNamespace against a real userdbd, called by uid 1000 with its own fresh
// `unshare --user --net` namespaces: veth pairs (host side in the host's network namespace,
// peer in the caller's), tap devices (an fd of /dev/net/tun handed back), names, limits and
// refusals with upstream's error names, records, and removal when the namespace dies, also
// across a daemon restart. Links are looked at with `ip`, tap fds through /proc and sysfs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startTestUserdbd, type TestUserdbd } from '../support/daemons.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { hostNsLinks, link, type Reply, type Step, steps } from '../support/steps.js';
import { kill, nsInode, readMap } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const NR = 'io.systemd.NamespaceResource';
const ALLOC = `${NR}.AllocateUserRange`;
const REGISTER = `${NR}.RegisterUserNamespace`;
const ADD_NET = `${NR}.AddNetworkToUserNamespace`;
const INVALID = 'org.varlink.service.InvalidParameter';
const HOST_NAME = /^ns-[0-9a-f]{12}$/;

let t: TestUserdbd;
let linksBefore: string[];
const pids = new Set<number>();

const alloc = (name: string, extra: Record<string, unknown> = {}): Step => ({
  call: ALLOC,
  params: { name, size: 65536, userNamespaceFileDescriptor: 0, ...extra },
  fds: ['user'],
});
const veth = (params: Record<string, unknown> = {}, fds = ['user', 'net']): Step => ({
  call: ADD_NET,
  params: { userNamespaceFileDescriptor: 0, networkNamespaceFileDescriptor: 1, mode: 'veth', ...params },
  fds,
});
const tap = (hold = false): Step => ({ call: ADD_NET, params: { userNamespaceFileDescriptor: 0, mode: 'tap' }, fds: ['user'], hold });

async function run(list: Step[]): Promise<{ pids: number[]; replies: Reply[] }> {
  const r = await steps(t.sock, list);
  r.pids.forEach((p) => pids.add(p));
  for (const reply of r.replies) if (reply.holder) pids.add(reply.holder);
  return r;
}

function netifs(pid: number): Array<{ name: string; mode: string }> | undefined {
  return t.daemon.registry.byUserns(nsInode(pid))?.netifs;
}

function isLocalUnicast(mac: string): boolean {
  const first = parseInt(mac.slice(0, 2), 16);
  return (first & 0x01) === 0 && (first & 0x02) === 0x02;
}

before(async () => {
  linksBefore = hostNsLinks();
  t = await startTestUserdbd('network');
  // Warm-up (joiner, client bundle): fds opened for good before the fd checks start.
  await run([{ spawn: 'user' }, alloc('warm-up')]);
});

after(async () => {
  for (const pid of pids) kill(pid);
  await waitFor(() => t.daemon.registry.size === 0, 'every namespace released', 10_000).catch(() => undefined);
  await t?.close();
  assert.deepEqual(hostNsLinks(), linksBefore, 'host links left behind');
});

describe('veth', () => {
  test('host side "ns-<12 hex>" on the host, peer "host0" (or the name asked for) in the caller\'s netns; recorded', async () => {
    const fds = openFds();
    const r = await run([{ spawn: 'user+net' }, alloc('net'), veth(), veth({ namespaceInterfaceName: 'eth7' }), veth({ namespaceInterfaceName: 'eth7' })]);
    const pid = r.pids[0]!;
    assert.deepEqual(r.replies[0]?.ok, { name: '1000-net' });
    const first = r.replies[1]?.ok as { hostInterfaceName: string; namespaceInterfaceName: string };
    assert.match(first.hostInterfaceName, HOST_NAME);
    assert.equal(first.namespaceInterfaceName, 'host0');
    const second = r.replies[2]?.ok as { hostInterfaceName: string; namespaceInterfaceName: string };
    assert.match(second.hostInterfaceName, HOST_NAME);
    assert.notEqual(second.hostInterfaceName, first.hostInterfaceName);
    assert.equal(second.namespaceInterfaceName, 'eth7');
    // The same namespace-side name again: the same host name, which exists (upstream: EEXIST).
    assert.equal(r.replies[3]?.error, 'io.systemd.System', JSON.stringify(r.replies[3]));
    assert.equal(r.replies[3]?.parameters?.errnoName, 'EEXIST');

    for (const [reply, alt] of [
      [first, 'ns-1000-1000-net'],
      [second, 'ns-1000-1000-net-eth7'],
    ] as const) {
      const host = await link(reply.hostInterfaceName);
      assert.equal(host?.linkinfo?.info_kind, 'veth');
      assert.deepEqual(host?.altnames, [alt]);
      assert.ok(isLocalUnicast(host.address), host.address);
      const peer = await link(reply.namespaceInterfaceName, pid);
      assert.equal(peer?.linkinfo?.info_kind, 'veth');
      assert.ok(isLocalUnicast(peer.address), peer.address);
      assert.notEqual(peer.address, host.address);
      // Not in the host's namespace under that name.
      assert.equal(await link(reply.namespaceInterfaceName), null);
    }
    assert.deepEqual(netifs(pid), [
      { name: first.hostInterfaceName, mode: 'veth' },
      { name: second.hostInterfaceName, mode: 'veth' },
    ]);

    // The namespace dies: the kernel takes the pairs along, the record goes.
    const inode = nsInode(pid);
    kill(pid);
    await waitFor(() => !t.daemon.registry.byUserns(inode), 'release of the namespace', 10_000);
    assert.equal(await link(first.hostInterfaceName), null);
    assert.equal(await link(second.hostInterfaceName), null);
    await assertNoNewFds(fds);
  });

  test('16 interfaces per namespace, the 17th → TooManyNetworkInterfaces; all removed at release', async () => {
    const list: Step[] = [{ spawn: 'user+net' }, alloc('many')];
    for (let i = 0; i < 17; i++) list.push(veth({ namespaceInterfaceName: `n${i}` }));
    const r = await run(list);
    const pid = r.pids[0]!;
    const names = r.replies.slice(1, 17).map((x) => (x.ok as { hostInterfaceName: string } | undefined)?.hostInterfaceName);
    assert.equal(new Set(names).size, 16, JSON.stringify(r.replies));
    assert.equal(r.replies[17]?.error, `${NR}.TooManyNetworkInterfaces`);
    assert.equal(netifs(pid)?.length, 16);
    for (const n of names) assert.ok(fs.existsSync(`/sys/class/net/${n}`), n);
    const inode = nsInode(pid);
    kill(pid);
    await waitFor(() => !t.daemon.registry.byUserns(inode), 'release of the namespace', 10_000);
    await waitFor(() => names.every((n) => !fs.existsSync(`/sys/class/net/${n}`)), 'the host links to go');
  });

  test('refusals with upstream\'s names; nothing created, nothing recorded', async () => {
    const fds = openFds();
    const links = hostNsLinks();
    const cases: Array<[Step, string, string?]> = [
      [veth({ mode: 'bridge' }), INVALID, 'mode'],
      [veth({ networkNamespaceFileDescriptor: undefined }, ['user']), INVALID, 'networkNamespaceFileDescriptor'],
      [{ ...tap(), params: { userNamespaceFileDescriptor: 0, networkNamespaceFileDescriptor: 1, mode: 'tap' }, fds: ['user', 'net'] }, INVALID, 'networkNamespaceFileDescriptor'],
      [{ ...tap(), params: { userNamespaceFileDescriptor: 0, namespaceInterfaceName: 'tap0', mode: 'tap' } }, INVALID, 'namespaceInterfaceName'],
      ...['a/b', '', 'x'.repeat(16), 'all', 'default', '123', '.', 'a b', 'a:b', 'a%b', 'é'].map(
        (name): [Step, string, string] => [veth({ namespaceInterfaceName: name }), INVALID, 'namespaceInterfaceName'],
      ),
      // Not a network namespace; the host's; another namespace's of the same user.
      [veth({}, ['user', 'user']), INVALID, 'networkNamespaceFileDescriptor'],
      [veth({}, ['user', 'self:net']), INVALID, 'networkNamespaceFileDescriptor'],
      [veth({}, ['user@0', 'net@1']), INVALID, 'networkNamespaceFileDescriptor'],
      // A user namespace of the caller's that is not registered.
      [veth({}, ['user@1', 'net@1']), `${NR}.UserNamespaceNotRegistered`],
      [{ ...tap(), fds: ['user@1'] }, `${NR}.UserNamespaceNotRegistered`],
    ];
    const r = await run([{ spawn: 'user+net' }, alloc('refusals'), { spawn: 'user+net' }, ...cases.map(([s]) => s)]);
    cases.forEach(([step, error, parameter], i) => {
      const reply = r.replies[i + 1];
      assert.equal(reply?.error, error, `${JSON.stringify(step)} → ${JSON.stringify(reply)}`);
      if (parameter) assert.deepEqual(reply?.parameters, { parameter }, JSON.stringify(step));
    });
    assert.deepEqual(netifs(r.pids[0]!), undefined);
    assert.deepEqual(hostNsLinks(), links);
    await assertNoNewFds(fds);
  });
});

describe('tap', () => {
  test('an fd of /dev/net/tun for a tap device named "ns-<12 hex>", owned by the namespace\'s root; gone with the fd', async () => {
    const fds = openFds();
    const r = await run([{ spawn: 'user+net' }, alloc('tap'), tap()]);
    const pid = r.pids[0]!;
    const base = readMap(pid, 'uid_map')[0]![1]!;
    const ok = r.replies[1]?.ok as { hostInterfaceName: string; interfaceFileDescriptor: number };
    assert.match(ok.hostInterfaceName, HOST_NAME);
    assert.equal(ok.interfaceFileDescriptor, 0);
    assert.equal('namespaceInterfaceName' in ok, false);
    assert.deepEqual(r.replies[1]?.fds, [{ link: '/dev/net/tun', iff: ok.hostInterfaceName, owner: String(base), tunFlags: '0x5002' }]);
    assert.deepEqual(netifs(pid), [{ name: ok.hostInterfaceName, mode: 'tap' }]);
    // Not persistent: the client closed the only fd when it exited.
    await waitFor(() => !fs.existsSync(`/sys/class/net/${ok.hostInterfaceName}`), 'the tap to go with its fd');
    kill(pid);
    await assertNoNewFds(fds);
  });

  test('a namespace whose uid 0 is not mapped ("self", target unset) gets no tap: ENXIO, not recorded', async () => {
    const r = await run([{ spawn: 'user' }, alloc('tap-self', { size: 1, type: 'self' }), tap()]);
    assert.deepEqual(readMap(r.pids[0]!, 'uid_map'), [[1000, 1000, 1]]);
    assert.equal(r.replies[1]?.error, 'io.systemd.System', JSON.stringify(r.replies[1]));
    assert.equal(r.replies[1]?.parameters?.errnoName, 'ENXIO');
    assert.equal(netifs(r.pids[0]!), undefined);
  });

  test('a registered (not allocated) namespace: veth and tap work, the tap owned by its root (uid 1000)', async () => {
    const r = await run([{ spawn: 'user+net' }]);
    const pid = r.pids[0]!;
    // Map the caller's uid to root, as `unshare --map-root-user` would, then register it.
    fs.writeFileSync(`/proc/${pid}/setgroups`, 'deny');
    fs.writeFileSync(`/proc/${pid}/uid_map`, '0 1000 1');
    fs.writeFileSync(`/proc/${pid}/gid_map`, '0 1000 1');
    const fds = ['fd:3', 'fd:4'];
    const user = fs.openSync(`/proc/${pid}/ns/user`, 'r');
    const net = fs.openSync(`/proc/${pid}/ns/net`, 'r');
    try {
      const s = await steps(
        t.sock,
        [
          { call: REGISTER, params: { name: 'registered', userNamespaceFileDescriptor: 0 }, fds: ['fd:3'] },
          veth({ namespaceInterfaceName: 'eth0' }, fds),
          { ...tap(), fds: ['fd:3'] },
          // Made again once the first one's fd is closed: the same name, counted once.
          { ...tap(), fds: ['fd:3'] },
          // The default veth has the tap's host name (upstream hashes only the namespace-side
          // name); while the tap exists that is EEXIST, and the record keeps the tap.
          { ...tap(true), fds: ['fd:3'] },
          veth({}, fds),
        ],
        { inherit: [user, net] },
      );
      s.replies.forEach((x) => x.holder && pids.add(x.holder));
      assert.deepEqual(s.replies[0]?.ok, { name: '1000-registered' });
      assert.match((s.replies[1]?.ok as { hostInterfaceName: string }).hostInterfaceName, HOST_NAME);
      const tapName = (s.replies[2]?.ok as { hostInterfaceName: string }).hostInterfaceName;
      assert.equal(s.replies[2]?.fds?.[0]?.owner, '1000');
      assert.equal((s.replies[3]?.ok as { hostInterfaceName: string }).hostInterfaceName, tapName);
      assert.equal((s.replies[4]?.ok as { hostInterfaceName: string }).hostInterfaceName, tapName);
      assert.equal(s.replies[5]?.parameters?.errnoName, 'EEXIST', JSON.stringify(s.replies[5]));
      assert.deepEqual(
        netifs(pid)?.map((n) => n.mode),
        ['veth', 'tap'],
      );
      assert.ok(fs.existsSync(`/sys/class/net/${tapName}`));
    } finally {
      fs.closeSync(user);
      fs.closeSync(net);
    }
    kill(pid);
  });
});

describe('release', () => {
  test('a tap whose fd outlives the namespace is removed when the namespace is released, also after a daemon restart', async () => {
    const r = await run([{ spawn: 'user+net' }, alloc('held'), tap(true), { spawn: 'user+net' }, alloc('held-restart'), tap(true)]);
    const [pid1, pid2] = r.pids as [number, number];
    const tap1 = (r.replies[1]?.ok as { hostInterfaceName: string }).hostInterfaceName;
    const tap2 = (r.replies[3]?.ok as { hostInterfaceName: string }).hostInterfaceName;
    assert.ok(r.replies[1]?.holder && r.replies[3]?.holder, JSON.stringify(r.replies));
    // Held open by a process outside the namespaces, the taps stay.
    assert.ok(fs.existsSync(`/sys/class/net/${tap1}`) && fs.existsSync(`/sys/class/net/${tap2}`));

    const inode1 = nsInode(pid1);
    kill(pid1);
    await waitFor(() => !t.daemon.registry.byUserns(inode1), 'release of the first namespace', 10_000);
    assert.equal(fs.existsSync(`/sys/class/net/${tap1}`), false, 'the held tap of a released namespace');

    const inode2 = nsInode(pid2);
    await t.restart();
    assert.deepEqual(t.daemon.registry.byUserns(inode2)?.netifs, [{ name: tap2, mode: 'tap' }]);
    kill(pid2);
    await waitFor(() => !t.daemon.registry.byUserns(inode2), 'release of the second namespace', 10_000);
    assert.equal(fs.existsSync(`/sys/class/net/${tap2}`), false);
    kill(r.replies[1]!.holder!);
    kill(r.replies[3]!.holder!);
  });
});
