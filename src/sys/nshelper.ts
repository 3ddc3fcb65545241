// Launching src/native/nshelper.c: the single-threaded helper that can setns() into user and
// mount namespaces (the multi-threaded Node process cannot; the kernel returns EINVAL).
import { spawn } from 'node:child_process';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { native, nativeBuildDir } from '../native/index.js';
import { SysError } from './errors.js';

export const nshelperPath = path.join(nativeBuildDir, 'mountgate-nshelper');

/** Child fd numbers the namespace fds are passed as (stdio slots 3 and 4). */
const CHILD_USERNS_FD = 3;
const CHILD_MNTNS_FD = 4;

const READY_TIMEOUT_MS = 10_000;

export interface UserNamespaceMember {
  /** pid of a process inside the user namespace (use /proc/<pid>/uid_map etc). */
  pid: number;
  /** Ends that process and waits until it is gone. Idempotent. */
  release(): Promise<void>;
}

/**
 * Spawns the helper with `args` and waits for its ready byte: it is then a member of a user
 * namespace and stays one until released (its stdin closed).
 */
function startMember(args: string[]): Promise<UserNamespaceMember> {
  const what = `nshelper ${args[0]}`;
  const child = spawn(nshelperPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const stdin = child.stdin;
  const stdout = child.stdout;
  const stderrOut = child.stderr;
  if (!stdin || !stdout || !stderrOut) throw new Error('nshelper: stdio pipes missing');
  // 'close' (not 'exit'): the process has exited and its stdio pipes are closed, so a release
  // leaves no fd behind and stderr is complete.
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  let stderr = '';
  stderrOut.setEncoding('utf8');
  stderrOut.on('data', (s: string) => {
    if (stderr.length < 4096) stderr += s;
  });
  // Ignore EPIPE on stdin if the helper dies first; the exit path reports the error.
  stdin.on('error', () => {});

  let released: Promise<void> | undefined;
  const release = (): Promise<void> => {
    released ??= (async () => {
      stdin.end();
      const { code, signal } = await closed;
      if (code !== 0) throw new Error(`${what} exited with ${code ?? signal}: ${stderr.trim()}`);
    })();
    return released;
  };

  return new Promise<UserNamespaceMember>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`${what}: timed out waiting for ready byte`)), READY_TIMEOUT_MS);
    child.once('error', (err) => fail(err));
    child.once('exit', (code, signal) => {
      // Let stderr drain before reporting.
      setImmediate(() => fail(new Error(`${what} exited with ${code ?? signal} before ready: ${stderr.trim()}`)));
    });
    stdout.once('data', (chunk: Buffer) => {
      if (settled) return;
      if (chunk[0] !== 0x31 /* '1' */ || child.pid === undefined) {
        fail(new Error(`${what}: unexpected ready byte`));
        return;
      }
      settled = true;
      clearTimeout(timer);
      stdout.resume();
      resolve({ pid: child.pid, release });
    });
  });
}

/**
 * Creates a new, unmapped user namespace owned by the calling user and returns an fd for it
 * (/proc/<pid>/ns/user, close-on-exec as every fd Node opens; the caller closes it). The fd alone keeps the
 * namespace alive; the helper that created it has exited when this resolves.
 */
export async function createUserNamespace(): Promise<number> {
  const member = await startMember(['userns-new']);
  try {
    return fs.openSync(`/proc/${member.pid}/ns/user`, 'r');
  } finally {
    await member.release();
  }
}

export interface NamespaceFds {
  usernsFd?: number;
  mntnsFd?: number;
}

/**
 * Runs `command` inside the given user and/or mount namespace via `nshelper exec-in`.
 * Namespace fds are borrowed (inherited as fds 3/4 by the helper only). Exit code 1 from the
 * helper before exec means setns failed (details on stderr); 127 means exec failed.
 */
export function spawnInNamespaces(
  ns: NamespaceFds,
  command: string,
  args: readonly string[],
  stdio: 'pipe' | 'inherit' | 'ignore' = 'pipe',
): ChildProcess {
  const fds: StdioOptions = [stdio, stdio, stdio, ns.usernsFd ?? 'ignore', ns.mntnsFd ?? 'ignore'];
  return spawn(
    nshelperPath,
    [
      'exec-in',
      ns.usernsFd === undefined ? '-' : String(CHILD_USERNS_FD),
      ns.mntnsFd === undefined ? '-' : String(CHILD_MNTNS_FD),
      '--',
      command,
      ...args,
    ],
    { stdio: fds },
  );
}

export interface EnterOptions {
  /** A user namespace whose maps are written (e.g. by userdbd's AllocateUserRange). */
  usernsFd: number;
  /** Detached mount that becomes "/" (idmapped into that namespace). */
  rootMountFd: number;
  /** Further detached mounts, attached at `path` (relative to the new root) in this order. */
  mounts: ReadonlyArray<{ path: string; fd: number }>;
  command: string;
  args: readonly string[];
  stdio?: 'pipe' | 'inherit' | 'ignore';
}

/** Exit codes of `nshelper enter` itself; any other status is the command's. */
export const ENTER_SETUP_FAILED = 125;
export const ENTER_NOT_EXECUTABLE = 126;
export const ENTER_NOT_FOUND = 127;

/**
 * Runs `command` as root of the user namespace, in new mount and PID namespaces whose root is
 * `rootMountFd` with `mounts` beneath it plus the host /dev and a fresh /proc when the image has
 * those directories (`nshelper enter`). All fds are borrowed: the caller may close its copies as
 * soon as this returns. Exit status: the command's (128+N for signal N) or ENTER_* above.
 */
export function spawnEnter(opts: EnterOptions): ChildProcess {
  const stdio = opts.stdio ?? 'pipe';
  const fds = [opts.usernsFd, opts.rootMountFd, ...opts.mounts.map((m) => m.fd)];
  const first = 3;
  const mountArgs = opts.mounts.map((m, i) => `${m.path}=${first + 2 + i}`);
  return spawn(
    nshelperPath,
    ['enter', String(first), String(first + 1), ...mountArgs, '--', opts.command, ...opts.args],
    { stdio: [stdio, stdio, stdio, ...fds] },
  );
}

/** An open-tree helper that has not answered in this time is killed. */
const OPEN_TREE_TIMEOUT_MS = 10_000;

/**
 * Clones the mount of `dirFd` inside the mount namespace `mntnsFd` (`nshelper open-tree`):
 * open_tree(OPEN_TREE_CLONE) with an idmapping dropped where the kernel can, as the daemon
 * would, for a directory fd whose mount is not in the daemon's own mount namespace. Both fds
 * are borrowed. Resolves with the detached mount fd (close-on-exec, the caller's to close);
 * rejects with a SysError carrying the helper's errno from setns or open_tree.
 */
export async function openTreeInNamespace(mntnsFd: number, dirFd: number): Promise<number> {
  const [mine, theirs] = native.socketpair();
  let child: ChildProcess;
  try {
    child = spawn(nshelperPath, ['open-tree', '3', '4', '5'], { stdio: ['ignore', 'ignore', 'pipe', mntnsFd, dirFd, theirs] });
  } catch (err) {
    native.close(mine);
    throw err;
  } finally {
    native.close(theirs);
  }
  try {
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < 4096) stderr += s;
    });
    // 'close': exited, stderr complete, and its reply (if any) is in our socket's buffer.
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), OPEN_TREE_TIMEOUT_MS);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('close', (c, s) => {
        clearTimeout(timer);
        resolve({ code: c, signal: s });
      });
    });
    const buf = Buffer.alloc(16);
    const r = native.recvmsg(mine, buf);
    const fds = r?.fds ?? [];
    const ok = code === 0 && r !== null && r.bytes === 4 && !r.truncated && fds.length <= 1;
    const result = ok ? buf.readInt32LE(0) : -1; // the helper's native order; this project runs on little-endian hosts
    if (!ok || (result === 0) !== (fds.length === 1) || result < 0) {
      fds.forEach((fd) => native.close(fd));
      throw new Error(`nshelper open-tree: no valid reply (exit ${code ?? signal}): ${stderr.trim()}`);
    }
    if (result !== 0) throw new SysError(result, 'nshelper open-tree', 'setns or open_tree in the given mount namespace');
    return fds[0]!;
  } finally {
    native.close(mine);
  }
}
