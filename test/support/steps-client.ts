// Unprivileged scripted client for userdbd (run as uid 1000 via setpriv): `node steps-client.mjs
// SOCKET STEPS_JSON` runs the steps in order on one connection and prints one JSON line,
// {pids, replies}. Steps:
//   {spawn: "user" | "user+net" | "user+mount"}
//                                  a detached `unshare --user [--net|--mount] sleep` (its shell reaps it);
//                                  later fd specs "user"/"net" name its namespaces
//   {call, params, fds, hold?}     one call; fds are specs: "user", "net" (of the last spawned
//                                  process), "user@I", "net@I" (of the I-th), "self:net" (this
//                                  client's own) or "fd:N" (inherited). The reply is {ok} or {error,
//                                  parameters}; fds it carries are described, then closed, or
//                                  with hold: handed to a detached `sleep` (its pid in `holder`)
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { VarlinkClient } from '../../src/ipc/client.js';
import { printJsonLine } from './json-line.js';
import { unshared } from './userns.js';
import { VarlinkError } from '../../src/ipc/errors.js';

type Kind = 'user' | 'user+net' | 'user+mount';
type Step = { spawn: Kind } | { call: string; params: Record<string, unknown>; fds?: string[]; hold?: boolean };

function fdPath(spec: string, pids: number[]): string {
  if (spec.startsWith('fd:')) return `/proc/self/fd/${spec.slice(3)}`;
  if (spec.startsWith('self:')) return `/proc/self/ns/${spec.slice(5)}`;
  const [kind, index] = spec.split('@');
  return `/proc/${index === undefined ? pids.at(-1) : pids[Number(index)]}/ns/${kind}`;
}

/** What a received fd is: its /proc link, fdinfo, and for a tap device its sysfs owner and flags. */
function describe(fd: number): Record<string, unknown> {
  const fdinfo = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const iff = /^iff:\s*(\S+)$/m.exec(fdinfo)?.[1];
  const sys = (f: string): string | undefined => {
    try {
      return fs.readFileSync(`/sys/class/net/${iff}/${f}`, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  return { link: fs.readlinkSync(`/proc/self/fd/${fd}`), iff, owner: iff && sys('owner'), tunFlags: iff && sys('tun_flags') };
}

/** A detached sleep that keeps `fds` open after this client exits. */
function holder(fds: number[]): number {
  const child = spawn('sleep', ['1000'], { stdio: ['ignore', 'ignore', 'ignore', ...fds], detached: true });
  child.unref();
  return child.pid as number;
}

async function main(socket: string, steps: Step[]): Promise<Record<string, unknown>> {
  const client = await VarlinkClient.connect(socket);
  const pids: number[] = [];
  const replies: Array<Record<string, unknown>> = [];
  try {
    for (const step of steps) {
      if ('spawn' in step) {
        pids.push(await unshared(step.spawn === 'user' ? undefined : step.spawn === 'user+net' ? 'net' : 'mount'));
        continue;
      }
      const fds = (step.fds ?? []).map((spec) => fs.openSync(fdPath(spec, pids), 'r'));
      try {
        const r = await client.call(step.call, step.params, { fds });
        const out: Record<string, unknown> = { ok: r.parameters };
        if (r.fds.length) out.fds = r.fds.map(describe);
        if (r.fds.length && step.hold) out.holder = holder(r.fds);
        r.fds.forEach((fd) => fs.closeSync(fd));
        replies.push(out);
      } catch (e) {
        if (!(e instanceof VarlinkError)) throw e;
        replies.push({ error: e.error, parameters: e.parameters });
      } finally {
        fds.forEach((fd) => fs.closeSync(fd));
      }
    }
    return { pids, replies };
  } finally {
    client.close();
  }
}

const [socket, steps] = process.argv.slice(2);
printJsonLine(main(socket as string, JSON.parse(steps as string) as Step[]));
