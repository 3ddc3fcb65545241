// Fuzzes the Varlink framer (Connection) through a real socketpair: any chunking of a stream
// of NUL-terminated messages yields exactly those messages in order; random bytes yield
// messages or a close with ProtocolError, never an exception.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import fc from 'fast-check';
import { Connection } from '../../src/ipc/connection.js';
import { ProtocolError } from '../../src/ipc/errors.js';
import { native } from '../../src/native/index.js';

const RUNS = process.env.MOUNTGATE_LONG === '1' ? 100_000 : 1000;

interface Received {
  messages: string[];
  closed: boolean;
  error: Error | undefined;
}

/** Writes `chunks` one at a time into one end, yielding to the event loop so the reader sees them separately. */
async function feed(chunks: Buffer[], closeAfter: boolean): Promise<Received> {
  const [a, b] = native.socketpair();
  const got: Received = { messages: [], closed: false, error: undefined };
  const conn = new Connection(a, {
    onMessage: (m) => {
      got.messages.push(m.text);
      m.fds.forEach((fd) => fs.closeSync(fd));
    },
    onClose: (err) => {
      got.closed = true;
      got.error = err;
    },
  });
  try {
    for (const c of chunks) {
      let off = 0;
      while (off < c.length && !got.closed) {
        const n = native.sendmsg(b, c, off, c.length - off, []);
        if (n < 0) await tick();
        else off += n;
      }
      await tick();
      await tick();
    }
    if (closeAfter) native.shutdown(b);
    for (let i = 0; i < 50 && !(closeAfter ? got.closed : false); i++) await tick();
    for (let i = 0; i < 3; i++) await tick();
  } finally {
    conn.close();
    native.close(b);
  }
  return got;
}

function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, buf.length]) {
    if (p > prev) out.push(buf.subarray(prev, p));
    prev = p;
  }
  return out;
}

test(`any chunking of NUL-framed messages yields exactly those messages (${RUNS} cases)`, async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.string({ unit: fc.constantFrom('a', '{', '"', 'é', '€', '😀', ' ', '\\') , maxLength: 40 }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      async (messages, cuts) => {
        const stream = Buffer.from(messages.map((m) => `${m}\0`).join(''), 'utf8');
        const got = await feed(split(stream, cuts), true);
        assert.deepEqual(got.messages, messages);
        assert.equal(got.error, undefined);
      },
    ),
    { numRuns: RUNS },
  );
});

test(`random bytes in random chunks: messages or a ProtocolError close, nothing else (${RUNS} cases)`, async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), fc.array(fc.nat(), { maxLength: 6 }), fc.boolean(), async (bytes, cuts, eof) => {
      const buf = Buffer.from(bytes);
      const got = await feed(split(buf, cuts), eof);
      const nuls = buf.filter((x) => x === 0).length;
      assert.equal(got.messages.length, nuls);
      const trailing = buf.length > 0 && buf[buf.length - 1] !== 0;
      if (eof && trailing) assert.ok(got.error instanceof ProtocolError, `EOF mid-message: ${String(got.error)}`);
      if (got.error) assert.ok(got.error instanceof ProtocolError, String(got.error));
    }),
    { numRuns: RUNS },
  );
});
