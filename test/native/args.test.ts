// The addon's argument checks (mg_args() and the mg_arg_* family in src/native/helpers.c):
// misuse throws a TypeError naming the JS signature, before any system call is made; errors
// of the call itself stay errno-coded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { nativeBuildDir } from '../../src/native/index.js';
import type { NativeAddon } from '../../src/native/index.js';

// The raw addon, not the wrapper: what is checked here is the C surface.
const addon = createRequire(import.meta.url)(path.join(nativeBuildDir, 'mountgate.node')) as NativeAddon;
type Loose = Record<string, (...args: unknown[]) => unknown>;
const loose = addon as unknown as Loose;

function typeError(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TypeError, `a TypeError, not ${String(err)}`);
    assert.equal(err.message, message);
    return true;
  });
}

test('an fd argument must be a whole number from 0 to 2^31-1', () => {
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 31, '3', null, undefined]) {
    typeError(() => loose.close!(bad), 'close(fd): argument 1 must be a file descriptor (an integer >= 0)');
  }
  typeError(() => loose.peerCred!(), 'peerCred(fd): expected 1 argument, got 0');
});

test('strings, Buffers, arrays and functions are checked by type, with the signature named', () => {
  typeError(() => loose.connect!(5), 'connect(path): argument 1 must be a string');
  typeError(() => loose.listen!('@mg-args-test', 'x'), 'listen(path, backlog): argument 2 must be an int32 integer');
  const [a, b] = addon.socketpair();
  try {
    const sig = 'sendmsg(fd, buf, offset, length, fds)';
    typeError(() => loose.sendmsg!(a, 'hi', 0, 2, []), `${sig}: argument 2 must be a Buffer`);
    typeError(() => loose.sendmsg!(a, Buffer.from('hi'), 0, 2, [0, -1]), `${sig}: argument 5 must be an array of file descriptors`);
    typeError(() => loose.sendmsg!(a, Buffer.from('hi'), 0, 2, 0), `${sig}: argument 5 must be an array of file descriptors`);
    typeError(() => addon.sendmsg(a, Buffer.from('hi'), 1, 2, []), `${sig}: offset and length outside buf`);
    typeError(() => loose.recvmsg!(b, [0, 0]), 'recvmsg(fd, buf): argument 2 must be a Buffer');
    typeError(() => new (addon.Poller as unknown as new (...args: unknown[]) => unknown)(a, 1), 'new Poller(fd, callback): argument 2 must be a function');
    // Well-formed calls behave as before: bytes and an fd across, too many fds an errno.
    assert.equal(addon.sendmsg(a, Buffer.from('hi'), 0, 2, [0]), 2);
    const r = addon.recvmsg(b, Buffer.alloc(8));
    assert.equal(r?.bytes, 2);
    assert.equal(r?.fds.length, 1);
    for (const fd of r?.fds ?? []) addon.close(fd);
    assert.throws(() => addon.sendmsg(a, Buffer.from('hi'), 0, 2, new Array<number>(254).fill(0)), { code: 'ETOOMANYREFS', syscall: 'sendmsg' });
  } finally {
    addon.close(a);
    addon.close(b);
  }
});

test('the verity jobs check every argument before they start', () => {
  const sig = 'verityVerifyMemory(data, blockSize, count, salt, expected, hashBlockSize, hashesPerBlock)';
  const ok = [Buffer.alloc(4096), 4096, 1, Buffer.alloc(0), Buffer.alloc(32), 32, 1] as const;
  typeError(() => loose.verityVerifyMemory!(...ok.slice(0, 6)), `${sig}: expected 7 arguments, got 6`);
  typeError(() => loose.verityVerifyMemory!(ok[0], 2 ** 53, ...ok.slice(2)), `${sig}: argument 2 must be a safe integer in range`);
  typeError(() => loose.verityVerifyMemory!(ok[0], 4096, 0, ...ok.slice(3)), `${sig}: argument 3 must be a safe integer in range`);
  typeError(() => loose.verityVerifyMemory!(ok[0], 4000, ...ok.slice(2)), `${sig}: invalid hashing geometry`);
  const fdSig = 'verityVerifyFd(srcFd, srcOffset, dstFd, dstOffset, blockSize, count, salt, expected, hashBlockSize, hashesPerBlock)';
  typeError(() => loose.verityVerifyFd!(0, 0, -2, 0, ...ok.slice(1)), `${fdSig}: dstFd below -1, or an offset past the largest file`);
  typeError(() => loose.verityVerifyFd!(-1, 0, -1, 0, ...ok.slice(1)), `${fdSig}: argument 1 must be a file descriptor (an integer >= 0)`);
});
