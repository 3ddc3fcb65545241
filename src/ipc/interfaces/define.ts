// What an interface module is made of (after varlink/go's interface generator): the IDL text,
// the parsed interface, its method and error names qualified from the IDL, and the types of
// its parameters, replies and errors, generated from the same text (typegen.ts). Handlers are
// written against those types through serve(); callers call through callMethod() (client.ts).
import { parseInterface, type Interface } from '../idl.js';
import type { CallContext, Handler, MethodOptions, Service } from '../server.js';

/** A method's parameter and reply types (generated per interface: `Methods`). */
export interface MethodTypes {
  parameters: object;
  reply: object;
}

export type MethodMap = Record<string, MethodTypes>;
/** Each error of an interface with the type of its parameters (generated: `Errors`). */
export type ErrorMap = Record<string, object>;

export interface VarlinkInterface<M extends MethodMap, E extends ErrorMap> {
  /** e.g. io.systemd.NamespaceResource */
  readonly name: string;
  /** The IDL text, served verbatim by GetInterfaceDescription. */
  readonly idl: string;
  readonly iface: Interface;
  /** Fully-qualified method names, read from the IDL: `method.AllocateUserRange`. */
  readonly method: { readonly [K in keyof M]: string };
  /** Fully-qualified error names, read from the IDL: `error.NameExists`. */
  readonly error: { readonly [K in keyof E]: string };
}

/** Parses the IDL once; `M` and `E` are the types typegen.ts generated from the same text
 * (test/ipc/interfaces.test.ts checks they are current). */
export function defineInterface<M extends MethodMap, E extends ErrorMap>(idl: string): VarlinkInterface<M, E> {
  const iface = parseInterface(idl);
  const qualified = (names: Iterable<string>): Readonly<Record<string, string>> => Object.freeze(Object.fromEntries([...names].map((n) => [n, `${iface.name}.${n}`])));
  return {
    name: iface.name,
    idl,
    iface,
    method: qualified(iface.methods.keys()) as VarlinkInterface<M, E>['method'],
    error: qualified(iface.errors.keys()) as VarlinkInterface<M, E>['error'],
  };
}

/** A method handler written against its generated types. */
export type MethodHandler<T extends MethodTypes> = (parameters: T['parameters'], ctx: CallContext) => Promise<{ parameters: T['reply']; fds?: number[] }>;

export type MethodHandlers<M extends MethodMap> = { [K in keyof M]?: MethodHandler<M[K]> };

/**
 * The Service the server hosts. The server checks every call against `def.iface` (validateCall:
 * declared fields only, each of its declared type) before a handler runs, so this is the one
 * place the checked parameters take their generated type. A method without a handler answers
 * MethodNotImplemented.
 */
export function serve<M extends MethodMap, E extends ErrorMap>(
  def: VarlinkInterface<M, E>,
  handlers: MethodHandlers<M>,
  options?: { [K in keyof M]?: MethodOptions },
): Service {
  return { iface: def.iface, handlers: handlers as Record<string, Handler>, options: options as Record<string, MethodOptions> | undefined };
}
