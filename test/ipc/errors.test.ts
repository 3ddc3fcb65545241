// The one error model (src/ipc/errors.ts): what reaches the wire for each kind of thrown value,
// and errno with one sign whichever layer raised it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { ClientDisconnected, SystemError, VarlinkError, invalidParameter, systemError, toVarlinkError } from '../../src/ipc/errors.js';
import { MountFsError } from '../../src/ipc/interfaces/io.systemd.MountFileSystem.js';
import { NamespaceResource, NamespaceResourceError } from '../../src/ipc/interfaces/io.systemd.NamespaceResource.js';
import { native } from '../../src/native/index.js';
import { SysError } from '../../src/sys/errors.js';

const wire = (e: VarlinkError | undefined): unknown => e && { error: e.error, parameters: e.parameters };

test('a VarlinkError goes as it is, its detail stays off the wire', () => {
  const e = new MountFsError('BadFileDescriptorFlags', 'O_PATH image fd', { parameter: 'imageFileDescriptor' });
  assert.equal(toVarlinkError(e), e);
  assert.deepEqual(wire(e), { error: 'io.systemd.MountFileSystem.BadFileDescriptorFlags', parameters: { parameter: 'imageFileDescriptor' } });
  assert.match(e.message, /O_PATH image fd/);
  const n = new NamespaceResourceError('NameExists');
  assert.deepEqual(wire(toVarlinkError(n)), { error: NamespaceResource.error.NameExists, parameters: {} });
  assert.deepEqual(wire(toVarlinkError(invalidParameter('size'))), { error: 'org.varlink.service.InvalidParameter', parameters: { parameter: 'size' } });
});

test('errno errors become io.systemd.System with a positive errno: SysError, Node fs, the addon', () => {
  const sys = { error: 'io.systemd.System', parameters: { origin: 'linux', errnoName: 'EBADF', errno: 9 } };
  assert.deepEqual(wire(toVarlinkError(new SysError(9, 'close'))), sys);
  let nodeErr: unknown;
  try {
    fs.fstatSync(987654);
  } catch (e) {
    nodeErr = e;
  }
  assert.ok((nodeErr as { errno: number }).errno < 0, "Node's own errors carry errno negated");
  assert.deepEqual(wire(toVarlinkError(nodeErr)), sys);
  let addonErr: unknown;
  try {
    native.close(987654);
  } catch (e) {
    addonErr = e;
  }
  assert.equal((addonErr as { errno: number }).errno, 9, "the addon's errno is turned positive once, in native/index.ts");
  assert.deepEqual(wire(toVarlinkError(addonErr)), sys);
  assert.deepEqual(wire(systemError('EUSERS')), { error: 'io.systemd.System', parameters: { origin: 'linux', errnoName: 'EUSERS', errno: 87 } });
});

test('a disconnect has its own type, logged as io.systemd.System ECONNRESET', () => {
  const e = new ClientDisconnected();
  assert.ok(e instanceof SystemError);
  assert.equal(e.errno, 104);
  assert.deepEqual(wire(toVarlinkError(e)), { error: 'io.systemd.System', parameters: { origin: 'linux', errnoName: 'ECONNRESET', errno: 104 } });
});

test('anything else is not translated (the server logs it as a bug and answers EIO)', () => {
  assert.equal(toVarlinkError(new Error('boom')), undefined);
  assert.equal(toVarlinkError(Object.assign(new TypeError('x'), { code: 'ERR_INVALID_ARG_TYPE' })), undefined);
  assert.equal(toVarlinkError('a string'), undefined);
});
