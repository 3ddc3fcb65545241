// Failures of image handling: io.systemd.MountFileSystem's errors (declared, with their class
// MountFsError, in ipc/interfaces/io.systemd.MountFileSystem.ts), and the shorthands dissection
// and verification use.
import { MountFsError, type MountFsErrorName } from '../ipc/interfaces/io.systemd.MountFileSystem.js';

export { MountFsError, type MountFsErrorName };

export const incompatible = (detail: string): MountFsError => new MountFsError('IncompatibleImage', detail);
export const verityFailure = (detail: string): MountFsError => new MountFsError('VerityFailure', detail);

export function isMountFsError(err: unknown, kind?: MountFsErrorName): err is MountFsError {
  return err instanceof MountFsError && (kind === undefined || err.kind === kind);
}
