// Idle exit under socket activation (src/ipc/host.ts), as the units run the daemons: a socket
// activated daemon takes a default idle exit and --idle-exit 0 turns it off; an idle mntfsd exits
// cleanly and the next connection starts a new one; userdbd stays while a namespace is registered
// and exits once none is. systemd-socket-activate hands its socket to one process only, so a
// small activator stands in for PID 1 here: it keeps the listening socket, starts the daemon
// (LISTEN_FDS=1, LISTEN_PID) when a connection waits, and again after each exit. The lab run of
// test/lab-systemd does the same under systemd itself.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { VarlinkClient } from '../../src/ipc/client.js';
import { DEFAULT_IDLE_EXIT_SECONDS } from '../../src/ipc/host.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = [process.execPath, '--import', 'tsx', path.join(REPO, 'src/cli/main.ts')];

/** Listens on argv[1]; whenever a connection waits, runs argv[2:] with the socket as fd 3 and waits for it. */
const ACTIVATOR = `
import os, select, socket, subprocess, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.listen(64)
os.dup2(s.fileno(), 3)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="varlink")
print("listening", flush=True)
while True:
    select.select([s], [], [])
    p = subprocess.Popen(["sh", "-c", 'export LISTEN_PID=$$; exec "$@"', "sh", *sys.argv[2:]], pass_fds=[3], env=env)
    print("started", p.pid, flush=True)
    print("exited", p.wait(), flush=True)
`;

interface Activator {
  socket: string;
  /** Lines the activator printed: "started PID", "exited STATUS". */
  events(): string[];
  /** The daemons' stderr (pino JSON lines), all instances. */
  log(): Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

let tmp: string;
const activators = new Set<Activator>();
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-idle-'));
});
after(async () => {
  await Promise.all([...activators].map((a) => a.stop()));
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function activator(args: string[]): Promise<Activator> {
  const socket = path.join(fs.mkdtempSync(path.join(tmp, 'act-')), 'daemon.sock');
  const child = spawn('python3', ['-c', ACTIVATOR, socket, ...CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MOUNTGATE_LOG_LEVEL: 'info' },
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  await waitFor('the activator listening', () => out.includes('listening\n') || child.exitCode !== null, 10_000);
  assert.ok(out.includes('listening\n'), err);
  const a: Activator = {
    socket,
    events: () => out.split('\n').filter((l) => l.startsWith('started') || l.startsWith('exited')),
    log: () => err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>),
    async stop() {
      activators.delete(a);
      // The daemon is the activator's child: end it first, then the activator.
      for (const line of a.events().filter((l) => l.startsWith('started'))) kill(Number(line.split(' ')[1]));
      child.kill('SIGTERM');
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    },
  };
  activators.add(a);
  return a;
}

function kill(pid: number, signal: NodeJS.Signals = 'SIGTERM'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Connects (which starts the daemon), calls METHOD, disconnects; returns the reply's parameters. */
async function callOnce(socket: string, method: string, parameters: Record<string, unknown> = {}, fds?: number[]): Promise<Record<string, unknown>> {
  const client = await VarlinkClient.connect(socket);
  try {
    return (await client.call(method, parameters, fds ? { fds } : undefined)).parameters;
  } finally {
    client.close();
  }
}

const ready = (a: Activator, msg: string): Array<Record<string, unknown>> => a.log().filter((r) => r.msg === msg);

test(`socket-activated without --idle-exit, either daemon takes the default idle exit (${DEFAULT_IDLE_EXIT_SECONDS} s); --idle-exit 0 turns it off`, async () => {
  const state = fs.mkdtempSync(path.join(tmp, 'state-'));
  const cases = [
    { args: ['mntfsd', '--userdbd', 'none'], msg: 'listening', expected: DEFAULT_IDLE_EXIT_SECONDS },
    { args: ['mntfsd', '--userdbd', 'none', '--idle-exit', '0'], msg: 'listening', expected: 0 },
    { args: ['userdbd', '--state-dir', state, '--bpf-pin-dir', `/sys/fs/bpf/mountgate-test-idle-${process.pid}`, '--allow-without-policy'], msg: 'ready', expected: DEFAULT_IDLE_EXIT_SECONDS },
  ];
  for (const c of cases) {
    const a = await activator(c.args);
    await callOnce(a.socket, 'org.varlink.service.GetInfo');
    const [record] = ready(a, c.msg);
    assert.equal(record?.idleExitSeconds, c.expected, `${c.args.join(' ')}: ${JSON.stringify(record)}`);
    assert.equal(record?.listen, '1 activated socket(s)');
    await a.stop();
  }
});

test('mntfsd --idle-exit 2 socket-activated: exits with status 0 two seconds after its last client, and the next connection starts it again', async () => {
  const a = await activator(['mntfsd', '--userdbd', 'none', '--idle-exit', '2']);
  for (let round = 1; round <= 2; round++) {
    const info = await callOnce(a.socket, 'org.varlink.service.GetInfo');
    assert.ok((info.interfaces as string[]).includes('io.systemd.MountFileSystem'));
    const left = Date.now();
    await waitFor(`idle exit ${round}`, () => a.events().filter((e) => e.startsWith('exited')).length === round, 20_000);
    const seconds = (Date.now() - left) / 1000;
    assert.ok(seconds >= 1.9 && seconds < 6, `exited ${seconds} s after the last client`);
    assert.equal(a.events().at(-1), 'exited 0');
  }
  assert.equal(a.events().filter((e) => e.startsWith('started')).length, 2, 'one instance per activation');
  assert.equal(ready(a, 'idle, exiting').length, 2);
  for (const r of a.log()) assert.ok((r.level as number) < 50, JSON.stringify(r));
});

test('userdbd --idle-exit 2 socket-activated: stays while a namespace is registered, exits once its death is noticed', async (t) => {
  const state = fs.mkdtempSync(path.join(tmp, 'state-'));
  const a = await activator(['userdbd', '--state-dir', state, '--bpf-pin-dir', `/sys/fs/bpf/mountgate-test-idle-${process.pid}`, '--allow-without-policy', '--idle-exit', '2']);
  // A user namespace of root's, held by a sleep; its fd goes with the call.
  const holder: ChildProcess = spawn('unshare', ['--user', 'sleep', '600'], { stdio: 'ignore' });
  t.after(() => holder.kill('SIGKILL'));
  await waitFor('unshare', () => fs.readlinkSync(`/proc/${holder.pid}/ns/user`) !== fs.readlinkSync('/proc/self/ns/user'), 5000);
  const fd = fs.openSync(`/proc/${holder.pid}/ns/user`, 'r');
  try {
    await callOnce(a.socket, 'io.systemd.NamespaceResource.AllocateUserRange', { name: 'idle', size: 65536, userNamespaceFileDescriptor: 0 }, [fd]);
  } finally {
    fs.closeSync(fd);
  }
  // Three idle periods with no client: still there, the namespace still registered.
  await new Promise((r) => setTimeout(r, 6500));
  assert.deepEqual(a.events().filter((e) => e.startsWith('exited')), []);
  assert.equal(fs.readdirSync(path.join(state, 'registry')).filter((f) => f.endsWith('.userns')).length, 1);
  // Its death is found by the liveness sweep (every 60 s without the BPF policy), then the
  // next idle check lets the daemon go.
  holder.kill('SIGKILL');
  await waitFor('userdbd idle exit after the release', () => a.events().some((e) => e.startsWith('exited')), 75_000);
  assert.equal(a.events().at(-1), 'exited 0');
  assert.equal(fs.readdirSync(path.join(state, 'registry')).filter((f) => f.endsWith('.userns')).length, 0);
  assert.ok(a.log().some((r) => r.msg === 'idle, exiting'));
});

test('--idle-exit takes a number of seconds, 0 for never; anything else is a usage error (status 2)', async () => {
  for (const [cmd, value] of [['mntfsd', '-1'], ['userdbd', 'soon'], ['mntfsd', '']] as const) {
    const child = spawn(CLI[0]!, [...CLI.slice(1), cmd, `--idle-exit=${value}`, '--listen', path.join(tmp, 'never.sock')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const [status] = (await once(child, 'exit')) as [number | null];
    assert.equal(status, 2, `${cmd} --idle-exit '${value}': ${err}`);
    assert.match(err, new RegExp(`^mountgate ${cmd}: --idle-exit must be a number of seconds \\(0: never\\)\\n`));
    assert.match(err, new RegExp(`default: ${DEFAULT_IDLE_EXIT_SECONDS} when socket-activated`));
  }
});
