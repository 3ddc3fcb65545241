// A long-lived client of userdbd running as another uid (setpriv), for tests that need a caller
// with namespaces of its own that outlive single calls: UserdbdAgent is the test's side,
// runUserdbdAgent() the agent's (bundled into the unpacked package and run as that uid).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { VarlinkClient } from '../../src/ipc/client.js';
import { VarlinkError } from '../../src/ipc/errors.js';
import { closeAll } from './fds.js';
import { REPO } from './processes.js';
import { rawPeer } from './raw-peer.js';
import { userEval } from './user-package.js';
import { usernsMaps } from './userns.js';
import { retry } from './wait.js';

/** One reply of the userdbd agent (see runUserdbdAgent). */
export type AgentReply = Record<string, unknown>;

/**
 * A long-lived client of userdbd running as `uid` (setpriv; numeric uids need no passwd entry).
 * It creates user namespaces itself (owned by `uid`, kept alive by fds it holds, no process
 * left to become a zombie) and makes calls with them. `inherit` fds become its fds 3, 4, …
 */
export class UserdbdAgent {
  readonly child: ChildProcess & { pid: number };
  private readonly pending = new Map<number, (r: AgentReply) => void>();
  private nextId = 0;
  private stderr = '';

  private constructor(child: ChildProcess & { pid: number }) {
    this.child = child;
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      buf += s;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const { id, ...rest } = JSON.parse(buf.slice(0, nl)) as { id: number } & AgentReply;
        buf = buf.slice(nl + 1);
        this.pending.get(id)?.(rest);
        this.pending.delete(id);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (this.stderr.length < 8192) this.stderr += s;
    });
    child.once('exit', () => {
      for (const [, r] of this.pending) r({ crash: `agent exited: ${this.stderr.slice(-2000)}` });
      this.pending.clear();
    });
  }

  static async start(uid: number, sock: string, inherit: number[] = []): Promise<UserdbdAgent> {
    const script = `import { runUserdbdAgent } from ${JSON.stringify(path.join(REPO, 'test/support/userdbd-agent.ts'))}; await runUserdbdAgent();`;
    const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, userEval('userdbd-agent', script), sock], {
      stdio: ['pipe', 'pipe', 'pipe', ...inherit],
    });
    if (child.pid === undefined) throw new Error('spawn agent failed');
    const a = new UserdbdAgent(child as ChildProcess & { pid: number });
    assert.deepEqual(await a.req({ op: 'ping' }), { ok: true });
    return a;
  }

  /** Sends one request; rejects if the agent reports a crash. */
  async req(r: Record<string, unknown>): Promise<AgentReply> {
    const id = this.nextId++;
    const reply = new Promise<AgentReply>((res) => this.pending.set(id, res));
    this.child.stdin!.write(`${JSON.stringify({ id, ...r })}\n`);
    const out = await reply;
    if (out.crash) throw new Error(`agent: ${String(out.crash)}`);
    return out;
  }

  /** A new empty user namespace owned by the agent's uid: its fd number in the agent and inode. */
  async userns(): Promise<{ fd: number; inode: number }> {
    return (await this.req({ op: 'userns' })) as { fd: number; inode: number };
  }

  /** One call on a fresh connection with the agent's fds `fds`; the reply, or {closed: true}. */
  async call(method: string, parameters: unknown, fds: number[] = []): Promise<AgentReply> {
    return this.req({ op: 'call', method, parameters, fds });
  }

  /** An fd of the agent's, opened in this (root) process via /proc. */
  openFd(fd: number): number {
    return fs.openSync(`/proc/${this.child.pid}/fd/${fd}`, 'r');
  }

  /** Ends the agent; the namespaces only it held die with it. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin!.end();
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  }
}

/**
 * The agent side (run by UserdbdAgent as its uid): JSON requests on stdin, one JSON reply line
 * each on stdout. Ops: ping; userns; close {fds}; maps {fd}; call {method, parameters, fds};
 * alloc {count, size, prefix, keep} (count allocations, each on a new namespace, over one
 * connection re-made when it breaks; keep: probability of keeping a successful namespace alive,
 * namespaces whose call broke off are always kept; replies {ok, errors, kept}).
 */
export async function runUserdbdAgent(): Promise<void> {
  const sock = process.argv[1]!;
  const { createInterface } = await import('node:readline');
  const { createUserNamespace } = await import('../../src/sys/nshelper.js');
  const userns = async (): Promise<{ fd: number; inode: number }> => {
    const fd = await createUserNamespace();
    return { fd, inode: fs.fstatSync(fd).ino };
  };
  const ops: Record<string, (r: Record<string, unknown>) => Promise<AgentReply>> = {
    ping: async () => ({ ok: true }),
    userns,
    close: async (r) => {
      closeAll(r.fds as number[]);
      return {};
    },
    maps: async (r) => usernsMaps(r.fd as number),
    call: async (r) => {
      const p = rawPeer(sock);
      try {
        p.call(r.method as string, r.parameters, r.fds as number[]);
        return await p.nextReply().catch(() => ({ closed: true }));
      } finally {
        p.close();
      }
    },
    alloc: async (r) => {
      const count = r.count as number;
      const keep = r.keep as number;
      const errors: string[] = [];
      const kept: Array<{ fd: number; inode: number; name: string; answered: boolean }> = [];
      let ok = 0;
      let client: VarlinkClient | undefined;
      for (let i = 0; i < count; i++) {
        const ns = await userns();
        const name = `${String(r.prefix)}${i}`;
        let answered = false;
        let allocated = false;
        try {
          client ??= await retry(() => VarlinkClient.connect(sock), 30_000);
          await client.call('io.systemd.NamespaceResource.AllocateUserRange', { name, size: r.size, userNamespaceFileDescriptor: 0 }, { fds: [ns.fd] });
          answered = allocated = true;
          ok++;
        } catch (e) {
          if (e instanceof VarlinkError) {
            answered = true;
            errors.push(`${name}:${e.error}:${JSON.stringify(e.parameters)}`);
          } else {
            client?.close();
            client = undefined;
          }
        }
        if (!answered || (allocated && Math.random() < keep)) kept.push({ ...ns, name, answered });
        else fs.closeSync(ns.fd);
      }
      client?.close();
      return { ok, errors, kept };
    },
  };
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    const { id, op, ...rest } = JSON.parse(line) as { id: number; op: string } & Record<string, unknown>;
    let out: AgentReply;
    try {
      const fn = ops[op];
      if (!fn) throw new Error(`unknown op ${op}`);
      out = await fn(rest);
    } catch (e) {
      out = { crash: String(e instanceof Error ? e.stack : e) };
    }
    process.stdout.write(`${JSON.stringify({ id, ...out })}\n`);
  }
}
