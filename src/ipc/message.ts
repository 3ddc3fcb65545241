// Strict parsing of Varlink call and reply objects, as sd-varlink does it: only the
// known top-level keys, each at most once, each with the right type.
import { ProtocolError } from './errors.js';

export interface Call {
  method: string;
  parameters: Record<string, unknown>;
  oneway: boolean;
  more: boolean;
}

export interface Reply {
  parameters: Record<string, unknown>;
  continues: boolean;
  error?: string;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Returns the keys of the top-level JSON object in source order (duplicates kept),
 * because JSON.parse silently keeps only the last of duplicate keys. */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

function parseObject(text: string, allowed: ReadonlySet<string>): Record<string, unknown> {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    throw new ProtocolError('message is not valid JSON');
  }
  if (!isObject(obj)) throw new ProtocolError('message is not a JSON object');
  const keys = topLevelKeys(text);
  if (new Set(keys).size !== keys.length) throw new ProtocolError('duplicate top-level key');
  for (const k of keys) if (!allowed.has(k)) throw new ProtocolError(`unknown top-level key '${k}'`);
  return obj;
}

const CALL_KEYS: ReadonlySet<string> = new Set(['method', 'parameters', 'oneway', 'more', 'upgrade']);
const REPLY_KEYS: ReadonlySet<string> = new Set(['parameters', 'continues', 'error']);

function optionalBool(obj: Record<string, unknown>, key: string): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new ProtocolError(`'${key}' is not a boolean`);
  return v;
}

function parametersOf(obj: Record<string, unknown>): Record<string, unknown> {
  const p = obj.parameters;
  // systemd treats a missing or null parameters object as {}.
  if (p === undefined || p === null) return {};
  if (!isObject(p)) throw new ProtocolError("'parameters' is not an object");
  return p;
}

export function parseCall(text: string): Call {
  const obj = parseObject(text, CALL_KEYS);
  if (typeof obj.method !== 'string' || obj.method === '') throw new ProtocolError("'method' is missing or not a string");
  const oneway = optionalBool(obj, 'oneway');
  const more = optionalBool(obj, 'more');
  // We offer no protocol upgrades; refusing here disconnects cleanly like older systemd.
  if (optionalBool(obj, 'upgrade')) throw new ProtocolError('protocol upgrade is not supported');
  if (oneway && more) throw new ProtocolError("'oneway' and 'more' together");
  return { method: obj.method, parameters: parametersOf(obj), oneway, more };
}

export function parseReply(text: string): Reply {
  const obj = parseObject(text, REPLY_KEYS);
  const continues = optionalBool(obj, 'continues');
  let error: string | undefined;
  if (obj.error !== undefined && obj.error !== null) {
    if (typeof obj.error !== 'string' || obj.error === '') throw new ProtocolError("'error' is not a string");
    if (continues) throw new ProtocolError("an error reply with 'continues'");
    error = obj.error;
  }
  return { parameters: parametersOf(obj), continues, error };
}
