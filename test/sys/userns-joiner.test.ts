import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { joinUserNamespace } from '../../src/sys/userns-joiner.js';
import { assertNoNewFds, openFds } from '../support/fds.js';
import { killAndWait, spawnInNewUserns } from '../support/userns.js';
import { waitFor } from '../support/wait.js';

const norm = (s: string): string => s.trim().split(/\s+/).join(' ');
const alive = (pid: number): boolean => fs.existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readStatus(pid));
function readStatus(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}

/** pids of this process's children running `mountgate-nshelper joiner`. */
function joinerPids(): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      return ppid === process.pid && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[1] === 'joiner';
    } catch {
      return false;
    }
  });
}

async function withUserns<T>(fn: (usernsFd: number, holderPid: number) => Promise<T>): Promise<T> {
  const holder = await spawnInNewUserns('unshare', ['--user', 'sleep', '30']);
  const fd = fs.openSync(`/proc/${holder.pid}/ns/user`, 'r');
  try {
    return await fn(fd, holder.pid);
  } finally {
    fs.closeSync(fd);
    await killAndWait(holder);
  }
}

test('a member sits in the namespace: its maps are the namespace maps; release ends it', async () => {
  await withUserns(async (usernsFd, holderPid) => {
    const member = await joinUserNamespace(usernsFd);
    assert.notEqual(member.pid, process.pid);
    assert.equal(fs.readlinkSync(`/proc/${member.pid}/ns/user`), fs.readlinkSync(`/proc/${holderPid}/ns/user`));
    fs.writeFileSync(`/proc/${member.pid}/uid_map`, '0 100000 1\n');
    fs.writeFileSync(`/proc/${member.pid}/setgroups`, 'deny');
    fs.writeFileSync(`/proc/${member.pid}/gid_map`, '0 100000 1\n');
    // The map belongs to the namespace, so every member sees it.
    assert.equal(norm(fs.readFileSync(`/proc/${holderPid}/uid_map`, 'utf8')), '0 100000 1');
    assert.equal(norm(fs.readFileSync(`/proc/${holderPid}/gid_map`, 'utf8')), '0 100000 1');
    await member.release();
    await member.release(); // idempotent
    assert.equal(alive(member.pid), false, 'released member is gone (killed and reaped)');
  });
});

test('the joiner is one long-lived process; repeated joins leave no fds or members behind', async () => {
  await withUserns(async (usernsFd) => {
    await (await joinUserNamespace(usernsFd)).release(); // starts the joiner if needed
    const joiners = joinerPids();
    assert.equal(joiners.length, 1);
    const before = openFds();
    const members = await Promise.all(Array.from({ length: 20 }, () => joinUserNamespace(usernsFd)));
    assert.equal(new Set(members.map((m) => m.pid)).size, 20);
    await Promise.all(members.map((m) => m.release()));
    assert.deepEqual(joinerPids(), joiners);
    assert.equal(members.filter((m) => alive(m.pid)).length, 0);
    await assertNoNewFds(before);
  });
});

test('a fd that is not a user namespace is refused with setns EINVAL', async () => {
  await withUserns(async (usernsFd) => (await joinUserNamespace(usernsFd)).release());
  const before = openFds();
  const net = fs.openSync('/proc/self/ns/net', 'r');
  const file = fs.openSync('/etc/hostname', 'r');
  try {
    await assert.rejects(joinUserNamespace(net), { name: 'SysError', code: 'EINVAL' });
    await assert.rejects(joinUserNamespace(file), { name: 'SysError', code: 'EINVAL' });
  } finally {
    fs.closeSync(net);
    fs.closeSync(file);
  }
  await assertNoNewFds(before);
});

test('members die with the joiner, and the next join starts a new one', async () => {
  await withUserns(async (usernsFd) => {
    const member = await joinUserNamespace(usernsFd);
    const [joiner] = joinerPids();
    assert.ok(joiner);
    process.kill(joiner, 'SIGKILL');
    // At once, before Node may have seen the exit: the dead joiner is replaced.
    const next = await joinUserNamespace(usernsFd);
    try {
      await waitFor(() => !alive(member.pid), 'the member to die with its joiner');
      await member.release(); // nothing left to end; must not throw
      const now = joinerPids();
      assert.equal(now.length, 1);
      assert.notEqual(now[0], joiner);
      assert.equal(alive(next.pid), true);
    } finally {
      await next.release();
    }
  });
});

test("the namespace's owner cannot inspect or ptrace a member (it is root outside, so it is not dumpable)", async () => {
  const { spawn, spawnSync } = await import('node:child_process');
  // uid 1000 owns this namespace and so holds every capability inside it.
  const holder = spawn('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'unshare', '--user', 'sleep', '30'], { stdio: 'ignore' });
  try {
    const ours = fs.readlinkSync('/proc/self/ns/user');
    let usernsFd = -1;
    await waitFor(() => {
      try {
        if (fs.readlinkSync(`/proc/${holder.pid}/ns/user`) === ours) return false;
        usernsFd = fs.openSync(`/proc/${holder.pid}/ns/user`, 'r');
        return true;
      } catch {
        return false;
      }
    }, 'the holder to unshare');
    const member = await joinUserNamespace(usernsFd);
    try {
      const asOwner = (cmd: string[]): ReturnType<typeof spawnSync> =>
        spawnSync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', ...cmd], { encoding: 'utf8' });
      const environ = asOwner(['cat', `/proc/${member.pid}/environ`]);
      assert.notEqual(environ.status, 0, `owner read the member's environ: ${String(environ.stdout)}`);
      assert.match(String(environ.stderr), /Permission denied/);
      const mem = asOwner(['dd', `if=/proc/${member.pid}/mem`, 'bs=1', 'count=1', 'status=none']);
      assert.notEqual(mem.status, 0);
    } finally {
      await member.release();
      fs.closeSync(usernsFd);
    }
  } finally {
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('close', r));
  }
});
