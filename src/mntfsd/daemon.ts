// mntfsd: the io.systemd.MountFileSystem server, with the verified-mount cache and the link
// to userdbd that registers the mounts it hands out. At start it picks how verified partitions
// are served (kernel dm-verity where device-mapper exists, else the verified copy) and removes
// dm-verity devices a killed predecessor left behind.
import { callMethod, VarlinkClient } from '../ipc/client.js';
import { VarlinkError } from '../ipc/errors.js';
import { startHost, type Hosted, type HostedOptions } from '../ipc/host.js';
import { serve } from '../ipc/interfaces/define.js';
import { MntfsdStatus } from '../ipc/interfaces/io.mountgate.Mntfsd.js';
import { MountFileSystem } from '../ipc/interfaces/io.systemd.MountFileSystem.js';
import { NamespaceResource } from '../ipc/interfaces/io.systemd.NamespaceResource.js';
import { createLogger } from '../log.js';
import { MountCache, type VerityBackend } from './mount-cache.js';
import { cleanStaleVerityDevices, dmVerityAvailable } from './dm-verity.js';
import { directoryMethods } from './directory.js';
import { mountImageHandler } from './mount-image.js';
import { DEFAULT_VERITY_CERT_DIRECTORIES } from './signature.js';

import { MNTFSD_SOCKET, USERDBD_SOCKET } from '../sockets.js';

export interface MntfsdOptions extends HostedOptions {
  /** userdbd's socket, or null to not register mounts. */
  userdbd?: string | null;
  certificateDirectories?: readonly string[];
  /** Directories whose images are trusted by location (none by default). */
  trustedDirectories?: readonly string[];
  cacheSize?: number;
  /** Root-only directory where verified copies that exceed copyMemoryBudget are kept. */
  stateDir?: string;
  /** Bytes of verified copies kept in memory before they go to stateDir. */
  copyMemoryBudget?: number;
  /** 'auto' (default): dm-verity when the kernel has it, else the verified copy. */
  verity?: VerityBackend | 'auto';
}

export interface Mntfsd extends Hosted {
  readonly cache: MountCache;
  /** The backend chosen at start. */
  readonly verity: VerityBackend;
}

/** AddMountToUserNamespace; a namespace userdbd does not manage is "nothing to do", as in systemd's client. */
async function registerWithUserdbd(socket: string, usernsFd: number, mountFd: number): Promise<void> {
  let client: VarlinkClient;
  try {
    client = await VarlinkClient.connect(socket);
  } catch {
    return; // no userdbd running: the mount still works, it is just not recorded
  }
  try {
    await callMethod(client, NamespaceResource, 'AddMountToUserNamespace', { userNamespaceFileDescriptor: 0, mountFileDescriptor: 1 }, { fds: [usernsFd, mountFd] });
  } catch (err) {
    if (!(err instanceof VarlinkError && err.error === NamespaceResource.error.UserNamespaceNotRegistered)) throw err;
  } finally {
    client.close();
  }
}

/** Resolves 'auto'; asking for dm-verity where there is none is a start-up error, not a silent copy. */
function chooseVerityBackend(asked: VerityBackend | 'auto', dm: boolean): VerityBackend {
  if (asked === 'dm-verity' && !dm) throw new Error('dm-verity asked for, but device-mapper or its verity target is missing (/dev/mapper/control)');
  return asked === 'auto' ? (dm ? 'dm-verity' : 'copy') : asked;
}

export function startMntfsd(opts: MntfsdOptions = {}): Mntfsd {
  const log = opts.logger ?? createLogger('mntfsd');
  const dm = dmVerityAvailable();
  const verity = chooseVerityBackend(opts.verity ?? 'auto', dm);
  // Whatever this instance uses: devices of a killed predecessor are ours to clean.
  if (dm) cleanStaleVerityDevices(log);
  const cache = new MountCache(opts.cacheSize, { stateDir: opts.stateDir, memoryBudget: opts.copyMemoryBudget });
  const counters = { mountsHandedOut: 0 };
  const userdbd = opts.userdbd === undefined ? USERDBD_SOCKET : opts.userdbd;
  const registerMount = userdbd === null ? undefined : (usernsFd: number, mountFd: number) => registerWithUserdbd(userdbd, usernsFd, mountFd);
  const mountFileSystem = serve(MountFileSystem, {
    ...directoryMethods({ registerMount, counters, log }),
    MountImage: mountImageHandler({
      certificateDirectories: opts.certificateDirectories ?? DEFAULT_VERITY_CERT_DIRECTORIES,
      trustedDirectories: opts.trustedDirectories ?? [],
      cache,
      verity,
      counters,
      registerMount,
      log,
    }),
  });
  const status = serve(MntfsdStatus, {
    GetStatus: async () => ({
      parameters: {
        cachedImages: cache.list().map((c) => ({ rootHash: c.rootHash, fileSystemType: c.fileSystemType })),
        cacheHits: cache.stats.hits,
        verifications: cache.stats.misses,
        mountsHandedOut: counters.mountsHandedOut,
        // Without probing: a probe closes and remakes the base mounts.
        copyBytesInMemory: cache.usage().memoryBytes,
        copyBytesOnDisk: cache.usage().diskBytes,
        copyMemoryBudget: cache.storage.memoryBudget,
      },
    }),
  });
  const host = startHost({
    log,
    product: 'mountgate mntfsd',
    services: [mountFileSystem, status],
    listen: opts.listen ?? MNTFSD_SOCKET,
    env: opts.env,
    idleExitSeconds: opts.idleExitSeconds,
    // Nothing is lost: the cache's base mounts go, while every mount handed out keeps its
    // superblock, and with it its copy or its dm-verity device (removal is deferred, loops
    // autoclear) until the caller lets go. The next instance starts with an empty cache and
    // clears what a killed one left (cleanStaleVerityDevices above).
    onClose: () => cache.clear(),
    ownsProcess: opts.ownsProcess,
  });
  host.ready('listening', { verity });
  return { cache, verity, done: host.done, close: host.close };
}
