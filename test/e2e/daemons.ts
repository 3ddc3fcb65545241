// Shared pieces of the tests that drive the `mountgate` CLI end to end: signed images, daemons
// started as root on private paths (directly, or socket-activated as the units start them) and
// stopped after the tests, and clients run as uid 1000 from the packed package (user-package.ts).
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess, type ExecFileSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../sys/util.js';
import { userPackage } from './user-package.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** `mountgate` run from source: the command line before its subcommand. */
const CLI = [process.execPath, '--import', 'tsx', path.join(REPO, 'src/cli/main.ts')];
/** `mountgate` as shipped: the bundle that the package's bin and the units run (scripts/setup builds it). */
const SHIPPED = [process.execPath, path.join(REPO, 'dist/bundle/main.mjs')];
const AS_USER = ['setpriv', '--reuid=1000', '--regid=1000', '--clear-groups'];
const STDERR_KEPT = 16384;

export interface SignedImages {
  /** A directory holding the trusted key's certificate, trusted.crt (for --verity-certs). */
  certs: string;
  /** Image signed by that key. */
  trusted: string;
  /** Image signed by a key whose certificate is nowhere. */
  untrusted: string;
}

/** Builds two images of TREE in DIR with `mountgate build` (keys CN=trusted and CN=untrusted), readable by uid 1000. */
export function buildSignedImages(tree: string, dir: string): SignedImages {
  const keys = fs.mkdtempSync(path.join(dir, 'keys-'));
  const images: SignedImages = { certs: path.join(dir, 'certs'), trusted: path.join(dir, 'trusted.raw'), untrusted: path.join(dir, 'untrusted.raw') };
  const quiet: ExecFileSyncOptions = { stdio: ['ignore', 'ignore', 'pipe'] };
  for (const cn of ['trusted', 'untrusted'] as const) {
    const key = path.join(keys, `${cn}.key`);
    const cert = path.join(keys, `${cn}.crt`);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=${cn}`], quiet);
    execFileSync(CLI[0], [...CLI.slice(1), 'build', tree, images[cn], '--key', key, '--cert', cert], quiet);
    fs.chmodSync(images[cn], 0o644);
  }
  fs.mkdirSync(images.certs);
  fs.copyFileSync(path.join(keys, 'trusted.crt'), path.join(images.certs, 'trusted.crt'));
  return images;
}

/** setpriv's --bounding-set for a unit's CapabilityBoundingSet= (the daemon gets no more than that). */
function boundingSet(service: string): string {
  const m = /^CapabilityBoundingSet=(.+)$/m.exec(fs.readFileSync(path.join(REPO, 'units', service), 'utf8'));
  assert.ok(m, `${service} has no CapabilityBoundingSet`);
  return ['-all', ...m[1].trim().split(/\s+/).map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
}

export interface Daemon {
  /** The first 16 KiB of its stderr so far. */
  stderr(): string;
  /** SIGTERM, SIGKILL after 5 s; resolves once it exited. */
  stop(): Promise<void>;
}

export interface DaemonOptions {
  /** Run with the CapabilityBoundingSet= of this unit in units/. */
  service?: string;
  /** Socket-activate it: systemd-socket-activate listens on the socket, passes it with this
   * fd name and starts the daemon on the first connection, with these NAME=VALUE variables. */
  activate?: { fdName: string; env?: string[] };
  /** Run the shipped bundle instead of the sources. */
  shipped?: boolean;
  /** Run this `mountgate` executable instead (an installed copy's bin, as a unit's ExecStart= does). */
  bin?: string;
  /** Working directory (default: this process's). */
  cwd?: string;
}

const running = new Set<Daemon>();

/** Resolves once CHILD exited (at once if it has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once('exit', () => r()));
}

/** Starts `mountgate ARGS` as root and waits until SOCKET exists. stopDaemons() stops it too. */
export async function startDaemon(args: string[], socket: string, opts: DaemonOptions = {}): Promise<Daemon> {
  let argv = [...(opts.bin ? [opts.bin] : opts.shipped ? SHIPPED : CLI), ...args];
  if (opts.service) argv = ['setpriv', `--bounding-set=${boundingSet(opts.service)}`, ...argv];
  if (opts.activate) {
    const env = ['PATH', ...(opts.activate.env ?? [])].flatMap((e) => ['-E', e]);
    argv = ['systemd-socket-activate', '-l', socket, `--fdname=${opts.activate.fdName}`, ...env, ...argv];
  }
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], cwd: opts.cwd });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < STDERR_KEPT) stderr += s;
  });
  const daemon: Daemon = {
    stderr: () => stderr,
    async stop() {
      running.delete(daemon);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited(child);
      clearTimeout(killer);
    },
  };
  running.add(daemon);
  try {
    await waitFor(() => {
      if (child.exitCode !== null) throw new Error(`exited with status ${child.exitCode}`);
      return fs.existsSync(socket);
    }, socket, 20_000);
  } catch (err) {
    throw new Error(`${argv[0]} ${args[0]} did not start (${(err as Error).message}): ${stderr.slice(-2000)}`);
  }
  return daemon;
}

/** Stops every daemon startDaemon() started that is not stopped yet. */
export async function stopDaemons(): Promise<void> {
  await Promise.all([...running].map((d) => d.stop()));
}

export interface UserRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs ARGV as uid 1000, asynchronously: a daemon this process serves must keep answering. */
export function runAsUser(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<UserRun> {
  return runCollecting([...AS_USER, ...argv], opts);
}

/** Runs ARGV without blocking the event loop (60 s at most) and collects its output. */
export function runCollecting(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<UserRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { ...opts, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** `mountgate COMMAND ARGS` as uid 1000: the packed package's bin, which it can read wherever the checkout is. */
export function cliAsUser(command: string, args: string[]): Promise<UserRun> {
  return runAsUser([process.execPath, userPackage().bin, command, ...args]);
}

/** `mountgate COMMAND ARGS --json` as uid 1000: its exit status and the JSON it printed. */
export async function cliJsonAsUser<T>(command: string, args: string[]): Promise<{ status: number | null; report: T }> {
  const r = await cliAsUser(command, [...args, '--json']);
  assert.ok(r.stdout.startsWith('{'), `no JSON: ${r.stderr.slice(-1500)}`);
  return { status: r.status, report: JSON.parse(r.stdout) as T };
}
