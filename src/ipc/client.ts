// Varlink client: connect to a unix socket, call (pipelined, answered in order), stream
// `more` replies, push fds with a call and receive fds with replies.
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../native/index.js';
import { Connection, closeQuietly, type Incoming } from './connection.js';
import { ProtocolError, VarlinkError } from './errors.js';
import type { ErrorMap, MethodMap, VarlinkInterface } from './interfaces/define.js';
import { parseReply } from './message.js';
import { validateCall } from './validate.js';

export interface ReplyWithFds {
  parameters: Record<string, unknown>;
  /** fds attached to this reply; the caller owns them and must close them. */
  fds: number[];
}

export interface CallOptions {
  /** fds pushed with the call, referenced by index in the parameters. */
  fds?: number[];
}

interface Pending {
  more: boolean;
  onReply(reply: ReplyWithFds, continues: boolean): void;
  onError(err: Error): void;
}

export class VarlinkClient {
  private readonly conn: Connection;
  private readonly pending: Pending[] = [];
  private closedWith: Error | undefined;

  private constructor(fd: number) {
    this.conn = new Connection(fd, {
      onMessage: (m) => this.onMessage(m),
      onClose: (err) => this.onClose(err),
    });
    this.conn.ref(false);
  }

  /** Connects to a socket path ("unix:" prefix allowed); retries briefly while the
   * listen backlog is full. */
  static async connect(address: string): Promise<VarlinkClient> {
    const p = address.startsWith('unix:') ? address.slice(5).split(';')[0] : address;
    for (let attempt = 0; ; attempt++) {
      try {
        return new VarlinkClient(native.connect(p));
      } catch (e) {
        if ((e as { code?: string }).code !== 'EAGAIN' || attempt > 200) throw e;
        await sleep(5);
      }
    }
  }

  /** One call, one reply. Throws VarlinkError for an error reply. */
  call(method: string, parameters?: Record<string, unknown>, opts: CallOptions = {}): Promise<ReplyWithFds> {
    return new Promise((resolve, reject) => {
      this.send({ method, ...(parameters === undefined ? {} : { parameters }) }, opts.fds, {
        more: false,
        onReply: (r) => resolve(r),
        onError: reject,
      });
    });
  }

  /** Sends a call whose reply the server must not send. */
  oneway(method: string, parameters?: Record<string, unknown>, opts: CallOptions = {}): void {
    if (this.closedWith) throw this.closedWith;
    this.conn.send({ method, ...(parameters === undefined ? {} : { parameters }), oneway: true }, opts.fds);
  }

  /** A `more` call: yields every reply until the one without `continues`. */
  async *stream(method: string, parameters?: Record<string, unknown>, opts: CallOptions = {}): AsyncGenerator<ReplyWithFds> {
    const replies: ReplyWithFds[] = [];
    let done = false;
    let failure: Error | undefined;
    let wake: (() => void) | undefined;
    this.send({ method, ...(parameters === undefined ? {} : { parameters }), more: true }, opts.fds, {
      more: true,
      onReply: (r, continues) => {
        replies.push(r);
        done = !continues;
        wake?.();
      },
      onError: (e) => {
        failure = e;
        done = true;
        wake?.();
      },
    });
    for (;;) {
      if (replies.length) {
        yield replies.shift() as ReplyWithFds;
        continue;
      }
      if (failure) throw failure;
      if (done) return;
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  }

  close(): void {
    this.conn.close();
  }

  private send(message: object, fds: number[] | undefined, pending: Pending): void {
    if (this.closedWith) return pending.onError(this.closedWith);
    this.pending.push(pending);
    this.conn.ref(true);
    this.conn.send(message, fds);
  }

  private onMessage(msg: Incoming): void {
    const p = this.pending[0];
    if (!p) {
      msg.fds.forEach(closeQuietly);
      return this.conn.close(new ProtocolError('reply without a call'));
    }
    let reply;
    try {
      reply = parseReply(msg.text);
      if (reply.continues && !p.more) throw new ProtocolError("'continues' on a call without 'more'");
    } catch (e) {
      msg.fds.forEach(closeQuietly);
      return this.conn.close(e as Error);
    }
    if (!reply.continues) {
      this.pending.shift();
      if (!this.pending.length) this.conn.ref(false);
    }
    if (reply.error) {
      msg.fds.forEach(closeQuietly);
      p.onError(new VarlinkError(reply.error, reply.parameters));
    } else {
      p.onReply({ parameters: reply.parameters, fds: msg.fds }, reply.continues);
    }
  }

  private onClose(err?: Error): void {
    this.closedWith = err ?? new Error('connection closed');
    for (const p of this.pending.splice(0)) p.onError(this.closedWith);
  }
}

/**
 * Calls a method of an interface module (ipc/interfaces/) and checks the reply against its IDL
 * as the server checks calls (validateCall): declared fields strictly, fields a newer server
 * added dropped. A reply that does not fit is a ProtocolError, its fds closed.
 */
export async function callMethod<M extends MethodMap, E extends ErrorMap, K extends keyof M & string>(
  client: VarlinkClient,
  def: VarlinkInterface<M, E>,
  method: K,
  parameters: M[K]['parameters'],
  opts?: CallOptions,
): Promise<{ parameters: M[K]['reply']; fds: number[] }> {
  const reply = await client.call(def.method[method], parameters as Record<string, unknown>, opts);
  const check = validateCall(def.iface, def.iface.methods.get(method)!.output, reply.parameters);
  if (!check.ok) {
    reply.fds.forEach(closeQuietly);
    throw new ProtocolError(`${def.method[method]}: invalid reply field ${check.parameter || '(parameters)'}`);
  }
  return { parameters: check.parameters as M[K]['reply'], fds: reply.fds };
}
