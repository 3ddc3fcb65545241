// The client side a container manager imports: two calls (a user range for its namespace,
// then the image mounts), typed, with the Varlink error name on every failure.
import * as fs from 'node:fs';
import { VarlinkClient, callMethod } from '../ipc/client.js';
import { invalidParameter } from '../ipc/errors.js';
import { MountFileSystem, type PartitionDesignator } from '../ipc/interfaces/io.systemd.MountFileSystem.js';
import { NamespaceResource } from '../ipc/interfaces/io.systemd.NamespaceResource.js';
import { MNTFSD_SOCKET, USERDBD_SOCKET } from '../sockets.js';

export { VarlinkError } from '../ipc/errors.js';
export { MNTFSD_SOCKET, USERDBD_SOCKET };

export interface AllocateUserRangeOptions {
  /** Short name; non-root callers get it prefixed with their uid by the daemon. */
  name: string;
  /** An fd of the new, still unmapped user namespace (e.g. open('/proc/PID/ns/user')). */
  userNamespaceFd: number;
  size?: 1 | 65536;
  target?: number;
  mangleName?: boolean;
  /** Extra 64K ranges mapped 1:1 so the namespace can allocate for nested containers. */
  delegateContainerRanges?: number;
  socket?: string;
}

export interface PartitionMount {
  designator: PartitionDesignator;
  writable: boolean;
  growFileSystem: boolean;
  partitionNumber: number | null;
  architecture: string | null;
  partitionUuid: string | null;
  fileSystemType: string;
  partitionLabel: string | null;
  size: number;
  offset: number;
  /** Detached mount; attach it with move_mount() and close it when done. */
  mountFd: number;
}

export interface MountedImage {
  partitions: PartitionMount[];
  imagePolicy: string;
  imageSize: number;
  sectorSize: number;
  imageName: string | null;
  imageUuid: string | null;
}

export interface MountImageOptions {
  imageFd: number;
  userNamespaceFd?: number;
  readOnly?: boolean;
  growFileSystems?: boolean;
  imagePolicy?: string;
  socket?: string;
}

async function withClient<T>(socket: string, fn: (c: VarlinkClient) => Promise<T>): Promise<T> {
  const client = await VarlinkClient.connect(socket);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Maps a transient range into the namespace; returns the final namespace name. */
export async function allocateUserRange(opts: AllocateUserRangeOptions): Promise<string> {
  return withClient(opts.socket ?? USERDBD_SOCKET, async (c) => {
    const reply = await callMethod(
      c,
      NamespaceResource,
      'AllocateUserRange',
      {
        name: opts.name,
        size: opts.size ?? 65536,
        userNamespaceFileDescriptor: 0,
        ...(opts.target !== undefined && { target: opts.target }),
        ...(opts.mangleName !== undefined && { mangleName: opts.mangleName }),
        ...(opts.delegateContainerRanges !== undefined && { delegateContainerRanges: opts.delegateContainerRanges }),
      },
      { fds: [opts.userNamespaceFd] },
    );
    reply.fds.forEach((fd) => fs.closeSync(fd));
    return reply.parameters.name ?? opts.name;
  });
}

/** Registers a namespace the caller mapped itself (its own uid), so resources can be attached. */
export async function registerUserNamespace(opts: { name: string; userNamespaceFd: number; mangleName?: boolean; socket?: string }): Promise<string> {
  return withClient(opts.socket ?? USERDBD_SOCKET, async (c) => {
    const reply = await callMethod(
      c,
      NamespaceResource,
      'RegisterUserNamespace',
      { name: opts.name, userNamespaceFileDescriptor: 0, ...(opts.mangleName !== undefined && { mangleName: opts.mangleName }) },
      { fds: [opts.userNamespaceFd] },
    );
    reply.fds.forEach((fd) => fs.closeSync(fd));
    return reply.parameters.name ?? opts.name;
  });
}

/** Verifies and mounts the image; every returned mountFd belongs to the caller. */
export async function mountImage(opts: MountImageOptions): Promise<MountedImage> {
  return withClient(opts.socket ?? MNTFSD_SOCKET, async (c) => {
    const fds = [opts.imageFd, ...(opts.userNamespaceFd !== undefined ? [opts.userNamespaceFd] : [])];
    const reply = await callMethod(
      c,
      MountFileSystem,
      'MountImage',
      {
        imageFileDescriptor: 0,
        ...(opts.userNamespaceFd !== undefined && { userNamespaceFileDescriptor: 1 }),
        ...(opts.readOnly !== undefined && { readOnly: opts.readOnly }),
        ...(opts.growFileSystems !== undefined && { growFileSystems: opts.growFileSystems }),
        ...(opts.imagePolicy !== undefined && { imagePolicy: opts.imagePolicy }),
      },
      { fds },
    );
    const p = reply.parameters;
    const used = new Set<number>();
    try {
      const partitions = p.partitions.map((x): PartitionMount => {
        const index = x.mountFileDescriptor;
        const mountFd = reply.fds[index];
        if (mountFd === undefined || used.has(index)) throw invalidParameter('mountFileDescriptor');
        used.add(index);
        return {
          designator: x.designator,
          writable: x.writable,
          growFileSystem: x.growFileSystem,
          partitionNumber: x.partitionNumber ?? null,
          architecture: x.architecture ?? null,
          partitionUuid: x.partitionUuid ?? null,
          fileSystemType: x.fileSystemType,
          partitionLabel: x.partitionLabel ?? null,
          size: x.size,
          offset: x.offset,
          mountFd,
        };
      });
      const unclaimed = reply.fds.filter((_, i) => !used.has(i));
      unclaimed.forEach((fd) => fs.closeSync(fd));
      return {
        partitions,
        imagePolicy: p.imagePolicy,
        imageSize: p.imageSize,
        sectorSize: p.sectorSize,
        imageName: p.imageName ?? null,
        imageUuid: p.imageUuid ?? null,
      };
    } catch (err) {
      reply.fds.forEach((fd) => fs.closeSync(fd));
      throw err;
    }
  });
}
