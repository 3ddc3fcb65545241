// The interface modules (src/ipc/interfaces/): their generated types are those of their IDL
// text, and their method and error names are the IDL's, qualified.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { INTERFACES } from '../../src/ipc/interfaces/index.js';
import { withGeneratedTypes } from '../../src/ipc/interfaces/typegen.js';

for (const def of INTERFACES) {
  test(`${def.name}: the generated types are current (npx tsx src/ipc/interfaces/typegen.ts)`, () => {
    const file = new URL(`../../src/ipc/interfaces/${def.name}.ts`, import.meta.url);
    const source = fs.readFileSync(file, 'utf8');
    assert.equal(withGeneratedTypes(source, def.iface), source);
  });

  test(`${def.name}: method and error names are the IDL's, qualified`, () => {
    assert.equal(def.iface.name, def.name);
    assert.equal(def.iface.text, def.idl);
    assert.deepEqual(Object.entries(def.method), [...def.iface.methods.keys()].map((m) => [m, `${def.name}.${m}`]));
    assert.deepEqual(Object.entries(def.error), [...def.iface.errors.keys()].map((e) => [e, `${def.name}.${e}`]));
  });
}
