import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { attachLoop, detachLoop } from '../../src/sys/loop.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { waitFor } from '../support/wait.js';

function sysfs(n: number, file: string): string {
  return fs.readFileSync(`/sys/block/loop${n}/${file}`, 'utf8').trim();
}
function attached(n: number): boolean {
  return fs.existsSync(`/sys/block/loop${n}/loop/backing_file`);
}

function withBackingFile(size: number, fn: (file: string, fd: number) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-loop-'));
  const file = path.join(dir, 'image');
  fs.writeFileSync(file, Buffer.alloc(size, 0xab));
  const fd = fs.openSync(file, 'r');
  return fn(file, fd).finally(() => {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });
}

test('attach read-only + autoclear, sysfs reflects it, detach', async () => {
  const before = openFds();
  await withBackingFile(1 << 20, async (file, backing) => {
    const dev = attachLoop(backing, { readOnly: true, autoclear: true });
    try {
      assert.equal(dev.devPath, `/dev/loop${dev.number}`);
      assert.equal(sysfs(dev.number, 'ro'), '1');
      assert.equal(sysfs(dev.number, 'loop/autoclear'), '1');
      assert.equal(sysfs(dev.number, 'loop/backing_file'), file);
      assert.equal(sysfs(dev.number, 'size'), String((1 << 20) / 512));
      // Opening for write succeeds on block devices; the write itself is refused.
      const w = fs.openSync(dev.devPath, 'r+');
      try {
        assert.throws(() => fs.writeSync(w, Buffer.alloc(512), 0, 512, 0), { code: 'EPERM' });
      } finally {
        fs.closeSync(w);
      }
    } finally {
      detachLoop(dev);
    }
    await waitFor(() => !attached(dev.number), 'loop device to detach');
  });
  await assertNoNewFds(before);
});

test('offset and size limit; autoclear detaches on last close', async () => {
  const before = openFds();
  await withBackingFile(64 * 1024, async (_file, backing) => {
    const dev = attachLoop(backing, { readOnly: true, autoclear: true, offset: 4096, size: 8192 });
    try {
      assert.equal(sysfs(dev.number, 'loop/offset'), '4096');
      assert.equal(sysfs(dev.number, 'loop/sizelimit'), '8192');
      assert.equal(sysfs(dev.number, 'size'), '16');
    } finally {
      fs.closeSync(dev.fd); // no LOOP_CLR_FD: autoclear must do it
    }
    await waitFor(() => !attached(dev.number), 'autoclear to detach the loop device');
  });
  await assertNoNewFds(before);
});

test('concurrent attaches get distinct devices', async () => {
  await withBackingFile(64 * 1024, async (_file, backing) => {
    const devs = [attachLoop(backing, { readOnly: true, autoclear: true }), attachLoop(backing, { readOnly: true, autoclear: true })];
    try {
      assert.notEqual(devs[0]!.number, devs[1]!.number);
    } finally {
      for (const d of devs) detachLoop(d);
    }
  });
});
