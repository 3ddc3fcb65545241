// End-to-end tests of userdbd: a real daemon on a private socket and state dir, unprivileged
// clients (uid 1000 via setpriv) with their own `unshare --user` namespaces.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { pino } from 'pino';
import { startUserdbd, type Userdbd } from '../../src/userdbd/daemon.js';
import { VarlinkClient } from '../../src/ipc/client.js';
import { VarlinkError } from '../../src/ipc/errors.js';
import { CONTAINER_WINDOW } from '../../src/userdbd/range-allocator.js';
import { programAs, USERDBD_CLIENT } from '../support/clients.js';
import { startTestUserdbd, UserdbdProcess, type TestUserdbd } from '../support/daemons.js';
import { AS_1000, REPO, runCollecting } from '../support/processes.js';
import { userScript } from '../support/user-package.js';
import { kill, nsInode, readMap } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const silent = pino({ level: 'silent' });

interface ClientResult {
  pid?: number;
  ok?: { name?: string };
  error?: string;
  parameters?: Record<string, unknown>;
  crash?: string;
  [k: string]: unknown;
}

/** Runs a command as root without blocking the event loop (the daemon under test runs in this
 * process); its stdout, failing unless it exited 0 or printed a JSON result. */
async function run(cmd: string, args: string[]): Promise<string> {
  const r = await runCollecting([cmd, ...args], { cwd: REPO });
  if (r.status !== 0 && !r.stdout.includes('{')) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Runs userdbd-client.ts as uid 1000; extra fds are inherited from index 3 on. */
async function client(args: string[], fds: number[] = []): Promise<ClientResult> {
  const out = await programAs(userScript(USERDBD_CLIENT), args, { fds });
  if (out.status !== 0 && !out.stdout.includes('{')) throw new Error(`client exited with ${out.status}: ${out.stderr}`);
  const r = JSON.parse(out.stdout.trim().split('\n').pop() ?? '{}') as ClientResult;
  if (r.crash) throw new Error(`client crashed: ${r.crash}`);
  return r;
}

const pids = new Set<number>();
function track(r: ClientResult): ClientResult {
  if (r.pid) pids.add(r.pid);
  return r;
}
function gone(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z';
  } catch {
    return true;
  }
}

describe('userdbd', () => {
  let t: TestUserdbd;
  let sock: string;
  let daemon: Userdbd;

  before(async () => {
    // A directory reachable from uid 1000 and from inside namespaces.
    t = await startTestUserdbd('userdbd');
    ({ sock, daemon } = t);
  });

  after(async () => {
    for (const pid of pids) kill(pid);
    await t?.close();
  });

  test('allocates a 64K range: maps read "0 BASE 65536" with BASE 64K-aligned in the pool', async () => {
    const r = track(await client(['alloc', sock, 'first', '65536']));
    assert.deepEqual(r.ok, { name: '1000-first' });
    const pid = r.pid as number;
    const [line, ...rest] = readMap(pid, 'uid_map');
    assert.equal(rest.length, 0);
    const [inside, base, count] = line;
    assert.equal(inside, 0);
    assert.equal(count, 65536);
    assert.equal(base % 65536, 0);
    assert.ok(base >= CONTAINER_WINDOW.min && base + 65535 <= CONTAINER_WINDOW.max);
    assert.deepEqual(readMap(pid, 'gid_map'), [[0, base, 65536]]);
    const rec = daemon.registry.byUserns(nsInode(pid));
    assert.equal(rec?.owner, 1000);
    assert.notEqual(rec?.nsId, '');
  });

  test('a second call for the same namespace answers UserNamespaceExists', async () => {
    const r = track(await client(['alloc', sock, 'twice', '65536']));
    assert.ok(r.ok);
    const again = await client(['alloc-pid', sock, 'twice-again', String(r.pid)]);
    assert.equal(again.error, 'io.systemd.NamespaceResource.UserNamespaceExists');
  });

  test("another user's namespace is refused", async () => {
    const other = spawn('setpriv', ['--reuid=1001', '--regid=1001', '--clear-groups', 'unshare', '--user', 'sleep', '1000'], { stdio: 'ignore' });
    const pid = other.pid as number;
    pids.add(pid);
    await waitFor(() => fs.readlinkSync(`/proc/${pid}/ns/user`) !== fs.readlinkSync('/proc/self/ns/user'), 'unshare');
    const fd = fs.openSync(`/proc/${pid}/ns/user`, 'r');
    try {
      const r = await client(['alloc-pid', sock, 'stolen', 'fd:3'], [fd]);
      assert.equal(r.error, 'org.varlink.service.PermissionDenied');
    } finally {
      fs.closeSync(fd);
    }
  });

  test('a namespace whose maps are already written is refused', async () => {
    const child = spawn('setpriv', [...AS_1000, 'unshare', '--user', '--map-root-user', 'sleep', '1000'], { stdio: 'ignore' });
    const pid = child.pid as number;
    pids.add(pid);
    await waitFor(() => fs.existsSync(`/proc/${pid}/uid_map`) && fs.readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim() !== '', 'maps');
    const r = await client(['alloc-pid', sock, 'mapped', String(pid)]);
    assert.equal(r.error, 'org.varlink.service.InvalidParameter');
    assert.deepEqual(r.parameters, { parameter: 'userNamespaceFileDescriptor' });
  });

  test('invalid size and names are refused', async () => {
    assert.equal(track(await client(['alloc', sock, 'badsize', '1000'])).error, 'org.varlink.service.InvalidParameter');
    const bad = track(await client(['alloc', sock, 'no/slash', '65536']));
    assert.deepEqual(bad.parameters, { parameter: 'name' });
  });

  test('a single ID comes from the dynamic pool', async () => {
    const r = track(await client(['alloc', sock, 'single', '1']));
    assert.ok(r.ok);
    const [[inside, id, count]] = readMap(r.pid as number, 'uid_map');
    assert.deepEqual([inside, count], [0, 1]);
    assert.ok(id >= 61184 && id <= 65519);
  });

  test('after the namespace dies its range is released and allocatable again', async () => {
    const r = track(await client(['alloc', sock, 'ephemeral', '65536']));
    const pid = r.pid as number;
    const inode = nsInode(pid);
    const base = readMap(pid, 'uid_map')[0][1];
    assert.equal(daemon.registry.findUidStart(base)?.userns, inode);
    kill(pid);
    await waitFor(() => daemon.registry.byUserns(inode) === undefined, 'release of the dead namespace');
    assert.equal(daemon.registry.findUidStart(base), undefined);
    assert.equal(daemon.registry.findName('1000-ephemeral'), undefined);
    // Same name again: the name hash makes the same range the first candidate.
    const again = track(await client(['alloc', sock, 'ephemeral', '65536']));
    assert.deepEqual(again.ok, { name: '1000-ephemeral' });
    assert.equal(readMap(again.pid as number, 'uid_map')[0][1], base);
  });

  test('io.systemd.UserDatabase answers by name and by number, without enumeration', async () => {
    const r = track(await client(['alloc', sock, 'userdb', '65536']));
    const base = readMap(r.pid as number, 'uid_map')[0][1];
    const c = await VarlinkClient.connect(sock);
    try {
      const service = 'io.systemd.NamespaceResource';
      const byName = await c.call('io.systemd.UserDatabase.GetUserRecord', { userName: 'ns-1000-userdb-7', service });
      assert.deepEqual(byName.parameters.record, {
        userName: 'ns-1000-userdb-7',
        uid: base + 7,
        gid: 65534,
        realName: 'User 7 of Allocated Namespace 1000-userdb',
        homeDirectory: '/',
        shell: '/usr/sbin/nologin',
        locked: true,
        service,
        disposition: 'container',
      });
      const byUid = await c.call('io.systemd.UserDatabase.GetUserRecord', { uid: base + 65535, service });
      assert.equal((byUid.parameters.record as { userName: string }).userName, 'ns-1000-userdb-65535');
      const group = await c.call('io.systemd.UserDatabase.GetGroupRecord', { gid: base, service });
      assert.equal((group.parameters.record as { groupName: string }).groupName, 'ns-1000-userdb-0');
      const expectErr = async (method: string, params: Record<string, unknown>, error: string): Promise<void> => {
        await assert.rejects(c.call(`io.systemd.UserDatabase.${method}`, params), (e: unknown) => e instanceof VarlinkError && e.error === error);
      };
      await expectErr('GetUserRecord', { service }, 'io.systemd.UserDatabase.EnumerationNotSupported');
      await expectErr('GetUserRecord', { userName: 'ns-1000-userdb-0', service: 'io.systemd.Other' }, 'io.systemd.UserDatabase.BadService');
      await expectErr('GetUserRecord', { userName: 'ns-1000-userdb-0', uid: base + 1, service }, 'io.systemd.UserDatabase.ConflictingRecordFound');
      await expectErr('GetUserRecord', { userName: 'ns-1000-userdb-65536', service }, 'io.systemd.UserDatabase.NoRecordFound');
      await expectErr('GetUserRecord', { uid: 1000, service }, 'io.systemd.UserDatabase.NoRecordFound');
      await expectErr('GetMemberships', { userName: 'ns-1000-userdb-0', service }, 'io.systemd.UserDatabase.NoRecordFound');
    } finally {
      c.close();
    }
  });

  test('userdbctl and getent (nss-systemd) resolve the allocated users', async () => {
    const r = track(await client(['alloc', sock, 'nss', '65536']));
    const base = readMap(r.pid as number, 'uid_map')[0][1];
    // A private mount namespace gets its own /run/systemd/userdb with our socket in it.
    const script = [
      'set -e',
      'mount -t tmpfs tmpfs /run/systemd',
      'mkdir /run/systemd/userdb',
      `ln -s ${sock} /run/systemd/userdb/io.systemd.NamespaceResource`,
      'userdbctl --no-pager user ns-1000-nss-0',
      `userdbctl --no-pager -j user ${base + 5}`,
      'echo ---',
      `getent passwd ns-1000-nss-0 ${base + 5}`,
    ].join('\n');
    const out = await run('unshare', ['--mount', 'sh', '-c', script]);
    assert.match(out, /User name: ns-1000-nss-0/);
    assert.match(out, new RegExp(`UID: ${base}\\b`));
    assert.match(out, /"userName"\s*:\s*"ns-1000-nss-5"/);
    const getent = out.split('---\n')[1];
    assert.match(getent, new RegExp(`^ns-1000-nss-0:x:${base}:65534:User 0 of Allocated Namespace 1000-nss:/:/usr/sbin/nologin$`, 'm'));
    assert.match(getent, new RegExp(`^ns-1000-nss-5:x:${base + 5}:`, 'm'));
  });

  test('nested: a container with two delegated ranges allocates for its child through the bind-mounted socket', async () => {
    const parent = track(await client(['alloc', sock, 'outer', '65536', '2', 'mount']));
    assert.ok(parent.ok);
    const ppid = parent.pid as number;
    const pmap = readMap(ppid, 'uid_map');
    assert.equal(pmap.length, 3);
    const delegated = pmap.slice(1).map(([inside, outside, count]) => {
      assert.equal(inside, outside); // mapped 1:1
      assert.equal(count, 65536);
      return outside;
    });
    const pinode = nsInode(ppid);
    for (const d of delegated) assert.equal(daemon.registry.delegationHolder(d), pinode);
    // Root of the container (nsenter as its owner), socket bind-mounted into its mount namespace.
    const script = [
      'set -e',
      'mount -t tmpfs tmpfs /mnt',
      'touch /mnt/sock',
      `mount --bind ${sock} /mnt/sock`,
      `TMPDIR=/mnt exec ${process.execPath} ${userScript(USERDBD_CLIENT)} alloc /mnt/sock inner 65536`,
    ].join('\n');
    const out = await run('setpriv', [...AS_1000, 'nsenter', '--target', String(ppid), '--user', '--mount', '--', 'sh', '-c', script]);
    const inner = track(JSON.parse(out.trim().split('\n').pop() as string) as ClientResult);
    const pbase = pmap[0][1];
    assert.deepEqual(inner.ok, { name: `${pbase}-inner` }, JSON.stringify(inner));
    const [[inside, base, count]] = readMap(inner.pid as number, 'uid_map');
    assert.deepEqual([inside, count], [0, 65536]);
    assert.ok(delegated.includes(base), `${base} is one of ${delegated.join(',')}`);
    assert.equal(daemon.registry.byUserns(nsInode(inner.pid as number))?.parent, pinode);

    // Child and parent die: their records go, the delegated ranges return to the pool.
    kill(inner.pid as number);
    kill(ppid);
    await waitFor(() => daemon.registry.byUserns(pinode) === undefined, 'release of the outer namespace');
    for (const d of delegated) {
      assert.equal(daemon.registry.delegationHolder(d), undefined);
      assert.equal(daemon.registry.findUidStart(d), undefined);
    }
  });

  test('AllocateUserRange round trip (p50 reported, not asserted)', async (t) => {
    const r = await client(['bench', sock, '40']);
    assert.equal(r.error, undefined);
    t.diagnostic(`AllocateUserRange p50 ${Number(r.p50).toFixed(2)} ms, p90 ${Number(r.p90).toFixed(2)} ms over ${String(r.n)} calls`);
  });
});

describe('userdbd limits', () => {
  test('the 257th namespace of one uid is refused', async () => {
    const t = await startTestUserdbd('userdbd', { sweepIntervalMs: 0 });
    try {
      const r = await client(['many', t.sock, '257']);
      assert.equal(r.ok, 256);
      assert.deepEqual(r.errors, ['256:io.systemd.System:{"origin":"linux","errnoName":"EUSERS","errno":87}']);
    } finally {
      await t.close();
    }
  });
});

describe('userdbd restart', () => {
  test('kill -9 and restart keep live allocations; dead ones are reaped', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'userdbd-restart-'));
    fs.chmodSync(dir, 0o755);
    const sock = path.join(dir, 'sock');
    const state = path.join(dir, 'state');
    const children: number[] = [];
    const startDaemon = (): Promise<UserdbdProcess> => UserdbdProcess.start({ sock, stateDir: state, pinName: 'userdbd-restart' });
    let d = await startDaemon();
    try {
      const live = await client(['alloc', sock, 'live', '65536', '1']);
      const doomed = await client(['alloc', sock, 'doomed', '65536']);
      children.push(live.pid as number, doomed.pid as number);
      const liveMap = readMap(live.pid as number, 'uid_map');
      const liveInode = nsInode(live.pid as number);
      const doomedInode = nsInode(doomed.pid as number);
      await d.kill9();
      kill(doomed.pid as number);
      await waitFor(() => gone(doomed.pid as number), 'doomed namespace process to exit');
      d = await startDaemon();
      const files = fs.readdirSync(path.join(state, 'registry')).filter((f) => f.endsWith('.userns'));
      assert.deepEqual(files, [`i${liveInode}.userns`]);
      assert.ok(!files.includes(`i${doomedInode}.userns`));
      const again = await client(['alloc-pid', sock, 'live-again', String(live.pid)]);
      assert.equal(again.error, 'io.systemd.NamespaceResource.UserNamespaceExists');
      // Its ranges stay taken: a new allocation named like it gets NameExists.
      const clash = await client(['alloc', sock, 'live', '65536']);
      children.push(clash.pid as number);
      assert.equal(clash.error, 'io.systemd.NamespaceResource.NameExists');
      assert.deepEqual(readMap(live.pid as number, 'uid_map'), liveMap);
    } finally {
      await d.kill9();
      children.forEach(kill);
      await d.unpin(); // the killed daemon left its pins
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('without an enforcing policy', () => {
  test('allocation answers UserNamespaceInterfaceNotSupported unless the operator opted out', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'userdbd-nopolicy-'));
    const sock = path.join(dir, 'sock');
    const { UnenforcedPolicy } = await import('../../src/userdbd/unenforced-policy.js');
    const daemon = await startUserdbd({ listen: sock, stateDir: path.join(dir, 'state'), userdbLink: null, policy: new UnenforcedPolicy(false, 'test'), logger: silent });
    const child = spawn('unshare', ['--user', 'sleep', '60'], { stdio: 'ignore' });
    try {
      await waitFor(() => {
        try {
          return fs.readlinkSync(`/proc/${child.pid}/ns/user`) !== fs.readlinkSync('/proc/self/ns/user');
        } catch {
          return false;
        }
      }, 'unshare');
      const c = await VarlinkClient.connect(sock);
      const nsFd = fs.openSync(`/proc/${child.pid}/ns/user`, 'r');
      try {
        await assert.rejects(
          c.call('io.systemd.NamespaceResource.AllocateUserRange', { name: 'x', size: 65536, userNamespaceFileDescriptor: 0 }, { fds: [nsFd] }),
          (e: unknown) => e instanceof VarlinkError && e.error === 'io.systemd.NamespaceResource.UserNamespaceInterfaceNotSupported',
        );
        const st = await c.call('io.mountgate.Userdbd.GetStatus');
        assert.equal((st.parameters.policy as { attached: boolean }).attached, false);
      } finally {
        fs.closeSync(nsFd);
        c.close();
      }
    } finally {
      child.kill('SIGKILL');
      await daemon.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
