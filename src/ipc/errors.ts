// Varlink error replies: a fully-qualified error name plus its parameters.
import { constants } from 'node:os';

export const ERR = {
  InterfaceNotFound: 'org.varlink.service.InterfaceNotFound',
  MethodNotFound: 'org.varlink.service.MethodNotFound',
  MethodNotImplemented: 'org.varlink.service.MethodNotImplemented',
  InvalidParameter: 'org.varlink.service.InvalidParameter',
  PermissionDenied: 'org.varlink.service.PermissionDenied',
  ExpectedMore: 'org.varlink.service.ExpectedMore',
  System: 'io.systemd.System',
} as const;

export type ErrorParameters = Record<string, unknown>;

/** Thrown by handlers to answer with a Varlink error; thrown by clients on an error reply. */
export class VarlinkError extends Error {
  constructor(
    readonly error: string,
    readonly parameters: ErrorParameters = {},
  ) {
    super(Object.keys(parameters).length ? `${error} ${JSON.stringify(parameters)}` : error);
    this.name = 'VarlinkError';
  }
}

/** Raised when a peer breaks the wire protocol; the connection is dropped. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export const invalidParameter = (parameter: string): VarlinkError =>
  new VarlinkError(ERR.InvalidParameter, { parameter });

export const permissionDenied = (): VarlinkError => new VarlinkError(ERR.PermissionDenied);

interface ErrnoLike {
  code?: unknown;
  errno?: unknown;
}

/** systemd's generic errno error: `io.systemd.System {origin, errnoName, errno}`. */
export function systemError(err: ErrnoLike | string): VarlinkError {
  const name = typeof err === 'string' ? err : typeof err.code === 'string' ? err.code : 'EIO';
  const num = typeof err === 'object' && typeof err.errno === 'number' ? Math.abs(err.errno) : errnoNumber(name);
  return new VarlinkError(ERR.System, { origin: 'linux', errnoName: name, errno: num });
}

// Linux errnos systemd uses that Node's os.constants.errno does not list.
const errnoTable: Record<string, number> = { EUSERS: 87, ENOTUNIQ: 76, ENOPKG: 65, ENOKEY: 126, ERFKILL: 132, EUCLEAN: 117, ...constants.errno };

function errnoNumber(name: string): number {
  return errnoTable[name] ?? errnoTable.EIO;
}
