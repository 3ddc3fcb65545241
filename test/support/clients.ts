// The unprivileged side of the tests: programs run as uid 1000 (setpriv), bundled into the
// unpacked package (user-package.ts), each printing one JSON line. The programs are
// e2e-client.ts (the public client library), userdbd-client.ts and steps-client.ts (userdbd
// call sequences), userdbd-agent.ts (a long-lived agent), or code given inline (userEval).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { AS_1000, REPO, runCollecting, type UserRun } from './processes.js';
import { userEval, userPackage, userScript } from './user-package.js';
import { spawnInNewUserns, type UsernsHolder } from './userns.js';

export const E2E_CLIENT = path.join(REPO, 'test/support/e2e-client.ts');
export const USERDBD_CLIENT = path.join(REPO, 'test/support/userdbd-client.ts');
export const STEPS_CLIENT = path.join(REPO, 'test/support/steps-client.ts');

export interface ProgramOptions {
  /** Run as this uid (default 1000). */
  uid?: number;
  /** Inherited as its fds 3, 4, … */
  fds?: number[];
  /** Between setpriv's options and the program (e.g. unshare to give it namespaces of its own). */
  wrap?: string[];
  /** Before setpriv (run as root, e.g. nsenter into another namespace). */
  outer?: string[];
}

/** `node PROGRAM ARGS` as uid 1000 (or `uid`); asynchronous: a daemon may run in this process. */
export function programAs(program: string, args: string[], opts: ProgramOptions = {}): Promise<UserRun> {
  const uid = opts.uid ?? 1000;
  const as = uid === 1000 ? AS_1000 : [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
  return runCollecting([...(opts.outer ?? []), 'setpriv', ...as, ...(opts.wrap ?? []), process.execPath, program, ...args], { fds: opts.fds, cwd: REPO });
}

/** The JSON value on the last line a client printed (`opening`: '{' or '['); fails with its
 * stderr when there is none. */
export function clientResult<T>(r: UserRun, opening = '{'): T {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  assert.ok(line.startsWith(opening), `client printed no result: ${r.stderr.slice(-1500)}`);
  return JSON.parse(line) as T;
}

/** The TypeScript program ENTRY as uid 1000 with ARGS: its JSON line. */
export async function scriptAs1000<T>(entry: string, args: string[], opts: ProgramOptions = {}): Promise<T> {
  return clientResult<T>(await programAs(userScript(entry), args, opts));
}

/** Inline code (see userEval: process.argv[1] is the first of ARGS) as uid 1000: its JSON line. */
export async function evalAs1000<T>(name: string, code: string, args: string[], opts: ProgramOptions & { opening?: string } = {}): Promise<T> {
  return clientResult<T>(await programAs(userEval(name, code), args, opts), opts.opening);
}

/** e2e-client.ts as uid 1000 (`allocate …` or `mount …`, see there): its JSON line. */
export function e2eClientAs1000<T = Record<string, unknown>>(args: string[]): Promise<T> {
  return scriptAs1000<T>(E2E_CLIENT, args);
}

/** `mountgate COMMAND ARGS` as uid 1000: the packed package's bin, which it can read wherever the checkout is. */
export function cliAsUser(command: string, args: string[]): Promise<UserRun> {
  return runCollecting(['setpriv', ...AS_1000, process.execPath, userPackage().bin, command, ...args]);
}

/** `mountgate COMMAND ARGS --json` as uid 1000: its exit status and the JSON it printed. */
export async function cliJsonAsUser<T>(command: string, args: string[]): Promise<{ status: number | null; report: T }> {
  const r = await cliAsUser(command, [...args, '--json']);
  assert.ok(r.stdout.startsWith('{'), `no JSON: ${r.stderr.slice(-1500)}`);
  return { status: r.status, report: JSON.parse(r.stdout) as T };
}

/** A user namespace of uid 1000's into which userdbd (on `userdbdSock`) mapped a transient
 * 64K range for it, as a container manager has it: the holder, and the range's first host id. */
export interface Caller {
  ns: UsernsHolder;
  base: number;
}

/** uid 1000 unshares a user namespace and allocates a range for it named `name` (e2e-client.ts). */
export async function callerWithRange(userdbdSock: string, name: string): Promise<Caller> {
  const ns = await spawnInNewUserns('setpriv', [...AS_1000, 'unshare', '--user', 'sleep', 'infinity']);
  const alloc = await e2eClientAs1000<{ name?: string }>(['allocate', userdbdSock, name, String(ns.pid)]);
  assert.equal(alloc.name, `1000-${name}`, JSON.stringify(alloc));
  const [inside, base, count] = fs.readFileSync(`/proc/${ns.pid}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
  assert.deepEqual([inside, count], [0, 65536]);
  return { ns, base: base! };
}

/**
 * A process running as `uid` sends one call to `sock` with `fd` attached (inherited as its fd 3),
 * busy-waits `delayMs` and kills itself with SIGKILL: a client that vanishes mid-call. Plain
 * node without tsx, so it starts in tens of milliseconds; the addon is the unpacked package's
 * (uid 1000 may not be able to read the checkout). Resolves once it is gone.
 */
export async function sendAndDie(uid: number, sock: string, method: string, parameters: unknown, fd: number, delayMs: number): Promise<void> {
  const script = `
    const native = require(${JSON.stringify(path.join(userPackage().dir, 'build/Release/mountgate.node'))});
    const [sock, text, delay] = process.argv.slice(1);
    const s = native.connect(sock);
    const msg = Buffer.from(text + '\\0');
    if (native.sendmsg(s, msg, 0, msg.length, [3]) !== msg.length) process.exit(3);
    const end = performance.now() + Number(delay);
    while (performance.now() < end);
    process.kill(process.pid, 'SIGKILL');
  `;
  const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', script, sock, JSON.stringify({ method, parameters }), String(delayMs)], {
    stdio: ['ignore', 'ignore', 'inherit', fd],
  });
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  assert.equal(signal ?? code, 'SIGKILL', 'the client did not send its call');
}
