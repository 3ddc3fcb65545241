// Shared pieces of the benchmarks: statistics, timing, child processes, the private compiled
// tree the daemons run from, signing material, and the figure record BENCHMARKS.md is made of.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

export const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/** One line of BENCHMARKS.md. `status` compares the result with the target. */
export interface Figure {
  id: string;
  title: string;
  method: string;
  samples: string;
  result: string;
  target: string;
  status: 'met' | 'missed' | 'not measurable here' | 'info';
  /** What dominates a missed target and what would fix it; other observations. */
  notes?: string[];
}

/** Everything the figures share: a scratch directory, the compiled tree, signing material. */
export interface BenchContext {
  work: string;
  /** A copy of the project laid out like the repo: dist/ (tsc output and the shipped bundle),
   * build -> native, node_modules. */
  root: string;
  keyPem: string;
  certPem: string;
  /** Directory holding the certificate, for mntfsd --verity-certs. */
  certDir: string;
}

export const execFileP = promisify(execFile);

/** The entry point the package's bin and the units run (scripts/build-bundle), relative to the tree. */
export const SHIPPED_ENTRY = 'dist/bundle/main.mjs';
/** How BENCHMARKS.md names it. */
export const SHIPPED_NAME = 'the shipped bundle (dist/bundle/main.mjs, scripts/build-bundle)';

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export interface Summary {
  n: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

export function summarize(xs: readonly number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  return {
    n: s.length,
    p50: percentile(s, 50),
    p99: percentile(s, 99),
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
    mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
  };
}

export const median = (xs: readonly number[]): number => summarize(xs).p50;

export function ms(x: number, digits = 1): string {
  return `${x.toFixed(digits)} ms`;
}

export function fmtSummary(s: Summary): string {
  return `p50 ${ms(s.p50)}, p99 ${ms(s.p99)} (min ${ms(s.min)}, max ${ms(s.max)})`;
}

/** Milliseconds an async function takes. */
export async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, performance.now() - t0];
}

/** Runs a tool to completion; the error carries the tail of its stderr. */
export async function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20, encoding: 'utf8', ...opts });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr || e.stdout || e.message).slice(-1500)}`);
  }
}

/** A child process started in its own process group, so it and its children can be stopped by pgid. */
export interface Child {
  proc: ChildProcess;
  pid: number;
  stderr(): string;
  stop(): Promise<void>;
}

export function startChild(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Child {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true, env: opts.env ?? process.env, cwd: opts.cwd });
  let err = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (s: string) => {
    err = (err + s).slice(-8192);
  });
  const pid = proc.pid;
  if (pid === undefined) throw new Error(`cannot start ${cmd}`);
  const exited = once(proc, 'exit');
  return {
    proc,
    pid,
    stderr: () => err,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        try {
          process.kill(-pid, 'SIGTERM');
        } catch {
          // already gone
        }
        const t = setTimeout(() => {
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }, 3000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

/** Waits until `file` exists (a daemon's socket). */
export async function waitForPath(file: string, child?: Child, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (child && child.proc.exitCode !== null) throw new Error(`daemon exited early: ${child.stderr().slice(-1500)}`);
    if (Date.now() > end) throw new Error(`${file} did not appear: ${child?.stderr().slice(-1500) ?? ''}`);
    await sleep(5);
  }
}

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** Sets up the scratch directory, compiles and bundles src/ into a private tree, makes a signing key. */
export async function createContext(log: (s: string) => void): Promise<BenchContext> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-bench-'));
  const root = path.join(work, 'root');
  fs.mkdirSync(root);
  // Compiled like `npm run build:ts`, but into a private tree so a stale or half-built dist/
  // in the checkout never decides what is measured. Paths resolve as in the repo.
  fs.symlinkSync(path.join(REPO, 'build'), path.join(root, 'build'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(root, 'node_modules'));
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(root, 'package.json'));
  log('compiling src/ with tsc into a private tree');
  try {
    await run(path.join(REPO, 'node_modules/.bin/tsc'), ['-p', path.join(REPO, 'tsconfig.json'), '--outDir', path.join(root, 'dist'), '--declaration', 'false', '--sourceMap', 'false']);
  } catch (err) {
    // tsc emits even with type errors; only a missing entry point is fatal.
    if (!fs.existsSync(path.join(root, 'dist/cli/main.js'))) throw err;
    log(`tsc reported errors (output still emitted): ${String(err).slice(0, 300)}`);
  }
  log('bundling src/cli/main.ts into the private tree (scripts/build-bundle)');
  await run(path.join(REPO, 'scripts/build-bundle'), [path.join(root, 'dist/bundle')]);
  const certDir = path.join(work, 'certs');
  fs.mkdirSync(certDir);
  const key = path.join(work, 'verity.key');
  const cert = path.join(certDir, 'verity.crt');
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=mountgate bench']);
  return { work, root, keyPem: fs.readFileSync(key, 'utf8'), certPem: fs.readFileSync(cert, 'utf8'), certDir };
}

export function removeContext(ctx: BenchContext): void {
  fs.rmSync(ctx.work, { recursive: true, force: true });
}

/** Deterministic incompressible bytes (xorshift), so image contents differ per seed. */
export function noise(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

/** A user namespace owned by us: `unshare --user sleep`, our child, stopped with kill(). */
export interface FreshUserns {
  pid: number;
  kill(): Promise<void>;
}

/** Starts `unshare --user [extra] sleep 1000` and returns once the process is in its new namespace. */
export async function freshUserns(extra: string[] = []): Promise<FreshUserns> {
  const proc = spawn('unshare', ['--user', ...extra, 'sleep', '1000'], { stdio: 'ignore' });
  const pid = proc.pid;
  if (pid === undefined) throw new Error('cannot start unshare');
  const exited = once(proc, 'exit');
  const ours = fs.readlinkSync('/proc/self/ns/user');
  for (let i = 0; ; i++) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/ns/user`) !== ours) break;
    } catch {
      // not there yet
    }
    if (i > 2000) throw new Error('unshare --user did not happen');
    await sleep(1);
  }
  return {
    pid,
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Markdown table. */
export function table(head: string[], rows: string[][]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, '<br>');
  return [`| ${head.map(esc).join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Self time of a V8 .cpuprofile (node --cpu-prof), busiest functions first, idle excluded;
 * samples in the first `skipMs` (start-up) are left out. */
export function profileTop(file: string, n: number, skipMs = 0): { busyMs: number; idleMs: number; top: Array<{ what: string; ms: number; share: number }> } {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(prof.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  let t = 0;
  prof.samples.forEach((id, i) => {
    const us = prof.timeDeltas[i] ?? 0;
    t += us;
    const node = byId.get(id);
    if (!node || t < skipMs * 1000) return;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idle += us;
      return;
    }
    busy += us;
    const where = url ? `${url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    self.set(key, (self.get(key) ?? 0) + us);
  });
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, n).map(([what, us]) => ({ what, ms: us / 1000, share: busy ? us / busy : 0 }));
  return { busyMs: busy / 1000, idleMs: idle / 1000, top };
}
