// The systemd units in units/: they pass `systemd-analyze verify`, name the systemd-compatible
// socket paths, and each daemon works socket-activated (systemd-socket-activate hands it the
// listening socket, as PID 1 would): a real Varlink call through the inherited socket, and
// READY=1 on $NOTIFY_SOCKET.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { VarlinkClient } from '../../src/ipc/client.js';
import { VarlinkError } from '../../src/ipc/errors.js';
import { startDaemon, stopDaemons } from '../support/daemons.js';
import { exited, REPO } from '../support/processes.js';

const unitsDir = path.join(REPO, 'units');
const UNITS = ['mountgate-userdbd.socket', 'mountgate-userdbd.service', 'mountgate-mntfsd.socket', 'mountgate-mntfsd.service'];
/** Where the service files expect the CLI: `npm install -g`'s bin (test/package checks that it lands there). */
const INSTALLED_CLI = '/usr/bin/mountgate';

type Unit = Map<string, Map<string, string[]>>;

/** Minimal unit file reader: section -> key -> values in order (comments and blanks skipped). */
function readUnit(name: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of fs.readFileSync(path.join(unitsDir, name), 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1], section);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(section && eq > 0, `${name}: unexpected line '${line}'`);
    const key = line.slice(0, eq);
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1)]);
  }
  return unit;
}

function value(unit: Unit, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-units-'));
});
after(async () => {
  await stopDaemons();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('units pass systemd-analyze verify (ExecStart pointed at a stand-in executable)', () => {
  // verify insists that ExecStart's binary exists; the real one is only there once installed.
  const dir = fs.mkdtempSync(path.join(tmp, 'verify-'));
  const standIn = path.join(dir, 'mountgate');
  fs.writeFileSync(standIn, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  for (const name of UNITS) {
    const text = fs.readFileSync(path.join(unitsDir, name), 'utf8');
    if (name.endsWith('.service')) assert.match(text, new RegExp(`^ExecStart=${INSTALLED_CLI} `, 'm'));
    fs.writeFileSync(path.join(dir, name), text.replaceAll(`ExecStart=${INSTALLED_CLI} `, `ExecStart=${standIn} `));
  }
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...UNITS.map((u) => path.join(dir, u))], { encoding: 'utf8' });
  // Unknown keys and bad values are only warnings (exit 0): any output counts as a failure.
  assert.equal(`${r.stdout}${r.stderr}`, '');
  assert.equal(r.status, 0);
});

test('units: systemd-compatible sockets, mode 0666, Type=notify, hardening that keeps Node working', () => {
  const userdbSocket = readUnit('mountgate-userdbd.socket');
  assert.deepEqual(userdbSocket.get('Socket')?.get('ListenStream'), ['/run/systemd/io.systemd.NamespaceResource']);
  assert.deepEqual(userdbSocket.get('Socket')?.get('Symlinks'), ['/run/systemd/userdb/io.systemd.NamespaceResource']);
  const mntfsSocket = readUnit('mountgate-mntfsd.socket');
  assert.deepEqual(mntfsSocket.get('Socket')?.get('ListenStream'), ['/run/systemd/io.systemd.MountFileSystem']);
  for (const s of [userdbSocket, mntfsSocket]) assert.equal(value(s, 'Socket', 'SocketMode'), '0666');
  for (const [name, cmd] of [
    ['mountgate-userdbd.service', 'userdbd'],
    ['mountgate-mntfsd.service', 'mntfsd'],
  ] as const) {
    const unit = readUnit(name);
    assert.equal(value(unit, 'Service', 'Type'), 'notify', name);
    assert.equal(value(unit, 'Service', 'ExecStart'), `${INSTALLED_CLI} ${cmd}`, name);
    // userdbd's AddNetworkToUserNamespace speaks rtnetlink.
    assert.equal(value(unit, 'Service', 'RestrictAddressFamilies'), cmd === 'userdbd' ? 'AF_UNIX AF_NETLINK' : 'AF_UNIX', name);
    assert.equal(value(unit, 'Service', 'NoNewPrivileges'), 'yes', name);
    // V8's JIT needs W+X pages.
    assert.equal(unit.get('Service')?.has('MemoryDenyWriteExecute'), false, name);
  }
  // mntfsd's MountDirectory and MakeDirectory (test/mntfsd/directory.test.ts runs it with this
  // bounding set in a mount namespace of its own, as ProtectSystem= and PrivateTmp= give it).
  const mntfsd = readUnit('mountgate-mntfsd.service');
  assert.deepEqual(
    (value(mntfsd, 'Service', 'CapabilityBoundingSet') ?? '').split(/\s+/).sort(),
    ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_SETFCAP', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SYS_ADMIN', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE'],
  );
  assert.equal(value(mntfsd, 'Service', 'RestrictNamespaces'), 'user mnt');
  for (const [key, v] of [['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['PrivateNetwork', 'yes']] as const) assert.equal(value(mntfsd, 'Service', key), v, key);
});

interface Activated {
  socket: string;
  /** Resolves with the first datagram the daemon sends to $NOTIFY_SOCKET. */
  notified: Promise<string>;
  stderr: () => string;
  stop(): Promise<void>;
}

/**
 * Starts `mountgate ARGS` the way the units do: the shipped bundle, with the socket unit's
 * listening socket passed by systemd-socket-activate and the service's capability bounding set. Node has no AF_UNIX
 * datagram sockets, so a python3 one-liner receives the notification.
 */
async function activate(service: string, fdName: string, args: string[]): Promise<Activated> {
  const dir = fs.mkdtempSync(path.join(tmp, 'act-'));
  const socket = path.join(dir, 'daemon.sock');
  const notifySocket = path.join(dir, 'notify.sock');
  const receiver = spawn(
    'python3',
    ['-c', 'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\nprint(s.recv(4096).decode(),flush=True)', notifySocket],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let received = '';
  receiver.stdout?.setEncoding('utf8').on('data', (s: string) => (received += s));
  try {
    await new Promise<void>((resolve, reject) => {
      receiver.stdout?.on('data', () => received.includes('bound\n') && resolve());
      receiver.once('exit', (code) => reject(new Error(`notify receiver exited with ${code}`)));
    });
    const notified = exited(receiver).then(() => received.replace(/^bound\n/, '').trim());
    // systemd-socket-activate binds the socket, then starts the daemon on the first connection.
    const daemon = await startDaemon(args, socket, { service, activate: { fdName, env: [`NOTIFY_SOCKET=${notifySocket}`] }, shipped: true });
    return {
      socket,
      notified,
      stderr: daemon.stderr,
      async stop() {
        receiver.kill('SIGTERM');
        await Promise.all([daemon.stop(), exited(receiver)]);
      },
    };
  } catch (err) {
    receiver.kill('SIGTERM');
    throw err;
  }
}

/** The daemons log pino JSON lines on stderr: none may be at level error (50) or above. */
function assertNoErrorLogs(stderr: string): void {
  for (const line of stderr.split('\n').filter((l) => l.startsWith('{'))) {
    assert.ok((JSON.parse(line) as { level: number }).level < 50, line);
  }
}

async function expectError(client: VarlinkClient, method: string, params: Record<string, unknown>, error: string): Promise<void> {
  await assert.rejects(client.call(method, params), (err: unknown) => {
    assert.ok(err instanceof VarlinkError, String(err));
    assert.equal(err.error, error);
    return true;
  });
}

/**
 * Socket-activates `mountgate ARGS` as SERVICE, checks GetInfo names INTERFACES, runs CHECK over
 * the same connection through the inherited socket, and expects READY=1 and no error logged.
 */
async function checkActivated(
  unit: { service: string; fdName: string; args: string[]; interfaces: string[] },
  check: (client: VarlinkClient) => Promise<void>,
): Promise<void> {
  const daemon = await activate(unit.service, unit.fdName, unit.args);
  try {
    const client = await VarlinkClient.connect(daemon.socket);
    try {
      const info = await client.call('org.varlink.service.GetInfo', {});
      const interfaces = info.parameters.interfaces as string[];
      for (const i of unit.interfaces) assert.ok(interfaces.includes(i), JSON.stringify(interfaces));
      await check(client);
    } finally {
      client.close();
    }
    assert.match(await daemon.notified, /^READY=1$/m);
  } finally {
    await daemon.stop();
  }
  assertNoErrorLogs(daemon.stderr());
}

test('mntfsd socket-activated: GetInfo, a MountImage refusal and READY=1 through the inherited socket', async () => {
  const certs = fs.mkdtempSync(path.join(tmp, 'certs-'));
  const mntfsd = {
    service: 'mountgate-mntfsd.service',
    fdName: 'io.systemd.MountFileSystem',
    args: ['mntfsd', '--userdbd', 'none', '--verity-certs', certs],
    interfaces: ['io.systemd.MountFileSystem'],
  };
  await checkActivated(mntfsd, async (client) => {
    // No fds sent with the call: index 0 does not exist.
    await expectError(client, 'io.systemd.MountFileSystem.MountImage', { imageFileDescriptor: 0 }, 'org.varlink.service.InvalidParameter');
  });
});

test('userdbd socket-activated: GetInfo, a user database miss and READY=1 through the inherited socket', async (t) => {
  const state = fs.mkdtempSync(path.join(tmp, 'state-'));
  const userdbd = {
    service: 'mountgate-userdbd.service',
    fdName: 'io.systemd.NamespaceResource',
    args: ['userdbd', '--state-dir', state, '--bpf-pin-dir', `/sys/fs/bpf/mountgate-test-units-${process.pid}`, '--allow-without-policy'],
    interfaces: ['io.systemd.NamespaceResource', 'io.systemd.UserDatabase'],
  };
  await checkActivated(userdbd, async (client) => {
    await expectError(
      client,
      'io.systemd.UserDatabase.GetUserRecord',
      { userName: 'ns-nothing-here-0', service: 'io.systemd.NamespaceResource' },
      'io.systemd.UserDatabase.NoRecordFound',
    );
  });
});
