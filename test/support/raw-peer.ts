// A Varlink peer that speaks bytes, not the protocol: whatever a hostile test wants to send.
import { native } from '../../src/native/index.js';
import { Connection } from '../../src/ipc/connection.js';
import { closeAll } from './fds.js';
import { waitFor } from './wait.js';

export interface RawPeer {
  fd: number;
  replies: Array<Record<string, unknown>>;
  fdsReceived: number[];
  closed: Promise<Error | undefined>;
  isClosed(): boolean;
  /** Sends bytes exactly as given (with fds on the first byte); throws on a short write. */
  send(data: string | Buffer, fds?: number[]): void;
  /** Sends a JSON call (NUL-terminated). */
  call(method: string, parameters?: unknown, fds?: number[]): void;
  nextReply(ms?: number): Promise<Record<string, unknown>>;
  close(): void;
}

/** A client connected to `sock` that sends what it is told and collects every reply. */
export function rawPeer(sock: string): RawPeer {
  const fd = native.connect(sock);
  const replies: Array<Record<string, unknown>> = [];
  const fdsReceived: number[] = [];
  let closedFlag = false;
  let onClose!: (e?: Error) => void;
  const closed = new Promise<Error | undefined>((r) => (onClose = r));
  const conn = new Connection(fd, {
    onMessage: (m) => {
      fdsReceived.push(...m.fds);
      replies.push(JSON.parse(m.text) as Record<string, unknown>);
    },
    onClose: (e) => {
      closedFlag = true;
      onClose(e);
    },
  });
  let consumed = 0;
  const peer: RawPeer = {
    fd,
    replies,
    fdsReceived,
    closed,
    isClosed: () => closedFlag,
    send(data, fds = []) {
      const b = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      let first = true;
      const deadline = Date.now() + 10_000;
      while (off < b.length) {
        const n = native.sendmsg(fd, b, off, b.length - off, first ? fds : []);
        if (n < 0) {
          if (Date.now() > deadline) throw new Error('send stalled');
          // Blocking busy-wait is fine: the daemon is another process.
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
          continue;
        }
        first = false;
        off += n;
      }
    },
    call(method, parameters, fds = []) {
      peer.send(`${JSON.stringify(parameters === undefined ? { method } : { method, parameters })}\0`, fds);
    },
    async nextReply(ms = 30_000) {
      await waitFor(() => replies.length > consumed || closedFlag, 'a reply', ms);
      if (replies.length > consumed) return replies[consumed++]!;
      throw new Error('connection closed without a reply');
    },
    close() {
      conn.close();
      closeAll(fdsReceived.splice(0));
    },
  };
  return peer;
}

/** Whether a connect to `sock` works: the socket file appears at bind(), before listen(). */
export function listening(sock: string): boolean {
  try {
    native.close(native.connect(sock));
    return true;
  } catch {
    return false;
  }
}
