// Generates each interface module's types from its IDL (as varlink/go's
// cmd/varlink-go-interface-generator does for Go): a type per IDL type, `<Method>Parameters` and
// `<Method>Reply` per method, `Methods` and `Errors` for defineInterface(). The block sits at the
// end of the module between the two marker lines; test/ipc/interfaces.test.ts fails when it is
// stale. Regenerate with: npx tsx src/ipc/interfaces/typegen.ts
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Interface, StructType, TypeRef } from '../idl.js';

const BEGIN_MARKER = '// --- generated from the IDL by typegen.ts: do not edit below ---';
const END_MARKER = '// --- end of generated types ---';

function needsParens(t: TypeRef): boolean {
  return t.kind === 'nullable' || (t.kind === 'enum' && t.values.length > 1);
}

function tsType(t: TypeRef): string {
  switch (t.kind) {
    case 'bool':
      return 'boolean';
    case 'int':
    case 'float':
      return 'number';
    case 'string':
      return 'string';
    case 'object':
      return 'unknown';
    case 'named':
      return t.name;
    case 'enum':
      return t.values.map((v) => `'${v}'`).join(' | ');
    case 'nullable':
      return `${tsType(t.of)} | null`;
    case 'array':
      return needsParens(t.of) ? `(${tsType(t.of)})[]` : `${tsType(t.of)}[]`;
    case 'map':
      return `Record<string, ${tsType(t.of)}>`;
    case 'struct':
      return struct(t);
  }
}

/** A struct as an object type, on one line (the IDL above is what a reader reads); nullable
 * fields are optional, as absent and null both mean "not given". */
function struct(s: StructType): string {
  if (s.fields.length === 0) return 'Record<string, never>';
  return `{ ${s.fields.map((f) => `${f.name}${f.type.kind === 'nullable' ? '?' : ''}: ${tsType(f.type)}`).join('; ')} }`;
}

/** The generated block (markers included) for one interface. */
function generateTypes(iface: Interface): string {
  const out: string[] = [BEGIN_MARKER];
  for (const t of iface.types.values()) out.push(`export type ${t.name} = ${tsType(t.type)};`);
  for (const m of iface.methods.values()) {
    out.push(`export type ${m.name}Parameters = ${struct(m.input)};`);
    out.push(`export type ${m.name}Reply = ${struct(m.output)};`);
  }
  const methods = [...iface.methods.keys()].map((n) => `${n}: { parameters: ${n}Parameters; reply: ${n}Reply }`);
  out.push(`export type Methods = ${methods.length ? `{ ${methods.join('; ')} }` : 'Record<string, never>'};`);
  const errors = [...iface.errors.values()].map((e) => `${e.name}: ${struct(e.params)}`);
  out.push(`export type Errors = ${errors.length ? `{ ${errors.join('; ')} }` : 'Record<string, never>'};`);
  out.push(END_MARKER);
  return `${out.join('\n')}\n`;
}

/** The module text with its generated block replaced (or appended). */
export function withGeneratedTypes(source: string, iface: Interface): string {
  const begin = source.indexOf(BEGIN_MARKER);
  const end = source.indexOf(END_MARKER);
  const head = begin >= 0 ? source.slice(0, begin) : `${source.trimEnd()}\n\n`;
  const tail = end >= 0 ? source.slice(end + END_MARKER.length + 1) : '';
  return `${head}${generateTypes(iface)}${tail}`;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { INTERFACES } = await import('./index.js');
  const dir = path.dirname(fileURLToPath(import.meta.url));
  for (const def of INTERFACES) {
    const file = path.join(dir, `${def.name}.ts`);
    const before = fs.readFileSync(file, 'utf8');
    const after = withGeneratedTypes(before, def.iface);
    if (after !== before) {
      fs.writeFileSync(file, after);
      console.log(`updated ${path.relative(process.cwd(), file)}`);
    }
  }
}
