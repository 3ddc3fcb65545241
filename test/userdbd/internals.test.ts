// Pure parts of userdbd: naming, range picking, registry persistence and indexes, interface names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { namespaceName, parseUserName } from '../../src/userdbd/naming.js';
import { CONTAINER_WINDOW, HostIds, candidateChunks, pickRange } from '../../src/userdbd/range-allocator.js';
import { Registry, RegistryLockedError, type NamespaceRecord } from '../../src/userdbd/registry.js';
import { hostAltIfname, hostIfname, isValidIfname, macAddress } from '../../src/userdbd/netif.js';

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

test('registry: "self" records hold no range; mapForeign and network interfaces survive a reload; older records still load', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'userdbd-reg-'));
  try {
    const reg = Registry.open(dir);
    const self: NamespaceRecord = { userns: 20, nsId: '5', owner: 1000, name: '1000-s', size: 1, start: 1000, target: 1000, startGid: 1000, targetGid: 1000, type: 'self', mapForeign: true, cgroups: [], delegates: [] };
    const managed: NamespaceRecord = { userns: 21, nsId: '6', owner: 1000, name: '1000-m', size: 65536, start: 0x100000, target: 0, startGid: 0x100000, targetGid: 0, cgroups: [], delegates: [], netifs: [{ name: 'ns-0123456789ab', mode: 'veth' }, { name: 'ns-ba9876543210', mode: 'tap' }] };
    reg.put(self);
    reg.put(managed);
    // A record as written before these fields existed.
    fs.writeFileSync(path.join(reg.dir, 'i22.userns'), `${JSON.stringify({ userns: 22, nsId: '7', owner: 0, name: 'old', size: 1, start: 61200, target: 0, startGid: 61200, targetGid: 0, cgroups: [], delegates: [] })}\n`);
    reg.close();
    const again = Registry.open(dir);
    assert.equal(again.size, 3);
    assert.deepEqual(again.byUserns(20), self);
    assert.deepEqual(again.byUserns(21)?.netifs, managed.netifs);
    assert.equal(again.findUidStart(1000), undefined);
    assert.equal(again.findGidStart(1000), undefined);
    assert.equal(again.findName('1000-s')?.userns, 20);
    assert.equal(again.findUidStart(0x100000)?.userns, 21);
    assert.equal(again.findUidStart(61200)?.userns, 22);
    // A bad interface entry sets the record aside like any other malformed record.
    fs.writeFileSync(path.join(again.dir, 'i23.userns'), `${JSON.stringify({ ...managed, userns: 23, name: 'x', netifs: [{ name: 'ns-x', mode: 'bridge' }] })}\n`);
    again.close();
    const third = Registry.open(dir);
    assert.equal(third.byUserns(23), undefined);
    assert.ok(fs.existsSync(path.join(third.dir, 'i23.userns.corrupt')));
    third.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('network interface names: ifname_valid() rules, "ns-" and 12 hex digits on the host, stable local MACs', () => {
  for (const ok of ['host0', 'eth7', 'x'.repeat(15), 'a-b_c.d', '0x1']) assert.equal(isValidIfname(ok), true, ok);
  for (const bad of ['', 'x'.repeat(16), 'a/b', 'a:b', 'a%b', 'a b', '.', '..', 'all', 'default', '123', 'é', 'a\nb']) assert.equal(isValidIfname(bad), false, JSON.stringify(bad));
  assert.equal(isValidIfname('x'.repeat(127), true), true);
  assert.equal(isValidIfname('x'.repeat(128), true), false);
  const a = hostIfname('1000-n', undefined);
  assert.match(a, /^ns-[0-9a-f]{12}$/);
  assert.equal(hostIfname('1000-n', undefined), a);
  assert.notEqual(hostIfname('1000-n', 'eth0'), a);
  assert.notEqual(hostIfname('1000-m', undefined), a);
  assert.equal(hostAltIfname(1000, '1000-n', undefined), 'ns-1000-1000-n');
  assert.equal(hostAltIfname(1000, '1000-n', 'eth0'), 'ns-1000-1000-n-eth0');
  const host = macAddress('1000-n', undefined, 0);
  const peer = macAddress('1000-n', undefined, 1);
  assert.equal(host.length, 6);
  assert.notDeepEqual(host, peer);
  assert.deepEqual(macAddress('1000-n', undefined, 0), host);
  for (const m of [host, peer]) assert.equal(m[0]! & 0x03, 0x02); // unicast, locally administered
});
