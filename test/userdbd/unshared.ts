// For the uid-1000 test clients (client.ts, steps-client.ts): a fresh user namespace of the
// caller's, held by a detached `unshare --user [--EXTRA] sleep` under a shell that reaps it (a
// zombie would keep its namespace alive).
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';

/** Starts `unshare --user [--extra] sleep 1000` and returns its pid once it has unshared. */
export async function unshared(extra?: 'net' | 'mount'): Promise<number> {
  const cmd = `unshare --user ${extra ? `--${extra} ` : ''}sleep 1000`;
  const child = spawn('sh', ['-c', `${cmd} & echo $!; wait`], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
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
