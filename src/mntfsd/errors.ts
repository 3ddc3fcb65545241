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

export class MountFsError extends Error {
  override name = 'MountFsError';

  /** `detail` is for logs only; it never goes on the wire. */
  constructor(
    readonly kind: MountFsErrorName,
    readonly detail: string,
    readonly parameters: Record<string, unknown> = {},
  ) {
    super(`${kind}: ${detail}`);
  }

  /** Fully-qualified Varlink error name, e.g. io.systemd.MountFileSystem.IncompatibleImage. */
  get varlinkName(): string {
    return `${MOUNTFS_INTERFACE}.${this.kind}`;
  }

  toVarlink(): VarlinkError {
    return new VarlinkError(this.varlinkName, this.parameters);
  }
}

export const incompatible = (detail: string): MountFsError => new MountFsError('IncompatibleImage', detail);
export const verityFailure = (detail: string): MountFsError => new MountFsError('VerityFailure', detail);

export function isMountFsError(err: unknown, kind?: MountFsErrorName): err is MountFsError {
  return err instanceof MountFsError && (kind === undefined || err.kind === kind);
}
