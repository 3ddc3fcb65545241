// `mountgate run IMAGE [-- CMD...]`: an unprivileged user runs CMD as root of a fresh user
// namespace whose root file system is a verified, idmapped image. Two daemon calls (a user
// range, then the image mounts); the namespace work itself happens in nshelper, because a
// multi-threaded Node process cannot setns() or unshare a mount namespace.
import fs from 'node:fs';
import os from 'node:os';
import { allocateUserRange, mountImage, MNTFSD_SOCKET, USERDBD_SOCKET, type PartitionMount } from '../client/index.js';
import { VarlinkError } from '../ipc/errors.js';
import { createUserNamespace, spawnEnter } from '../sys/nshelper.js';
import { parseCommand, singlePositional, type Command } from './args.js';

const RUN_USAGE = `Usage: mountgate run IMAGE [OPTIONS] [-- CMD [ARGS...]]

Run CMD (default /bin/sh) inside the signed disk image IMAGE, as an unprivileged user:
creates a user namespace, gets a transient 64K user range for it from userdbd, has mntfsd
verify and mount the image idmapped into that namespace, then runs CMD there as uid 0 in
a private mount and PID namespace. The root partition becomes /, the usr, home, srv, var
and tmp partitions are mounted at /usr, /home, /srv, /var and /var/tmp where the image has
those directories; the host's /dev and a fresh /proc are added where it has /dev and /proc.

Options:
  --userdbd PATH   userdbd socket (default ${USERDBD_SOCKET})
  --mntfsd PATH    mntfsd socket (default ${MNTFSD_SOCKET})
  -h, --help       show this text

Exit status: CMD's exit status (128+N if it was killed by signal N);
  1 a daemon refused (its Varlink error name is printed) or the image cannot be opened;
  2 usage error; 125 the namespace could not be set up; 126 CMD is not executable;
  127 CMD was not found in the image.
`;

/** Where DPS partitions go (UAPI.2), in mount order: /var before /var/tmp. */
const MOUNT_POINTS: ReadonlyArray<readonly [designator: string, path: string]> = [
  ['usr', 'usr'],
  ['home', 'home'],
  ['srv', 'srv'],
  ['var', 'var'],
  ['tmp', 'var/tmp'],
];

class RunError extends Error {}

const RUN: Command = { name: 'run', usage: RUN_USAGE };

/** Splits at the first "--": our options before it, CMD after it. */
function splitCommand(args: string[]): { own: string[]; command: string[] } {
  const i = args.indexOf('--');
  return i < 0 ? { own: args, command: [] } : { own: args.slice(0, i), command: args.slice(i + 1) };
}

/** Turns a failed step into one line naming the daemon's error. */
async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof VarlinkError) {
      const params = Object.keys(err.parameters).length ? ` ${JSON.stringify(err.parameters)}` : '';
      throw new RunError(`${what}: ${err.error}${params}`);
    }
    const e = err as NodeJS.ErrnoException;
    throw new RunError(`${what}: ${e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `daemon not reachable (${e.code})` : e.message}`);
  }
}

/** Waits for the helper; while it runs, the terminal's SIGINT/SIGQUIT are for CMD, not for us. */
function waitHelper(child: ReturnType<typeof spawnEnter>): Promise<number> {
  const ignore = (): void => {};
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  process.on('SIGINT', ignore);
  process.on('SIGQUIT', ignore);
  process.on('SIGTERM', forward);
  process.on('SIGHUP', forward);
  return new Promise<number>((resolve, reject) => {
    const done = (): void => {
      process.off('SIGINT', ignore);
      process.off('SIGQUIT', ignore);
      process.off('SIGTERM', forward);
      process.off('SIGHUP', forward);
    };
    child.once('error', (err) => {
      done();
      reject(new RunError(`cannot start the namespace helper: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      done();
      // The helper itself killed: report it like a shell would.
      resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0));
    });
  });
}

async function run(image: string, command: string[], opts: { userdbd?: string; mntfsd?: string }): Promise<number> {
  const owned: number[] = [];
  const own = (fd: number): number => {
    owned.push(fd);
    return fd;
  };
  try {
    let imageFd: number;
    try {
      imageFd = own(fs.openSync(image, 'r'));
    } catch (err) {
      throw new RunError(`cannot open image '${image}': ${(err as Error).message}`);
    }
    const usernsFd = own(await step('creating a user namespace', () => createUserNamespace()));
    await step('userdbd AllocateUserRange', () =>
      allocateUserRange({ name: `run-${process.pid}`, mangleName: true, userNamespaceFd: usernsFd, socket: opts.userdbd }),
    );
    const mounted = await step('mntfsd MountImage', () =>
      mountImage({ imageFd, userNamespaceFd: usernsFd, readOnly: true, socket: opts.mntfsd }),
    );
    mounted.partitions.forEach((p) => own(p.mountFd));
    const byDesignator = new Map<string, PartitionMount>(mounted.partitions.map((p) => [p.designator, p]));
    const root = byDesignator.get('root');
    if (!root) throw new RunError(`image has no root partition (got: ${[...byDesignator.keys()].join(', ') || 'none'})`);
    const mounts = MOUNT_POINTS.flatMap(([designator, path]) => {
      const p = byDesignator.get(designator);
      return p ? [{ path, fd: p.mountFd }] : [];
    });
    const [cmd = '/bin/sh', ...args] = command;
    const child = spawnEnter({ usernsFd, rootMountFd: root.mountFd, mounts, command: cmd, args, stdio: 'inherit' });
    // spawn() returns after the helper was exec'ed with its copies: ours are no longer needed.
    owned.splice(0).forEach((fd) => fs.closeSync(fd));
    return await waitHelper(child);
  } finally {
    owned.forEach((fd) => fs.closeSync(fd));
  }
}

export async function runCommand(args: string[]): Promise<number> {
  const { own, command } = splitCommand(args);
  const parsed = parseCommand(RUN, own, {
    allowPositionals: true,
    options: {
      userdbd: { type: 'string' },
      mntfsd: { type: 'string' },
    },
  });
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const image = singlePositional(RUN, positionals, 'IMAGE');
  if (typeof image === 'number') return image;
  try {
    return await run(image, command, { userdbd: values.userdbd, mntfsd: values.mntfsd });
  } catch (err) {
    if (!(err instanceof RunError)) throw err;
    process.stderr.write(`mountgate run: ${err.message}\n`);
    return 1;
  }
}
