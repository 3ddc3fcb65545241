// The Varlink core over real AF_UNIX sockets: framing, fd passing, limits, validation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../../src/native/index.js';
import { VarlinkServer } from '../../src/ipc/server.js';
import { VarlinkClient } from '../../src/ipc/client.js';
import { Connection } from '../../src/ipc/connection.js';
import { VarlinkError } from '../../src/ipc/errors.js';
import { parseInterface } from '../../src/ipc/idl.js';
import { IoSystemd } from '../../src/ipc/interfaces/io.systemd.js';
import { userEval } from '../support/user-package.js';

const IDL = `# Test interface
interface org.example.test

type Pair (a: int, b: ?string)

method Echo(value: string, pair: ?Pair) -> (value: string)
method Keys(value: ?string) -> (keys: []string)
method Fd(file: int) -> (content: string, copy: int)
method Count(n: int) -> (i: int)
method Slow(ms: int) -> ()
method Missing() -> ()
error Boom (why: string)
`;

let dir: string;
let sock: string;
let server: VarlinkServer;
/** What the server logged at debug level. */
const debugLog: Array<{ obj: Record<string, unknown>; msg: string }> = [];

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-varlink-'));
  sock = path.join(dir, 'test.sock');
  server = new VarlinkServer({ stallTimeoutMs: 300, log: { debug: (obj, msg) => debugLog.push({ obj: { ...obj }, msg }) } });
  server.addService({
    iface: parseInterface(IDL),
    handlers: {
      Echo: async (p) => {
        if (p.value === 'boom') throw new VarlinkError('org.example.test.Boom', { why: 'asked' });
        return { parameters: { value: p.value } };
      },
      // What the handler was given.
      Keys: async (p) => ({ parameters: { keys: Object.keys(p) } }),
      Fd: async (p, ctx) => {
        const fd = ctx.fd(p.file, 'file');
        const content = fs.readFileSync(`/proc/self/fd/${fd}`, 'utf8');
        // The reply carries a new fd of the same file.
        return { parameters: { content, copy: 0 }, fds: [fs.openSync(`/proc/self/fd/${fd}`, 'r')] };
      },
      Count: async (p, ctx) => {
        const n = p.n as number;
        for (let i = 1; i < n; i++) ctx.stream({ i });
        return { parameters: { i: n } };
      },
      Slow: async (p) => {
        await sleep(p.ms as number);
        return { parameters: {} };
      },
    },
    options: { Count: { requiresMore: true } },
  });
  server.listenPath(sock);
});

after(() => {
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A raw connection: sends exact bytes, collects NUL-framed replies. */
function raw(): { conn: Connection; replies: string[]; closed: Promise<Error | undefined>; sendRaw(s: string | Buffer, fds?: number[]): void } {
  const replies: string[] = [];
  let onClose!: (e?: Error) => void;
  const closed = new Promise<Error | undefined>((r) => (onClose = r));
  const fd = native.connect(sock);
  const conn = new Connection(fd, { onMessage: (m) => replies.push(m.text), onClose: (e) => onClose(e) });
  return {
    conn,
    replies,
    closed,
    sendRaw(s, fds = []) {
      const b = typeof s === 'string' ? Buffer.from(s) : s;
      assert.equal(native.sendmsg(fd, b, 0, b.length, fds), b.length);
    },
  };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(5);
  }
}

test('GetInfo lists io.systemd (sorted, as systemd does) and GetInterfaceDescription serves it', async () => {
  const c = await VarlinkClient.connect(sock);
  const info = await c.call('org.varlink.service.GetInfo');
  assert.deepEqual(info.parameters.interfaces, ['io.systemd', 'org.example.test', 'org.varlink.service']);
  const d = await c.call('org.varlink.service.GetInterfaceDescription', { interface: 'org.example.test' });
  assert.equal(d.parameters.description, IDL);
  const sys = await c.call('org.varlink.service.GetInterfaceDescription', { interface: 'io.systemd' });
  assert.equal(sys.parameters.description, IoSystemd.idl);
  assert.match(sys.parameters.description as string, /^error System\(\n\t# .*\n\torigin: \?string,\n\t# .*\n\terrnoName: \?string,\n\t# .*\n\terrno: \?int\n\)$/m);
  // It declares errors only: there is nothing to call.
  await assert.rejects(c.call('io.systemd.System'), { error: 'org.varlink.service.MethodNotFound' });
  await assert.rejects(c.call('org.varlink.service.GetInterfaceDescription', { interface: 'no.such' }), {
    error: 'org.varlink.service.InterfaceNotFound',
  });
  c.close();
});

test('validation error names', async () => {
  const c = await VarlinkClient.connect(sock);
  const bad = async (method: string, params: Record<string, unknown>, error: string, parameters?: object): Promise<void> => {
    await assert.rejects(c.call(method, params), (e: VarlinkError) => {
      assert.equal(e.error, error);
      if (parameters) assert.deepEqual(e.parameters, parameters);
      return true;
    });
  };
  await bad('org.example.test.Echo', {}, 'org.varlink.service.InvalidParameter', { parameter: 'value' });
  await bad('org.example.test.Echo', { value: 1 }, 'org.varlink.service.InvalidParameter', { parameter: 'value' });
  // A known field keeps its type check even when unknown ones come along.
  await bad('org.example.test.Echo', { value: 1, extra: 1 }, 'org.varlink.service.InvalidParameter', { parameter: 'value' });
  await bad('org.example.test.Echo', { extra: 'x' }, 'org.varlink.service.InvalidParameter', { parameter: 'value' });
  await bad('org.example.test.Echo', { value: 'x', pair: { a: 1.5 } }, 'org.varlink.service.InvalidParameter', { parameter: 'pair' });
  await bad('org.example.test.Nope', {}, 'org.varlink.service.MethodNotFound', { method: 'org.example.test.Nope' });
  await bad('no.such.Method', {}, 'org.varlink.service.MethodNotFound');
  await bad('org.example.test.Missing', {}, 'org.varlink.service.MethodNotImplemented');
  await bad('org.example.test.Count', { n: 3 }, 'org.varlink.service.ExpectedMore');
  await bad('org.example.test.Echo', { value: 'boom' }, 'org.example.test.Boom', { why: 'asked' });
  await bad('org.example.test.Fd', { file: 3 }, 'org.varlink.service.InvalidParameter', { parameter: 'file' });
  // The connection survived all of that.
  assert.equal((await c.call('org.example.test.Echo', { value: 'ok', pair: { a: 1 } })).parameters.value, 'ok');
  c.close();
});

test('unknown parameters are ignored, not passed to the handler, and logged at debug level', async () => {
  const c = await VarlinkClient.connect(sock);
  debugLog.length = 0;
  const r = await c.call('org.example.test.Echo', { value: 'x', extra: 1, newerOption: { deep: [true] } });
  assert.equal(r.parameters.value, 'x');
  assert.deepEqual((await c.call('org.example.test.Keys', { value: 'v', extra: null })).parameters.keys, ['value']);
  assert.deepEqual(debugLog, [
    { obj: { method: 'org.example.test.Echo', uid: process.getuid!(), fields: ['extra', 'newerOption'] }, msg: 'ignoring unknown parameters' },
    { obj: { method: 'org.example.test.Keys', uid: process.getuid!(), fields: ['extra'] }, msg: 'ignoring unknown parameters' },
  ]);
  // Known calls log nothing.
  debugLog.length = 0;
  await c.call('org.example.test.Echo', { value: 'y' });
  assert.deepEqual(debugLog, []);
  // Thousands of unknown keys (or a huge name): the log line stays bounded.
  const many = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`f${i}`, i]));
  await c.call('org.example.test.Echo', { value: 'z', ['n'.repeat(10_000)]: 1, ...many });
  const line = (debugLog as Array<{ obj: Record<string, unknown> }>)[0]!.obj as { fields: string[]; more: number };
  assert.equal(line.fields.length, 16);
  assert.equal(line.more, 5001 - 16);
  assert.ok(line.fields[0]!.length <= 65, line.fields[0]);
  c.close();
});

test('unknown parameters from uid 1000 are ignored and logged with its uid', async () => {
  fs.chmodSync(dir, 0o755);
  debugLog.length = 0;
  const script = `
    import { VarlinkClient } from '${path.resolve(import.meta.dirname, '../../src/ipc/client.js')}';
    const c = await VarlinkClient.connect(process.argv[1]);
    const r = await c.call('org.example.test.Echo', { value: 'from 1000', relaxExtensionReleaseChecks: true });
    console.log(JSON.stringify(r.parameters));
    c.close();
  `;
  const out = await new Promise<string>((resolve, reject) => {
    // Bundled into the unpacked package: uid 1000 cannot be assumed to read the checkout.
    execFile('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', process.execPath, userEval('ipc-varlink-unknown', script), sock], (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout),
    );
  });
  assert.deepEqual(JSON.parse(out.trim()), { value: 'from 1000' });
  assert.deepEqual(debugLog, [{ obj: { method: 'org.example.test.Echo', uid: 1000, fields: ['relaxExtensionReleaseChecks'] }, msg: 'ignoring unknown parameters' }]);
});

test('more streams, oneway and pipelined calls answered in order', async () => {
  const c = await VarlinkClient.connect(sock);
  const got: number[] = [];
  for await (const r of c.stream('org.example.test.Count', { n: 5 })) got.push(r.parameters.i as number);
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  c.oneway('org.example.test.Echo', { value: 'quiet' });
  // Slow first: replies must still come back in call order.
  const order: string[] = [];
  await Promise.all([
    c.call('org.example.test.Slow', { ms: 50 }).then(() => order.push('slow')),
    c.call('org.example.test.Echo', { value: 'fast' }).then(() => order.push('fast')),
  ]);
  assert.deepEqual(order, ['slow', 'fast']);
  c.close();
});

test('framing: a message split across writes, many messages in one write', async () => {
  const r = raw();
  const msg = JSON.stringify({ method: 'org.example.test.Echo', parameters: { value: 'split' } }) + '\0';
  for (const ch of msg) {
    r.sendRaw(ch);
    await sleep(0);
  }
  await until(() => r.replies.length === 1);
  assert.deepEqual(JSON.parse(r.replies[0]), { parameters: { value: 'split' } });
  const many = Array.from({ length: 50 }, (_, i) => JSON.stringify({ method: 'org.example.test.Echo', parameters: { value: `m${i}` } }) + '\0').join('');
  r.sendRaw(many);
  await until(() => r.replies.length === 51);
  assert.deepEqual(r.replies.slice(1).map((t) => (JSON.parse(t) as { parameters: { value: string } }).parameters.value), Array.from({ length: 50 }, (_, i) => `m${i}`));
  r.conn.close();
});

test('1,000 fd round trips leak no fd', async () => {
  const file = path.join(dir, 'payload');
  fs.writeFileSync(file, 'hello fd');
  const c = await VarlinkClient.connect(sock);
  await c.call('org.example.test.Echo', { value: 'warm up' });
  const before = openFds();
  for (let i = 0; i < 1000; i++) {
    const fd = fs.openSync(file, 'r');
    const r = await c.call('org.example.test.Fd', { file: 0 }, { fds: [fd] });
    fs.closeSync(fd);
    assert.equal(r.parameters.content, 'hello fd');
    assert.equal(r.fds.length, 1);
    assert.equal(fs.readlinkSync(`/proc/self/fd/${r.fds[0]}`), file);
    fs.closeSync(r.fds[0]);
  }
  assert.equal(openFds(), before);
  c.close();
});

test('protocol violations disconnect: fds mid-message, unknown or duplicate keys, oneway+more, upgrade, oversize', async () => {
  const violations: Array<(r: ReturnType<typeof raw>) => void | Promise<void>> = [
    async (r) => {
      r.sendRaw('{"method":"org.example.test.Echo",');
      // Let the server read the first part: back to back, the kernel hands both writes
      // to one recvmsg() and the fds would legitimately belong to the whole message.
      await sleep(50);
      const fd = fs.openSync('/dev/null', 'r');
      r.sendRaw('"parameters":{"value":"x"}}\0', [fd]);
      fs.closeSync(fd);
    },
    (r) => r.sendRaw('{"method":"org.example.test.Echo","parameters":{"value":"x"},"bogus":1}\0'),
    (r) => r.sendRaw('{"method":"org.example.test.Echo","method":"org.example.test.Echo","parameters":{"value":"x"}}\0'),
    (r) => r.sendRaw('{"method":"org.example.test.Echo","parameters":{"value":"x"},"oneway":true,"more":true}\0'),
    (r) => r.sendRaw('{"method":"org.example.test.Echo","parameters":{"value":"x"},"upgrade":true}\0'),
    (r) => r.sendRaw('{"method":"org.example.test.Echo","more":"yes"}\0'),
    (r) => r.sendRaw('[1,2]\0'),
    (r) => r.sendRaw('not json\0'),
  ];
  for (const v of violations) {
    const r = raw();
    await v(r);
    await r.closed;
    assert.equal(r.replies.length, 0);
  }
  // 16 MiB + 1 byte without a terminator.
  const r = raw();
  const chunk = Buffer.alloc(1024 * 1024, 0x20);
  let sent = 0;
  const total = 16 * 1024 * 1024 + 1;
  let closed = false;
  void r.closed.then(() => (closed = true));
  while (sent < total && !closed) {
    const n = Math.min(chunk.length, total - sent);
    let w: number;
    try {
      w = native.sendmsg(r.conn.fd, chunk, 0, n, []);
    } catch {
      break; // EPIPE: the server already dropped us
    }
    if (w < 0) await sleep(1);
    else sent += w;
  }
  await r.closed;
  // Nested keys named like top-level keys are fine.
  const c = await VarlinkClient.connect(sock);
  assert.equal((await c.call('org.example.test.Echo', { value: 'still serving', pair: { a: 1, b: 'more' } })).parameters.value, 'still serving');
  c.close();
});

test('a stalled client is dropped and does not block others', async () => {
  const stalled = raw();
  stalled.sendRaw('{"method":"org.example.test.Ec');
  const c = await VarlinkClient.connect(sock);
  assert.equal((await c.call('org.example.test.Echo', { value: 'other' })).parameters.value, 'other');
  c.close();
  await stalled.closed; // stallTimeoutMs = 300
});

test('1,000 concurrent connections are served', async () => {
  const clients = await Promise.all(Array.from({ length: 1000 }, () => VarlinkClient.connect(sock)));
  const replies = await Promise.all(clients.map((c, i) => c.call('org.example.test.Echo', { value: `c${i}` })));
  replies.forEach((r, i) => assert.equal(r.parameters.value, `c${i}`));
  clients.forEach((c) => c.close());
  await until(() => server.connectionCount === 0);
});

test('per-uid connection cap refuses the connection beyond the limit', async () => {
  const s2 = new VarlinkServer({ maxConnectionsPerUid: 2 });
  const p = path.join(dir, 'cap.sock');
  s2.listenPath(p);
  const a = await VarlinkClient.connect(p);
  const b = await VarlinkClient.connect(p);
  await a.call('org.varlink.service.GetInfo');
  await b.call('org.varlink.service.GetInfo');
  const c = await VarlinkClient.connect(p);
  await assert.rejects(c.call('org.varlink.service.GetInfo'));
  [a, b, c].forEach((x) => x.close());
  s2.close();
});

test('client disconnecting mid-call triggers the handler cleanup', async () => {
  const s3 = new VarlinkServer();
  const p = path.join(dir, 'dc.sock');
  let released = false;
  s3.addService({
    iface: parseInterface('interface org.example.dc\nmethod Hold() -> ()\n'),
    handlers: {
      Hold: async (_p, ctx) => {
        ctx.onDisconnect(() => (released = true));
        await sleep(200);
        return { parameters: {} };
      },
    },
  });
  s3.listenPath(p);
  const c = await VarlinkClient.connect(p);
  const pending = c.call('org.example.dc.Hold').catch(() => undefined);
  await sleep(50);
  c.close();
  await pending;
  await until(() => released);
  s3.close();
});
