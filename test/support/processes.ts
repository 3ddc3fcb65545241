// Child processes of tests and benchmarks: programs run to completion without blocking the
// event loop (a daemon under test may run in this process), long-running ones stopped
// SIGTERM-then-SIGKILL, and the uid-1000 side through setpriv.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout. */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** setpriv's arguments that make the rest of a command line run as uid 1000 (a numeric uid
 * needs no passwd entry). */
export const AS_1000 = ['--reuid=1000', '--regid=1000', '--clear-groups'];

/** Resolves once CHILD exited (at once if it has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once('exit', () => r()));
}

export interface UserRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Inherited as the child's fds 3, 4, … */
  fds?: number[];
}

/** Runs ARGV without blocking the event loop (60 s at most) and collects its output. */
export function runCollecting(argv: string[], opts: RunOptions = {}): Promise<UserRun> {
  return new Promise((resolve, reject) => {
    const { fds = [], ...rest } = opts;
    const child = spawn(argv[0]!, argv.slice(1), { ...rest, stdio: ['ignore', 'pipe', 'pipe', ...fds], timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Runs ARGV as uid 1000, asynchronously: a daemon this process serves must keep answering. */
export function runAsUser(argv: string[], opts: RunOptions = {}): Promise<UserRun> {
  return runCollecting(['setpriv', ...AS_1000, ...argv], opts);
}

const STDERR_HEAD = 16384;
const STDERR_TAIL = 8192;

/** A long-running child: a daemon, or the socket activator in front of one. */
export interface Child {
  proc: ChildProcess;
  pid: number;
  /** The first 16 KiB of its stderr so far (or of its log file). */
  stderr(): string;
  /** The last 8 KiB of it (for a failure's message). */
  stderrTail(): string;
  alive(): boolean;
  /** SIGTERM (to its process group with `group`), SIGKILL after `graceMs`; resolves once it exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface ChildOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** In a process group of its own, stopped as a group (what it starts goes with it). */
  group?: boolean;
  /** stdout and stderr into this file instead of a pipe (its output is then independent of this
   * process: a pipe this process stops reading cannot block it). */
  logFile?: string;
  /** Extra fds, inherited as its fds 3, 4, … */
  fds?: number[];
  /** How long SIGTERM gets before SIGKILL (default 5 s). */
  graceMs?: number;
}

/** Starts ARGV; see Child. */
export function startChild(argv: string[], opts: ChildOptions = {}): Child {
  const log = opts.logFile === undefined ? undefined : fs.openSync(opts.logFile, 'a');
  const out = log ?? 'ignore';
  const proc = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', out, log ?? 'pipe', ...(opts.fds ?? [])],
    detached: opts.group ?? false,
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  if (log !== undefined) fs.closeSync(log);
  const pid = proc.pid;
  if (pid === undefined) throw new Error(`cannot start ${argv[0]}`);
  let head = '';
  let tail = '';
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (head.length < STDERR_HEAD) head += s;
    tail = (tail + s).slice(-STDERR_TAIL);
  });
  const fromLog = (): string => {
    try {
      return fs.readFileSync(opts.logFile!, 'utf8');
    } catch {
      return '';
    }
  };
  const alive = (): boolean => proc.exitCode === null && proc.signalCode === null;
  const signal = (sig: NodeJS.Signals): void => {
    try {
      if (opts.group) process.kill(-pid, sig);
      else proc.kill(sig);
    } catch {
      // already gone
    }
  };
  return {
    proc,
    pid,
    stderr: () => (log === undefined ? head : fromLog().slice(0, STDERR_HEAD)),
    stderrTail: () => (log === undefined ? tail : fromLog().slice(-STDERR_TAIL)),
    alive,
    async stop(sig: NodeJS.Signals = 'SIGTERM') {
      if (!alive()) return;
      signal(sig);
      const killer = setTimeout(() => signal('SIGKILL'), opts.graceMs ?? 5000);
      await exited(proc);
      clearTimeout(killer);
    },
  };
}

/** MOUNTGATE_LONG=1 (`npm run test:long`): the long variants of the stress tests. */
export const LONG = process.env.MOUNTGATE_LONG === '1';
