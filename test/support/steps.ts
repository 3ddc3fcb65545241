// Scripted calls to userdbd by uid 1000 (steps-client.ts: namespaces it makes, calls on one
// connection, the fds it gets back described), and what the host's network shows afterwards.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { programAs, STEPS_CLIENT } from './clients.js';
import { runCollecting } from './processes.js';
import { userScript } from './user-package.js';

export type Step = { spawn: 'user' | 'user+net' | 'user+mount' } | { call: string; params: Record<string, unknown>; fds?: string[]; hold?: boolean };

export interface Reply {
  ok?: Record<string, unknown>;
  error?: string;
  parameters?: Record<string, unknown>;
  fds?: Array<{ link: string; iff?: string; owner?: string; tunFlags?: string }>;
  holder?: number;
}

/** Runs steps-client.ts as `uid` (default 1000); `inherit` becomes its fds 3, 4, … */
export async function steps(sock: string, list: Step[], opts: { uid?: number; inherit?: number[] } = {}): Promise<{ pids: number[]; replies: Reply[] }> {
  const r = await programAs(userScript(STEPS_CLIENT), [sock, JSON.stringify(list)], { uid: opts.uid, fds: opts.inherit });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let parsed: { pids: number[]; replies: Reply[]; crash?: string };
  try {
    parsed = JSON.parse(last) as typeof parsed;
  } catch {
    throw new Error(`client exited with ${r.status}: ${r.stdout}${r.stderr}`);
  }
  if (parsed.crash) throw new Error(`client crashed: ${parsed.crash}`);
  return parsed;
}

export interface Link {
  ifname: string;
  address: string;
  altnames?: string[];
  linkinfo?: { info_kind?: string };
}

/** `ip -d -j link show NAME`, in the network namespace of `pid` (host's when undefined); null if absent. */
export async function link(name: string, pid?: number): Promise<Link | null> {
  const ip = ['ip', '-d', '-j', 'link', 'show', 'dev', name];
  const r = await runCollecting(pid === undefined ? ip : ['nsenter', `--net=/proc/${pid}/ns/net`, '--', ...ip]);
  if (r.status !== 0) {
    assert.match(r.stderr, /does not exist/, r.stderr);
    return null;
  }
  return (JSON.parse(r.stdout) as Link[])[0] ?? null;
}

/** Host links whose names userdbd makes ("ns-" and 12 hex digits). */
export function hostNsLinks(): string[] {
  return fs.readdirSync('/sys/class/net').filter((n) => /^ns-[0-9a-f]{12}$/.test(n));
}
