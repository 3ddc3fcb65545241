// The unprivileged client of test/lab-systemd/peers.test.ts and bench/peers.ts: one long-lived
// process running as uid 1000 that makes the same Varlink calls against mountgate's daemons and
// systemd's, with mountgate's own client (dist/ipc/client.js of the checkout, loaded at run time:
// its native addon resolves from there). Bundled by the test with the checkout's esbuild and run
// with plain node (no tsx in the lab: its start costs seconds under TCG).
//
// Protocol: one JSON request per line on stdin, one JSON reply per line on stdout, in order.
// fds the agent inherited (stdio index 3 and up) can be pushed with a call by number.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import type { VarlinkClient as Client } from '../../src/ipc/client.js';
import type { VarlinkError as VError } from '../../src/ipc/errors.js';

/** What to push with a call, in order (index = the number the parameters name). */
export type FdSpec =
  | { userns: number } // /proc/PID/ns/user of a process the agent started
  | { open: string; flags?: 'r' | 'r+' } // a file or directory opened by the agent
  | { inherited: number }; // an fd the agent was started with

export type Request =
  | { op: 'userns'; count?: number }
  | { op: 'kill'; pids: number[] }
  | { op: 'call'; socket: string; method: string; parameters?: Record<string, unknown>; fds?: FdSpec[] }
  | { op: 'allocate'; socket: string; pids: number[]; clients: number; prefix: string }
  | { op: 'mount'; socket: string; image: string; userns: number; count: number; parameters?: Record<string, unknown> }
  | { op: 'exit' };

export interface CallResult {
  ms: number;
  parameters?: Record<string, unknown>;
  error?: string;
  errorParameters?: Record<string, unknown>;
  /** fds attached to the reply (closed by the agent). */
  replyFds?: number;
}

export interface Reply {
  ok: boolean;
  message?: string;
  pids?: number[];
  result?: CallResult;
  latencies?: number[];
  perSecond?: number;
  results?: CallResult[];
}

const checkout = process.env.PEERS_CHECKOUT;
if (!checkout) throw new Error('PEERS_CHECKOUT is not set');
const dist = (m: string): string => pathToFileURL(path.join(checkout, 'dist', m)).href;
const { VarlinkClient } = (await import(dist('ipc/client.js'))) as { VarlinkClient: typeof Client };
const { VarlinkError } = (await import(dist('ipc/errors.js'))) as { VarlinkError: typeof VError };

const children = new Map<number, ChildProcess>();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `unshare --user sleep`: a fresh, unmapped user namespace owned by this uid. */
async function userns(): Promise<number> {
  const child = spawn('unshare', ['--user', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = child.pid;
  if (pid === undefined) throw new Error('cannot start unshare');
  children.set(pid, child);
  const ours = fs.readlinkSync('/proc/self/ns/user');
  for (let i = 0; ; i++) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/ns/user`) !== ours) return pid;
    } catch {
      // not there yet
    }
    if (i > 5000) throw new Error('unshare --user did not happen');
    await sleep(2);
  }
}

async function kill(pid: number): Promise<void> {
  const child = children.get(pid);
  if (!child) return;
  children.delete(pid);
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

function openFd(spec: FdSpec): { fd: number; close: boolean } {
  if ('userns' in spec) return { fd: fs.openSync(`/proc/${spec.userns}/ns/user`, 'r'), close: true };
  if ('open' in spec) return { fd: fs.openSync(spec.open, spec.flags ?? 'r'), close: true };
  return { fd: spec.inherited, close: false };
}

/** One connection, one call; the reply or the Varlink error, timed from connect to reply. */
async function call(socket: string, method: string, parameters: Record<string, unknown> | undefined, fds: number[]): Promise<CallResult> {
  const t0 = performance.now();
  let client: Client | undefined;
  try {
    client = await VarlinkClient.connect(socket);
    const r = await client.call(method, parameters, { fds });
    const ms = performance.now() - t0;
    r.fds.forEach((fd) => fs.closeSync(fd));
    return { ms, parameters: r.parameters, replyFds: r.fds.length };
  } catch (e) {
    const ms = performance.now() - t0;
    if (e instanceof VarlinkError) return { ms, error: e.error, errorParameters: e.parameters };
    return { ms, error: `(client) ${(e as Error).message}` };
  } finally {
    client?.close();
  }
}

async function handle(req: Request): Promise<Reply> {
  switch (req.op) {
    case 'userns': {
      const pids: number[] = [];
      for (let i = 0; i < (req.count ?? 1); i++) pids.push(await userns());
      return { ok: true, pids };
    }
    case 'kill':
      await Promise.all(req.pids.map(kill));
      return { ok: true };
    case 'call': {
      const opened = (req.fds ?? []).map(openFd);
      try {
        return { ok: true, result: await call(req.socket, req.method, req.parameters, opened.map((o) => o.fd)) };
      } finally {
        for (const o of opened) if (o.close) fs.closeSync(o.fd);
      }
    }
    case 'allocate': {
      // Namespaces made beforehand; only the calls are timed (connect, call, close).
      const fds = req.pids.map((pid) => fs.openSync(`/proc/${pid}/ns/user`, 'r'));
      const latencies: number[] = [];
      const failures: string[] = [];
      let next = 0;
      const worker = async (): Promise<void> => {
        for (let i = next++; i < fds.length; i = next++) {
          const r = await call(req.socket, 'io.systemd.NamespaceResource.AllocateUserRange', { name: `${req.prefix}${i}`, size: 65536, userNamespaceFileDescriptor: 0 }, [fds[i]!]);
          if (r.error) failures.push(`${r.error} ${JSON.stringify(r.errorParameters ?? {})}`);
          else latencies.push(r.ms);
        }
      };
      const t0 = performance.now();
      try {
        await Promise.all(Array.from({ length: req.clients }, worker));
      } finally {
        fds.forEach((fd) => fs.closeSync(fd));
      }
      const wall = performance.now() - t0;
      if (failures.length) return { ok: false, message: `${failures.length} of ${fds.length} failed, first: ${failures[0]}` };
      return { ok: true, latencies, perSecond: fds.length / (wall / 1000) };
    }
    case 'mount': {
      const results: CallResult[] = [];
      for (let i = 0; i < req.count; i++) {
        const image = fs.openSync(req.image, 'r');
        const ns = fs.openSync(`/proc/${req.userns}/ns/user`, 'r');
        try {
          results.push(await call(req.socket, 'io.systemd.MountFileSystem.MountImage', { imageFileDescriptor: 0, userNamespaceFileDescriptor: 1, readOnly: true, ...req.parameters }, [image, ns]));
        } finally {
          fs.closeSync(image);
          fs.closeSync(ns);
        }
      }
      return { ok: true, results };
    }
    case 'exit':
      await Promise.all([...children.keys()].map(kill));
      process.exit(0);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  let reply: Reply;
  try {
    reply = await handle(JSON.parse(line) as Request);
  } catch (e) {
    reply = { ok: false, message: (e as Error).stack ?? String(e) };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}
await Promise.all([...children.keys()].map(kill));
