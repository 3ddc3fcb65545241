// Transitional: mntfsd's interfaces are declared in ipc/interfaces/ (io.systemd.MountFileSystem.ts,
// io.mountgate.Mntfsd.ts). Goes once mntfsd/daemon.ts and mntfsd/mount-image.ts import from there.
import { MntfsdStatus } from '../ipc/interfaces/io.mountgate.Mntfsd.js';
import { MountFileSystem } from '../ipc/interfaces/io.systemd.MountFileSystem.js';

export type { MakeDirectoryParameters, MountDirectoryParameters, MountImageParameters, MountMapMode } from '../ipc/interfaces/io.systemd.MountFileSystem.js';
export const MOUNT_FILE_SYSTEM_IDL = MountFileSystem.idl;
export const MNTFSD_STATUS_IDL = MntfsdStatus.idl;
