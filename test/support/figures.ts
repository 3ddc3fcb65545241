// What the benchmarks (bench/) alone need: statistics, timing, the private compiled tree the
// daemons run from, signing material, and the figure record BENCHMARKS.md is made of. Daemons,
// namespaces and processes come from the rest of test/support, as for the tests.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO } from './processes.js';

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
