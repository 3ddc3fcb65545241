// org.varlink.certification: our server against our client, the protocol's error
// cases, and interop with the Go varlink implementation (Debian golang-github-varlink-go-dev).
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VarlinkClient } from '../../src/ipc/client.js';
import { ERR, VarlinkError } from '../../src/ipc/errors.js';
import { VarlinkServer } from '../../src/ipc/server.js';
import {
  ERR_CERTIFICATION,
  ERR_CLIENT_ID,
  IFACE,
  MYTYPE,
  REPLIES10,
  createCertificationService,
  newClientId,
  runCertificationClient,
} from './certification.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const GO_SRC = '/usr/share/gocode/src/github.com/varlink/go';
const GO_PKG = 'github.com/varlink/go/cmd/varlink-go-certification';
const m = (name: string): string => `${IFACE}.${name}`;

async function rejectsWith(p: Promise<unknown>, error: string): Promise<VarlinkError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof VarlinkError, `expected VarlinkError ${error}, got ${String(e)}`);
    assert.equal(e.error, error);
    return e;
  }
  assert.fail(`expected ${error}, but the call succeeded`);
}

/** Connects once the server listens: its socket file exists from bind(), a moment before listen(). */
async function connectWhenListening(p: string, child: ChildProcess): Promise<VarlinkClient> {
  for (let i = 0; i < 1000; i++) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    if (fs.existsSync(p)) {
      try {
        return await VarlinkClient.connect(`unix:${p}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err;
      }
    }
    await sleep(10);
  }
  throw new Error(`${p} is not served`);
}

describe('org.varlink.certification', () => {
  let dir: string;
  let socket: string;
  let server: VarlinkServer;
  const clients: VarlinkClient[] = [];
  const connect = async (): Promise<VarlinkClient> => {
    const c = await VarlinkClient.connect(`unix:${socket}`);
    clients.push(c);
    return c;
  };
  const started = async (c: VarlinkClient): Promise<string> => {
    const { parameters } = await c.call(m('Start'));
    assert.match(parameters.client_id as string, /^[0-9a-f]{32}$/);
    return parameters.client_id as string;
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'varlink-cert-'));
    socket = path.join(dir, 'cert.sock');
    server = new VarlinkServer({ product: 'certification' });
    server.addService(createCertificationService());
    server.listenPath(socket);
  });

  after(() => {
    for (const c of clients) c.close();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('our client passes against our server (strict)', async () => {
    const result = await runCertificationClient(await connect(), { strict: true });
    assert.equal(result.allOk, true);
    assert.deepEqual(result.deviations, []);
  });

  it('the CLI client exits 0 with certification: all_ok', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'test/varlink/certification-client.ts', '--strict', `unix:${socket}`], {
      cwd: ROOT,
    });
    assert.match(stdout, /^certification: all_ok$/m);
  });

  it('the CLI server serves until SIGTERM', async () => {
    const sock = path.join(dir, 'cli.sock');
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/varlink/certification-server.ts', `unix:${sock}`], { cwd: ROOT, stdio: 'ignore' });
    try {
      const c = await connectWhenListening(sock, child);
      try {
        assert.equal((await runCertificationClient(c, { strict: true })).allOk, true);
      } finally {
        c.close();
      }
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    assert.equal(child.exitCode, 0);
  });

  it('Start tolerates empty parameters, refuses more', async () => {
    const c = await connect();
    const { parameters } = await c.call(m('Start'), {});
    assert.match(parameters.client_id as string, /^[0-9a-f]{32}$/);
    const e = await rejectsWith(
      (async () => {
        for await (const r of c.stream(m('Start'))) void r;
      })(),
      ERR_CERTIFICATION,
    );
    assert.deepEqual(e.parameters, { wants: { method: m('Start') }, got: { method: m('Start'), more: true } });
  });

  it('a call out of order gets CertificationError', async () => {
    const c = await connect();
    const id = await started(c);
    const e = await rejectsWith(c.call(m('Test02'), { client_id: id, bool: true }), ERR_CERTIFICATION);
    assert.deepEqual(e.parameters.wants, { method: m('Test01') });
    assert.deepEqual(e.parameters.got, { method: m('Test02'), parameters: { client_id: id, bool: true } });
    await rejectsWith(c.call(m('End'), { client_id: id }), ERR_CERTIFICATION);
    // The sequence can still be continued in order.
    assert.deepEqual((await c.call(m('Test01'), { client_id: id })).parameters, { bool: true });
  });

  it('a wrong value gets CertificationError {wants, got}', async () => {
    const c = await connect();
    const id = await started(c);
    await c.call(m('Test01'), { client_id: id });
    const e = await rejectsWith(c.call(m('Test02'), { client_id: id, bool: false }), ERR_CERTIFICATION);
    assert.deepEqual(e.parameters, { wants: { bool: true }, got: { bool: false } });
  });

  it('an unknown client_id gets ClientIdError', async () => {
    const c = await connect();
    await rejectsWith(c.call(m('Test01'), { client_id: newClientId() }), ERR_CLIENT_ID);
    await rejectsWith(c.call(m('End'), { client_id: 'nope' }), ERR_CLIENT_ID);
  });

  it('a finished client_id is forgotten after End', async () => {
    const c = await connect();
    const id = await started(c);
    let prev: Record<string, unknown> = {};
    for (const t of ['Test01', 'Test02', 'Test03', 'Test04', 'Test05', 'Test06', 'Test07', 'Test08', 'Test09']) {
      prev = (await c.call(m(t), { client_id: id, ...prev })).parameters;
    }
    const replies: string[] = [];
    for await (const r of c.stream(m('Test10'), { client_id: id, ...prev })) replies.push(r.parameters.string as string);
    assert.deepEqual(replies, REPLIES10);
    // Test11 must be oneway.
    const e = await rejectsWith(c.call(m('Test11'), { client_id: id, last_more_replies: replies }), ERR_CERTIFICATION);
    assert.deepEqual(e.parameters.wants, { oneway: true });
    c.oneway(m('Test11'), { client_id: id, last_more_replies: replies });
    assert.deepEqual((await c.call(m('End'), { client_id: id })).parameters, { all_ok: true });
    await rejectsWith(c.call(m('End'), { client_id: id }), ERR_CLIENT_ID);
  });

  it('Test10 without more gets org.varlink.service.ExpectedMore', async () => {
    const c = await connect();
    const id = await started(c);
    await rejectsWith(c.call(m('Test10'), { client_id: id, mytype: MYTYPE }), ERR.ExpectedMore);
  });

  describe('interop with the Go varlink implementation', () => {
    const goMissing = spawnSync('go', ['version']).error !== undefined;
    const srcMissing = !fs.existsSync(path.join(GO_SRC, 'cmd/varlink-go-certification/main.go'));
    const skip = goMissing
      ? 'the go toolchain is not installed (apt-get install golang-go)'
      : srcMissing
        ? `the Debian Go varlink source is absent at ${GO_SRC} (apt-get install golang-github-varlink-go-dev)`
        : false;
    const cache = path.join(ROOT, '.cache', 'varlink-go-certification');
    const bin = path.join(cache, 'varlink-go-certification');

    before(async () => {
      if (skip) return;
      fs.mkdirSync(cache, { recursive: true });
      // GOPATH mode against the Debian source tree: offline, nothing is fetched.
      await run('go', ['build', '-o', bin, GO_PKG], {
        cwd: cache,
        env: {
          ...process.env,
          GOPATH: '/usr/share/gocode',
          GO111MODULE: 'off',
          GOPROXY: 'off',
          GOFLAGS: '',
          GOCACHE: path.join(cache, 'gocache'),
        },
      });
    });

    it('the Go client passes against our server', { skip }, async () => {
      const { stdout } = await run(bin, ['-client', '-varlink', `unix:${socket}`], { timeout: 30_000 });
      // The Go client prints "X() failed" and still exits 0 on failure; End: 'true' is success.
      assert.match(stdout, /^End: 'true'$/m, stdout);
      assert.doesNotMatch(stdout, /failed/, stdout);
    });

    it('our client passes against the Go server', { skip }, async (t) => {
      const sock = path.join(dir, 'go.sock');
      const child = spawn(bin, ['-varlink', `unix:${sock}`], { stdio: 'ignore' });
      try {
        const c = await connectWhenListening(sock, child);
        try {
          const result = await runCertificationClient(c);
          assert.equal(result.allOk, true);
          // Known: the Go server's Test09 sends interface.foo[1] as {"Bar":"bar","Foo":"foo"}
          // and omits the null members; the protocol passes replies on unchanged.
          for (const d of result.deviations) t.diagnostic(d);
          assert.ok(result.deviations.every((d) => d.startsWith('Test09:')), result.deviations.join('\n'));
        } finally {
          c.close();
        }
      } finally {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    });
  });
});
