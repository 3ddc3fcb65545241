// Parameter validation against a Varlink struct, following sd-varlink:
// missing or null non-nullable fields and unknown fields are invalid, and the
// reported parameter is always the top-level field name (that is what goes
// into org.varlink.service.InvalidParameter). Method calls are the exception
// at their top level: see validateCall.

import type { Interface, MethodDecl, StructType, TypeRef } from './idl.js';

export type ValidationResult = { ok: true } | { ok: false; parameter: string };

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks an object against a struct; returns the first offending field name, or null. */
function structError(iface: Interface, struct: StructType, value: Record<string, unknown>): string | null {
  const known = new Set<string>();
  for (const field of struct.fields) {
    known.add(field.name);
    const v = Object.hasOwn(value, field.name) ? value[field.name] : undefined;
    if (v === undefined || v === null) {
      if (field.type.kind !== 'nullable') return field.name;
      continue;
    }
    if (!matches(iface, field.type, v)) return field.name;
  }
  for (const key of Object.keys(value)) {
    if (!known.has(key)) return key;
  }
  return null;
}

function matches(iface: Interface, type: TypeRef, v: unknown): boolean {
  switch (type.kind) {
    case 'nullable':
      return v === null || matches(iface, type.of, v);
    case 'bool':
      return typeof v === 'boolean';
    case 'int':
      return typeof v === 'number' && Number.isSafeInteger(v);
    case 'float':
      return typeof v === 'number' && Number.isFinite(v);
    case 'string':
      return typeof v === 'string';
    case 'object':
      return v !== undefined && v !== null;
    case 'enum':
      return typeof v === 'string' && type.values.includes(v);
    case 'struct':
      return isPlainObject(v) && structError(iface, type, v) === null;
    case 'array':
      return Array.isArray(v) && v.every((e) => matches(iface, type.of, e));
    case 'map':
      return isPlainObject(v) && Object.values(v).every((e) => matches(iface, type.of, e));
    case 'named': {
      const decl = iface.types.get(type.name);
      return decl !== undefined && matches(iface, decl.type, v);
    }
  }
}

/** Validates parameters against a struct strictly: unknown fields are invalid too (sd-varlink). */
export function validateParameters(iface: Interface, struct: StructType, value: unknown): ValidationResult {
  // sd-varlink treats absent parameters as an empty object.
  const obj = value === null || value === undefined ? {} : value;
  if (!isPlainObject(obj)) return { ok: false, parameter: '' };
  const bad = structError(iface, struct, obj);
  return bad === null ? { ok: true } : { ok: false, parameter: bad };
}

export type CallValidation =
  | { ok: true; parameters: Record<string, unknown>; ignored: string[] }
  | { ok: false; parameter: string };

/**
 * Validates a method call's parameters. Top-level fields the method does not declare are
 * ignored (returned in `ignored`, dropped from `parameters`) so that a client built against a
 * newer revision of an interface, which only ever adds optional fields, keeps working: systemd
 * 262's MountImage callers always send relaxExtensionReleaseChecks/veritySharing, for example.
 * This is where we part from sd-varlink, whose varlink_idl_validate_symbol() refuses a field
 * the IDL lacks with InvalidParameter. Declared fields, and everything nested inside them, keep
 * the strict checks. The client checks replies the same way (client.ts callMethod()), for the
 * same reason the other way round: a newer server may add reply fields.
 */
export function validateCall(iface: Interface, struct: StructType, value: unknown): CallValidation {
  const obj = value === null || value === undefined ? {} : value;
  if (!isPlainObject(obj)) return { ok: false, parameter: '' };
  const declared = new Set(struct.fields.map((f) => f.name));
  const parameters: Record<string, unknown> = {};
  const ignored: string[] = [];
  for (const [key, v] of Object.entries(obj)) {
    if (declared.has(key)) parameters[key] = v;
    else ignored.push(key);
  }
  const bad = structError(iface, struct, parameters);
  return bad === null ? { ok: true, parameters, ignored } : { ok: false, parameter: bad };
}

/** Finds a method by its fully qualified name (`org.example.Iface.Method`). */
export function lookupMethod(iface: Interface, qualified: string): MethodDecl | undefined {
  const dot = qualified.lastIndexOf('.');
  if (dot < 0 || qualified.slice(0, dot) !== iface.name) return undefined;
  return iface.methods.get(qualified.slice(dot + 1));
}
