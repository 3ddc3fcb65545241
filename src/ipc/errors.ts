// mountgate's one error vocabulary (after undici's lib/core/errors.js: one base class, callers
// branch on the class or the name, never on message text).
//
//   VarlinkError      base: `error` is the fully-qualified Varlink error name, `parameters` what
//                     goes on the wire with it, the message (the optional `detail`) is for logs.
//                     Each interface module (interfaces/) names its errors from its IDL and
//                     subclasses it (MountFsError, NamespaceResourceError, UserDatabaseError);
//                     or throw `new VarlinkError(Interface.error.Name)`.
//   SystemError       io.systemd.System {origin, errnoName, errno}: systemd's generic errno error
//                     (systemError('EUSERS'), systemError(sysErr)). errno is always positive.
//   ClientDisconnected  the client went away mid-call; a long handler throws it to stop early.
//   ProtocolError     a peer broke the wire protocol; the connection is dropped, nothing replied.
//
// What a handler throws reaches the wire through toVarlinkError() alone, applied by the server
// (server.ts handle()): a VarlinkError goes as it is. Anything else is logged through
// onInternalError as the daemon's own failure, then translated: an errno-coded error (SysError,
// the addon's, Node's fs errors) becomes io.systemd.System, anything else io.systemd.System EIO.
// A handler whose errno failures are the caller's doing (mntfsd's calls on the caller's files)
// applies toVarlinkError() itself, so they are answered the same way without that log line.
import { constants } from 'node:os';
import { IoSystemd } from './interfaces/io.systemd.js';
import { VarlinkService } from './interfaces/org.varlink.service.js';

/** The errors a server answers with by itself, read from org.varlink.service and io.systemd. */
export const ERR = { ...VarlinkService.error, System: IoSystemd.error.System } as const;

export type ErrorParameters = Record<string, unknown>;

/** Thrown by handlers to answer with a Varlink error; thrown by clients on an error reply. */
export class VarlinkError extends Error {
  /**
   * @param error fully-qualified Varlink error name, e.g. io.systemd.NamespaceResource.NameExists
   * @param parameters the error's parameters as they go on the wire
   * @param detail for logs only (the message); never sent
   */
  constructor(
    readonly error: string,
    readonly parameters: ErrorParameters = {},
    detail?: string,
  ) {
    super(detail ?? (Object.keys(parameters).length ? `${error} ${JSON.stringify(parameters)}` : error));
    this.name = 'VarlinkError';
  }
}

/** systemd's generic errno error: `io.systemd.System {origin, errnoName, errno}`. */
export class SystemError extends VarlinkError {
  /** Positive, as the kernel's errno. */
  readonly errno: number;

  constructor(
    readonly errnoName: string,
    errno?: number,
  ) {
    const num = errno !== undefined && errno > 0 ? errno : errnoNumber(errnoName);
    super(ERR.System, { origin: 'linux', errnoName, errno: num });
    this.name = 'SystemError';
    this.errno = num;
  }
}

/** The client disconnected while its call ran. Nothing is replied (there is no one to reply
 * to); the call is logged as io.systemd.System ECONNRESET. */
export class ClientDisconnected extends SystemError {
  constructor() {
    super('ECONNRESET');
    this.name = 'ClientDisconnected';
    this.message = 'client disconnected';
  }
}

/** Raised when a peer breaks the wire protocol; the connection is dropped. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export const invalidParameter = (parameter: string): VarlinkError => new VarlinkError(ERR.InvalidParameter, { parameter });

export const permissionDenied = (): VarlinkError => new VarlinkError(ERR.PermissionDenied);

/** An error carrying an errno: SysError (src/sys/errors.ts), the addon's, Node's own. */
export interface ErrnoLike {
  code: string;
  errno?: unknown;
}

const ERRNO_NAME = /^E[A-Z0-9]+$/;

/** Is this an errno-coded error (its `code` an errno name, not one of Node's ERR_* codes)? */
export function isErrnoError(err: unknown): err is Error & ErrnoLike {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && ERRNO_NAME.test(code);
}

/** io.systemd.System for an errno name or an errno-coded error. Node's own errors carry the
 * errno negated (libuv's convention): their number is looked up by name instead. */
export function systemError(err: ErrnoLike | string): SystemError {
  if (typeof err === 'string') return new SystemError(err);
  return new SystemError(err.code, typeof err.errno === 'number' && err.errno > 0 ? err.errno : undefined);
}

/**
 * The one translation of a thrown value to the wire: a VarlinkError as it is, an errno-coded
 * error as io.systemd.System; undefined for anything else (a bug: the server logs it and
 * answers io.systemd.System EIO).
 */
export function toVarlinkError(err: unknown): VarlinkError | undefined {
  if (err instanceof VarlinkError) return err;
  if (isErrnoError(err)) return systemError(err);
  return undefined;
}

// Linux errnos systemd uses that Node's os.constants.errno does not list.
const errnoTable: Record<string, number> = { EUSERS: 87, ENOTUNIQ: 76, ENOPKG: 65, ENOKEY: 126, ERFKILL: 132, EUCLEAN: 117, ...constants.errno };

function errnoNumber(name: string): number {
  return errnoTable[name] ?? errnoTable.EIO!;
}
