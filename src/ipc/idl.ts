// Varlink IDL parser and canonical formatter (grammar per varlink.org).
//
// The parser is a small hand-written tokenizer plus recursive descent so that
// every error can name the exact line it came from; interface files are
// shipped with the daemons and a precise line makes mistakes cheap to fix.

export type PrimitiveKind = 'bool' | 'int' | 'float' | 'string' | 'object';

export interface Field {
  name: string;
  type: TypeRef;
}

export interface StructType {
  kind: 'struct';
  fields: Field[];
}

export interface EnumType {
  kind: 'enum';
  values: string[];
}

/** A type expression. A string set (`[string]()`) is a map whose value is the empty struct. */
export type TypeRef =
  | { kind: PrimitiveKind }
  | { kind: 'named'; name: string }
  | StructType
  | EnumType
  | { kind: 'array'; of: TypeRef }
  | { kind: 'map'; of: TypeRef }
  | { kind: 'nullable'; of: TypeRef };

export interface TypeDecl {
  name: string;
  doc: string;
  type: StructType | EnumType;
}

export interface MethodDecl {
  name: string;
  doc: string;
  input: StructType;
  output: StructType;
}

export interface ErrorDecl {
  name: string;
  doc: string;
  params: StructType;
}

export interface Interface {
  name: string;
  doc: string;
  /** The original IDL text, served verbatim by GetInterfaceDescription. */
  text: string;
  types: Map<string, TypeDecl>;
  methods: Map<string, MethodDecl>;
  errors: Map<string, ErrorDecl>;
}

export class IdlError extends Error {
  readonly line: number;
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`);
    this.name = 'IdlError';
    this.line = line;
  }
}

// The Varlink spec says lowercase, but sd-varlink accepts capitals (io.systemd.MountFileSystem).
const INTERFACE_NAME = /^[A-Za-z]([-]*[A-Za-z0-9])*(\.[A-Za-z0-9]([-]*[A-Za-z0-9])*)+$/;
const MEMBER_NAME = /^[A-Z][A-Za-z0-9]*$/;
const FIELD_NAME = /^[A-Za-z](_?[A-Za-z0-9])*$/;
const PRIMITIVES: ReadonlySet<string> = new Set(['bool', 'int', 'float', 'string', 'object']);

type Punct = '(' | ')' | ',' | ':' | '[' | ']' | '?' | '->';

interface Token {
  kind: 'word' | 'punct' | 'eof';
  value: string;
  line: number;
  /** Comment block directly above this token (no blank line in between). */
  doc: string;
}

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let line = 1;
  let i = 0;
  let docLines: string[] = [];
  // Whether the current line already carried a token or comment; used to tell
  // a blank line (which detaches a comment block) from a line break.
  let lineHasContent = false;

  const push = (kind: Token['kind'], value: string): void => {
    tokens.push({ kind, value, line, doc: docLines.join('\n') });
    docLines = [];
    lineHasContent = true;
  };

  while (i < text.length) {
    const c = text[i];
    if (c === '\n') {
      if (!lineHasContent) docLines = [];
      lineHasContent = false;
      line++;
      i++;
    } else if (c === ' ' || c === '\t' || c === '\r') {
      i++;
    } else if (c === '#') {
      const end = text.indexOf('\n', i);
      const raw = text.slice(i + 1, end === -1 ? text.length : end);
      docLines.push((raw.startsWith(' ') ? raw.slice(1) : raw).trimEnd());
      lineHasContent = true;
      i = end === -1 ? text.length : end;
    } else if (c === '-' && text[i + 1] === '>') {
      push('punct', '->');
      i += 2;
    } else if ('(),:[]?'.includes(c)) {
      push('punct', c);
      i++;
    } else if (/[A-Za-z0-9_.\-]/.test(c)) {
      let j = i;
      while (j < text.length && /[A-Za-z0-9_.\-]/.test(text[j]) && !(text[j] === '-' && text[j + 1] === '>')) j++;
      push('word', text.slice(i, j));
      i = j;
    } else {
      throw new IdlError(line, `unexpected character '${c}'`);
    }
  }
  push('eof', '');
  return tokens;
}

class Parser {
  private pos = 0;
  /** Named type references, checked once every declaration is known. */
  readonly refs: { name: string; line: number }[] = [];

  constructor(private readonly tokens: Token[]) {}

  peek(): Token {
    return this.tokens[this.pos];
  }

  next(): Token {
    const t = this.tokens[this.pos];
    if (t.kind !== 'eof') this.pos++;
    return t;
  }

  isPunct(p: Punct): boolean {
    const t = this.peek();
    return t.kind === 'punct' && t.value === p;
  }

  expectPunct(p: Punct, what: string): Token {
    const t = this.peek();
    if (t.kind !== 'punct' || t.value !== p) throw new IdlError(t.line, `expected '${p}' ${what}, got ${describe(t)}`);
    return this.next();
  }

  expectWord(what: string): Token {
    const t = this.peek();
    if (t.kind !== 'word') throw new IdlError(t.line, `expected ${what}, got ${describe(t)}`);
    return this.next();
  }

  fieldName(what: string): Token {
    const t = this.expectWord(what);
    if (!FIELD_NAME.test(t.value)) throw new IdlError(t.line, `invalid field name '${t.value}'`);
    return t;
  }

  /** `( ... )` at declaration level: a struct, or an enum when the first entry has no ':'. */
  structOrEnum(): StructType | EnumType {
    this.expectPunct('(', 'to open struct or enum');
    if (this.isPunct(')')) {
      this.next();
      return { kind: 'struct', fields: [] };
    }
    const first = this.fieldName('field name');
    // Anything but ',' or ')' here means a struct field missing its ':'.
    if (!this.isPunct(',') && !this.isPunct(')')) return this.structRest(first);
    const values = [first.value];
    while (this.isPunct(',')) {
      this.next();
      values.push(this.fieldName('enum value').value);
    }
    this.expectPunct(')', 'to close enum');
    checkUnique(values, first.line, 'enum value');
    return { kind: 'enum', values };
  }

  /** A struct that must be a struct (method in/out, error params). */
  struct(what: string): StructType {
    const open = this.peek();
    const t = this.structOrEnum();
    if (t.kind !== 'struct') throw new IdlError(open.line, `expected struct ${what}, got enum`);
    return t;
  }

  private structRest(first: Token): StructType {
    const fields: Field[] = [];
    let name = first;
    for (;;) {
      this.expectPunct(':', 'after field name');
      fields.push({ name: name.value, type: this.type() });
      if (!this.isPunct(',')) break;
      this.next();
      name = this.fieldName('field name');
    }
    this.expectPunct(')', 'to close struct');
    checkUnique(fields.map((f) => f.name), first.line, 'field');
    return { kind: 'struct', fields };
  }

  type(): TypeRef {
    const t = this.peek();
    if (this.isPunct('?')) {
      this.next();
      if (this.isPunct('?')) throw new IdlError(t.line, "'?' cannot follow '?'");
      return { kind: 'nullable', of: this.type() };
    }
    if (this.isPunct('[')) {
      this.next();
      if (this.isPunct(']')) {
        this.next();
        return { kind: 'array', of: this.type() };
      }
      const key = this.expectWord("'string' or ']'");
      if (key.value !== 'string') throw new IdlError(key.line, `map keys must be 'string', got '${key.value}'`);
      this.expectPunct(']', 'after map key type');
      return { kind: 'map', of: this.type() };
    }
    if (this.isPunct('(')) return this.structOrEnum();
    const w = this.expectWord('type');
    if (PRIMITIVES.has(w.value)) return { kind: w.value as PrimitiveKind };
    if (!MEMBER_NAME.test(w.value)) throw new IdlError(w.line, `invalid type name '${w.value}'`);
    this.refs.push({ name: w.value, line: w.line });
    return { kind: 'named', name: w.value };
  }
}

function describe(t: Token): string {
  return t.kind === 'eof' ? 'end of input' : `'${t.value}'`;
}

function checkUnique(names: string[], line: number, what: string): void {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) throw new IdlError(line, `duplicate ${what} '${n}'`);
    seen.add(n);
  }
}

export function parseInterface(text: string): Interface {
  const p = new Parser(tokenize(text));
  const kw = p.peek();
  if (kw.kind !== 'word' || kw.value !== 'interface') {
    throw new IdlError(kw.line, `expected 'interface' keyword, got ${describe(kw)}`);
  }
  p.next();
  const nameTok = p.expectWord('interface name');
  if (!INTERFACE_NAME.test(nameTok.value)) throw new IdlError(nameTok.line, `invalid interface name '${nameTok.value}'`);

  const iface: Interface = {
    name: nameTok.value,
    doc: kw.doc,
    text,
    types: new Map(),
    methods: new Map(),
    errors: new Map(),
  };
  const members = new Set<string>();

  while (p.peek().kind !== 'eof') {
    const key = p.expectWord("'type', 'method' or 'error'");
    if (key.value !== 'type' && key.value !== 'method' && key.value !== 'error') {
      throw new IdlError(key.line, `expected 'type', 'method' or 'error', got '${key.value}'`);
    }
    const n = p.expectWord(`${key.value} name`);
    if (!MEMBER_NAME.test(n.value)) throw new IdlError(n.line, `invalid ${key.value} name '${n.value}'`);
    // Types, methods and errors share one namespace.
    if (members.has(n.value)) throw new IdlError(n.line, `duplicate member '${n.value}'`);
    members.add(n.value);
    const doc = key.doc;
    if (key.value === 'type') {
      iface.types.set(n.value, { name: n.value, doc, type: p.structOrEnum() });
    } else if (key.value === 'method') {
      const input = p.struct('as method input');
      p.expectPunct('->', 'between method input and output');
      const output = p.struct('as method output');
      iface.methods.set(n.value, { name: n.value, doc, input, output });
    } else {
      iface.errors.set(n.value, { name: n.value, doc, params: p.struct('as error parameters') });
    }
  }

  for (const ref of p.refs) {
    if (!iface.types.has(ref.name)) throw new IdlError(ref.line, `undefined type '${ref.name}'`);
  }
  return iface;
}

export function formatType(t: TypeRef): string {
  switch (t.kind) {
    case 'bool':
    case 'int':
    case 'float':
    case 'string':
    case 'object':
      return t.kind;
    case 'named':
      return t.name;
    case 'struct':
      return `(${t.fields.map((f) => `${f.name}: ${formatType(f.type)}`).join(', ')})`;
    case 'enum':
      return `(${t.values.join(', ')})`;
    case 'array':
      return `[]${formatType(t.of)}`;
    case 'map':
      return `[string]${formatType(t.of)}`;
    case 'nullable':
      return `?${formatType(t.of)}`;
  }
}

function formatDoc(doc: string): string {
  if (doc === '') return '';
  return doc
    .split('\n')
    .map((l) => (l === '' ? '#' : `# ${l}`))
    .join('\n') + '\n';
}

/** Canonical IDL: doc comments, then types, methods, errors, one per line. */
export function formatInterface(iface: Interface): string {
  const parts: string[] = [`${formatDoc(iface.doc)}interface ${iface.name}`];
  for (const t of iface.types.values()) parts.push(`${formatDoc(t.doc)}type ${t.name} ${formatType(t.type)}`);
  for (const m of iface.methods.values()) {
    parts.push(`${formatDoc(m.doc)}method ${m.name}${formatType(m.input)} -> ${formatType(m.output)}`);
  }
  for (const e of iface.errors.values()) parts.push(`${formatDoc(e.doc)}error ${e.name} ${formatType(e.params)}`);
  return parts.join('\n\n') + '\n';
}
