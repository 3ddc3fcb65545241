// The interface modules (src/ipc/interfaces/): their generated types are those of their IDL
// text, their method and error names are the IDL's, qualified, and calls and replies are
// checked against the IDL on both sides.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VarlinkClient, callMethod } from '../../src/ipc/client.js';
import { ProtocolError } from '../../src/ipc/errors.js';
import { serve } from '../../src/ipc/interfaces/define.js';
import { VarlinkService } from '../../src/ipc/interfaces/org.varlink.service.js';
import { VarlinkServer } from '../../src/ipc/server.js';
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

test('serve() hands the checked parameters to a typed handler; callMethod() checks the reply against the IDL', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-interfaces-'));
  const server = new VarlinkServer();
  let reply: Record<string, unknown> = {};
  const seen: unknown[] = [];
  server.addService(
    serve(VarlinkService, {
      GetInterfaceDescription: async (p) => {
        seen.push(p.interface); // typed string: the server validated it
        return { parameters: reply as { description: string } };
      },
    }),
  );
  const sock = path.join(dir, 's');
  server.listenPath(sock);
  const client = await VarlinkClient.connect(sock);
  try {
    reply = { description: 'x', addedByANewerServer: 1 };
    const ok = await callMethod(client, VarlinkService, 'GetInterfaceDescription', { interface: 'a.b' });
    assert.deepEqual(ok.parameters, { description: 'x' });
    reply = { description: 7 };
    await assert.rejects(callMethod(client, VarlinkService, 'GetInterfaceDescription', { interface: 'a.b' }), (e: unknown) => e instanceof ProtocolError && /description/.test(e.message));
    assert.deepEqual(seen, ['a.b', 'a.b']);
  } finally {
    client.close();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
