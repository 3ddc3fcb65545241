// The unprivileged side of the end-to-end tests, run as uid 1000 via setpriv. Uses only the
// public client library, imported by the package's name like a container manager would, and
// prints one JSON line. Run as `node $(userScript(E2E_CLIENT))` (clients.ts, user-package.ts), not with tsx.
//
//   client.ts allocate USERDBD_SOCKET NAME NS_PID [DELEGATE]
//   client.ts mount MNTFSD_SOCKET IMAGE NS_PID|none [--policy P] [--rw-image] [--scribble]
//
// `mount` reports, per partition, a file's owner as the host sees it (through the detached
// mount fd) and as root of the namespace sees it (stat run inside it via nsenter).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { allocateUserRange, mountImage, VarlinkError } from 'mountgate';

const PROBE = 'etc/hello';

function fail(err: unknown): never {
  const out = err instanceof VarlinkError ? { error: err.error, parameters: err.parameters } : { error: 'exception', message: String(err) };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

async function allocate(args: string[]): Promise<void> {
  const [socket, name, pid, delegate] = args;
  const nsFd = fs.openSync(`/proc/${pid}/ns/user`, 'r');
  const finalName = await allocateUserRange({
    socket: socket!,
    name: name!,
    userNamespaceFd: nsFd,
    ...(delegate ? { delegateContainerRanges: Number(delegate) } : {}),
  });
  process.stdout.write(`${JSON.stringify({ name: finalName })}\n`);
}

async function mount(args: string[]): Promise<void> {
  const [socket, image, pid, ...flags] = args;
  const policyAt = flags.indexOf('--policy');
  const imageFd = fs.openSync(image!, flags.includes('--rw-image') ? 'r+' : 'r');
  const nsFd = pid === 'none' ? undefined : fs.openSync(`/proc/${pid}/ns/user`, 'r');
  const result = await mountImage({
    socket: socket!,
    imageFd,
    userNamespaceFd: nsFd,
    ...(policyAt >= 0 ? { imagePolicy: flags[policyAt + 1] } : {}),
  });
  if (flags.includes('--scribble')) {
    // The caller owns the image: overwrite everything after the partition table.
    const size = fs.fstatSync(imageFd).size;
    const zeros = Buffer.alloc(1 << 20);
    for (let pos = 1 << 20; pos < size; pos += zeros.length) fs.writeSync(imageFd, zeros, 0, Math.min(zeros.length, size - pos), pos);
    fs.fsyncSync(imageFd);
  }
  const partitions = result.partitions.map((p) => {
    const file = `/proc/self/fd/${p.mountFd}/${PROBE}`;
    let host: { uid: number; gid: number; content: string } | null = null;
    try {
      const st = fs.statSync(file);
      host = { uid: st.uid, gid: st.gid, content: fs.readFileSync(file, 'utf8') };
    } catch {
      host = null;
    }
    let insideUid: number | null = null;
    if (pid !== 'none' && host) {
      const r = spawnSync('nsenter', ['-t', pid!, '-U', '--', 'stat', '-c', '%u', `/proc/self/fd/3/${PROBE}`], {
        stdio: ['ignore', 'pipe', 'pipe', p.mountFd],
        encoding: 'utf8',
      });
      insideUid = r.status === 0 ? Number(r.stdout.trim()) : null;
    }
    let writable = true;
    try {
      fs.writeFileSync(`/proc/self/fd/${p.mountFd}/probe-write`, 'x');
    } catch {
      writable = false;
    }
    const rootUid = fs.statSync(`/proc/self/fd/${p.mountFd}`).uid;
    return { designator: p.designator, fileSystemType: p.fileSystemType, writable: p.writable, canWrite: writable, rootUid, host, insideUid };
  });
  process.stdout.write(`${JSON.stringify({ partitions, imagePolicy: result.imagePolicy, sectorSize: result.sectorSize })}\n`);
}

const [cmd, ...rest] = process.argv.slice(2);
(cmd === 'allocate' ? allocate(rest) : cmd === 'mount' ? mount(rest) : Promise.reject(new Error(`unknown command ${cmd}`))).catch(fail);
