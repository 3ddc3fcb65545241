// Typed failures of image handling, named after the io.systemd.MountFileSystem errors that
// vl_method_mount_image (systemd's mountwork.c) answers with, so the service can send the same.
import { VarlinkError } from '../ipc/errors.js';

export const MOUNTFS_INTERFACE = 'io.systemd.MountFileSystem';

export type MountFsErrorName =
  | 'IncompatibleImage'
  | 'MultipleRootPartitionsFound'
  | 'RootPartitionNotFound'
  | 'DeniedByImagePolicy'
  | 'KeyNotFound'
  | 'VerityFailure'
  | 'BadFileDescriptorFlags';

/** errno systemd uses for each error (for logs and the io.systemd.System fallback). */
export const MOUNTFS_ERRNO: Record<MountFsErrorName, string> = {
  IncompatibleImage: 'ENOPKG',
  MultipleRootPartitionsFound: 'ENOTUNIQ',
  RootPartitionNotFound: 'ENXIO',
  DeniedByImagePolicy: 'ERFKILL',
  KeyNotFound: 'ENOKEY',
  VerityFailure: 'EBADMSG',
  BadFileDescriptorFlags: 'EBADF',
};

/** An io.systemd.MountFileSystem error; the server sends it as it is (see ipc/errors.ts). */
export class MountFsError extends VarlinkError {
  /** `detail` is for logs only; it never goes on the wire. */
  constructor(
    readonly kind: MountFsErrorName,
    readonly detail: string,
    parameters: Record<string, unknown> = {},
  ) {
    super(`${MOUNTFS_INTERFACE}.${kind}`, parameters, `${kind}: ${detail}`);
    this.name = 'MountFsError';
  }

  /** Fully-qualified Varlink error name, e.g. io.systemd.MountFileSystem.IncompatibleImage. */
  get varlinkName(): string {
    return this.error;
  }

  /** Kept while callers convert: a MountFsError is a VarlinkError already. */
  toVarlink(): VarlinkError {
    return this;
  }
}

export const incompatible = (detail: string): MountFsError => new MountFsError('IncompatibleImage', detail);
export const verityFailure = (detail: string): MountFsError => new MountFsError('VerityFailure', detail);

export function isMountFsError(err: unknown, kind?: MountFsErrorName): err is MountFsError {
  return err instanceof MountFsError && (kind === undefined || err.kind === kind);
}
