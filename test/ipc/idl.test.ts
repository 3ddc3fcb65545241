import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { IdlError, formatInterface, formatType, parseInterface, type Interface } from '../../src/ipc/idl.js';
import { lookupMethod, validateCall, validateParameters } from '../../src/ipc/validate.js';
import { VarlinkService } from '../../src/ipc/interfaces/org.varlink.service.js';
import { IoSystemd } from '../../src/ipc/interfaces/io.systemd.js';
import { MountFileSystem } from '../../src/ipc/interfaces/io.systemd.MountFileSystem.js';

const CERT = readFileSync(new URL('../varlink/org.varlink.certification.varlink', import.meta.url), 'utf8');

// The server's own org.varlink.service text: round-tripping it checks what we serve.
const SERVICE = VarlinkService.idl;
const IO_SYSTEMD_IDL = IoSystemd.idl;
const MOUNT_FILE_SYSTEM_IDL = MountFileSystem.idl;

/** The AST without the original text, for structural comparison. */
function shape(i: Interface): Omit<Interface, 'text'> {
  const { text: _text, ...rest } = i;
  return rest;
}

function rejectsAt(src: string, line: number, pattern?: RegExp): void {
  assert.throws(
    () => parseInterface(src),
    (e: unknown) => {
      assert.ok(e instanceof IdlError, `expected IdlError, got ${String(e)}`);
      assert.equal(e.line, line, e.message);
      assert.match(e.message, new RegExp(`^line ${line}: `));
      if (pattern) assert.match(e.message, pattern);
      return true;
    },
  );
}

test('parses org.varlink.certification', () => {
  const i = parseInterface(CERT);
  assert.equal(i.name, 'org.varlink.certification');
  assert.equal(i.text, CERT);
  assert.deepEqual([...i.types.keys()], ['Interface', 'MyType']);
  assert.equal(i.methods.size, 13);
  assert.deepEqual([...i.errors.keys()], ['ClientIdError', 'CertificationError']);
  assert.deepEqual(i.methods.get('Start')?.input, { kind: 'struct', fields: [] });
  assert.deepEqual(i.methods.get('Test08')?.output.fields[0], {
    name: 'set',
    type: { kind: 'map', of: { kind: 'struct', fields: [] } },
  });
  assert.deepEqual(i.types.get('Interface')?.type.kind === 'struct' && i.types.get('Interface')?.type, {
    kind: 'struct',
    fields: [
      {
        name: 'foo',
        type: {
          kind: 'nullable',
          of: { kind: 'array', of: { kind: 'nullable', of: { kind: 'map', of: { kind: 'enum', values: ['foo', 'bar', 'baz'] } } } },
        },
      },
      {
        name: 'anon',
        type: { kind: 'struct', fields: [{ name: 'foo', type: { kind: 'bool' } }, { name: 'bar', type: { kind: 'bool' } }] },
      },
    ],
  });
  assert.deepEqual(i.errors.get('CertificationError')?.params.fields.map((f) => f.type.kind), ['object', 'object']);
});

test('parses org.varlink.service', () => {
  const i = parseInterface(SERVICE);
  assert.equal(i.name, 'org.varlink.service');
  assert.deepEqual([...i.methods.keys()], ['GetInfo', 'GetInterfaceDescription']);
  assert.equal(i.errors.size, 6);
  assert.deepEqual(i.methods.get('GetInfo')?.output.fields.at(-1), {
    name: 'interfaces',
    type: { kind: 'array', of: { kind: 'string' } },
  });
  assert.equal(lookupMethod(i, 'org.varlink.service.GetInfo')?.name, 'GetInfo');
  assert.equal(lookupMethod(i, 'org.varlink.other.GetInfo'), undefined);
});

test('io.systemd: the errors systemd 262 declares, System with origin/errnoName/errno', () => {
  const i = parseInterface(IO_SYSTEMD_IDL);
  assert.equal(i.name, 'io.systemd');
  assert.equal(i.methods.size, 0);
  assert.deepEqual([...i.errors.keys()], ['Disconnected', 'TimedOut', 'Protocol', 'System']);
  assert.deepEqual(
    i.errors.get('System')?.params.fields.map((f) => [f.name, formatType(f.type)]),
    [['origin', '?string'], ['errnoName', '?string'], ['errno', '?int']],
  );
  assert.equal(i.errors.get('System')?.doc, 'A generic Linux system error ("errno"s).');
  // The same text shape as 262's introspection: tab-indented fields with their comments.
  assert.ok(IO_SYSTEMD_IDL.includes('error System(\n\t# The origin of this system error'), IO_SYSTEMD_IDL);
});

test("io.systemd.MountFileSystem declares systemd 262's MountImage inputs and PartitionInfo.mountPoint", () => {
  const i = parseInterface(MOUNT_FILE_SYSTEM_IDL);
  const input = Object.fromEntries(i.methods.get('MountImage')!.input.fields.map((f) => [f.name, formatType(f.type)]));
  assert.deepEqual(input, {
    imageFileDescriptor: 'int',
    userNamespaceFileDescriptor: '?int',
    readOnly: '?bool',
    growFileSystems: '?bool',
    password: '?string',
    imagePolicy: '?string',
    mountOptions: '?[string]string',
    relaxExtensionReleaseChecks: '?bool',
    veritySharing: '?bool',
    verityDataFileDescriptor: '?int',
    verityRootHash: '?string',
    verityRootHashSignature: '?string',
    allowInteractiveAuthentication: '?bool',
  });
  const info = i.types.get('PartitionInfo')!.type;
  assert.equal(info.kind, 'struct');
  assert.equal(info.kind === 'struct' && formatType(info.fields.find((f) => f.name === 'mountPoint')!.type), '?[]string');
});

test('keeps doc comments', () => {
  const s = parseInterface(SERVICE);
  assert.equal(s.doc, 'General Varlink service interface');
  assert.equal(s.methods.get('GetInfo')?.doc, 'Get service meta information');
  assert.equal(s.errors.get('MethodNotImplemented')?.doc, 'Error returned if a method is called that is known but not implemented');
  const c = parseInterface(CERT);
  assert.match(c.doc, /^Interface to test varlink implementations against\./);
  assert.ok(c.doc.includes('\n\nNext you write'), 'empty comment line kept inside block');
  assert.equal(c.types.get('MyType')?.doc, 'A type using every kind of Varlink type.');
  // A blank line detaches a comment from the next declaration.
  const d = parseInterface('# license\n\n# doc\ninterface a.b\n# stray\n\ntype T ()\n');
  assert.equal(d.doc, 'doc');
  assert.equal(d.types.get('T')?.doc, '');
});

test('round trips through formatInterface', () => {
  for (const src of [CERT, SERVICE, IO_SYSTEMD_IDL, MOUNT_FILE_SYSTEM_IDL]) {
    const a = parseInterface(src);
    const text = formatInterface(a);
    const b = parseInterface(text);
    assert.deepEqual(shape(b), shape(a));
    assert.equal(formatInterface(b), text, 'formatting is stable');
  }
  const compact = parseInterface('interface a.b-c\ntype E(x,y)\nmethod M(a:?[]?int,b:[string]E)->(c:[string]())');
  assert.deepEqual(shape(parseInterface(formatInterface(compact))), shape(compact));
  assert.match(formatInterface(compact), /method M\(a: \?\[\]\?int, b: \[string\]E\) -> \(c: \[string\]\(\)\)/);
});

test('rejects malformed IDL with line numbers', () => {
  rejectsAt('# doc\n\nmethod Foo() -> ()\n', 3, /interface/);
  rejectsAt('', 1, /interface/);
  rejectsAt('interface\n  -org.example\n', 2, /invalid interface name/);
  rejectsAt('interface example\n', 1, /invalid interface name/);
  rejectsAt('interface org.example\n\ntype foo ()\n', 3, /invalid type name/);
  rejectsAt('interface org.example\nmethod M(\n  a: ??string\n) -> ()\n', 3, /'\?' cannot follow '\?'/);
  rejectsAt('interface org.example\nmethod M() -> (\n  a: Missing\n)\n', 3, /undefined type 'Missing'/);
  rejectsAt('interface org.example\ntype A ()\nmethod B () -> ()\n\nerror A ()\n', 5, /duplicate member 'A'/);
  rejectsAt('interface org.example\nmethod M(\n  a: int,\n  b: string\n', 5, /to close struct/);
  rejectsAt('interface org.example\nmethod M(a: int)\n  (b: int)\n', 3, /'->'/);
  rejectsAt('interface org.example\ntype T (\n  a int\n)\n', 3, /expected ':' after field name/);
  rejectsAt('interface org.example\ntype T (a: [int]string)\n', 2, /map keys/);
  rejectsAt('interface org.example\nmethod M(a: int, a: int) -> ()\n', 2, /duplicate field/);
  rejectsAt('interface org.example\nmethod M(a, b) -> ()\n', 2, /expected struct/);
  rejectsAt('interface org.example\nmethod M() -> () $\n', 2, /unexpected character/);
});

test('validates parameters with sd-varlink semantics', () => {
  const i = parseInterface(CERT);
  const m = (name: string) => {
    const d = i.methods.get(name);
    assert.ok(d);
    return d;
  };
  const ok = { ok: true } as const;
  const bad = (parameter: string) => ({ ok: false, parameter });

  assert.deepEqual(validateParameters(i, m('Start').input, undefined), ok);
  assert.deepEqual(validateParameters(i, m('Start').input, null), ok);
  assert.deepEqual(validateParameters(i, m('Start').input, []).ok, false);
  assert.deepEqual(validateParameters(i, m('Test02').input, { client_id: 'x', bool: true }), ok);
  assert.deepEqual(validateParameters(i, m('Test02').input, { client_id: 'x' }), bad('bool'));
  assert.deepEqual(validateParameters(i, m('Test02').input, { client_id: 'x', bool: true, extra: 1 }), bad('extra'));
  assert.deepEqual(validateParameters(i, m('Test03').input, { client_id: 'x', int: 1.5 }), bad('int'));
  assert.deepEqual(validateParameters(i, m('Test03').input, { client_id: 'x', int: 2 ** 60 }), bad('int'));
  assert.deepEqual(validateParameters(i, m('Test04').input, { client_id: 'x', float: 3 }), ok);
  assert.deepEqual(validateParameters(i, m('Test04').input, { client_id: 'x', float: '3' }), bad('float'));
  assert.deepEqual(validateParameters(i, m('Test02').input, { client_id: null, bool: true }), bad('client_id'));
  const struct = { bool: true, int: 1, float: 1.5, string: 's' };
  assert.deepEqual(validateParameters(i, m('Test07').input, { client_id: 'x', struct }), ok);
  assert.deepEqual(validateParameters(i, m('Test07').input, { client_id: 'x', struct: { ...struct, int: 'one' } }), bad('struct'));
  assert.deepEqual(validateParameters(i, m('Test07').input, { client_id: 'x', struct: { ...struct, more: 1 } }), bad('struct'));
  assert.deepEqual(validateParameters(i, m('Test08').input, { client_id: 'x', map: { a: 'b' } }), ok);
  assert.deepEqual(validateParameters(i, m('Test08').input, { client_id: 'x', map: { a: 1 } }), bad('map'));
  assert.deepEqual(validateParameters(i, m('Test09').input, { client_id: 'x', set: { a: {}, b: {} } }), ok);
  assert.deepEqual(validateParameters(i, m('Test09').input, { client_id: 'x', set: { a: {}, b: true } }), bad('set'));
  assert.deepEqual(validateParameters(i, m('Test09').input, { client_id: 'x', set: { a: { x: 1 } } }), bad('set'));
  assert.deepEqual(validateParameters(i, m('Test11').input, { client_id: 'x', last_more_replies: ['a', 1] }), bad('last_more_replies'));

  const mytype = {
    object: { anything: [1, 'two'] },
    enum: 'two',
    struct: { first: 1, second: 'x' },
    array: ['a', 'b'],
    dictionary: { k: 'v' },
    stringset: { one: {} },
    nullable: null,
    nullable_array_struct: [{ first: 2, second: 'y' }],
    interface: { foo: [{ a: 'foo' }, null, { b: 'baz' }], anon: { foo: true, bar: false } },
  };
  assert.deepEqual(validateParameters(i, m('Test10').input, { client_id: 'x', mytype }), ok);
  const { nullable: _n, nullable_array_struct: _nas, ...withoutNullables } = mytype;
  assert.deepEqual(validateParameters(i, m('Test10').input, { client_id: 'x', mytype: withoutNullables }), ok);
  assert.deepEqual(validateParameters(i, m('Test10').input, { client_id: 'x', mytype: { ...mytype, enum: 'four' } }), bad('mytype'));
  assert.deepEqual(validateParameters(i, m('Test10').input, { client_id: 'x', mytype: { ...mytype, object: null } }), bad('mytype'));
  assert.deepEqual(
    validateParameters(i, m('Test10').input, {
      client_id: 'x',
      mytype: { ...mytype, interface: { foo: [{ a: 'qux' }], anon: { foo: true, bar: false } } },
    }),
    bad('mytype'),
  );
  // Replies and errors stay strict: an undeclared field is refused there.
  // Nullable output field of the error type, checked against error params.
  const certErr = i.errors.get('CertificationError');
  assert.ok(certErr);
  assert.deepEqual(validateParameters(i, certErr.params, { wants: 1, got: 'x' }), ok);
  assert.deepEqual(validateParameters(i, certErr.params, { wants: 1 }), bad('got'));
});

test('method calls: undeclared top-level fields are ignored, declared ones checked strictly', () => {
  const i = parseInterface(CERT);
  const input = i.methods.get('Test02')!.input;
  assert.deepEqual(validateCall(i, input, { client_id: 'x', bool: true, extra: 1, newer: { a: [1] } }), {
    ok: true,
    parameters: { client_id: 'x', bool: true },
    ignored: ['extra', 'newer'],
  });
  assert.deepEqual(validateCall(i, input, { client_id: 'x', bool: true }), { ok: true, parameters: { client_id: 'x', bool: true }, ignored: [] });
  assert.deepEqual(validateCall(i, i.methods.get('Start')!.input, null), { ok: true, parameters: {}, ignored: [] });
  // A known field with the wrong type, missing or null is still refused, unknown fields or not.
  assert.deepEqual(validateCall(i, input, { client_id: 'x', bool: 'yes', extra: 1 }), { ok: false, parameter: 'bool' });
  assert.deepEqual(validateCall(i, input, { client_id: 'x', extra: 1 }), { ok: false, parameter: 'bool' });
  assert.deepEqual(validateCall(i, input, { client_id: null, bool: true }), { ok: false, parameter: 'client_id' });
  assert.equal(validateCall(i, input, []).ok, false);
  assert.equal(validateCall(i, input, 'x').ok, false);
  // Only the top level is lenient: inside a declared struct an unknown field is still an error.
  const struct = { bool: true, int: 1, float: 1.5, string: 's' };
  assert.deepEqual(validateCall(i, i.methods.get('Test07')!.input, { client_id: 'x', struct: { ...struct, more: 1 } }), { ok: false, parameter: 'struct' });
  // A key that would be special on a plain object is just another unknown field.
  const proto = JSON.parse('{"client_id":"x","bool":true,"__proto__":{"polluted":1}}') as unknown;
  const r = validateCall(i, input, proto);
  assert.ok(r.ok);
  assert.deepEqual(r.ignored, ['__proto__']);
  assert.equal(Object.getPrototypeOf(r.parameters), Object.prototype);
});
