// systemd 262's own clients (the sid chroot of scripts/build-chroot, through
// test/systemd-clients/harness.ts) as uid 1000 against userdbd's 262 additions: varlinkctl
// with AllocateUserRange type "self" + mapForeign and AddNetworkToUserNamespace (veth, tap), and
// systemd-nspawn --network-veth, which calls AddNetworkToUserNamespace for an unprivileged
// container.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { FOREIGN_RANGE } from '../../src/id-ranges.js';
import { inChroot, startClientHarness, type ClientHarness } from '../systemd-clients/harness.js';

let h: ClientHarness;
before(async () => {
  h = await startClientHarness('sid');
});
after(async () => {
  await h?.close();
});

const NR = '/run/systemd/io.systemd.NamespaceResource';
const M = 'io.systemd.NamespaceResource';
/** A user namespace (with a network namespace of its own) of the caller's, for --push-fd calls. */
const WITH_USERNS = 'unshare --user --net sleep 60 & P=$!; sleep 0.3;';
const NSPAWN = ['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--console=pipe'];
const FOREIGN = `${FOREIGN_RANGE.start} ${FOREIGN_RANGE.start} ${FOREIGN_RANGE.size}`;
const lines = (s: string): string[] => s.split('\n').map((l) => l.trim().split(/\s+/).join(' ')).filter(Boolean);

test('varlinkctl: AllocateUserRange type "self", target 0, mapForeign → "0 1000 1" and the foreign range 1:1', async () => {
  const out = await h.ok(1000, [
    'sh',
    '-c',
    `${WITH_USERNS} varlinkctl --push-fd=/proc/$P/ns/user call ${NR} ${M}.AllocateUserRange '{"name":"self","size":1,"target":0,"type":"self","mapForeign":true,"userNamespaceFileDescriptor":0}' &&
     cat /proc/$P/uid_map /proc/$P/gid_map; kill $P`,
  ]);
  const [reply, ...maps] = lines(out);
  assert.deepEqual(JSON.parse(reply!), { name: '1000-self' });
  assert.deepEqual(maps, ['0 1000 1', FOREIGN, '0 1000 1', FOREIGN]);
});

test('varlinkctl: AddNetworkToUserNamespace veth (peer in the caller\'s netns) and tap (a /dev/net/tun fd)', async () => {
  const out = await h.ok(1000, [
    'sh',
    '-c',
    `${WITH_USERNS} varlinkctl --push-fd=/proc/$P/ns/user call ${NR} ${M}.AllocateUserRange '{"name":"net","size":65536,"userNamespaceFileDescriptor":0}' && echo --- &&
     varlinkctl --push-fd=/proc/$P/ns/user --push-fd=/proc/$P/ns/net call ${NR} ${M}.AddNetworkToUserNamespace '{"userNamespaceFileDescriptor":0,"networkNamespaceFileDescriptor":1,"mode":"veth","namespaceInterfaceName":"vee0"}' &&
     echo --- && cut -d: -f1 /proc/$P/net/dev && echo --- &&
     varlinkctl --push-fd=/proc/$P/ns/user --exec call ${NR} ${M}.AddNetworkToUserNamespace '{"userNamespaceFileDescriptor":0,"mode":"tap"}' -- sh -c 'cat; echo; readlink /proc/self/fd/3; grep ^iff: /proc/self/fdinfo/3'; kill $P`,
  ]);
  const [allocated, veth, ifaces, tap] = out.split('---\n');
  assert.match(allocated!, /"name"\s*:\s*"1000-net"/);
  const v = JSON.parse(veth!) as { hostInterfaceName: string; namespaceInterfaceName: string };
  assert.match(v.hostInterfaceName, /^ns-[0-9a-f]{12}$/);
  assert.equal(v.namespaceInterfaceName, 'vee0');
  assert.deepEqual(lines(ifaces!).slice(2).sort(), ['lo', 'vee0']);
  const [reply, link, iff] = lines(tap!);
  const t = JSON.parse(reply!) as { hostInterfaceName: string; interfaceFileDescriptor: number };
  assert.match(t.hostInterfaceName, /^ns-[0-9a-f]{12}$/);
  assert.equal(t.interfaceFileDescriptor, 0);
  assert.equal(link, '/dev/net/tun');
  assert.equal(iff, `iff: ${t.hostInterfaceName}`);
});

test('systemd-nspawn --network-veth --image=: the unprivileged container gets host0 (AddNetworkToUserNamespace)', async () => {
  const out = await h.ok(1000, [...NSPAWN, '--network-veth', `--image=${inChroot(h.images.trusted)}`, '/bin/sh', '-c', 'cat /proc/net/dev; cat /proc/self/uid_map']);
  const ifaces = lines(out)
    .filter((l) => /^[a-z0-9]+:/.test(l))
    .map((l) => l.split(':')[0]);
  assert.deepEqual(ifaces.sort(), ['host0', 'lo'], out);
  assert.ok(lines(out).some((l) => /^0 \d+ 65536$/.test(l)), out);
});
