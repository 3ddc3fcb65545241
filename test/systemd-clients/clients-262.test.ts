// systemd 262's own clients (Debian sid's systemd-nspawn, systemd-dissect, systemd-import,
// varlinkctl, mkosi, from the chroot `scripts/build-chroot --suite sid` makes) run as uid 1000
// against mountgate's daemons (harness.ts). 262 adds MountImage inputs, MountDirectory,
// MakeDirectory, AllocateUserRange's `self` type and foreign range, and AddNetworkToUserNamespace;
// every one of its client paths must work against ours as it does against upstream's.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CONTAINER_SIZE, CONTAINER_WINDOW } from '../../src/userdbd/range-allocator.js';
import { assertTransientRoot, HELLO, inChroot, listTree, PAYLOAD, sha256, startClientHarness, type ClientHarness, type DissectReport } from './harness.js';

let h: ClientHarness;
before(async () => {
  // varlinkctl and unshare in the image: a nested caller inside the container.
  h = await startClientHarness('sid', ['/usr/bin/varlinkctl', '/usr/bin/unshare']);
});
after(async () => {
  await h?.close();
});

/** --register=no: machined is on D-Bus, which this host lacks (test/lab-systemd registers it
 * under systemd as PID 1); --keep-unit: no scope from a user manager; --console=pipe: plain
 * output instead of a pty's CRLF. */
const NSPAWN = ['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--console=pipe'];
/** A user namespace of the caller's, kept alive for 60 s, for varlinkctl --push-fd calls. */
const WITH_USERNS = 'unshare --user sleep 60 & P=$!; sleep 0.3;';
const NR = '/run/systemd/io.systemd.NamespaceResource';
const MFS = '/run/systemd/io.systemd.MountFileSystem';

test('systemd-nspawn --image= (mountgate and systemd-repart images): CMD runs as uid 0 of a transient range', async () => {
  for (const img of [h.images.trusted, h.repart.squashfs, h.repart.ext4]) {
    assertTransientRoot(await h.ok(1000, [...NSPAWN, `--image=${inChroot(img)}`, ...PAYLOAD]));
  }
});

test('systemd-nspawn --private-users=managed --image=: the same through the explicit option', async () => {
  assertTransientRoot(await h.ok(1000, [...NSPAWN, '--private-users=managed', `--image=${inChroot(h.images.trusted)}`, ...PAYLOAD]));
});

test('systemd-dissect --json=short, --list, --mtree and --copy-from through the daemons', async () => {
  for (const img of [h.images.trusted, h.repart.squashfs]) {
    const report = JSON.parse(await h.ok(1000, ['systemd-dissect', '--json=short', inChroot(img)])) as DissectReport;
    assert.ok(report.mounts.some((m) => m.designator === 'root'), JSON.stringify(report));
    const files = listTree(h.tree).sort();
    const list = (await h.ok(1000, ['systemd-dissect', '--list', inChroot(img)])).trim().split('\n');
    assert.deepEqual(list.sort(), files, `--list ${path.basename(img)}`);
    const mtree = (await h.ok(1000, ['systemd-dissect', '--mtree', inChroot(img)])).trim().split('\n');
    assert.ok(mtree.includes(`./etc/hello type=file mode=0644 uid=0 gid=0 size=${HELLO.length} sha256sum=${sha256(HELLO)}`), mtree.join('\n'));
    const out = await h.ok(1000, ['sh', '-c', `systemd-dissect --copy-from ${inChroot(img)} /etc/hello /tmp/hello && cat /tmp/hello`]);
    assert.equal(out, HELLO, `--copy-from ${path.basename(img)}`);
  }
});

test('an untrusted image → KeyNotFound through systemd-dissect 262', async () => {
  const r = await h.client(1000, ['systemd-dissect', inChroot(h.images.untrusted)]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /io\.systemd\.MountFileSystem\.KeyNotFound/);
});

test('varlinkctl --push-fd: AllocateUserRange, then MountImage for that namespace', async () => {
  const out = await h.ok(1000, [
    'sh',
    '-c',
    `${WITH_USERNS} varlinkctl --push-fd=/proc/$P/ns/user call ${NR} io.systemd.NamespaceResource.AllocateUserRange '{"name":"vctl","size":65536,"userNamespaceFileDescriptor":0}' && cat /proc/$P/uid_map &&
     varlinkctl --push-fd=${inChroot(h.images.trusted)} --push-fd=/proc/$P/ns/user --exec call ${MFS} io.systemd.MountFileSystem.MountImage '{"imageFileDescriptor":0,"userNamespaceFileDescriptor":1,"readOnly":true}' -- sh -c 'cat; echo; echo LISTEN_FDS=$LISTEN_FDS'; kill $P`,
  ]);
  const [reply, map] = out.split('\n');
  assert.deepEqual(JSON.parse(reply!), { name: '1000-vctl' });
  const [inside, outside, count] = map!.trim().split(/\s+/).map(Number);
  assert.deepEqual([inside, count], [0, CONTAINER_SIZE]);
  assert.ok(outside! >= CONTAINER_WINDOW.min && outside! <= CONTAINER_WINDOW.max, map);
  assert.match(out, /"designator"\s*:\s*"root"/);
  assert.match(out, /LISTEN_FDS=1\b/);
});

test('systemd-nspawn --private-users-delegate=1: a caller inside the container gets a nested range from a delegated one', async () => {
  // The socket bound into the container, as the guide's nested callers have it.
  const out = await h.ok(1000, [
    ...NSPAWN, '--private-users=managed', '--private-users-delegate=1', `--bind-ro=${NR}`, `--image=${inChroot(h.images.trusted)}`,
    '/bin/sh', '-c',
    `cat /proc/self/uid_map; ${WITH_USERNS} varlinkctl --push-fd=/proc/$P/ns/user call ${NR} io.systemd.NamespaceResource.AllocateUserRange '{"name":"nested","size":65536,"userNamespaceFileDescriptor":0}' && echo MAP && cat /proc/$P/uid_map; kill $P`,
  ]);
  const [outer, ...rest] = out.trim().split('\n');
  const lines = outer!.trim().split(/\s+/).map(Number);
  // The container's map: its own 64K range plus the delegated one 1:1 (as upstream maps it).
  assert.deepEqual([lines[0], lines[2]], [0, CONTAINER_SIZE], out);
  const map = rest.slice(rest.indexOf('MAP') + 1).join('\n').trim().split(/\s+/).map(Number);
  assert.equal(map[0], 0, out);
  assert.equal(map[2], CONTAINER_SIZE, out);
  assert.ok(map[1]! >= CONTAINER_WINDOW.min && map[1]! <= CONTAINER_WINDOW.max, `nested range inside the delegated one: ${out}`);
  assert.notEqual(map[1], 0, out);
});
