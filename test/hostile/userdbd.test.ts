// Hostile userdbd callers against a real userdbd (child process, private socket and state dir):
// wrong fds for every fd parameter, other users' namespaces, mapped namespaces, bad names and
// numbers, root-only methods, clients that vanish mid-call and a connection flood; then leaks
// over allocate+exit cycles and parallel allocations from several uids. After each case: the
// documented error, the daemon's fd count back where it was, only complete records on disk, the
// registry unchanged (or as the case says) and the daemon still serving.
import assert from 'node:assert/strict';
import { type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { native } from '../../src/native/index.js';
import { createUserNamespace } from '../../src/sys/nshelper.js';
import { sendAndDie } from '../support/clients.js';
import { UserdbdProcess } from '../support/daemons.js';
import { closeAll, fifoPipe, O_PATH } from '../support/fds.js';
import { testDir } from '../support/images.js';
import { LONG } from '../support/processes.js';
import { rawPeer, type RawPeer } from '../support/raw-peer.js';
import { type AgentReply, UserdbdAgent } from '../support/userdbd-agent.js';
import { killAndWait, spawnInNewUserns, usernsMaps } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const NR = 'io.systemd.NamespaceResource';
const ALLOC = `${NR}.AllocateUserRange`;
const REGISTER = `${NR}.RegisterUserNamespace`;
const ADD_MOUNT = `${NR}.AddMountToUserNamespace`;
const ADD_CGROUP = `${NR}.AddControlGroupToUserNamespace`;
const ADD_NET = `${NR}.AddNetworkToUserNamespace`;
const UDB = 'io.systemd.UserDatabase';
const INVALID = 'org.varlink.service.InvalidParameter';
const DENIED = 'org.varlink.service.PermissionDenied';
const SERVICE = 'io.systemd.NamespaceResource';
const AS = (uid: number): string[] => [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];

let dir: string;
let daemon: UserdbdProcess;
let baseFds: number;
let baseInodes: number[];
let a1000: UserdbdAgent;
let a1001: UserdbdAgent;
let ns1001Proc: ChildProcess & { pid: number };
let mapped1000Proc: ChildProcess & { pid: number };
/** A registered, allocated namespace of uid 1000 (fd in a1000, and one here). */
let own1000: { fd: number; inode: number; root: number; base: number };
/** A registered, allocated namespace of uid 1001, named "squat" (fd here). */
let own1001Fd: number;
/** A cgroup2 directory owned by root. */
let cgroupDir: string;
const CGROUP2 = '/sys/fs/cgroup/unified';

/** Agent fd numbers of what a1000 inherited. */
const A_NS1001 = 3; // an empty namespace of uid 1001
const A_MAPPED = 4; // a namespace of uid 1000 with "0 1000 1" written
const A_OWN1001 = 5; // uid 1001's allocated namespace
const A_CGROUP = 6; // root's cgroup directory

/** Registered inodes; `busy`: the daemon may be writing (polling while it works). */
function inodes(busy = false): number[] {
  return daemon.records(busy).map((r) => r.userns).sort((x, y) => x - y);
}

/** One call as root over a fresh raw connection; this process's copies of `fds` are closed. */
async function rootCall(method: string, parameters: unknown, fds: number[] = []): Promise<AgentReply> {
  const p = rawPeer(daemon.sock);
  try {
    p.call(method, parameters, fds);
    closeAll(fds);
    return await p.nextReply().catch(() => ({ closed: true }));
  } finally {
    p.close();
  }
}

async function afterCase(what: string, expectInodes = baseInodes): Promise<void> {
  await daemon.settleFds(baseFds, what);
  assert.deepEqual(inodes(), expectInodes, `${what}: registry`);
  await daemon.assertServing();
}

const errIs = (r: AgentReply, error: string, parameter?: string): void => {
  assert.equal(r.error, error, JSON.stringify(r));
  if (parameter !== undefined) assert.deepEqual(r.parameters, { parameter });
};

before(async () => {
  dir = testDir('hostile-userdbd-');
  daemon = await UserdbdProcess.start({ sock: path.join(dir, 'sock'), stateDir: path.join(dir, 'state'), pinName: 'hostile-userdbd' });
  ns1001Proc = await spawnInNewUserns('setpriv', [...AS(1001), 'unshare', '--user', 'sleep', 'infinity']);
  mapped1000Proc = await spawnInNewUserns('setpriv', [...AS(1000), 'unshare', '--user', '--map-root-user', 'sleep', 'infinity']);
  await waitFor(() => fs.readFileSync(`/proc/${mapped1000Proc.pid}/uid_map`, 'utf8').trim() !== '', 'unshare to write the maps', 10_000);
  cgroupDir = path.join(CGROUP2, `mountgate-hostile-${process.pid}`);
  fs.mkdirSync(cgroupDir);

  a1001 = await UserdbdAgent.start(1001, daemon.sock);
  const n1001 = await a1001.userns();
  assert.deepEqual(await a1001.call(ALLOC, { name: 'squat', size: 65536, userNamespaceFileDescriptor: 0 }, [n1001.fd]), { parameters: { name: '1001-squat' } });
  own1001Fd = a1001.openFd(n1001.fd);

  const inherit = [fs.openSync(`/proc/${ns1001Proc.pid}/ns/user`, 'r'), fs.openSync(`/proc/${mapped1000Proc.pid}/ns/user`, 'r'), own1001Fd, fs.openSync(cgroupDir, 'r')];
  a1000 = await UserdbdAgent.start(1000, daemon.sock, inherit);
  closeAll([inherit[0]!, inherit[1]!, inherit[3]!]);
  const n = await a1000.userns();
  assert.deepEqual(await a1000.call(ALLOC, { name: 'own', size: 65536, userNamespaceFileDescriptor: 0 }, [n.fd]), { parameters: { name: '1000-own' } });
  const root = a1000.openFd(n.fd);
  own1000 = { ...n, root, base: (await usernsMaps(root)).uid[0]![1]! };
  baseInodes = inodes();
  assert.equal(baseInodes.length, 2);
  baseFds = await daemon.quietFdCount();
});

after(async () => {
  await a1000?.stop();
  await a1001?.stop();
  closeAll([own1000?.root, own1001Fd].filter((fd): fd is number => fd !== undefined));
  if (ns1001Proc) await killAndWait(ns1001Proc);
  if (mapped1000Proc) await killAndWait(mapped1000Proc);
  if (daemon) {
    const alive = daemon.alive;
    await daemon.stop();
    await daemon.unpin();
    assert.ok(alive, `userdbd died during the tests: ${daemon.log()}`);
  }
  if (cgroupDir) fs.rmdirSync(cgroupDir);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Wrong kinds of fd; each returns this process's fd (sent, then closed). */
const wrongFds: Array<[string, () => number]> = [
  ['a regular file', () => fs.openSync('/etc/passwd', 'r')],
  ['the read end of a pipe', () => {
    const [r, w] = fifoPipe(dir);
    fs.closeSync(w);
    return r;
  }],
  ['an O_PATH fd of a registered user namespace', () => fs.openSync(`/proc/self/fd/${own1000.root}`, O_PATH)],
  ['a network namespace', () => fs.openSync('/proc/self/ns/net', 'r')],
  ['a mount namespace', () => fs.openSync('/proc/self/ns/mnt', 'r')],
  ["the daemon's own user namespace", () => fs.openSync('/proc/self/ns/user', 'r')],
];

describe('wrong fds for userNamespaceFileDescriptor', () => {
  const methods: Array<[string, Record<string, unknown>, () => number[]]> = [
    [ALLOC, { name: 'fdcase', size: 65536, userNamespaceFileDescriptor: 0 }, () => []],
    [REGISTER, { name: 'fdcase', userNamespaceFileDescriptor: 0 }, () => []],
    [ADD_MOUNT, { userNamespaceFileDescriptor: 0, mountFileDescriptor: 1 }, () => [fs.openSync(dir, 'r')]],
    [ADD_CGROUP, { userNamespaceFileDescriptor: 0, controlGroupFileDescriptor: 1 }, () => [fs.openSync(cgroupDir, 'r')]],
    [ADD_NET, { userNamespaceFileDescriptor: 0, mode: 'tap' }, () => []],
  ];
  for (const [method, params, extra] of methods) {
    const short = method.slice(NR.length + 1);
    for (const [name, make] of wrongFds) {
      test(`${short}: ${name} → InvalidParameter`, async () => {
        errIs(await rootCall(method, params, [make(), ...extra()]), INVALID, 'userNamespaceFileDescriptor');
        await afterCase(`${short}: ${name}`);
      });
    }
    test(`${short}: no fds sent, index 0 → InvalidParameter`, async () => {
      // The other fd parameter (index 1) is past the list as well; either may be reported.
      const r = await rootCall(method, params, []);
      assert.equal(r.error, INVALID, JSON.stringify(r));
      await afterCase(`${short}: no fds`);
    });
    test(`${short}: index past the fd list → InvalidParameter`, async () => {
      errIs(await rootCall(method, { ...params, userNamespaceFileDescriptor: 7 }, [fs.openSync(`/proc/self/fd/${own1000.root}`, 'r'), ...extra()]), INVALID, 'userNamespaceFileDescriptor');
      await afterCase(`${short}: past the list`);
    });
    test(`${short}: index -1 → InvalidParameter`, async () => {
      errIs(await rootCall(method, { ...params, userNamespaceFileDescriptor: -1 }, [fs.openSync(`/proc/self/fd/${own1000.root}`, 'r'), ...extra()]), INVALID, 'userNamespaceFileDescriptor');
      await afterCase(`${short}: index -1`);
    });
  }
});

describe('wrong fds for mountFileDescriptor and controlGroupFileDescriptor', () => {
  const nsFd = (): number => fs.openSync(`/proc/self/fd/${own1000.root}`, 'r');
  const mountCases: Array<[string, () => number]> = [
    ...wrongFds.filter(([n]) => !n.includes('O_PATH')),
    ['a socket', () => {
      const [x, y] = native.socketpair();
      fs.closeSync(y);
      return x;
    }],
  ];
  for (const [name, make] of mountCases) {
    test(`AddMountToUserNamespace: ${name} → InvalidParameter(mountFileDescriptor)`, async () => {
      errIs(await rootCall(ADD_MOUNT, { userNamespaceFileDescriptor: 0, mountFileDescriptor: 1 }, [nsFd(), make()]), INVALID, 'mountFileDescriptor');
      await afterCase(`AddMount: ${name}`);
    });
  }
  test('AddMountToUserNamespace: the namespace fd again (same index twice) → InvalidParameter(mountFileDescriptor)', async () => {
    errIs(await rootCall(ADD_MOUNT, { userNamespaceFileDescriptor: 0, mountFileDescriptor: 0 }, [nsFd()]), INVALID, 'mountFileDescriptor');
    await afterCase('AddMount: same index');
  });
  test('AddMountToUserNamespace: an O_PATH directory (what open_tree returns) is accepted; nothing is recorded', async () => {
    assert.deepEqual(await rootCall(ADD_MOUNT, { userNamespaceFileDescriptor: 0, mountFileDescriptor: 1 }, [nsFd(), fs.openSync(dir, O_PATH)]), { parameters: {} });
    await afterCase('AddMount: O_PATH dir');
  });

  const cgCases: Array<[string, () => number]> = [
    ...wrongFds,
    ['a directory outside cgroupfs', () => fs.openSync(dir, 'r')],
    ['the cgroup2 root (not below /sys/fs/cgroup/…/)', () => fs.openSync('/sys/fs/cgroup', 'r')],
    ['a cgroup v1 directory', () => fs.openSync('/sys/fs/cgroup/pids', 'r')],
    ['a file inside the cgroup', () => fs.openSync(path.join(cgroupDir, 'cgroup.procs'), 'r')],
  ];
  for (const [name, make] of cgCases) {
    test(`AddControlGroupToUserNamespace: ${name} → InvalidParameter(controlGroupFileDescriptor)`, async () => {
      errIs(await rootCall(ADD_CGROUP, { userNamespaceFileDescriptor: 0, controlGroupFileDescriptor: 1 }, [nsFd(), make()]), INVALID, 'controlGroupFileDescriptor');
      assert.equal(fs.statSync(cgroupDir).uid, 0, 'the cgroup was handed out');
      await afterCase(`AddControlGroup: ${name}`);
    });
  }
  test('AddControlGroupToUserNamespace: an O_PATH fd of a cgroup2 directory → InvalidParameter, cgroup untouched', async () => {
    const r = await rootCall(ADD_CGROUP, { userNamespaceFileDescriptor: 0, controlGroupFileDescriptor: 1 }, [nsFd(), fs.openSync(cgroupDir, O_PATH)]);
    try {
      assert.equal(fs.statSync(cgroupDir).uid, 0, 'the cgroup was handed out');
      await afterCase('AddControlGroup: O_PATH');
      errIs(r, INVALID, 'controlGroupFileDescriptor');
    } finally {
      // If it was accepted, take the cgroup back for the following cases.
      fs.chownSync(cgroupDir, 0, 0);
    }
  });
});

describe("another user's namespace, mapped namespaces, root-only methods (uid 1000)", () => {
  test("AllocateUserRange with uid 1001's namespace → PermissionDenied", async () => {
    errIs(await a1000.call(ALLOC, { name: 'stolen', size: 65536, userNamespaceFileDescriptor: 0 }, [A_NS1001]), DENIED);
    await afterCase('alloc 1001 ns');
  });
  test("RegisterUserNamespace with uid 1001's namespace → PermissionDenied", async () => {
    errIs(await a1000.call(REGISTER, { name: 'stolen', userNamespaceFileDescriptor: 0 }, [A_NS1001]), DENIED);
    await afterCase('register 1001 ns');
  });
  test("AllocateUserRange with uid 1001's allocated namespace → PermissionDenied", async () => {
    errIs(await a1000.call(ALLOC, { name: 'stolen', size: 65536, userNamespaceFileDescriptor: 0 }, [A_OWN1001]), DENIED);
    await afterCase('alloc 1001 allocated ns');
  });
  test("AddControlGroupToUserNamespace for uid 1001's namespace → PermissionDenied, cgroup untouched", async () => {
    errIs(await a1000.call(ADD_CGROUP, { userNamespaceFileDescriptor: 0, controlGroupFileDescriptor: 1 }, [A_OWN1001, A_CGROUP]), DENIED);
    assert.equal(fs.statSync(cgroupDir).uid, 0);
    await afterCase('cgroup for 1001 ns');
  });
  test("AddControlGroupToUserNamespace with root's cgroup for its own namespace → PermissionDenied", async () => {
    errIs(await a1000.call(ADD_CGROUP, { userNamespaceFileDescriptor: 0, controlGroupFileDescriptor: 1 }, [own1000.fd, A_CGROUP]), DENIED);
    assert.equal(fs.statSync(cgroupDir).uid, 0);
    await afterCase("root's cgroup");
  });
  test('AddMountToUserNamespace from uid 1000 → PermissionDenied (root only)', async () => {
    errIs(await a1000.call(ADD_MOUNT, { userNamespaceFileDescriptor: 0, mountFileDescriptor: 1 }, [own1000.fd, A_CGROUP]), DENIED);
    await afterCase('AddMount as 1000');
  });
  test('AddNetworkToUserNamespace with a directory for the network namespace → InvalidParameter, its fds closed', async () => {
    const r = await a1000.call(ADD_NET, { userNamespaceFileDescriptor: 0, networkNamespaceFileDescriptor: 1, mode: 'veth' }, [own1000.fd, A_CGROUP]);
    errIs(r, INVALID, 'networkNamespaceFileDescriptor');
    await afterCase('AddNetwork');
  });
  test("AddNetworkToUserNamespace for uid 1001's namespace → PermissionDenied, no interface", async () => {
    const links = fs.readdirSync('/sys/class/net');
    errIs(await a1000.call(ADD_NET, { userNamespaceFileDescriptor: 0, mode: 'tap' }, [A_OWN1001]), DENIED);
    assert.deepEqual(fs.readdirSync('/sys/class/net'), links);
    await afterCase('AddNetwork 1001 ns');
  });
  test('AllocateUserRange for a namespace with maps written → InvalidParameter (uid 1000 and root)', async () => {
    errIs(await a1000.call(ALLOC, { name: 'mapped', size: 65536, userNamespaceFileDescriptor: 0 }, [A_MAPPED]), INVALID, 'userNamespaceFileDescriptor');
    errIs(await rootCall(ALLOC, { name: 'mapped', size: 65536, userNamespaceFileDescriptor: 0 }, [fs.openSync(`/proc/${mapped1000Proc.pid}/ns/user`, 'r')]), INVALID, 'userNamespaceFileDescriptor');
    await afterCase('mapped');
  });
  test('AllocateUserRange for an already allocated namespace → UserNamespaceExists, its maps unchanged', async () => {
    errIs(await a1000.call(ALLOC, { name: 'again', size: 65536, userNamespaceFileDescriptor: 0 }, [own1000.fd]), `${NR}.UserNamespaceExists`);
    assert.deepEqual((await usernsMaps(own1000.root)).uid, [[0, own1000.base, 65536]]);
    await afterCase('allocate twice');
  });
  test('RegisterUserNamespace of an empty namespace → InvalidParameter', async () => {
    const n = await a1000.userns();
    try {
      errIs(await a1000.call(REGISTER, { name: 'empty', userNamespaceFileDescriptor: 0 }, [n.fd]), INVALID, 'userNamespaceFileDescriptor');
    } finally {
      await a1000.req({ op: 'close', fds: [n.fd] });
    }
    await afterCase('register empty');
  });
  test('RegisterUserNamespace of its mapped namespace works once, then UserNamespaceExists', async () => {
    const inode = fs.statSync(`/proc/${mapped1000Proc.pid}/ns/user`).ino;
    assert.deepEqual(await a1000.call(REGISTER, { name: 'mapped', userNamespaceFileDescriptor: 0 }, [A_MAPPED]), { parameters: { name: '1000-mapped' } });
    errIs(await a1000.call(REGISTER, { name: 'mapped2', userNamespaceFileDescriptor: 0 }, [A_MAPPED]), `${NR}.UserNamespaceExists`);
    // A registered namespace without a range gets no cgroup.
    errIs(await a1000.call(ADD_CGROUP, { userNamespaceFileDescriptor: 0, controlGroupFileDescriptor: 1 }, [A_MAPPED, A_CGROUP]), `${NR}.UserNamespaceWithoutUserRange`);
    await afterCase('register mapped', [...baseInodes, inode].sort((x, y) => x - y));
    const rec = daemon.records().find((r) => r.userns === inode);
    assert.equal(rec?.owner, 1000);
    assert.equal(rec?.size, 0);
    baseInodes = inodes();
  });
});

describe('names', () => {
  const bad: Array<[string, string]> = [
    ['a slash', 'a/b'],
    ['only a slash', '/'],
    ['..', '..'],
    ['.', '.'],
    ['../../etc/passwd', '../../etc/passwd'],
    ['a NUL', 'a\0b'],
    ['300 bytes', 'x'.repeat(300)],
    ['empty (root)', ''],
    ['a leading dash (root)', '-x'],
    ['a space', 'a b'],
    ['non-ASCII', 'é'],
    ['a newline', 'a\nb'],
  ];
  for (const [what, name] of bad) {
    test(`${what} → InvalidParameter(name), from root and from uid 1000`, async () => {
      errIs(await rootCall(ALLOC, { name, size: 65536, userNamespaceFileDescriptor: 0 }, [await createUserNamespace()]), INVALID, 'name');
      if (what.endsWith('(root)')) return afterCase(what);
      const n = await a1000.userns();
      try {
        errIs(await a1000.call(ALLOC, { name, size: 65536, userNamespaceFileDescriptor: 0 }, [n.fd]), INVALID, 'name');
        errIs(await a1000.call(REGISTER, { name, userNamespaceFileDescriptor: 0 }, [A_MAPPED]), INVALID, 'name');
      } finally {
        await a1000.req({ op: 'close', fds: [n.fd] });
      }
      await afterCase(what);
    });
  }

  test('uid 1000: an empty name and a leading dash are judged with the prefix ("1000-", "1000--x"): accepted', async () => {
    const n1 = await a1000.userns();
    const n2 = await a1000.userns();
    try {
      assert.deepEqual(await a1000.call(ALLOC, { name: '', size: 1, userNamespaceFileDescriptor: 0 }, [n1.fd]), { parameters: { name: '1000-' } });
      assert.deepEqual(await a1000.call(ALLOC, { name: '-x', size: 1, userNamespaceFileDescriptor: 0 }, [n2.fd]), { parameters: { name: '1000--x' } });
      const r = await rootCall(`${UDB}.GetUserRecord`, { userName: 'ns-1000--0', service: SERVICE });
      assert.equal((r.parameters as { record: { userName: string } }).record.userName, 'ns-1000--0');
    } finally {
      await a1000.req({ op: 'close', fds: [n1.fd, n2.fd] });
    }
    await waitFor(() => inodes(true).length === baseInodes.length, 'the dead namespaces to be reaped', 10_000);
    await afterCase('prefixed names');
  });

  test("squatting: uid 1000 asking for uid 1001's name gets its own prefix; root asking for it gets NameExists", async () => {
    const n = await a1000.userns();
    const r = await a1000.call(ALLOC, { name: '1001-squat', size: 1, userNamespaceFileDescriptor: 0 }, [n.fd]);
    assert.deepEqual(r, { parameters: { name: '1000-1001-squat' } });
    errIs(await rootCall(ALLOC, { name: '1001-squat', size: 1, userNamespaceFileDescriptor: 0 }, [await createUserNamespace()]), `${NR}.NameExists`);
    // uid 1001's users still resolve to uid 1001's range.
    const rec = await rootCall(`${UDB}.GetUserRecord`, { userName: 'ns-1001-squat-0', service: SERVICE });
    const owner = daemon.records().find((x) => x.name === '1001-squat');
    assert.equal((rec.parameters as { record: { uid: number } }).record.uid, owner?.start);
    await a1000.req({ op: 'close', fds: [n.fd] });
    await waitFor(() => inodes(true).length === baseInodes.length, 'the dead namespace to be reaped', 10_000);
    await afterCase('squatting');
  });

  test('mangleName: a 300-byte name from uid 1000 is shortened and keeps the uid prefix; a name with "/" becomes 16 hex digits', async () => {
    const n1 = await a1000.userns();
    const n2 = await a1000.userns();
    try {
      const long = await a1000.call(ALLOC, { name: 'y'.repeat(300), mangleName: true, size: 1, userNamespaceFileDescriptor: 0 }, [n1.fd]);
      assert.deepEqual(long, { parameters: { name: `1000-${'y'.repeat(17)}` } });
      const slash = await a1000.call(ALLOC, { name: '../../etc', mangleName: true, size: 1, userNamespaceFileDescriptor: 0 }, [n2.fd]);
      assert.match((slash.parameters as { name: string }).name, /^[0-9a-f]{16}$/);
      const added = daemon.records().filter((r) => !baseInodes.includes(r.userns));
      assert.deepEqual(added.map((r) => r.name).sort(), [(slash.parameters as { name: string }).name, `1000-${'y'.repeat(17)}`].sort());
    } finally {
      await a1000.req({ op: 'close', fds: [n1.fd, n2.fd] });
    }
    await waitFor(() => inodes(true).length === baseInodes.length, 'the dead namespaces to be reaped', 10_000);
    await afterCase('mangle');
  });
});

describe('numbers, floats, nulls and wrong types', () => {
  const cases: Array<[string, Record<string, unknown>, string, string?]> = [
    ['size 2', { size: 2 }, INVALID, 'size'],
    ['size 65535', { size: 65535 }, INVALID, 'size'],
    ['size 0', { size: 0 }, INVALID, 'size'],
    ['size -1', { size: -1 }, INVALID, 'size'],
    ['size 2^53', { size: 2 ** 53 }, INVALID, 'size'],
    ['size 65536.5', { size: 65536.5 }, INVALID, 'size'],
    ['size 1e308', { size: 1e308 }, INVALID, 'size'],
    ['size "65536"', { size: '65536' }, INVALID, 'size'],
    ['size null', { size: null }, INVALID, 'size'],
    ['size missing', { size: undefined }, INVALID, 'size'],
    ['target -1', { target: -1 }, INVALID, 'target'],
    ['target overflowing 2^32-1', { target: 0xffffffff - 65535 }, INVALID, 'target'],
    ['target 2^53', { target: 2 ** 53 }, INVALID, 'target'],
    ['target 1.5', { target: 1.5 }, INVALID, 'target'],
    ['delegateContainerRanges 17', { delegateContainerRanges: 17 }, `${NR}.TooManyDelegations`],
    ['delegateContainerRanges 2^53-1', { delegateContainerRanges: 2 ** 53 - 1 }, `${NR}.TooManyDelegations`],
    ['delegateContainerRanges -1', { delegateContainerRanges: -1 }, INVALID, 'delegateContainerRanges'],
    ['delegateContainerRanges 0.5', { delegateContainerRanges: 0.5 }, INVALID, 'delegateContainerRanges'],
    ['userNamespaceFileDescriptor 0.5', { userNamespaceFileDescriptor: 0.5 }, INVALID, 'userNamespaceFileDescriptor'],
    ['userNamespaceFileDescriptor null', { userNamespaceFileDescriptor: null }, INVALID, 'userNamespaceFileDescriptor'],
    ['userNamespaceFileDescriptor "0"', { userNamespaceFileDescriptor: '0' }, INVALID, 'userNamespaceFileDescriptor'],
    ['name null', { name: null }, INVALID, 'name'],
    ['name 5', { name: 5 }, INVALID, 'name'],
    ['name ["x"]', { name: ['x'] }, INVALID, 'name'],
    ['mangleName "yes"', { mangleName: 'yes' }, INVALID, 'mangleName'],
    ['type "self" with size 65536', { type: 'self' }, INVALID, 'size'],
    ['type "self" with target 1', { type: 'self', size: 1, target: 1 }, INVALID, 'target'],
    ['type "identity" (not in the enum)', { type: 'identity' }, INVALID, 'type'],
    ['type 7', { type: 7 }, INVALID, 'type'],
    ['mapForeign "yes"', { mapForeign: 'yes' }, INVALID, 'mapForeign'],
    ['mapForeign with a target inside the foreign range', { mapForeign: true, target: 0x7ffe0000 }, INVALID, 'target'],
  ];
  for (const [what, patch, error, parameter] of cases) {
    test(`AllocateUserRange: ${what} → ${error.split('.').pop()}`, async () => {
      const r = await rootCall(ALLOC, { name: 'numbers', size: 65536, userNamespaceFileDescriptor: 0, ...patch }, [await createUserNamespace()]);
      assert.equal(r.error, error, JSON.stringify(r));
      if (parameter) assert.deepEqual(r.parameters, { parameter });
      await afterCase(what);
    });
  }
  test('parameters that are an array, a string or null → InvalidParameter or a clean disconnect', async () => {
    for (const parameters of [[], 'x', null, 7]) {
      const r = await rootCall(ALLOC, parameters, [await createUserNamespace()]);
      assert.ok(r.closed === true || r.error === INVALID, JSON.stringify(r));
    }
    await afterCase('non-object parameters');
  });
  test('RegisterUserNamespace / AddMount / AddControlGroup: nulls and floats for mandatory fields → InvalidParameter', async () => {
    const ns = (): number => fs.openSync(`/proc/self/fd/${own1000.root}`, 'r');
    errIs(await rootCall(REGISTER, { name: null, userNamespaceFileDescriptor: 0 }, [ns()]), INVALID, 'name');
    errIs(await rootCall(REGISTER, { name: 'x', userNamespaceFileDescriptor: 1.0000001 }, [ns()]), INVALID, 'userNamespaceFileDescriptor');
    errIs(await rootCall(ADD_MOUNT, { userNamespaceFileDescriptor: 0, mountFileDescriptor: null }, [ns()]), INVALID, 'mountFileDescriptor');
    errIs(await rootCall(ADD_CGROUP, { userNamespaceFileDescriptor: 0 }, [ns()]), INVALID, 'controlGroupFileDescriptor');
    errIs(await rootCall(ADD_CGROUP, { userNamespaceFileDescriptor: 0.5, controlGroupFileDescriptor: 0 }, [ns()]), INVALID, 'userNamespaceFileDescriptor');
    await afterCase('other methods');
  });
});

describe('io.systemd.UserDatabase with hostile parameters', () => {
  const NO = `${UDB}.NoRecordFound`;
  const cases: Array<[string, string, Record<string, unknown>, string, string?]> = [
    ['uid -1', 'GetUserRecord', { uid: -1 }, NO],
    ['uid 2^32', 'GetUserRecord', { uid: 2 ** 32 }, NO],
    ['uid 2^53', 'GetUserRecord', { uid: 2 ** 53 }, INVALID, 'uid'],
    ['uid 1.5', 'GetUserRecord', { uid: 1.5 }, INVALID, 'uid'],
    ['uid "0"', 'GetUserRecord', { uid: '0' }, INVALID, 'uid'],
    ['userName "ns-"', 'GetUserRecord', { userName: 'ns-' }, NO],
    ['userName "ns--1"', 'GetUserRecord', { userName: 'ns--1' }, NO],
    ['userName with offset 65536', 'GetUserRecord', { userName: 'ns-1000-own-65536' }, NO],
    ['userName with offset 00', 'GetUserRecord', { userName: 'ns-1000-own-00' }, NO],
    ['userName with offset 1e3', 'GetUserRecord', { userName: 'ns-1000-own-1e3' }, NO],
    ['userName with a NUL', 'GetUserRecord', { userName: 'ns-1000-own\0-0' }, NO],
    ['userName of 300 bytes', 'GetUserRecord', { userName: `ns-${'a'.repeat(300)}-0` }, NO],
    ['userName "ns-../../x-0"', 'GetUserRecord', { userName: 'ns-../../x-0' }, NO],
    ['service missing', 'GetUserRecord', { uid: 1, service: undefined }, INVALID, 'service'],
    ['service null', 'GetUserRecord', { uid: 1, service: null }, INVALID, 'service'],
    ['service of another daemon', 'GetUserRecord', { uid: 1, service: 'io.systemd.Machine' }, `${UDB}.BadService`],
    ['fuzzyNames [1]', 'GetUserRecord', { fuzzyNames: [1] }, INVALID, 'fuzzyNames'],
    ['dispositionMask "container"', 'GetUserRecord', { uid: 1, dispositionMask: 'container' }, INVALID, 'dispositionMask'],
    ['uidMin > uidMax around a real uid', 'GetUserRecord', { userName: 'ns-1000-own-1', uidMin: 2 ** 31, uidMax: 0 }, `${UDB}.NonMatchingRecordFound`],
    // systemd 262's uuid filter: transient records have no uuid, so a real one does not match.
    ['uuid on a real user', 'GetUserRecord', { userName: 'ns-1000-own-1', uuid: '0b4e2f6c-5a1d-4e8b-9c3f-2d7a6e1b8f40' }, `${UDB}.NonMatchingRecordFound`],
    ['uuid on a real group', 'GetGroupRecord', { groupName: 'ns-1000-own-1', uuid: '0b4e2f6c-5a1d-4e8b-9c3f-2d7a6e1b8f40' }, `${UDB}.NonMatchingRecordFound`],
    ['uuid 5', 'GetUserRecord', { uid: 1, uuid: 5 }, INVALID, 'uuid'],
    ['gid -1', 'GetGroupRecord', { gid: -1 }, NO],
    ['gid 1.5', 'GetGroupRecord', { gid: 1.5 }, INVALID, 'gid'],
    ['groupName of 300 bytes', 'GetGroupRecord', { groupName: 'x'.repeat(300) }, NO],
    ['GetMemberships with no names', 'GetMemberships', {}, NO],
    ['GetMemberships userName 5', 'GetMemberships', { userName: 5 }, INVALID, 'userName'],
  ];
  for (const [what, method, patch, error, parameter] of cases) {
    test(`${method}: ${what} → ${error.split('.').pop()}`, async () => {
      const r = await rootCall(`${UDB}.${method}`, { service: SERVICE, ...patch });
      assert.equal(r.error, error, JSON.stringify(r));
      if (parameter) assert.deepEqual(r.parameters, { parameter });
      await afterCase(what);
    });
  }
    test('GetUserRecord: userName null with a uid → the record', async () => {
    const r = await rootCall(`${UDB}.GetUserRecord`, { uid: own1000.base + 1, userName: null, service: SERVICE });
    await afterCase('userName null');
    assert.equal((r.parameters as { record?: { userName: string } } | undefined)?.record?.userName, 'ns-1000-own-1', JSON.stringify(r));
  });
  test('GetGroupRecord: gid null with a groupName → the record', async () => {
    const r = await rootCall(`${UDB}.GetGroupRecord`, { gid: null, groupName: 'ns-1000-own-1', service: SERVICE });
    await afterCase('gid null');
    assert.equal((r.parameters as { record?: { gid: number } } | undefined)?.record?.gid, own1000.base + 1, JSON.stringify(r));
  });
  test('GetUserRecord: userName and uid both null → EnumerationNotSupported', async () => {
    const r = await rootCall(`${UDB}.GetUserRecord`, { uid: null, userName: null, service: SERVICE });
    await afterCase('both null');
    assert.equal(r.error, `${UDB}.EnumerationNotSupported`, JSON.stringify(r));
  });
  test("GetInfo lists io.systemd beside the two systemd interfaces, as systemd 262's nsresourced does", async () => {
    const r = await rootCall('org.varlink.service.GetInfo', {});
    const interfaces = (r.parameters as { interfaces: string[] }).interfaces;
    for (const i of ['io.systemd', 'io.systemd.NamespaceResource', 'io.systemd.UserDatabase', 'org.varlink.service']) assert.ok(interfaces.includes(i), JSON.stringify(r));
    assert.deepEqual(interfaces, [...interfaces].sort());
    const d = await rootCall('org.varlink.service.GetInterfaceDescription', { interface: 'io.systemd' });
    assert.match((d.parameters as { description: string }).description, /^error System\($/m);
    await afterCase('GetInfo');
  });
  test('a real user with a parameter this server does not know (a newer client) → the record', async () => {
    const r = await rootCall(`${UDB}.GetUserRecord`, { userName: 'ns-1000-own-2', someFutureFilter: { x: 1 }, uuid: null, service: SERVICE });
    await afterCase('unknown parameter');
    assert.equal((r.parameters as { record?: { uid: number } } | undefined)?.record?.uid, own1000.base + 2, JSON.stringify(r));
  });
  test('a real user still resolves, from uid 1000 as well', async () => {
    const r = await a1000.call(`${UDB}.GetUserRecord`, { uid: own1000.base + 65535, service: SERVICE });
    assert.equal((r.parameters as { record: { userName: string } }).record.userName, 'ns-1000-own-65535');
    await afterCase('userdb ok');
  });
});

describe('a client that vanishes mid-call', () => {
  test('AllocateUserRange, client killed 0–15 ms after sending: an entry exists exactly when the maps were written, and goes with the namespace', async (t) => {
    const outcomes: string[] = [];
    for (const delay of [0, 0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15]) {
      const n = await a1000.userns();
      const held = a1000.openFd(n.fd);
      await a1000.req({ op: 'close', fds: [n.fd] }); // only this process keeps it alive now
      try {
        await sendAndDie(1000, daemon.sock, ALLOC, { name: `vanish${delay}`, size: 65536, userNamespaceFileDescriptor: 0 }, held, delay);
        await daemon.settleFds(baseFds, `vanish after ${delay} ms`);
        const maps = await usernsMaps(held);
        const rec = daemon.records().find((r) => r.userns === n.inode);
        if (maps.uid.length === 0) {
          assert.equal(rec, undefined, `a registry entry for a namespace without maps (killed after ${delay} ms)`);
          outcomes.push(`${delay}ms:none`);
        } else {
          assert.deepEqual(maps.uid, [[0, rec?.start, 65536]], `maps without a matching entry (killed after ${delay} ms)`);
          assert.deepEqual(maps.gid, maps.uid);
          outcomes.push(`${delay}ms:allocated`);
        }
      } finally {
        fs.closeSync(held);
      }
      // The namespace is gone now: its entry (if any) must be reaped.
      await waitFor(() => !inodes(true).includes(n.inode), 'the dead namespace to be reaped', 10_000);
      await afterCase(`vanish after ${delay} ms`);
    }
    t.diagnostic(`outcomes: ${outcomes.join(' ')}`);
  });

  test('a client that vanishes with the namespace fd only in flight: nothing is left', async () => {
    // The client's copy is the only reference: once the daemon is done the namespace dies.
    for (const delay of [0, 5, 10]) {
      const n = await a1000.userns();
      const held = a1000.openFd(n.fd);
      await a1000.req({ op: 'close', fds: [n.fd] });
      const p = sendAndDie(1000, daemon.sock, ALLOC, { name: `inflight${delay}`, size: 1, userNamespaceFileDescriptor: 0 }, held, delay);
      fs.closeSync(held);
      await p;
      await waitFor(() => !inodes(true).includes(n.inode), 'the dead namespace to be reaped', 10_000);
      await afterCase(`in flight ${delay} ms`);
    }
  });
});

describe('connection flood', () => {
  test('1,025 connections from one uid: the 1,025th is closed, the 1,024 others and other uids are served', async () => {
    const peers: RawPeer[] = [];
    try {
      for (let i = 0; i < 1024; i++) peers.push(rawPeer(daemon.sock));
      await waitFor(() => daemon.fdCount() >= baseFds + 1024, 'the daemon to accept 1,024 connections', 10_000);
      const last = rawPeer(daemon.sock);
      peers.push(last);
      await waitFor(() => last.isClosed(), 'the 1,025th connection to be closed', 10_000);
      // Another uid is served meanwhile.
      const r = await a1000.call(`${UDB}.GetUserRecord`, { uid: own1000.base, service: SERVICE });
      assert.equal((r.parameters as { record: { userName: string } }).record.userName, 'ns-1000-own-0');
      for (const p of peers.slice(0, 1024)) p.call('org.varlink.service.GetInfo');
      for (const p of peers.slice(0, 1024)) assert.ok((await p.nextReply()).parameters);
    } finally {
      peers.forEach((p) => p.close());
    }
    await afterCase('connection flood');
  });
});

describe('leaks and concurrency (a fresh daemon)', () => {
  let d: UserdbdProcess;
  const agents: UserdbdAgent[] = [];
  before(async () => {
    d = await UserdbdProcess.start({ sock: path.join(dir, 'sock2'), stateDir: path.join(dir, 'state2'), pinName: 'hostile-userdbd-2' });
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await d?.stop();
    await d?.unpin();
  });

  /** RSS may grow this much over the cycles (V8 heap and JIT settling); a leaked helper, buffer or
   * record per cycle would not fit. */
  const CYCLES = LONG ? 1000 : 200;
  const RSS_BOUND_KIB = (LONG ? 48 : 32) * 1024; // measured: +10 MiB over 200 cycles, +24 MiB over 1,000

  test(`${CYCLES} allocate+exit cycles: fd count flat, registry empty after the sweep, RSS growth < ${RSS_BOUND_KIB / 1024} MiB`, async (t) => {
    const a = await UserdbdAgent.start(1000, d.sock);
    agents.push(a);
    assert.equal((await a.req({ op: 'alloc', count: 20, size: 65536, prefix: 'warm', keep: 0 })).ok, 20);
    await waitFor(() => d.records(true).length === 0, 'the warm-up namespaces to be reaped', 10_000);
    const fds0 = await d.quietFdCount();
    const rss0 = d.rssKiB();
    let ok = 0;
    const errors: string[] = [];
    for (let done = 0; done < CYCLES; done += 100) {
      const r = await a.req({ op: 'alloc', count: Math.min(100, CYCLES - done), size: done % 200 === 0 ? 65536 : 1, prefix: `leak${done}-`, keep: 0 });
      ok += r.ok as number;
      errors.push(...(r.errors as string[]));
    }
    assert.deepEqual(errors, []);
    assert.equal(ok, CYCLES);
    await waitFor(() => d.records(true).length === 0, 'the registry to be empty after the sweep', 10_000);
    assert.deepEqual(await d.namespaces(), []);
    const fds1 = await d.quietFdCount();
    const rss1 = d.rssKiB();
    t.diagnostic(`fds ${fds0} → ${fds1}; RSS ${rss0} → ${rss1} KiB (+${rss1 - rss0})`);
    assert.equal(fds1, fds0);
    assert.ok(rss1 - rss0 < RSS_BOUND_KIB, `RSS grew by ${rss1 - rss0} KiB`);
  });

  test('parallel allocations from uids 1000, 1001 and 1002 (two clients each, 64K and single ids): distinct ranges, entries match', async () => {
    const uids = [1000, 1001, 1002];
    const clients = await Promise.all(uids.flatMap((uid) => [UserdbdAgent.start(uid, d.sock), UserdbdAgent.start(uid, d.sock)]));
    agents.push(...clients);
    const N = 25;
    const results = await Promise.all(clients.map((c, i) => c.req({ op: 'alloc', count: N, size: i % 2 ? 1 : 65536, prefix: `par${i}-`, keep: 1 })));
    const ranges: Array<{ start: number; size: number; who: string }> = [];
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r.errors, [], `client ${i}`);
      assert.equal(r.ok, N);
      const kept = r.kept as Array<{ fd: number; inode: number; name: string }>;
      assert.equal(kept.length, N);
      const uid = uids[Math.floor(i / 2)]!;
      const size = i % 2 ? 1 : 65536;
      const recs = d.records();
      for (const k of kept) {
        const fd = clients[i]!.openFd(k.fd);
        const maps = await usernsMaps(fd);
        fs.closeSync(fd);
        const rec = recs.find((x) => x.userns === k.inode);
        assert.equal(rec?.owner, uid);
        assert.equal(rec?.name, `${uid}-${k.name}`);
        assert.deepEqual(maps.uid, [[0, rec?.start, size]]);
        assert.deepEqual(maps.gid, maps.uid);
        ranges.push({ start: rec!.start!, size, who: `${uid}/${k.name}` });
      }
    }
    ranges.sort((x, y) => x.start - y.start);
    for (let i = 1; i < ranges.length; i++) {
      const [p, q] = [ranges[i - 1]!, ranges[i]!];
      assert.ok(p.start + p.size <= q.start, `${p.who} [${p.start}+${p.size}) overlaps ${q.who} [${q.start})`);
    }
    assert.equal(d.records().length, uids.length * 2 * N);
    const byOwner = new Map<number, number>();
    for (const r of await d.namespaces()) byOwner.set(r.owner, (byOwner.get(r.owner) ?? 0) + 1);
    assert.deepEqual([...byOwner].sort(), uids.map((u) => [u, 2 * N]));
    // All clients exit: every namespace dies and is reaped.
    for (const c of clients) await c.stop();
    await waitFor(() => d.records(true).length === 0, 'the registry to be empty', 10_000);
  });
});
