// Launching src/native/nshelper.c: the single-threaded helper that can setns() into user and
// mount namespaces (the multi-threaded Node process cannot; the kernel returns EINVAL).
import { spawn } from 'node:child_process';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import path from 'node:path';
import { nativeBuildDir } from '../native/index.js';

export const nshelperPath = path.join(nativeBuildDir, 'mountgate-nshelper');

/** Child fd numbers the namespace fds are passed as (stdio slots 3 and 4). */
const CHILD_USERNS_FD = 3;
const CHILD_MNTNS_FD = 4;

const READY_TIMEOUT_MS = 10_000;

export interface UserNamespaceMember {
  /** pid of the helper, now a member of the user namespace (use /proc/<pid>/uid_map etc). */
  pid: number;
  /** Ends the helper (closes its stdin) and waits for it to exit. Idempotent. */
  release(): Promise<void>;
}

function waitExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/**
 * Spawns a helper that joins the user namespace `usernsFd` and stays there until released.
 * The fd is only borrowed: the caller still owns and closes it.
 */
export function joinUserNamespace(usernsFd: number): Promise<UserNamespaceMember> {
  const child = spawn(nshelperPath, ['userns-wait', String(CHILD_USERNS_FD)], {
    stdio: ['pipe', 'pipe', 'pipe', usernsFd],
  });
  const stdin = child.stdin;
  const stdout = child.stdout;
  const stderrOut = child.stderr;
  if (!stdin || !stdout || !stderrOut) throw new Error('nshelper: stdio pipes missing');
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
      const { code, signal } = await waitExit(child);
      if (code !== 0) throw new Error(`nshelper userns-wait exited with ${code ?? signal}: ${stderr.trim()}`);
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
    const timer = setTimeout(() => fail(new Error('nshelper userns-wait: timed out waiting for ready byte')), READY_TIMEOUT_MS);
    child.once('error', (err) => fail(err));
    child.once('exit', (code, signal) => {
      // Let stderr drain before reporting.
      setImmediate(() => fail(new Error(`nshelper userns-wait exited with ${code ?? signal} before ready: ${stderr.trim()}`)));
    });
    stdout.once('data', (chunk: Buffer) => {
      if (settled) return;
      if (chunk[0] !== 0x31 /* '1' */ || child.pid === undefined) {
        fail(new Error('nshelper userns-wait: unexpected ready byte'));
        return;
      }
      settled = true;
      clearTimeout(timer);
      stdout.resume();
      resolve({ pid: child.pid, release });
    });
  });
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
