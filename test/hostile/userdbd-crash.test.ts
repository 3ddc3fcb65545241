// Crash consistency of userdbd (long run only, MOUNTGATE_LONG=1): kill -9 at random points
// during 1,000 allocations by one uid-1000 client, restarting on the same state dir each time.
// At the end the registry holds only complete records of living namespaces, every living
// namespace with maps has its record, no range is mapped by two living namespaces, and no tmp
// file is left.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { userNamespaceLiveness } from '../../src/sys/nsfs.js';
import { UserdbdProcess } from '../support/daemons.js';
import { closeAll } from '../support/fds.js';
import { testDir } from '../support/images.js';
import { LONG } from '../support/processes.js';
import { UserdbdAgent } from '../support/userdbd-agent.js';
import { usernsMaps } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const ALLOCATIONS = 1000;

test(`kill -9 userdbd at random points during ${ALLOCATIONS} allocations`, { skip: LONG ? false : 'long test: set MOUNTGATE_LONG=1', timeout: 900_000 }, async (t) => {
  const dir = testDir('hostile-userdbd-crash-');
  const opts = { sock: path.join(dir, 'sock'), stateDir: path.join(dir, 'state'), pinName: 'hostile-userdbd-crash' };
  let d = await UserdbdProcess.start(opts);
  let agent: UserdbdAgent | undefined;
  const held: number[] = [];
  try {
    agent = await UserdbdAgent.start(1000, opts.sock);
    let finished = false;
    // Keeps ~10% of the allocated namespaces alive (and every one whose call was cut off).
    const run = agent.req({ op: 'alloc', count: ALLOCATIONS, size: 65536, prefix: 'crash', keep: 0.1 }).finally(() => (finished = true));
    let kills = 0;
    while (!finished) {
      await sleep(randomInt(20, 800));
      if (finished) break;
      await d.kill9();
      kills++;
      d = await UserdbdProcess.start(opts);
      d.records(true); // only complete records after every restart (the client is already calling again)
    }
    const r = (await run) as { ok: number; errors: string[]; kept: Array<{ fd: number; inode: number; name: string; answered: boolean }> };
    t.diagnostic(`${kills} kills; ${r.ok} allocations answered; ${r.kept.filter((k) => !k.answered).length} cut off; ${r.errors.length} errors`);
    assert.deepEqual(r.errors.filter((e) => !/UserNamespaceExists|NameExists/.test(e)), [], 'unexpected errors');

    // The namespaces the client let go die; the sweep reaps them.
    const kept = new Map(r.kept.map((k) => [k.inode, k]));
    const maps = new Map<number, number[][]>();
    for (const k of r.kept) {
      const fd = agent.openFd(k.fd);
      held.push(fd);
      maps.set(k.inode, (await usernsMaps(fd)).uid);
    }
    await waitFor(() => d.records(true).every((rec) => userNamespaceLiveness(rec.nsId, rec.userns) === 'alive'), 'the dead namespaces to be reaped', 30_000);
    const records = d.records();

    // Every living namespace with maps has its record, and the record is what it maps.
    for (const [inode, m] of maps) {
      if (m.length === 0) continue;
      const rec = records.find((x) => x.userns === inode);
      assert.ok(rec, `namespace ${inode} (${kept.get(inode)?.name}) has maps ${JSON.stringify(m)} but no record`);
      assert.deepEqual(m, [[0, rec.start, 65536]]);
    }
    // A namespace whose call was cut off before its maps were written has no record.
    const stale = records.filter((rec) => kept.has(rec.userns) && maps.get(rec.userns)?.length === 0);
    t.diagnostic(`records ${records.length}; living client namespaces ${kept.size} (${[...maps.values()].filter((m) => m.length).length} mapped); unmapped with a record ${stale.length}`);
    // Records of namespaces the client let go that are still alive: a killed daemon's helper that
    // had joined the namespace is left as a zombie (PID 1 here does not reap) and keeps it alive.
    const zombieHeld = records.filter((rec) => !kept.has(rec.userns));
    if (zombieHeld.length) t.diagnostic(`${zombieHeld.length} records of namespaces kept alive by zombie helpers of killed daemons`);
    // No range is handed out twice to living namespaces.
    const ranges = records.filter((rec) => rec.size > 0).map((rec) => ({ start: rec.start ?? -1, size: rec.size, inode: rec.userns })).sort((x, y) => x.start - y.start);
    for (let i = 1; i < ranges.length; i++) {
      assert.ok(ranges[i - 1]!.start + ranges[i - 1]!.size <= ranges[i]!.start, `ranges of ${ranges[i - 1]!.inode} and ${ranges[i]!.inode} overlap`);
    }
    const mapped = [...maps.values()].filter((m) => m.length).map((m) => m[0]![1]!);
    assert.equal(new Set(mapped).size, mapped.length, 'two living namespaces map the same range');
    assert.deepEqual(fs.readdirSync(path.join(opts.stateDir, 'registry')).filter((f) => !/^i[0-9]+\.userns$|^lock$/.test(f)), [], 'tmp or corrupt files left');
    await t.test('no record is left for a living namespace whose maps were never written', () => {
      assert.deepEqual(stale.map((s) => s.name), [], 'records of namespaces that never got maps');
    });
  } finally {
    closeAll(held);
    await agent?.stop();
    await d.stop();
    await d.unpin();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
