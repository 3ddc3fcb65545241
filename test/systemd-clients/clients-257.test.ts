// systemd 257's own clients (Debian trixie's systemd-nspawn, systemd-dissect, userdbctl and
// nss-systemd, from the chroot scripts/build-chroot makes) run as uid 1000 against mountgate's
// daemons, which run on the host as root and are bound at the systemd socket paths inside the
// clients' mount namespace (harness.ts, enter.sh). What a 257 client can do against
// systemd-nsresourced and systemd-mountfsd, it must be able to do against ours.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CONTAINER_SIZE } from '../../src/userdbd/range-allocator.js';
import { UserdbdAgent } from '../support/userdbd-agent.js';
import { assertTransientRoot, BUSYBOX, HELLO, inChroot, listTree, PAYLOAD, sha256, startClientHarness, type ClientHarness, type DissectReport } from './harness.js';
import fs from 'node:fs';

let h: ClientHarness;
before(async () => {
  h = await startClientHarness('trixie');
});
after(async () => {
  await h?.close();
});
const ok = (...a: Parameters<ClientHarness['ok']>): Promise<string> => h.ok(...a);
const client = (...a: Parameters<ClientHarness['client']>): ReturnType<ClientHarness['client']> => h.client(...a);

/** --register=no: machined is on D-Bus, which this host lacks (nspawn fails there after every
 * daemon call succeeded); --keep-unit: no scope from a user manager; --console=pipe: plain
 * output instead of a pty's CRLF. */
const NSPAWN = ['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--console=pipe'];

test('systemd-nspawn --image= of a `mountgate build` image: CMD runs as uid 0 of a transient range', async () => {
  assertTransientRoot(await ok(1000, [...NSPAWN, `--image=${inChroot(h.images.trusted)}`, ...PAYLOAD]));
});

test('systemd-nspawn --image= of systemd-repart images (squashfs, ext4): CMD runs as uid 0 of a transient range', async () => {
  for (const img of Object.values(h.repart)) assertTransientRoot(await ok(1000, [...NSPAWN, `--image=${inChroot(img)}`, ...PAYLOAD]));
});

test('systemd-dissect --json=short: what root computes without daemons, less what MountImage does not tell', async () => {
  for (const img of [h.images.trusted, h.repart.squashfs, h.repart.ext4]) {
    const ours = JSON.parse(await ok(1000, ['systemd-dissect', '--json=short', inChroot(img)])) as DissectReport;
    const reference = JSON.parse(await ok(0, ['systemd-dissect', '--json=short', inChroot(img)], { daemons: false })) as DissectReport;
    assert.ok(reference.mounts.some((m) => m.designator === 'root' && m.verity === 'signed'), JSON.stringify(reference));
    const expected: DissectReport = {
      ...reference,
      mounts: reference.mounts
        // MountImage replies with the partitions it mounted: the verity hash and signature
        // partitions were consumed by the daemon's verification, not handed out.
        .filter((m) => !/-verity(-sig)?$/.test(m.designator))
        // node: the client got mount fds, no block device of its own.
        // verity: MountImage's PartitionInfo has no verity field, so 257 says "no" although
        // mntfsd checked the signature (the same as against upstream's mountfsd).
        .map((m) => ({ ...m, node: null, verity: 'no' })),
    };
    assert.deepEqual(ours, expected, `${path.basename(img)}: through the daemons vs as root without them`);
  }
});

test('systemd-dissect --list and --mtree show the image tree, owned by root, with its checksums', async () => {
  const tree = h.tree;
  const files = listTree(tree).sort();
  for (const img of [h.images.trusted, h.repart.squashfs]) {
    const list = (await ok(1000, ['systemd-dissect', '--list', inChroot(img)])).trim().split('\n');
    assert.deepEqual(list.sort(), files, `--list ${path.basename(img)}`);
    const mtree = (await ok(1000, ['systemd-dissect', '--mtree', inChroot(img)])).trim().split('\n');
    assert.deepEqual(mtree.map((l) => l.split(' ')[0]).sort(), ['./', ...files.map((f) => `./${f}`)].sort(), `--mtree ${path.basename(img)}`);
    for (const l of mtree) assert.match(l, / uid=0 gid=0( |$)/, l); // idmapped: the image's own owners
    assert.ok(mtree.includes(`./etc/hello type=file mode=0644 uid=0 gid=0 size=${HELLO.length} sha256sum=${sha256(HELLO)}`), mtree.join('\n'));
    const busybox = fs.readFileSync(BUSYBOX);
    assert.ok(mtree.includes(`./bin/busybox type=file mode=0755 uid=0 gid=0 size=${busybox.length} sha256sum=${sha256(busybox)}`), mtree.join('\n'));
  }
});

test('systemd-dissect --copy-from copies a file out of the image', async () => {
  for (const img of [h.images.trusted, h.repart.squashfs]) {
    const out = await ok(1000, ['sh', '-c', `systemd-dissect --copy-from ${inChroot(img)} /etc/hello /tmp/hello && cat /tmp/hello`]);
    assert.equal(out, HELLO, path.basename(img));
  }
});

test('an image signed by an untrusted key → KeyNotFound, surfaced by systemd-dissect and systemd-nspawn', async () => {
  const dissect = await client(1000, ['systemd-dissect', inChroot(h.images.untrusted)]);
  assert.equal(dissect.status, 1, dissect.stderr);
  assert.match(dissect.stderr, /MountImage\(\) varlink call: io\.systemd\.MountFileSystem\.KeyNotFound/);
  const nspawn = await client(1000, [...NSPAWN, `--image=${inChroot(h.images.untrusted)}`, '/bin/true']);
  assert.equal(nspawn.status, 1, nspawn.stderr);
  assert.match(nspawn.stderr, /io\.systemd\.MountFileSystem\.KeyNotFound/);
});

test('userdbctl user and getent passwd (nss-systemd) resolve the transient users of a namespace userdbd allocated', async () => {
  // A client of ours (uid 1000) allocates a range for a namespace it keeps alive meanwhile.
  const agent = await UserdbdAgent.start(1000, h.sockets.userdbd);
  try {
    const ns = await agent.userns();
    const reply = await agent.call('io.systemd.NamespaceResource.AllocateUserRange', { name: 'clients257', size: CONTAINER_SIZE, userNamespaceFileDescriptor: 0 }, [ns.fd]);
    assert.deepEqual(reply, { parameters: { name: '1000-clients257' } });
    const maps = (await agent.req({ op: 'maps', fd: ns.fd })) as { uid: number[][] };
    const base = maps.uid[0]![1]!;
    const user = 'ns-1000-clients257-0';

    const record = await ok(1000, ['userdbctl', 'user', user]);
    for (const field of [`User name: ${user}`, `UID: ${base}`, 'Disposition: container', 'Service: io.systemd.NamespaceResource']) {
      assert.match(record, new RegExp(`^\\s*${field}$`, 'm'), record);
    }
    const last = await ok(1000, ['userdbctl', 'user', String(base + CONTAINER_SIZE - 1)]);
    assert.match(last, /^\s*User name: ns-1000-clients257-65535$/m, last);
    const [name, , uid] = (await ok(1000, ['getent', 'passwd', user])).trim().split(':');
    assert.deepEqual([name, Number(uid)], [user, base]);
  } finally {
    await agent.stop();
  }
});
