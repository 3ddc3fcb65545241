// Writing uid_map/gid_map of a namespace the daemon only has an fd for (write_userns() in
// systemd's nsresourcework.c): a single-threaded helper joins the namespace, and
// /proc/<helper>/{uid,gid}_map are written in one write(2) each. The kernel requires the writer to sit in the target namespace or its
// parent, so for a nested namespace the write is done by a process that joined the parent.
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { formatMap, writeMapFile, type IdMapLine } from '../sys/idmap-userns.js';

/**
 * Writes both maps of the namespace `usernsFd`, which the helper `pid` (see joinUserNamespace)
 * has joined. `parentFd` is its parent namespace when that is not the daemon's own (null
 * otherwise). The fds are borrowed.
 */
export async function writeMaps(
  usernsFd: number,
  pid: number,
  parentFd: number | null,
  uid: readonly IdMapLine[],
  gid: readonly IdMapLine[],
): Promise<void> {
  if (parentFd === null) {
    writeMapFile(`/proc/${pid}/uid_map`, formatMap(uid));
    writeMapFile(`/proc/${pid}/gid_map`, formatMap(gid));
  } else {
    await writeFromParent(parentFd, usernsFd, formatMap(uid), formatMap(gid));
  }
}

/*
 * The nested case cannot use a forked child as systemd does (Node cannot fork), and an exec'd
 * process keeps its capabilities in the parent namespace only if it is that namespace's root.
 * So: nsenter joins the parent and becomes its root (and keeps full capabilities there), starts
 * a member of the target owned by that root (owner of the target, so no mapping is needed to
 * join it), and writes the member's maps; dash's printf emits each map with one write(2).
 */
const PARENT_WRITER = [
  'nsenter --user=/proc/self/fd/4 --preserve-credentials -- sleep 60 & m=$!',
  'while [ "$(readlink /proc/$m/ns/user)" = "$(readlink /proc/self/ns/user)" ]; do :; done',
  'printf %s "$1" > /proc/$m/uid_map && printf %s "$2" > /proc/$m/gid_map; r=$?',
  'kill -9 $m; exit $r',
].join('\n');

async function writeFromParent(parentFd: number, usernsFd: number, uidMap: string, gidMap: string): Promise<void> {
  const child = spawn('nsenter', ['--user=/proc/self/fd/3', '--', '/bin/sh', '-c', PARENT_WRITER, 'sh', uidMap, gidMap], {
    stdio: ['ignore', 'ignore', 'pipe', parentFd, usernsFd],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 4096) stderr += s;
  });
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  if (code !== 0) {
    const err = new Error(`writing maps from the parent namespace failed (${code ?? signal}): ${stderr.trim()}`);
    throw Object.assign(err, { code: /Operation not permitted/.test(stderr) ? 'EPERM' : 'EIO' });
  }
}
