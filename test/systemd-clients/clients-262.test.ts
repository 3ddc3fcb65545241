// systemd 262's own clients (Debian sid's systemd-nspawn, systemd-dissect, systemd-import,
// varlinkctl, mkosi, from the chroot `scripts/build-chroot --suite sid` makes) run as uid 1000
// against mountgate's daemons (harness.ts). 262 adds MountImage inputs, MountDirectory,
// MakeDirectory, AllocateUserRange's `self` type and foreign range, and AddNetworkToUserNamespace;
// every one of its client paths must work against ours as it does against upstream's.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { FOREIGN_RANGE } from '../../src/id-ranges.js';
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

test('mkosi sandbox with ForeignUIDRange=yes: AllocateUserRange type "self" and mapForeign', async () => {
  const out = await h.ok(1000, [
    'sh', '-c',
    "mkdir -p /tmp/mk && cd /tmp/mk && printf '[Distribution]\\nDistribution=custom\\n[Build]\\nForeignUIDRange=yes\\n' >mkosi.conf && mkosi sandbox -- sh -c 'id -u; cat /proc/self/uid_map'",
  ]);
  const lines = out.trim().split('\n');
  assert.equal(lines[0], '1000', out);
  const map = lines.slice(1).map((l) => l.trim().split(/\s+/).map(Number));
  assert.deepEqual(map[0], [1000, 1000, 1], `the caller itself, as type "self" maps it: ${out}`);
  assert.ok(map.some((m) => m[0] === FOREIGN_RANGE.start && m[1] === FOREIGN_RANGE.start && m[2] === FOREIGN_RANGE.size), `the foreign range 1:1: ${out}`);
});

test('varlinkctl: AllocateUserRange type "self" maps the caller alone; mapForeign adds the foreign range 1:1', async () => {
  const self = await h.ok(1000, ['sh', '-c', `${WITH_USERNS} varlinkctl --push-fd=/proc/$P/ns/user call ${NR} io.systemd.NamespaceResource.AllocateUserRange '{"name":"vself","size":1,"type":"self","userNamespaceFileDescriptor":0}' >/dev/null && cat /proc/$P/uid_map /proc/$P/gid_map; kill $P`]);
  // Without a target the caller's ids map to themselves (nsresourcework.c: target defaults to the peer's uid for "self").
  assert.deepEqual(self.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number)), [[1000, 1000, 1], [1000, 1000, 1]], self);
  const foreign = await h.ok(1000, ['sh', '-c', `${WITH_USERNS} varlinkctl --push-fd=/proc/$P/ns/user call ${NR} io.systemd.NamespaceResource.AllocateUserRange '{"name":"vfor","size":65536,"mapForeign":true,"userNamespaceFileDescriptor":0}' >/dev/null && cat /proc/$P/uid_map; kill $P`]);
  const map = foreign.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
  assert.deepEqual([map[0]![0], map[0]![2]], [0, CONTAINER_SIZE], foreign);
  assert.ok(map.some((m) => m[0] === FOREIGN_RANGE.start && m[1] === FOREIGN_RANGE.start && m[2] === FOREIGN_RANGE.size), foreign);
});

test('varlinkctl: AddNetworkToUserNamespace veth (peer in the caller\'s netns) and tap (a /dev/net/tun fd)', async () => {
  const out = await h.ok(1000, [
    'sh',
    '-c',
    `unshare --user --net sleep 60 & P=$!; sleep 0.3; varlinkctl --push-fd=/proc/$P/ns/user call ${NR} io.systemd.NamespaceResource.AllocateUserRange '{"name":"net","size":65536,"userNamespaceFileDescriptor":0}' && echo --- &&
     varlinkctl --push-fd=/proc/$P/ns/user --push-fd=/proc/$P/ns/net call ${NR} io.systemd.NamespaceResource.AddNetworkToUserNamespace '{"userNamespaceFileDescriptor":0,"networkNamespaceFileDescriptor":1,"mode":"veth","namespaceInterfaceName":"vee0"}' &&
     echo --- && cut -d: -f1 /proc/$P/net/dev && echo --- &&
     varlinkctl --push-fd=/proc/$P/ns/user --exec call ${NR} io.systemd.NamespaceResource.AddNetworkToUserNamespace '{"userNamespaceFileDescriptor":0,"mode":"tap"}' -- sh -c 'cat; echo; readlink /proc/self/fd/3; grep ^iff: /proc/self/fdinfo/3'; kill $P`,
  ]);
  const lines = (t: string): string[] => t.split('\n').map((l) => l.trim().split(/\s+/).join(' ')).filter(Boolean);
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
  const out = await h.ok(1000, [...NSPAWN, '--network-veth', `--image=${inChroot(h.images.trusted)}`, '/bin/sh', '-c', 'cat /proc/net/dev']);
  const ifaces = out.split('\n').map((l) => /^\s*([a-z0-9]+):/.exec(l)?.[1]).filter((n): n is string => n !== undefined);
  assert.deepEqual(ifaces.sort(), ['host0', 'lo'], out);
});

/** A tree owned by the foreign range, as `systemd-dissect --shift DIR foreign` leaves it, in a
 * directory of uid 1000's (upstream's rule: a foreign tree is the caller's if an ancestor is). */
function foreignTree(name: string): string {
  const home = path.join(h.imageDir, 'tester');
  fs.mkdirSync(home, { recursive: true });
  fs.chownSync(home, 1000, 1000);
  const dir = path.join(home, name);
  fs.cpSync(h.tree, dir, { recursive: true, verbatimSymlinks: true });
  for (const p of [dir, ...listTree(dir).map((f) => path.join(dir, f))]) fs.lchownSync(p, FOREIGN_RANGE.start, FOREIGN_RANGE.start);
  return dir;
}

test('systemd-nspawn --directory= of a foreign-owned tree: uid 0 inside, what it writes stays foreign-owned', async () => {
  const dir = foreignTree('fdir');
  const out = await h.ok(1000, [...NSPAWN, `--directory=/images/tester/fdir`, '/bin/sh', '-c', 'id -u; cat /etc/hello; echo w >/written']);
  assert.equal(out, `0\n${HELLO}`);
  const st = fs.statSync(path.join(dir, 'written'));
  assert.deepEqual([st.uid, st.gid], [FOREIGN_RANGE.start, FOREIGN_RANGE.start]);
});

test('varlinkctl: MakeDirectory makes a foreign-owned directory; MountDirectory hands out its mount', async () => {
  const out = await h.ok(1000, ['sh', '-c',
    `mkdir -p /tmp/par && varlinkctl --push-fd=/tmp/par --exec call ${MFS} io.systemd.MountFileSystem.MakeDirectory '{"parentFileDescriptor":0,"name":"newdir","mode":493}' -- sh -c 'echo LISTEN_FDS=$LISTEN_FDS' && stat -c '%u %g %a' /tmp/par/newdir &&
     ${WITH_USERNS} varlinkctl --push-fd=/proc/$P/ns/user call ${NR} io.systemd.NamespaceResource.AllocateUserRange '{"name":"vdir","size":65536,"userNamespaceFileDescriptor":0}' >/dev/null &&
     varlinkctl --push-fd=/tmp/par/newdir --push-fd=/proc/$P/ns/user --exec call ${MFS} io.systemd.MountFileSystem.MountDirectory '{"directoryFileDescriptor":0,"userNamespaceFileDescriptor":1,"mode":"foreign"}' -- sh -c 'cat; echo; echo LISTEN_FDS=$LISTEN_FDS'; kill $P`]);
  assert.match(out, /^LISTEN_FDS=1$/m, out);
  // mode 0755: the default 0700 (upstream's too) would keep uid 1000 from opening the foreign-owned directory for the next call.
  assert.match(out, new RegExp(`^${FOREIGN_RANGE.start} ${FOREIGN_RANGE.start} 755$`, 'm'), out);
  assert.equal(out.match(/^LISTEN_FDS=1$/gm)?.length, 2, out);
});

test('systemd-import --user tar: MakeDirectory and MountDirectory unpack a tarball into a foreign-owned tree', async () => {
  const tar = path.join(h.imageDir, 'tree.tar');
  execFileSync('tar', ['-C', h.tree, '-cf', tar, '.']);
  fs.chmodSync(tar, 0o644);
  const home = path.join(h.imageDir, 'tester');
  fs.mkdirSync(path.join(home, 'imgroot'), { recursive: true });
  for (const d of [home, path.join(home, 'imgroot')]) fs.chownSync(d, 1000, 1000);
  await h.ok(1000, ['/usr/lib/systemd/systemd-import', '--user', '--image-root=/images/tester/imgroot', 'tar', '/images/tree.tar', 'imp1']);
  const hello = path.join(home, 'imgroot/imp1/etc/hello');
  assert.equal(fs.readFileSync(hello, 'utf8'), HELLO);
  const st = fs.statSync(hello);
  assert.deepEqual([st.uid, st.gid], [FOREIGN_RANGE.start, FOREIGN_RANGE.start], 'unpacked as the image\'s root, stored foreign-owned');
});

test('varlinkctl: RegisterUserNamespace, AddControlGroupToUserNamespace, and AddMountToUserNamespace (root only, as upstream)', async () => {
  const out = await h.ok(1000, ['sh', '-c',
    `unshare --user --map-current-user sleep 60 & R=$!; ${WITH_USERNS} CG=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/vcg; mkdir $CG &&
     varlinkctl --push-fd=/proc/$R/ns/user call ${NR} io.systemd.NamespaceResource.RegisterUserNamespace '{"name":"vreg","userNamespaceFileDescriptor":0}' && echo --- &&
     varlinkctl --push-fd=/proc/$P/ns/user call ${NR} io.systemd.NamespaceResource.AllocateUserRange '{"name":"vcg","size":65536,"userNamespaceFileDescriptor":0}' >/dev/null &&
     varlinkctl --push-fd=/proc/$P/ns/user --push-fd=$CG call ${NR} io.systemd.NamespaceResource.AddControlGroupToUserNamespace '{"userNamespaceFileDescriptor":0,"controlGroupFileDescriptor":1}' && echo --- &&
     stat -c '%u' $CG && echo --- &&
     varlinkctl --push-fd=/proc/$P/ns/user --push-fd=/ call ${NR} io.systemd.NamespaceResource.AddMountToUserNamespace '{"userNamespaceFileDescriptor":0,"mountFileDescriptor":1}' 2>&1; kill $R $P`]);
  const [registered, added, owner, mount] = out.split('---\n');
  assert.equal(mount !== undefined && registered!.trim() !== '', true, `every step ran: ${out}`);
  assert.deepEqual(JSON.parse(registered!), { name: '1000-vreg' });
  assert.ok(added!.trim() === '' || added!.trim() === '{}', `AddControlGroupToUserNamespace replies without parameters: ${out}`);
  // The group now belongs to the namespace's root: its transient base id.
  const base = Number(owner!.trim());
  assert.ok(base >= CONTAINER_WINDOW.min && base <= CONTAINER_WINDOW.max, out);
  // varlinkctl names org.varlink.service.PermissionDenied by its errno text.
  assert.match(mount!, /AddMountToUserNamespace\(\) failed: Permission denied/, out);
});
