// The systemd units in units/: they pass `systemd-analyze verify`, name the systemd-compatible
// socket paths, and each daemon works socket-activated (systemd-socket-activate hands it the
// listening socket, as PID 1 would): a real Varlink call through the inherited socket, and
// READY=1 on $NOTIFY_SOCKET.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VarlinkClient } from '../../src/ipc/client.js';
import { VarlinkError } from '../../src/ipc/errors.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const unitsDir = path.join(repo, 'units');
const UNITS = ['mountgate-userdbd.socket', 'mountgate-userdbd.service', 'mountgate-mntfsd.socket', 'mountgate-mntfsd.service'];
/** Where the service files expect the CLI (documented in them). */
const INSTALLED_CLI = '/usr/local/bin/mountgate';
const CLI = ['--import', 'tsx', path.join(repo, 'src/cli/main.ts')];

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

/** `setpriv` bounding-set argument equal to the unit's CapabilityBoundingSet=. */
function boundingSet(service: string): string {
  const caps = value(readUnit(service), 'Service', 'CapabilityBoundingSet');
  assert.ok(caps, `${service} has no CapabilityBoundingSet`);
  return ['-all', ...caps.split(/\s+/).map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
}

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-units-'));
});
after(() => {
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
    assert.equal(value(unit, 'Service', 'RestrictAddressFamilies'), 'AF_UNIX', name);
    assert.equal(value(unit, 'Service', 'NoNewPrivileges'), 'yes', name);
    // V8's JIT needs W+X pages.
    assert.equal(unit.get('Service')?.has('MemoryDenyWriteExecute'), false, name);
  }
});

interface Activated {
  socket: string;
  child: ChildProcess;
  /** Resolves with the first datagram the daemon sends to $NOTIFY_SOCKET. */
  notified: Promise<string>;
  stderr: () => string;
  stop(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once('exit', () => r()));
}

/**
 * Starts `mountgate ARGS` the way the units do: with the socket unit's listening socket passed
 * by systemd-socket-activate and the service's capability bounding set. Node has no AF_UNIX
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
  await new Promise<void>((resolve, reject) => {
    receiver.stdout?.on('data', () => received.includes('bound\n') && resolve());
    receiver.once('exit', (code) => reject(new Error(`notify receiver exited with ${code}`)));
  });
  const notified = exited(receiver).then(() => received.replace(/^bound\n/, '').trim());

  const child = spawn(
    'systemd-socket-activate',
    ['-l', socket, `--fdname=${fdName}`, '-E', 'PATH', '-E', `NOTIFY_SOCKET=${notifySocket}`,
      'setpriv', `--bounding-set=${boundingSet(service)}`, process.execPath, ...CLI, ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 16384) stderr += s;
  });
  // systemd-socket-activate binds the socket, then starts the daemon on the first connection.
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`systemd-socket-activate did not listen: ${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    socket,
    child,
    notified,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      receiver.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await Promise.all([exited(child), exited(receiver)]);
      clearTimeout(killer);
    },
  };
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

test('mntfsd socket-activated: GetInfo, a MountImage refusal and READY=1 through the inherited socket', async () => {
  const certs = fs.mkdtempSync(path.join(tmp, 'certs-'));
  const daemon = await activate('mountgate-mntfsd.service', 'io.systemd.MountFileSystem', ['mntfsd', '--userdbd', 'none', '--verity-certs', certs]);
  try {
    const client = await VarlinkClient.connect(daemon.socket);
    try {
      const info = await client.call('org.varlink.service.GetInfo', {});
      assert.ok((info.parameters.interfaces as string[]).includes('io.systemd.MountFileSystem'), JSON.stringify(info.parameters));
      // No fds sent with the call: index 0 does not exist.
      await expectError(client, 'io.systemd.MountFileSystem.MountImage', { imageFileDescriptor: 0 }, 'org.varlink.service.InvalidParameter');
    } finally {
      client.close();
    }
    assert.match(await daemon.notified, /^READY=1$/m);
  } finally {
    await daemon.stop();
  }
  assertNoErrorLogs(daemon.stderr());
});

test('userdbd socket-activated: GetInfo, a user database miss and READY=1 through the inherited socket', async (t) => {
  if (!fs.existsSync(path.join(repo, 'src/userdbd/daemon.ts'))) return t.skip('src/userdbd/daemon.ts does not exist yet');
  const help = spawnSync(process.execPath, [...CLI, 'userdbd', '--help'], { encoding: 'utf8' });
  if (help.status !== 0) return t.skip(`'mountgate userdbd' is not wired into src/cli/main.ts yet (exit ${help.status})`);
  const state = fs.mkdtempSync(path.join(tmp, 'state-'));
  const daemon = await activate('mountgate-userdbd.service', 'io.systemd.NamespaceResource', ['userdbd', '--state-dir', state, '--bpf-pin-dir', `/sys/fs/bpf/mountgate-test-units-${process.pid}`, '--allow-without-policy']);
  try {
    const client = await VarlinkClient.connect(daemon.socket);
    try {
      const info = await client.call('org.varlink.service.GetInfo', {});
      const ifaces = info.parameters.interfaces as string[];
      assert.ok(ifaces.includes('io.systemd.NamespaceResource') && ifaces.includes('io.systemd.UserDatabase'), JSON.stringify(ifaces));
      await expectError(
        client,
        'io.systemd.UserDatabase.GetUserRecord',
        { userName: 'ns-nothing-here-0', service: 'io.systemd.NamespaceResource' },
        'io.systemd.UserDatabase.NoRecordFound',
      );
    } finally {
      client.close();
    }
    assert.match(await daemon.notified, /^READY=1$/m);
  } finally {
    await daemon.stop();
  }
  assertNoErrorLogs(daemon.stderr());
});
