// sd_notify against a real AF_UNIX datagram receiver (python3, not our code).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { sdNotify } from '../../src/sys/notify.js';
import { waitFor } from '../support/wait.js';

const RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a = sys.argv[1]
s.bind("\\0" + a[1:] if a.startswith("@") else a)
print("bound", flush=True)
print(s.recv(4096).decode(), flush=True)
`;

async function receive(address: string, send: () => boolean): Promise<string> {
  const child = spawn('python3', ['-c', RECEIVER, address]);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('bound'), 'the receiver to bind');
  assert.equal(send(), true);
  await new Promise((r) => child.once('exit', r));
  return out.split('\n')[1] ?? '';
}

test('READY=1 reaches a path NOTIFY_SOCKET', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'notify-'));
  try {
    const sock = path.join(dir, 'notify');
    assert.equal(await receive(sock, () => sdNotify('READY=1', { NOTIFY_SOCKET: sock })), 'READY=1');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('READY=1 reaches an abstract NOTIFY_SOCKET', async () => {
  const name = `@mountgate-notify-test-${process.pid}`;
  assert.equal(await receive(name, () => sdNotify('READY=1', { NOTIFY_SOCKET: name })), 'READY=1');
});

test('without NOTIFY_SOCKET nothing is sent; a missing socket is an error with its errno', () => {
  assert.equal(sdNotify('READY=1', {}), false);
  assert.throws(() => sdNotify('READY=1', { NOTIFY_SOCKET: '/nonexistent/notify' }), { code: 'ENOENT' });
});
