// Hostile Varlink clients against a real mntfsd (child process, private socket): broken
// framing, oversize messages, stalls, fd floods, connection floods and ill-typed parameters.
// Every case must end in the documented error or a clean disconnect, leave the daemon's fd
// count where it was, and the daemon must keep serving.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_MESSAGE_BYTES } from '../../src/ipc/connection.js';
import { native } from '../../src/native/index.js';
import { e2eClientAs1000, evalAs1000 } from '../support/clients.js';
import { MntfsdProcess, waitForSocket } from '../support/daemons.js';
import { closeAll } from '../support/fds.js';
import { makeFileSystem, publish, removeImages, testDir } from '../support/images.js';
import { startChild } from '../support/processes.js';
import { rawPeer, type RawPeer } from '../support/raw-peer.js';
import { waitFor } from '../support/wait.js';

const MOUNT = 'io.systemd.MountFileSystem.MountImage';
const INVALID = 'org.varlink.service.InvalidParameter';

let dir: string;
let daemon: MntfsdProcess;
let image: string;
let baseFds: number;

before(async () => {
  dir = testDir('hostile-varlink-');
  const trusted = path.join(dir, 'trusted');
  fs.mkdirSync(trusted, { mode: 0o755 });
  image = publish(makeFileSystem('erofs'), trusted, 'bare.erofs');
  daemon = await MntfsdProcess.start(dir, { trustedDirectories: [trusted] });
  await daemon.assertServing();
  baseFds = await daemon.quietFdCount();
});

after(async () => {
  await daemon?.stop();
  removeImages();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function expectDisconnect(p: RawPeer, what: string, ms = 5000): Promise<void> {
  const err = await Promise.race([p.closed, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);
  assert.notEqual(err, 'timeout', `${what}: the daemon did not disconnect`);
  assert.equal(p.replies.length, 0, `${what}: got a reply ${JSON.stringify(p.replies)}`);
  p.close();
}

async function afterCase(what: string): Promise<void> {
  await daemon.settleFds(baseFds, what);
  await daemon.assertServing();
  await daemon.settleFds(baseFds, `${what} (after a GetInfo)`);
}

describe('framing', () => {
  const breakers: Array<[string, string | Buffer]> = [
    ['not JSON', 'hello\0'],
    ['a JSON array', '[1,2]\0'],
    ['a JSON string', '"x"\0'],
    ['an empty message', '\0'],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0])],
    ['unknown top-level key', '{"method":"org.varlink.service.GetInfo","evil":1}\0'],
    ['duplicate method key', '{"method":"org.varlink.service.GetInfo","method":"io.mountgate.Mntfsd.GetStatus"}\0'],
    ['method is a number', '{"method":5}\0'],
    ['parameters is an array', '{"method":"org.varlink.service.GetInfo","parameters":[]}\0'],
    ['oneway and more', '{"method":"org.varlink.service.GetInfo","oneway":true,"more":true}\0'],
    ['upgrade', '{"method":"org.varlink.service.GetInfo","upgrade":true}\0'],
    ['more is a string', '{"method":"org.varlink.service.GetInfo","more":"yes"}\0'],
    ['a NUL inside a string', '{"method":"org.varlink.\0service.GetInfo"}\0'],
  ];
  for (const [name, bytes] of breakers) {
    test(`${name} → clean disconnect`, async () => {
      const p = rawPeer(daemon.sock);
      p.send(bytes);
      await expectDisconnect(p, name);
      await afterCase(name);
    });
  }

  test('a good call after a bad one on the same connection is never answered', async () => {
    const p = rawPeer(daemon.sock);
    p.send('{"method":"org.varlink.service.GetInfo","x":1}\0{"method":"org.varlink.service.GetInfo"}\0');
    await expectDisconnect(p, 'pipelined after a bad call');
    await afterCase('pipelined after a bad call');
  });

  test('deeply nested JSON (100k levels) for an int parameter → InvalidParameter', async () => {
    const p = rawPeer(daemon.sock);
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    p.send(`{"method":"${MOUNT}","parameters":{"imageFileDescriptor":${deep}}}\0`);
    assert.deepEqual(await p.nextReply(), { error: INVALID, parameters: { parameter: 'imageFileDescriptor' } });
    p.close();
    await afterCase('deep nesting');
  });

  test(`a message of exactly ${MAX_MESSAGE_BYTES} bytes is served; one byte more disconnects`, async () => {
    const call = '{"method":"org.varlink.service.GetInfo"}';
    const exact = rawPeer(daemon.sock);
    exact.send(Buffer.concat([Buffer.from(call), Buffer.alloc(MAX_MESSAGE_BYTES - call.length, 0x20), Buffer.from([0])]));
    const r = await exact.nextReply();
    assert.ok(Array.isArray((r.parameters as { interfaces: unknown }).interfaces));
    exact.close();

    const over = rawPeer(daemon.sock);
    try {
      over.send(Buffer.concat([Buffer.from(call), Buffer.alloc(MAX_MESSAGE_BYTES + 1 - call.length, 0x20), Buffer.from([0])]));
    } catch (err) {
      // The daemon may hang up before the last bytes are written.
      assert.match(String((err as { code?: string }).code), /EPIPE|ECONNRESET/);
    }
    await expectDisconnect(over, '16 MiB + 1');
    await afterCase('16 MiB + 1');
  });

  test('an endless message without NUL is cut off at the limit', async () => {
    const p = rawPeer(daemon.sock);
    const chunk = Buffer.alloc(1 << 20, 0x20);
    let sent = 0;
    try {
      for (; sent < 64; sent++) p.send(chunk);
    } catch {
      // hung up on us
    }
    await expectDisconnect(p, 'endless message');
    assert.ok(sent <= 18, `daemon kept reading ${sent} MiB`);
    await afterCase('endless message');
  });

  test('half a message then silence: dropped after the stall timeout, others served meanwhile', async () => {
    const p = rawPeer(daemon.sock);
    p.send('{"method":"org.varlink.service.Get');
    await daemon.assertServing();
    const other = await daemon.client();
    assert.ok((await other.call('io.mountgate.Mntfsd.GetStatus')).parameters);
    other.close();
    // The server's stall timeout is 10 s.
    await expectDisconnect(p, 'stalled peer', 15_000);
    await afterCase('stall');
  });

  test('fds attached to the middle of a message → disconnect, the fds are closed', async () => {
    const p = rawPeer(daemon.sock);
    const files = Array.from({ length: 5 }, () => fs.openSync('/dev/null', 'r'));
    p.send('{"method":"org.varlink.service.GetInfo"');
    // Let the daemon read the first part: the kernel would otherwise hand over both parts
    // and the fds in one recvmsg(), which is a well-formed message.
    await sleep(100);
    p.send('}\0', files);
    closeAll(files);
    await expectDisconnect(p, 'fds mid-message');
    await afterCase('fds mid-message');
  });

  test('fds with a message that ends the stream (no NUL) are closed', async () => {
    const p = rawPeer(daemon.sock);
    const files = Array.from({ length: 3 }, () => fs.openSync('/dev/null', 'r'));
    p.send('{"method"', files);
    closeAll(files);
    native.shutdown(p.fd);
    await expectDisconnect(p, 'EOF mid-message');
    await afterCase('EOF mid-message');
  });
});

describe('fd floods', () => {
  test('253 fds on one GetInfo call: answered, all 253 closed', async () => {
    const p = rawPeer(daemon.sock);
    const files = Array.from({ length: 253 }, () => fs.openSync('/dev/null', 'r'));
    p.call('org.varlink.service.GetInfo', undefined, files);
    closeAll(files);
    const r = await p.nextReply();
    assert.ok(r.parameters);
    p.close();
    await afterCase('253 fds');
  });

  test('253 fds on MountImage, the image at index 252: mounted, 252 others closed', async () => {
    const p = rawPeer(daemon.sock);
    const files = Array.from({ length: 252 }, () => fs.openSync('/dev/null', 'r'));
    files.push(fs.openSync(image, 'r'));
    p.call(MOUNT, { imageFileDescriptor: 252 }, files);
    closeAll(files);
    const r = await p.nextReply();
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(p.fdsReceived.length, 1);
    p.close();
    await afterCase('253 fds MountImage');
  });

  test('pipelined calls each carrying fds: every fd closed after its call', async () => {
    const p = rawPeer(daemon.sock);
    for (let i = 0; i < 50; i++) {
      const files = Array.from({ length: 10 }, () => fs.openSync('/dev/null', 'r'));
      p.call('org.varlink.service.GetInfo', undefined, files);
      closeAll(files);
    }
    await waitFor(() => p.replies.length === 50, '50 replies', 10_000);
    p.close();
    await afterCase('pipelined fds');
  });
});

describe('connection floods', () => {
  test('1,100 connections from root: 1,024 kept, the rest closed; other uids still served', async () => {
    const peers: RawPeer[] = [];
    try {
      for (let i = 0; i < 1100; i++) peers.push(rawPeer(daemon.sock));
      await waitFor(() => peers.filter((p) => p.isClosed()).length >= 76, 'the daemon to refuse the excess', 20_000);
      // Give the daemon the chance to (wrongly) refuse more.
      const r = await e2eClientAs1000(['mount', daemon.sock, image, 'none']);
      // Answered: without a namespace uid 1000 gets signed images only, and this one is trusted by location.
      assert.equal(r.error, 'io.systemd.MountFileSystem.DeniedByImagePolicy', 'uid 1000 is answered');
      assert.equal(peers.filter((p) => p.isClosed()).length, 76);
      assert.equal(daemon.fdCount(), baseFds + 1024);
      // Still root's cap: one more root connection is refused.
      const extra = rawPeer(daemon.sock);
      await extra.closed;
      extra.close();
      // The kept ones work.
      const last = peers.filter((p) => !p.isClosed()).at(-1)!;
      last.call('org.varlink.service.GetInfo');
      assert.ok((await last.nextReply()).parameters);
    } finally {
      peers.forEach((p) => p.close());
    }
    await afterCase('connection flood');
  });
});

describe('ill-typed MountImage parameters', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['float index', { imageFileDescriptor: 0.5 }, 'imageFileDescriptor'],
    ['string index', { imageFileDescriptor: '0' }, 'imageFileDescriptor'],
    ['bool index', { imageFileDescriptor: true }, 'imageFileDescriptor'],
    ['null index', { imageFileDescriptor: null }, 'imageFileDescriptor'],
    ['missing index', {}, 'imageFileDescriptor'],
    ['index 2^53', { imageFileDescriptor: 2 ** 53 }, 'imageFileDescriptor'],
    ['index 1e308', { imageFileDescriptor: 1e308 }, 'imageFileDescriptor'],
    ['negative index', { imageFileDescriptor: -1 }, 'imageFileDescriptor'],
    ['index past the fd list', { imageFileDescriptor: 1 }, 'imageFileDescriptor'],
    ['huge index', { imageFileDescriptor: 2 ** 31 }, 'imageFileDescriptor'],
    ['array index', { imageFileDescriptor: [0] }, 'imageFileDescriptor'],
    ['userns float', { imageFileDescriptor: 0, userNamespaceFileDescriptor: 0.1 }, 'userNamespaceFileDescriptor'],
    ['userns negative', { imageFileDescriptor: 0, userNamespaceFileDescriptor: -5 }, 'userNamespaceFileDescriptor'],
    ['userns past the list', { imageFileDescriptor: 0, userNamespaceFileDescriptor: 7 }, 'userNamespaceFileDescriptor'],
    ['readOnly string', { imageFileDescriptor: 0, readOnly: 'yes' }, 'readOnly'],
    ['readOnly number', { imageFileDescriptor: 0, readOnly: 1 }, 'readOnly'],
    ['growFileSystems object', { imageFileDescriptor: 0, growFileSystems: {} }, 'growFileSystems'],
    ['imagePolicy number', { imageFileDescriptor: 0, imagePolicy: 5 }, 'imagePolicy'],
    ['imagePolicy garbage', { imageFileDescriptor: 0, imagePolicy: 'root=evil' }, 'imagePolicy'],
    ['imagePolicy 1 MiB', { imageFileDescriptor: 0, imagePolicy: 'root=signed:'.repeat(1 << 16) }, 'imagePolicy'],
    ['readOnly string next to an unknown parameter', { imageFileDescriptor: 0, readOnly: 'yes', evil: true }, 'readOnly'],
    ['mountOptions number', { imageFileDescriptor: 0, mountOptions: 5 }, 'mountOptions'],
    ['mountOptions with a non-string value', { imageFileDescriptor: 0, mountOptions: { root: ['ro'] } }, 'mountOptions'],
    ['mountOptions for root (not supported)', { imageFileDescriptor: 0, mountOptions: { root: 'noatime' } }, 'mountOptions'],
    ['veritySharing string', { imageFileDescriptor: 0, veritySharing: 'yes' }, 'veritySharing'],
    ['relaxExtensionReleaseChecks null-ish object', { imageFileDescriptor: 0, relaxExtensionReleaseChecks: {} }, 'relaxExtensionReleaseChecks'],
    ['verityRootHash number', { imageFileDescriptor: 0, verityRootHash: 7 }, 'verityRootHash'],
    ['verityRootHash 1 MiB of non-hex', { imageFileDescriptor: 0, verityRootHash: 'z'.repeat(1 << 20) }, 'verityRootHash'],
    ['verityRootHash without data', { imageFileDescriptor: 0, verityRootHash: 'ab'.repeat(32) }, 'verityDataFileDescriptor'],
    ['external Verity data (not supported)', { imageFileDescriptor: 0, verityDataFileDescriptor: 0, verityRootHash: 'ab'.repeat(32) }, 'verityDataFileDescriptor'],
  ];
  for (const [name, params, parameter] of cases) {
    test(`${name} → InvalidParameter(${parameter})`, async () => {
      const p = rawPeer(daemon.sock);
      const img = fs.openSync(image, 'r');
      p.call(MOUNT, params, [img]);
      fs.closeSync(img);
      assert.deepEqual(await p.nextReply(), { error: INVALID, parameters: { parameter } });
      assert.equal(p.fdsReceived.length, 0);
      // The connection stays usable after an error reply.
      p.call('org.varlink.service.GetInfo');
      assert.ok((await p.nextReply()).parameters);
      p.close();
      await afterCase(name);
    });
  }

  // Unknown parameters are a newer client's options: ignored, however many or odd they are;
  // 262's two always-sent flags are declared and accepted.
  const ignored: Array<[string, Record<string, unknown>]> = [
    ['an unknown parameter', { imageFileDescriptor: 0, evil: true }],
    ['a __proto__ parameter', JSON.parse('{"imageFileDescriptor":0,"__proto__":{"x":1}}') as Record<string, unknown>],
    ['10,000 unknown parameters', { imageFileDescriptor: 0, ...Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`p${i}`, { i }])) }],
    ['an unknown parameter with a 1 MiB name', { imageFileDescriptor: 0, ['n'.repeat(1 << 20)]: 1 }],
    ["systemd 262's relaxExtensionReleaseChecks and veritySharing", { imageFileDescriptor: 0, relaxExtensionReleaseChecks: true, veritySharing: true }],
  ];
  for (const [name, params] of ignored) {
    test(`${name} → the image is mounted`, async () => {
      const p = rawPeer(daemon.sock);
      const img = fs.openSync(image, 'r');
      p.call(MOUNT, params, [img]);
      fs.closeSync(img);
      const r = await p.nextReply();
      assert.equal(r.error, undefined, JSON.stringify(r).slice(0, 500));
      assert.equal(p.fdsReceived.length, 1);
      p.close();
      await afterCase(name);
    });
  }

  test('GetInfo lists io.systemd; its description declares System(origin, errnoName, errno); calling it → MethodNotFound', async () => {
    const p = rawPeer(daemon.sock);
    p.call('org.varlink.service.GetInfo');
    assert.deepEqual(((await p.nextReply()).parameters as { interfaces: string[] }).interfaces, [
      'io.mountgate.Mntfsd',
      'io.systemd',
      'io.systemd.MountFileSystem',
      'org.varlink.service',
    ]);
    p.call('org.varlink.service.GetInterfaceDescription', { interface: 'io.systemd' });
    const text = ((await p.nextReply()).parameters as { description: string }).description;
    assert.match(text, /^interface io\.systemd\n/);
    assert.match(text, /\terrnoName: \?string,\n/);
    p.call('io.systemd.System', {});
    assert.equal((await p.nextReply()).error, 'org.varlink.service.MethodNotFound');
    p.close();
    await afterCase('io.systemd');
  });

  test('the same fd index for image and namespace → InvalidParameter(userNamespaceFileDescriptor)', async () => {
    const p = rawPeer(daemon.sock);
    const img = fs.openSync(image, 'r');
    p.call(MOUNT, { imageFileDescriptor: 0, userNamespaceFileDescriptor: 0 }, [img]);
    fs.closeSync(img);
    assert.deepEqual(await p.nextReply(), { error: INVALID, parameters: { parameter: 'userNamespaceFileDescriptor' } });
    p.close();
    await afterCase('same index');
  });

  test('unknown methods and interfaces → MethodNotFound; root\'s MountDirectory of its own directory → a mount fd', async () => {
    const p = rawPeer(daemon.sock);
    for (const m of ['io.systemd.MountFileSystem.Nope', 'io.systemd.MountFileSystem', '.', 'a/../b.C', `x.${'y'.repeat(300)}.Z`]) {
      p.call(m, {});
      assert.equal((await p.nextReply()).error, 'org.varlink.service.MethodNotFound', m);
    }
    const dirFd = fs.openSync(dir, 'r');
    p.call('io.systemd.MountFileSystem.MountDirectory', { directoryFileDescriptor: 0 }, [dirFd]);
    fs.closeSync(dirFd);
    assert.deepEqual(await p.nextReply(), { parameters: { mountFileDescriptor: 0 } });
    assert.equal(p.fdsReceived.length, 1);
    closeAll(p.fdsReceived.splice(0));
    p.close();
    await afterCase('unknown methods');
  });
});

describe('slow readers', () => {
  // 50k GetInterfaceDescription replies of 3.5 KiB each: the daemon queues them all in memory.
  test('a client that pipelines calls but never reads replies does not grow the daemon without bound', async () => {
    const rss0 = daemon.rssKiB();
    const fd = native.connect(daemon.sock);
    const call = Buffer.from(`${JSON.stringify({ method: 'org.varlink.service.GetInterfaceDescription', parameters: { interface: 'io.systemd.MountFileSystem' } })}\0`);
    const batch = Buffer.concat(Array.from({ length: 1000 }, () => call));
    let sent = 0;
    let peak = rss0;
    const deadline = Date.now() + 20_000;
    // Keep offering calls until the daemon stops taking them (backpressure) or 200k are queued.
    let off = 0;
    // The daemon stops reading a client that does not read its replies, and drops it when
    // that lasts past the stall timeout (EPIPE here): either way its memory stays bounded.
    while (sent < 50 && Date.now() < deadline) {
      let n: number;
      try {
        n = native.sendmsg(fd, batch, off, batch.length - off, []);
      } catch {
        break;
      }
      if (n < 0) {
        await sleep(20);
        peak = Math.max(peak, daemon.rssKiB());
        continue;
      }
      off += n;
      if (off === batch.length) {
        off = 0;
        sent++;
      }
    }
    await new Promise((r) => setTimeout(r, 500));
    peak = Math.max(peak, daemon.rssKiB());
    fs.closeSync(fd);
    await afterCase('slow reader');
    assert.ok(peak - rss0 < 64 * 1024, `daemon RSS grew by ${Math.round((peak - rss0) / 1024)} MiB for ${sent}k unread replies`);
  });
});

describe('debug log', () => {
  test('an ignored parameter is logged at debug level with the field, the method and the peer uid (uid 1000)', async () => {
    const sock = path.join(dir, 'debug-log.sock');
    const logFile = `${sock}.log`;
    const main = path.resolve(import.meta.dirname, '../../src/cli/main.ts');
    const child = startChild([process.execPath, '--import', 'tsx', main, 'mntfsd', '--listen', sock, '--userdbd', 'none'], {
      logFile,
      env: { ...process.env, MOUNTGATE_LOG_LEVEL: 'debug' },
    });
    try {
      await waitForSocket(sock, child, { timeoutMs: 10_000 });
      const script = `
        import { VarlinkClient } from '${path.resolve(import.meta.dirname, '../../src/ipc/client.js')}';
        const c = await VarlinkClient.connect(process.argv[1]);
        const r = await c.call('org.varlink.service.GetInfo', { someFutureFlag: true });
        console.log(JSON.stringify(r.parameters.interfaces));
        c.close();
      `;
      // Bundled into the unpacked package: uid 1000 cannot be assumed to read the checkout.
      assert.ok((await evalAs1000<string[]>('hostile-varlink-debug', script, [sock], { opening: '[' })).includes('io.systemd'));
      const logged = (): Record<string, unknown> | undefined =>
        fs
          .readFileSync(logFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes('ignoring unknown parameters'))
          .map((l) => JSON.parse(l) as Record<string, unknown>)[0];
      await waitFor(() => logged() !== undefined, 'the debug line', 10_000);
      const line = logged()!;
      assert.equal(line.level, 20, 'debug');
      assert.equal(line.method, 'org.varlink.service.GetInfo');
      assert.equal(line.uid, 1000);
      assert.deepEqual(line.fields, ['someFutureFlag']);
    } finally {
      await child.stop();
    }
  });
});
