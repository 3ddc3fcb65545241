// User namespaces held by processes: made as root or as the caller, looked at from outside
// (maps, inode), and ended without leaving a zombie that would keep them alive.
import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { AS_1000 } from './processes.js';
import { waitFor } from './wait.js';

/** Whether the user namespace of `pid` is not ours (it has unshared); false while it is not there yet. */
function unsharedFromUs(pid: number, ours: string): boolean {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/user`) !== ours;
  } catch {
    return false;
  }
}

/** A process holding a user namespace (our child). */
export type UsernsHolder = ChildProcess & { pid: number };

/**
 * Spawns `cmd` (which must create a new user namespace, e.g. via unshare --user) and waits
 * until the child's user namespace differs from ours, i.e. unshare has happened.
 */
export async function spawnInNewUserns(cmd: string, args: string[], timeoutMs = 5000): Promise<UsernsHolder> {
  const child = spawn(cmd, args, { stdio: 'ignore' });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`spawn ${cmd} failed`);
  const ours = fs.readlinkSync('/proc/self/ns/user');
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`${cmd} exited early with ${child.exitCode}`);
    return unsharedFromUs(pid, ours);
  }, `${cmd} to unshare its user namespace`, timeoutMs);
  return Object.assign(child, { pid });
}

/**
 * A user namespace of uid 1000's (`unshare --user sleep`) whose uid and gid 0..65535 root maps to
 * `base`..: a caller's namespace as userdbd would have mapped it, for MountImage to idmap into.
 */
export async function mappedHolder1000(base: number): Promise<UsernsHolder> {
  const holder = await spawnInNewUserns('setpriv', [...AS_1000, 'unshare', '--user', 'sleep', 'infinity'], 20_000);
  fs.writeFileSync(`/proc/${holder.pid}/uid_map`, `0 ${base} 65536\n`);
  fs.writeFileSync(`/proc/${holder.pid}/gid_map`, `0 ${base} 65536\n`);
  return holder;
}

export async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  child.kill('SIGKILL');
  await exited;
}

/**
 * For programs that outlive their namespaces' holders (the uid-1000 clients): a fresh user
 * namespace of the caller's, held by a detached `unshare --user [--EXTRA] sleep 1000` under a
 * shell that reaps it (a zombie would keep its namespace alive). Its pid once it has unshared.
 */
export async function unshared(extra?: 'net' | 'mount'): Promise<number> {
  const cmd = `unshare --user ${extra ? `--${extra} ` : ''}sleep 1000`;
  const child = spawn('sh', ['-c', `${cmd} & echo $!; wait`], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  child.stdout.destroy();
  child.unref();
  const pid = Number(line.toString().trim());
  const ours = fs.readlinkSync('/proc/self/ns/user');
  await waitFor(() => unsharedFromUs(pid, ours), 'unshare', 2000, 2).catch(() => {
    throw new Error('unshare did not happen');
  });
  return pid;
}

/** SIGKILL to `pid` (not our child: a detached holder), if it is still there. */
export function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** The lines of /proc/PID/uid_map or gid_map, as numbers. */
export function readMap(pid: number, file: 'uid_map' | 'gid_map'): number[][] {
  return fs
    .readFileSync(`/proc/${pid}/${file}`, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => l.trim().split(/\s+/).map(Number));
}

/** The nsfs inode of a namespace of `pid`. */
export function nsInode(pid: number, kind = 'user'): number {
  return fs.statSync(`/proc/${pid}/ns/${kind}`).ino;
}

/** The uid and gid maps of the user namespace `fd` (read by a helper that joined it). */
export async function usernsMaps(fd: number): Promise<{ uid: number[][]; gid: number[][] }> {
  const { joinUserNamespace } = await import('../../src/sys/userns-joiner.js');
  const member = await joinUserNamespace(fd);
  try {
    return { uid: readMap(member.pid, 'uid_map'), gid: readMap(member.pid, 'gid_map') };
  } finally {
    await member.release();
  }
}
