// Pure parts of userdbd: naming, range picking, registry persistence and indexes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { namespaceName, parseUserName } from '../../src/userdbd/naming.js';
import { CONTAINER_WINDOW, HostIds, candidateChunks, pickRange } from '../../src/userdbd/range-allocator.js';
import { Registry, RegistryLockedError, type NamespaceRecord } from '../../src/userdbd/registry.js';

test('names: uid prefix, validation, mangling, NSS names', () => {
  assert.equal(namespaceName('foo', 1000, false), '1000-foo');
  assert.equal(namespaceName('foo', 0, false), 'foo');
  assert.equal(namespaceName('a/b', 1000, false), null);
  assert.equal(namespaceName('x'.repeat(300), 1000, false), null);
  assert.equal(namespaceName('x'.repeat(300), 1000, true), `1000-${'x'.repeat(17)}`);
  assert.match(namespaceName('a/b', 1000, true) ?? '', /^[0-9a-f]{16}$/);
  assert.deepEqual(parseUserName('ns-1000-foo-bar-65535'), { nsName: '1000-foo-bar', offset: 65535 });
  assert.equal(parseUserName('ns-foo-01'), null);
  assert.equal(parseUserName('nsfoo-1'), null);
});

test('ranges: 64K-aligned chunks inside the window and the parent ranges; probing stops at 100', () => {
  assert.deepEqual(candidateChunks([{ start: 0, size: 0xffffffff }], 65536), [[CONTAINER_WINDOW.min / 65536, 0x6fff]]);
  assert.deepEqual(candidateChunks([{ start: 0, size: 65536 }], 65536), []);
  const r = pickRange([{ start: 0, size: 0xffffffff }], 65536, 12345, (s) => s % (2 * 65536) === 0);
  assert.ok(r.ok && r.start % 131072 === 0);
  assert.deepEqual(pickRange([{ start: 0, size: 0xffffffff }], 65536, 1, () => false), { ok: false, reason: 'exhausted' });
  assert.deepEqual(pickRange([], 1, 1, () => true), { ok: false, reason: 'unavailable' });
});

test('host users and groups block overlapping ranges', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'userdbd-ids-'));
  try {
    fs.writeFileSync(path.join(dir, 'passwd'), 'a:x:600000:600000::/:/bin/sh\n');
    fs.writeFileSync(path.join(dir, 'group'), 'g:x:62000:\n');
    const ids = new HostIds(path.join(dir, 'passwd'), path.join(dir, 'group'));
    assert.equal(ids.overlaps(589824, 65536), true);
    assert.equal(ids.overlaps(655360, 65536), false);
    assert.equal(ids.overlaps(62000, 1), true);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('registry: atomic records, indexes rebuilt on load, delegations handed back, lock', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'userdbd-reg-'));
  try {
    const reg = Registry.open(dir);
    assert.throws(() => Registry.open(dir), RegistryLockedError);
    const outer: NamespaceRecord = { userns: 10, nsId: '1', owner: 1000, name: 'o', size: 65536, start: 0x100000, target: 0, startGid: 0x100000, targetGid: 0, cgroups: [], delegates: [{ start: 0x200000, size: 65536, ancestors: [] }] };
    const inner: NamespaceRecord = { userns: 11, nsId: '2', owner: 0x100000, name: 'i', size: 65536, start: 0x300000, target: 0, startGid: 0x300000, targetGid: 0, parent: 10, cgroups: [], delegates: [{ start: 0x200000, size: 65536, ancestors: [10] }] };
    reg.put(outer);
    reg.put(inner);
    fs.writeFileSync(path.join(reg.dir, 'i99.userns.tmp'), 'partial');
    fs.writeFileSync(path.join(reg.dir, 'i98.userns'), '{broken');
    reg.close();
    const again = Registry.open(dir);
    assert.equal(again.size, 2);
    assert.equal(again.findName('o')?.userns, 10);
    assert.equal(again.findUidStart(0x300000)?.userns, 11);
    assert.deepEqual(again.ownedBy(1000), [10]);
    assert.equal(again.delegationHolder(0x200000), 11);
    again.remove(11);
    assert.equal(again.delegationHolder(0x200000), 10);
    again.remove(10);
    assert.equal(again.delegationHolder(0x200000), undefined);
    assert.ok(fs.existsSync(path.join(again.dir, 'i98.userns.corrupt')));
    assert.ok(!fs.existsSync(path.join(again.dir, 'i99.userns.tmp')));
    again.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
