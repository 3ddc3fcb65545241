// Unprivileged test client for userdbd (run as uid 1000 via setpriv, or as root inside an
// allocated namespace). Prints one JSON line on stdout.
//   alloc SOCKET NAME SIZE [DELEGATE]   new empty userns (a detached `unshare --user sleep`),
//                                       AllocateUserRange; prints {pid, ok|error}
//   alloc-pid SOCKET NAME PID|fd:N       AllocateUserRange for /proc/PID/ns/user or inherited fd N
//   many SOCKET COUNT                    COUNT namespaces (kept alive by fds), one call each;
//                                        prints {ok, errors}
//   bench SOCKET COUNT                   round-trip times of COUNT allocations; prints {p50, ms}
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { VarlinkClient } from '../../src/ipc/client.js';
import { VarlinkError } from '../../src/ipc/errors.js';

const METHOD = 'io.systemd.NamespaceResource.AllocateUserRange';

/** Starts `unshare --user [--mount] sleep` under a detached shell that reaps it (a zombie
 * would keep its namespace alive) and returns its pid once it unshared. */
async function emptyUserns(withMount: boolean): Promise<number> {
  const unshare = `unshare --user ${withMount ? '--mount ' : ''}sleep 1000`;
  const child = spawn('sh', ['-c', `${unshare} & echo $!; wait`], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  child.stdout.destroy();
  child.unref();
  const pid = Number(line.toString().trim());
  const ours = fs.readlinkSync('/proc/self/ns/user');
  for (let i = 0; i < 1000; i++) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/ns/user`) !== ours) return pid;
    } catch {
      // not there yet
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error('unshare did not happen');
}

async function allocate(client: VarlinkClient, fd: number, name: string, size: number, delegate: number): Promise<Record<string, unknown>> {
  try {
    const params: Record<string, unknown> = { name, size, userNamespaceFileDescriptor: 0 };
    if (delegate) params.delegateContainerRanges = delegate;
    const r = await client.call(METHOD, params, { fds: [fd] });
    return { ok: r.parameters };
  } catch (e) {
    if (e instanceof VarlinkError) return { error: e.error, parameters: e.parameters };
    throw e;
  }
}

async function main(argv: string[]): Promise<Record<string, unknown>> {
  const [cmd, socket, ...rest] = argv;
  const client = await VarlinkClient.connect(socket);
  try {
    switch (cmd) {
      case 'alloc': {
        const [name, size, delegate = '0', mount = ''] = rest;
        const pid = await emptyUserns(mount === 'mount');
        const fd = fs.openSync(`/proc/${pid}/ns/user`, 'r');
        return { pid, ...(await allocate(client, fd, name, Number(size), Number(delegate))) };
      }
      case 'alloc-pid': {
        const [name, pid] = rest;
        const fd = pid.startsWith('fd:') ? Number(pid.slice(3)) : fs.openSync(`/proc/${pid}/ns/user`, 'r');
        return await allocate(client, fd, name, 65536, 0);
      }
      case 'many': {
        const count = Number(rest[0]);
        const errors: string[] = [];
        let ok = 0;
        for (let i = 0; i < count; i++) {
          const pid = await emptyUserns(false);
          const fd = fs.openSync(`/proc/${pid}/ns/user`, 'r'); // keeps the namespace alive
          process.kill(pid, 'SIGKILL');
          const r = await allocate(client, fd, `m${i}`, 65536, 0);
          if (r.ok) ok++;
          else errors.push(`${i}:${String(r.error)}:${JSON.stringify(r.parameters)}`);
        }
        return { ok, errors };
      }
      case 'bench': {
        const count = Number(rest[0]);
        const ms: number[] = [];
        for (let i = 0; i < count; i++) {
          const pid = await emptyUserns(false);
          const fd = fs.openSync(`/proc/${pid}/ns/user`, 'r');
          process.kill(pid, 'SIGKILL');
          const t0 = performance.now();
          const r = await allocate(client, fd, `b${i}`, 65536, 0);
          ms.push(performance.now() - t0);
          if (!r.ok) return { error: r.error };
          fs.closeSync(fd);
        }
        ms.sort((a, b) => a - b);
        return { p50: ms[Math.floor(ms.length / 2)], p90: ms[Math.floor(ms.length * 0.9)], n: ms.length };
      }
      default:
        throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (r) => {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(0);
  },
  (e: unknown) => {
    process.stdout.write(`${JSON.stringify({ crash: String(e instanceof Error ? e.stack : e) })}\n`);
    process.exit(1);
  },
);
