// mntfsd: the io.systemd.MountFileSystem server, with the verified-mount cache and the link
// to userdbd that registers the mounts it hands out.
import { VarlinkClient } from '../ipc/client.js';
import { VarlinkError } from '../ipc/errors.js';
import { parseInterface } from '../ipc/idl.js';
import { VarlinkServer } from '../ipc/server.js';
import { createLogger } from '../log.js';
import { sdNotify } from '../sys/notify.js';
import { MNTFSD_STATUS_IDL, MOUNT_FILE_SYSTEM_IDL } from './interface.js';
import { MountCache } from './mount-cache.js';
import { mountImageHandler } from './mount-image.js';
import { DEFAULT_VERITY_CERT_DIRECTORIES } from './verity-cert-directories.js';

import { MNTFSD_SOCKET, USERDBD_SOCKET } from '../sockets.js';

export interface MntfsdOptions {
  /** Socket path; ignored when started by socket activation. */
  listen?: string;
  /** userdbd's socket, or null to not register mounts. */
  userdbd?: string | null;
  certificateDirectories?: readonly string[];
  /** Directories whose images are trusted by location (none by default). */
  trustedDirectories?: readonly string[];
  idleExitSeconds?: number;
  cacheSize?: number;
}

export interface Mntfsd {
  server: VarlinkServer;
  cache: MountCache;
  close(): void;
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
    await client.call(
      'io.systemd.NamespaceResource.AddMountToUserNamespace',
      { userNamespaceFileDescriptor: 0, mountFileDescriptor: 1 },
      { fds: [usernsFd, mountFd] },
    );
  } catch (err) {
    if (!(err instanceof VarlinkError && err.error === 'io.systemd.NamespaceResource.UserNamespaceNotRegistered')) throw err;
  } finally {
    client.close();
  }
}

export function startMntfsd(opts: MntfsdOptions = {}): Mntfsd {
  const log = createLogger('mntfsd');
  const cache = new MountCache(opts.cacheSize);
  const counters = { mountsHandedOut: 0 };
  const userdbd = opts.userdbd === undefined ? USERDBD_SOCKET : opts.userdbd;
  const idleMs = opts.idleExitSeconds ? opts.idleExitSeconds * 1000 : undefined;
  const server: VarlinkServer = new VarlinkServer({
    product: 'mountgate mntfsd',
    idleTimeoutMs: idleMs,
    onIdle: () => {
      log.info('idle, exiting');
      close();
    },
    onCall: ({ method, peer, error, ms }) => log.info({ method, uid: peer.uid, error, ms: Math.round(ms * 10) / 10 }, 'call'),
    onInternalError: (err, method) => log.error({ err, method }, 'handler failed'),
  });
  server.addService({
    iface: parseInterface(MOUNT_FILE_SYSTEM_IDL),
    // MountDirectory has no handler: the server answers MethodNotImplemented.
    handlers: {
      MountImage: mountImageHandler({
        certificateDirectories: opts.certificateDirectories ?? DEFAULT_VERITY_CERT_DIRECTORIES,
        trustedDirectories: opts.trustedDirectories ?? [],
        cache,
        counters,
        registerMount: userdbd === null ? undefined : (usernsFd, mountFd) => registerWithUserdbd(userdbd, usernsFd, mountFd),
        log,
      }),
    },
  });
  server.addService({
    iface: parseInterface(MNTFSD_STATUS_IDL),
    handlers: {
      GetStatus: async () => ({
        parameters: {
          cachedImages: cache.list().map((c) => ({ rootHash: c.key, fileSystemType: c.fileSystemType })),
          cacheHits: cache.stats.hits,
          verifications: cache.stats.misses,
          mountsHandedOut: counters.mountsHandedOut,
        },
      }),
    },
  });
  const activated = server.listenActivated();
  if (!activated) server.listenPath(opts.listen ?? MNTFSD_SOCKET);
  log.info({ listen: activated ? `${activated} activated socket(s)` : (opts.listen ?? MNTFSD_SOCKET) }, 'listening');
  sdNotify('READY=1');
  function close(): void {
    server.close();
    cache.clear();
  }
  return { server, cache, close };
}
