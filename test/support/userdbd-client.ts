// Unprivileged test client for userdbd (run as uid 1000 via setpriv, or as root inside an
// allocated namespace). Prints one JSON line on stdout.
//   alloc SOCKET NAME SIZE [DELEGATE]   new empty userns (a detached `unshare --user sleep`),
//                                       AllocateUserRange; prints {pid, ok|error}
//   alloc-pid SOCKET NAME PID|fd:N       AllocateUserRange for /proc/PID/ns/user or inherited fd N
//   many SOCKET COUNT                    COUNT namespaces (kept alive by fds), one call each;
//                                        prints {ok, errors}
//   bench SOCKET COUNT                   round-trip times of COUNT allocations; prints {p50, ms}
import fs from 'node:fs';
import { VarlinkClient } from '../../src/ipc/client.js';
import { printJsonLine } from './json-line.js';
import { unshared } from './userns.js';
import { VarlinkError } from '../../src/ipc/errors.js';

const METHOD = 'io.systemd.NamespaceResource.AllocateUserRange';

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
        const pid = await unshared(mount === 'mount' ? 'mount' : undefined);
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
          const pid = await unshared();
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
          const pid = await unshared();
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

printJsonLine(main(process.argv.slice(2)));
