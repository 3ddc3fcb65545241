// Shared code of the org.varlink.certification conformance server and client: the
// reference values (Python varlink semantics), the per-client state machine of the
// server, and the client sequence.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VarlinkError } from '../../src/ipc/errors.js';
import { parseInterface, type Interface } from '../../src/ipc/idl.js';
import type { CallContext, Handler, Service } from '../../src/ipc/server.js';
import type { VarlinkClient } from '../../src/ipc/client.js';

export const IFACE = 'org.varlink.certification';
export const ERR_CLIENT_ID = `${IFACE}.ClientIdError`;
export const ERR_CERTIFICATION = `${IFACE}.CertificationError`;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Params = Record<string, unknown>;

export function loadInterface(): Interface {
  const file = fileURLToPath(new URL('./org.varlink.certification.varlink', import.meta.url));
  return parseInterface(fs.readFileSync(file, 'utf8'));
}

// ---- reference values -------------------------------------------------------------

const T05 = { bool: false, int: 2, float: Math.PI, string: 'a lot of string' };
const MAP = { foo: 'Foo', bar: 'Bar' };
const SET = { one: {}, two: {}, three: {} };
export const MYTYPE = {
  object: { method: `${IFACE}.Test09`, parameters: { map: { foo: 'Foo', bar: 'Bar' } } },
  enum: 'two',
  struct: { first: 1, second: '2' },
  array: ['one', 'two', 'three'],
  dictionary: { foo: 'Foo', bar: 'Bar' },
  stringset: { one: {}, two: {}, three: {} },
  nullable: null,
  nullable_array_struct: null,
  interface: {
    foo: [null, { foo: 'foo', bar: 'bar' }, null, { one: 'foo', two: 'bar' }],
    anon: { foo: true, bar: false },
  },
};
export const REPLIES10 = Array.from({ length: 10 }, (_, i) => `Reply number ${i + 1}`);

/** For each method: the parameters it must receive (without client_id) and its reply. */
export const SEQUENCE: ReadonlyArray<{ method: string; wants: Params; reply: Params }> = [
  { method: 'Test01', wants: {}, reply: { bool: true } },
  { method: 'Test02', wants: { bool: true }, reply: { int: 1 } },
  { method: 'Test03', wants: { int: 1 }, reply: { float: 1.0 } },
  { method: 'Test04', wants: { float: 1.0 }, reply: { string: 'ping' } },
  { method: 'Test05', wants: { string: 'ping' }, reply: T05 },
  { method: 'Test06', wants: T05, reply: { struct: T05 } },
  { method: 'Test07', wants: { struct: T05 }, reply: { map: MAP } },
  { method: 'Test08', wants: { map: MAP }, reply: { set: SET } },
  { method: 'Test09', wants: { set: SET }, reply: { mytype: MYTYPE } },
  { method: 'Test10', wants: { mytype: MYTYPE }, reply: { string: REPLIES10[9] } },
  { method: 'Test11', wants: { last_more_replies: REPLIES10 }, reply: {} },
  { method: 'End', wants: {}, reply: { all_ok: true } },
];

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Deep equality of JSON values; object key order does not matter, and an absent
 * object member equals a null one (Varlink: an omitted nullable field is null). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  }
  if (isObj(a) && isObj(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) if (!jsonEqual(a[k] ?? null, b[k] ?? null)) return false;
    return true;
  }
  return false;
}

export function newClientId(): string {
  return randomBytes(16).toString('hex');
}

// ---- server -------------------------------------------------------------------------

interface ClientState {
  next: number; // index into SEQUENCE of the next expected method
  touched: number;
}

const MAX_CLIENTS = 1000;
const CLIENT_TTL_MS = 10 * 60_000;

export function createCertificationService(): Service {
  const clients = new Map<string, ClientState>();
  const certErr = (wants: unknown, got: unknown): VarlinkError => new VarlinkError(ERR_CERTIFICATION, { wants, got });
  /** The call as it arrived on the wire, as far as the handler can see it. */
  const rawCall = (ctx: CallContext, params: Params): Params => ({
    method: ctx.method,
    ...(Object.keys(params).length ? { parameters: params } : {}),
    ...(ctx.more ? { more: true } : {}),
    ...(ctx.oneway ? { oneway: true } : {}),
  });

  const handlers: Record<string, Handler> = {
    Start: async (params, ctx) => {
      const wants = { method: `${IFACE}.Start` };
      const got = rawCall(ctx, params);
      if (!jsonEqual(wants, got)) throw certErr(wants, got);
      const now = Date.now();
      for (const [id, st] of clients) if (now - st.touched > CLIENT_TTL_MS) clients.delete(id);
      if (clients.size >= MAX_CLIENTS) clients.delete(clients.keys().next().value as string);
      const id = newClientId();
      clients.set(id, { next: 0, touched: now });
      return { parameters: { client_id: id } };
    },
  };

  SEQUENCE.forEach((step, index) => {
    handlers[step.method] = async (params, ctx) => {
      const { client_id: clientId, ...rest } = params;
      const st = typeof clientId === 'string' ? clients.get(clientId) : undefined;
      if (!st) throw new VarlinkError(ERR_CLIENT_ID);
      st.touched = Date.now();
      const expected = SEQUENCE[st.next];
      if (st.next !== index) {
        throw certErr({ method: `${IFACE}.${expected.method}` }, rawCall(ctx, params));
      }
      if (!jsonEqual(step.wants, rest)) throw certErr(step.wants, rest);
      if (step.method === 'Test10' && !ctx.more) throw certErr({ more: true }, rawCall(ctx, params));
      if (step.method === 'Test11' && !ctx.oneway) throw certErr({ oneway: true }, rawCall(ctx, params));
      st.next++;
      if (step.method === 'Test10') for (const s of REPLIES10.slice(0, -1)) ctx.stream({ string: s });
      if (step.method === 'End') clients.delete(clientId as string);
      return { parameters: step.reply };
    };
  });

  return { iface: loadInterface(), handlers, options: { Test10: { requiresMore: true } } };
}

// ---- client -------------------------------------------------------------------------

export interface ClientResult {
  allOk: boolean;
  /** Replies that differed from the reference values (passed on unchanged anyway). */
  deviations: string[];
  log: string[];
}

export class CertificationFailure extends Error {
  override name = 'CertificationFailure';
}

/** Runs Start … End; every reply is passed on as the next call's parameters, as the
 * protocol demands. With strict, a reply differing from the reference is fatal. */
export async function runCertificationClient(client: VarlinkClient, opts: { strict?: boolean } = {}): Promise<ClientResult> {
  const deviations: string[] = [];
  const log: string[] = [];
  const check = (method: string, wants: unknown, got: unknown): void => {
    if (jsonEqual(wants, got)) return;
    const msg = `${method}: reply ${JSON.stringify(got)} differs from the reference ${JSON.stringify(wants)}`;
    if (opts.strict) throw new CertificationFailure(msg);
    deviations.push(msg);
  };
  const m = (name: string): string => `${IFACE}.${name}`;
  const step = async (name: string, params?: Params): Promise<Params> => {
    try {
      const { parameters } = await client.call(m(name), params);
      log.push(`${name}: ${JSON.stringify(parameters)}`);
      return parameters;
    } catch (e) {
      throw new CertificationFailure(`${name} failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  const start = await step('Start');
  const clientId = start.client_id;
  if (typeof clientId !== 'string' || clientId === '') throw new CertificationFailure(`Start: bad client_id ${JSON.stringify(clientId)}`);
  const id = { client_id: clientId };

  let prev: Params = {};
  for (const s of SEQUENCE.slice(0, 9)) {
    const reply = await step(s.method, { ...id, ...prev });
    check(s.method, s.reply, reply);
    prev = reply;
  }
  // Test09's reply {mytype} is Test10's input as is.
  const replies: string[] = [];
  try {
    for await (const r of client.stream(m('Test10'), { ...id, ...prev })) {
      const s = r.parameters.string;
      if (typeof s !== 'string') throw new CertificationFailure(`Test10: reply without string: ${JSON.stringify(r.parameters)}`);
      replies.push(s);
    }
  } catch (e) {
    if (e instanceof CertificationFailure) throw e;
    throw new CertificationFailure(`Test10 failed: ${e instanceof Error ? e.message : String(e)}`);
  }
  log.push(`Test10: ${JSON.stringify(replies)}`);
  check('Test10', REPLIES10, replies);
  client.oneway(m('Test11'), { ...id, last_more_replies: replies });
  log.push('Test11: (oneway)');
  const end = await step('End', id);
  if (end.all_ok !== true) throw new CertificationFailure(`End: all_ok is ${JSON.stringify(end.all_ok)}`);
  return { allOk: true, deviations, log };
}
