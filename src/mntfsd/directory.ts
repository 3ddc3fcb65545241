// io.systemd.MountFileSystem.MountDirectory and MakeDirectory (systemd's mountwork.c).
// Not implemented yet: no handlers, so the server answers MethodNotImplemented.
import type { Logger } from 'pino';
import type { Handler } from '../ipc/server.js';

export interface DirectoryConfig {
  /** Registers returned mounts with userdbd; undefined when no userdbd is configured. */
  registerMount?: (usernsFd: number, mountFd: number) => Promise<void>;
  /** Counts mount fds handed out (for GetStatus). */
  counters: { mountsHandedOut: number };
  log: Logger;
}

export function directoryHandlers(_cfg: DirectoryConfig): Record<string, Handler> {
  return {};
}
