// One Varlink stream socket: NUL-framed messages with fds attached the way sd-varlink
// does it. All fds of a message ride on the sendmsg() that carries its first byte, and
// fds that arrive while a message is half read are a protocol error.
import fs from 'node:fs';
import { native, POLL_DISCONNECT, POLL_READABLE, POLL_WRITABLE, type PeerCred, type Poller } from '../native/index.js';
import { dupCloexec } from '../sys/stat.js';
import { ProtocolError } from './errors.js';

/** sd-varlink's VARLINK_BUFFER_MAX: a longer message drops the connection. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const READ_CHUNK = 64 * 1024;
/** Replies a peer has not read yet: above HIGH we stop reading its calls, below LOW we resume. */
const QUEUE_HIGH_BYTES = 4 * 1024 * 1024;
const QUEUE_LOW_BYTES = 1024 * 1024;

export interface Incoming {
  text: string;
  /** fds that came with this message; the receiver owns them. */
  fds: number[];
}

interface Outgoing {
  data: Buffer;
  offset: number;
  fds: number[];
  /** The fds are our duplicates (the message could not go out at once): close them once sent. */
  ownsFds: boolean;
}

export interface ConnectionEvents {
  onMessage(msg: Incoming): void;
  /** Called once; err is set when the connection failed rather than ended. */
  onClose(err?: Error): void;
}

export class Connection {
  private readonly poller: Poller;
  private readonly readBuf = Buffer.allocUnsafe(READ_CHUNK);
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** fds received with the first bytes of the message now being read. */
  private pendingFds: number[] = [];
  private readonly queue: Outgoing[] = [];
  private queuedBytes = 0;
  private closed = false;
  private paused = false;
  /** Reading stopped because the peer does not read its replies. */
  private throttled = false;
  private stallTimer: NodeJS.Timeout | undefined;
  /** Bytes of a partial message are buffered; used for stall detection. */
  get midMessage(): boolean {
    return this.pendingBytes > 0;
  }

  constructor(
    readonly fd: number,
    private readonly events: ConnectionEvents,
    private readonly stallTimeoutMs = 0,
  ) {
    this.poller = new native.Poller(fd, (status, ev) => this.onPoll(status, ev));
    this.updatePoll();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  peerCred(): PeerCred {
    return native.peerCred(this.fd);
  }

  /** Sends one message; the caller keeps its fds and may close them on return: a message that
   * has to wait for the peer carries duplicates. */
  send(message: object, fds: number[] = []): void {
    if (this.closed) return;
    const data = Buffer.from(JSON.stringify(message) + '\0', 'utf8');
    const out: Outgoing = { data, offset: 0, fds, ownsFds: false };
    this.queue.push(out);
    this.queuedBytes += data.length;
    this.flush();
    if (!this.closed && out.offset === 0 && fds.length && this.queue.includes(out)) {
      out.fds = fds.map(dupCloexec);
      out.ownsFds = true;
    }
    if (this.queuedBytes > QUEUE_HIGH_BYTES && !this.throttled) {
      this.throttled = true;
      this.updatePoll();
    }
  }

  /** Stops reading (e.g. while a call is processed) without dropping the connection. */
  pause(): void {
    this.paused = true;
    clearTimeout(this.stallTimer); // a half message waiting on us is not the peer stalling
    this.updatePoll();
  }

  resume(): void {
    this.paused = false;
    this.updatePoll();
    this.armStallTimer();
  }

  /** Whether the event loop should stay alive for this connection. */
  ref(on: boolean): void {
    if (!this.closed) this.poller.ref(on);
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.stallTimer);
    this.poller.close();
    for (const fd of this.pendingFds) closeQuietly(fd);
    this.pendingFds = [];
    this.pending = [];
    for (const out of this.queue) if (out.ownsFds) out.fds.forEach(closeQuietly);
    this.queue.length = 0;
    closeQuietly(this.fd);
    this.events.onClose(err);
  }

  private updatePoll(): void {
    if (this.closed) return;
    // Not reading still notices a peer that hangs up, so a call in progress learns of it.
    const ev = (this.paused || this.throttled ? POLL_DISCONNECT : POLL_READABLE) | (this.queue.length ? POLL_WRITABLE : 0);
    if (ev) this.poller.start(ev);
    else this.poller.stop();
  }

  private onPoll(status: number, ev: number): void {
    if (this.closed) return;
    if (status < 0) return this.close(new Error(`poll failed: ${status}`));
    if (ev & POLL_WRITABLE) this.flush();
    if (ev & POLL_DISCONNECT && (this.paused || this.throttled)) return this.close();
    if (ev & POLL_READABLE && !this.paused && !this.throttled) this.read();
  }

  private flush(): void {
    try {
      while (this.queue.length) {
        const out = this.queue[0];
        const fds = out.offset === 0 ? out.fds : [];
        const n = native.sendmsg(this.fd, out.data, out.offset, out.data.length - out.offset, fds);
        if (n < 0) break;
        if (out.offset === 0 && out.ownsFds) {
          out.fds.forEach(closeQuietly); // the kernel holds its own references now
          out.fds = [];
        }
        out.offset += n;
        this.queuedBytes -= n;
        if (out.offset < out.data.length) continue;
        this.queue.shift();
      }
      if (this.throttled && this.queuedBytes < QUEUE_LOW_BYTES) this.throttled = false;
    } catch (e) {
      // EPIPE/ECONNRESET: the peer is gone.
      return this.close(e as Error);
    }
    this.updatePoll();
  }

  private read(): void {
    // Read until the socket is drained or reading is paused by a handler.
    while (!this.closed && !this.paused && !this.throttled) {
      let r;
      try {
        r = native.recvmsg(this.fd, this.readBuf);
      } catch (e) {
        return this.close(e as Error);
      }
      if (r === null) break;
      if (r.fds.length) {
        if (r.truncated || this.pendingBytes > 0 || r.bytes === 0) {
          r.fds.forEach(closeQuietly);
          return this.close(new ProtocolError('file descriptors arrived in the middle of a message'));
        }
        this.pendingFds = r.fds;
      } else if (r.truncated) {
        return this.close(new ProtocolError('control data truncated'));
      }
      if (r.bytes === 0) return this.close(this.pendingBytes > 0 ? new ProtocolError('connection closed mid-message') : undefined);
      this.consume(this.readBuf.subarray(0, r.bytes));
    }
    this.armStallTimer();
  }

  private consume(chunk: Buffer): void {
    let start = 0;
    while (!this.closed) {
      const nul = chunk.indexOf(0, start);
      if (nul < 0) break;
      const part = chunk.subarray(start, nul);
      const whole = this.pending.length ? Buffer.concat([...this.pending, part]) : part;
      if (whole.length > MAX_MESSAGE_BYTES) return this.close(new ProtocolError('message too large'));
      this.pending = [];
      this.pendingBytes = 0;
      const fds = this.pendingFds;
      this.pendingFds = [];
      start = nul + 1;
      this.events.onMessage({ text: whole.toString('utf8'), fds });
    }
    if (this.closed || start >= chunk.length) return;
    // Copy: readBuf is reused for the next recvmsg.
    const rest = Buffer.from(chunk.subarray(start));
    this.pending.push(rest);
    this.pendingBytes += rest.length;
    if (this.pendingBytes > MAX_MESSAGE_BYTES) this.close(new ProtocolError('message too large'));
  }

  private armStallTimer(): void {
    if (!this.stallTimeoutMs || this.closed) return;
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    if (this.pendingBytes > 0) {
      this.stallTimer = setTimeout(() => this.close(new ProtocolError('peer stalled mid-message')), this.stallTimeoutMs);
      this.stallTimer.unref();
    }
  }
}

export function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // already closed
  }
}
