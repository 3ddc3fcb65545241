// Varlink server: accepts on a path or on socket-activated fds, validates every call
// against the interface's IDL, answers pipelined calls in order, passes fds both ways.
// Like systemd's services it declares org.varlink.service and io.systemd itself.
import fs from 'node:fs';
import path from 'node:path';
import { createLogger } from '../log.js';
import { native, POLL_READABLE, type PeerCred, type Poller } from '../native/index.js';
import { Connection, closeQuietly, type Incoming } from './connection.js';
import { ERR, ProtocolError, VarlinkError, invalidParameter, systemError, toVarlinkError } from './errors.js';
import type { Interface } from './idl.js';
import { IoSystemd } from './interfaces/io.systemd.js';
import { VarlinkService } from './interfaces/org.varlink.service.js';
import { validateCall } from './validate.js';
import { serve } from './interfaces/define.js';
import { parseCall, type Call } from './message.js';

export interface CallContext {
  readonly method: string;
  readonly peer: PeerCred;
  readonly more: boolean;
  readonly oneway: boolean;
  /** Returns the fd at index i of this call's fd list, or throws InvalidParameter. The
   * fd stays owned by the call and is closed when the call ends. */
  fd(index: unknown, parameter: string): number;
  /** Takes ownership of a passed fd: it is not closed when the call ends. */
  takeFd(index: unknown, parameter: string): number;
  /** Sends an intermediate reply of a `more` stream. */
  stream(parameters: Record<string, unknown>, fds?: number[]): void;
  /** True once the client disconnected; long handlers may stop early. */
  readonly disconnected: boolean;
  /** Called when the client disconnects mid-call (to release what was set up). */
  onDisconnect(cb: () => void): void;
}

export interface HandlerResult {
  parameters: Record<string, unknown>;
  /** fds attached to the final reply; the server closes them after sending. */
  fds?: number[];
}

export type Handler = (parameters: Record<string, unknown>, ctx: CallContext) => Promise<HandlerResult>;

export interface MethodOptions {
  /** The method only works as a stream (sd-varlink answers ExpectedMore otherwise). */
  requiresMore?: boolean;
}

export interface Service {
  iface: Interface;
  handlers: Record<string, Handler>;
  options?: Record<string, MethodOptions>;
}

export interface ServerOptions {
  vendor?: string;
  product?: string;
  version?: string;
  url?: string;
  maxConnections?: number;
  maxConnectionsPerUid?: number;
  /** A client that sends part of a message and then nothing for this long is dropped. */
  stallTimeoutMs?: number;
  /** Called when no connection has been open for this long (socket-activated exit). */
  idleTimeoutMs?: number;
  onIdle?: () => void;
  /** Called for every finished call (for logging). */
  onCall?: (info: { method: string; peer: PeerCred; error?: string; ms: number }) => void;
  /** Called when a handler threw something that was not a VarlinkError. */
  onInternalError?: (err: unknown, method: string) => void;
  /** Debug logs of the core (ignored parameters); a 'varlink' logger on stderr if not given. */
  log?: DebugLog;
}

/** The part of a pino Logger the server uses. */
export interface DebugLog {
  debug(obj: object, msg: string): void;
}

// A client could send thousands of unknown keys: log a bounded summary.
const LOGGED_FIELDS_MAX = 16;
const LOGGED_NAME_MAX = 64;

interface ConnState {
  conn: Connection;
  peer: PeerCred;
  queue: Incoming[];
  busy: boolean;
  disconnectCbs: Array<() => void>;
}

export class VarlinkServer {
  private readonly services = new Map<string, Service>();
  private readonly listeners: Array<{ fd: number; poller: Poller; path?: string; ino?: number }> = [];
  private readonly conns = new Set<ConnState>();
  private readonly perUid = new Map<number, number>();
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly opts: Required<Omit<ServerOptions, 'onIdle' | 'onCall' | 'onInternalError' | 'idleTimeoutMs' | 'log'>> & ServerOptions;

  constructor(options: ServerOptions = {}) {
    this.opts = {
      vendor: 'mountgate',
      product: 'mountgate',
      version: '0.1.0',
      url: 'https://github.com/mountgate/mountgate',
      maxConnections: 4096,
      maxConnectionsPerUid: 1024,
      stallTimeoutMs: 10_000,
      ...options,
    };
    this.addService(
      serve(VarlinkService, {
        GetInfo: async () => ({
          parameters: {
            vendor: this.opts.vendor,
            product: this.opts.product,
            version: this.opts.version,
            url: this.opts.url,
            // Sorted, as sd-varlink's GetInfo lists them.
            interfaces: [...this.services.keys()].sort(),
          },
        }),
        GetInterfaceDescription: async (p) => {
          const svc = this.services.get(p.interface);
          if (!svc) throw new VarlinkError(ERR.InterfaceNotFound, { interface: p.interface });
          return { parameters: { description: svc.iface.text } };
        },
      }),
    );
    // No methods: declared for its errors, io.systemd.System above all, which any handler may
    // answer with (SystemError). A call to io.systemd.* gets MethodNotFound.
    this.addService(serve(IoSystemd, {}));
  }

  addService(service: Service): void {
    this.services.set(service.iface.name, service);
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Binds a new socket at path (replacing a stale socket file), mode 0666: every
   * local user may connect, authorization happens per call. */
  listenPath(socketPath: string): void {
    fs.mkdirSync(path.dirname(socketPath), { recursive: true });
    try {
      if (fs.lstatSync(socketPath).isSocket()) fs.unlinkSync(socketPath);
    } catch {
      // does not exist
    }
    const fd = native.listen(socketPath, 4096);
    fs.chmodSync(socketPath, 0o666);
    this.addListener(fd, socketPath);
    this.listeners[this.listeners.length - 1]!.ino = fs.statSync(socketPath).ino;
  }

  /** Adopts sockets passed by systemd socket activation ($LISTEN_FDS); returns how many. */
  listenActivated(env: NodeJS.ProcessEnv = process.env): number {
    if (env.LISTEN_PID !== String(process.pid)) return 0;
    const n = Number(env.LISTEN_FDS ?? '0');
    if (!Number.isInteger(n) || n < 1) return 0;
    for (let fd = 3; fd < 3 + n; fd++) {
      native.setNonBlocking(fd);
      this.addListener(fd);
    }
    // Children must not believe the fds are theirs.
    delete env.LISTEN_PID;
    delete env.LISTEN_FDS;
    delete env.LISTEN_FDNAMES;
    return n;
  }

  addListener(fd: number, socketPath?: string): void {
    const poller = new native.Poller(fd, () => this.acceptAll(fd));
    poller.start(POLL_READABLE);
    this.listeners.push({ fd, poller, path: socketPath });
    this.armIdle();
  }

  close(): void {
    for (const l of this.listeners) {
      l.poller.close();
      closeQuietly(l.fd);
      // Only our own socket file: a newer daemon may already listen on the same path.
      if (l.path && l.ino !== undefined && statIno(l.path) === l.ino) fs.rmSync(l.path, { force: true });
    }
    this.listeners.length = 0;
    for (const c of [...this.conns]) c.conn.close();
    clearTimeout(this.idleTimer);
  }

  private acceptAll(lfd: number): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = native.accept(lfd);
      } catch {
        return; // EMFILE and friends: try again on the next readiness event
      }
      if (fd === null) return;
      this.adopt(fd);
    }
  }

  private adopt(fd: number): void {
    let peer: PeerCred;
    try {
      peer = native.peerCred(fd);
    } catch {
      closeQuietly(fd);
      return;
    }
    const count = this.perUid.get(peer.uid) ?? 0;
    if (this.conns.size >= this.opts.maxConnections || count >= this.opts.maxConnectionsPerUid) {
      closeQuietly(fd);
      return;
    }
    this.perUid.set(peer.uid, count + 1);
    clearTimeout(this.idleTimer);
    const state: ConnState = { peer, queue: [], busy: false, disconnectCbs: [], conn: undefined as unknown as Connection };
    state.conn = new Connection(
      fd,
      {
        onMessage: (msg) => {
          state.queue.push(msg);
          // No further calls (nor their fds) are read while these are handled: what one
          // connection can make the daemon hold stays bounded by one read.
          state.conn.pause();
          void this.pump(state);
        },
        onClose: () => this.drop(state),
      },
      this.opts.stallTimeoutMs,
    );
    this.conns.add(state);
  }

  private drop(state: ConnState): void {
    if (!this.conns.delete(state)) return;
    const left = (this.perUid.get(state.peer.uid) ?? 1) - 1;
    if (left > 0) this.perUid.set(state.peer.uid, left);
    else this.perUid.delete(state.peer.uid);
    for (const m of state.queue) m.fds.forEach(closeQuietly);
    state.queue = [];
    for (const cb of state.disconnectCbs) cb();
    this.armIdle();
  }

  private armIdle(): void {
    const { idleTimeoutMs, onIdle } = this.opts;
    if (!idleTimeoutMs || !onIdle || this.conns.size > 0) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.conns.size === 0 && onIdle(), idleTimeoutMs);
  }

  /** Handles queued calls one at a time so replies go out in call order. */
  private async pump(state: ConnState): Promise<void> {
    if (state.busy) return;
    state.busy = true;
    while (state.queue.length && !state.conn.isClosed) {
      const msg = state.queue.shift() as Incoming;
      await this.handle(state, msg);
    }
    state.busy = false;
    state.conn.resume();
  }

  private async handle(state: ConnState, msg: Incoming): Promise<void> {
    const owned = new Set(msg.fds);
    let call: Call;
    try {
      call = parseCall(msg.text);
    } catch (e) {
      msg.fds.forEach(closeQuietly);
      state.conn.close(e instanceof ProtocolError ? e : new ProtocolError(String(e)));
      return;
    }
    const started = performance.now();
    let errorName: string | undefined;
    const reply = (obj: object, fds: number[] = []): void => {
      if (!call.oneway) state.conn.send(obj, fds);
    };
    try {
      const { parameters, fds } = await this.dispatch(call, state, msg.fds, owned);
      reply(call.more ? { parameters, continues: false } : { parameters }, fds);
      fds?.forEach(closeQuietly);
    } catch (e) {
      const err = e instanceof VarlinkError ? e : this.internal(e, call.method);
      errorName = err.error;
      reply({ error: err.error, parameters: err.parameters });
    } finally {
      for (const fd of owned) closeQuietly(fd);
      state.disconnectCbs = [];
      this.opts.onCall?.({ method: call.method, peer: state.peer, error: errorName, ms: performance.now() - started });
    }
  }

  /** Something other than a VarlinkError escaped a handler: logged as the daemon's failure,
   * answered through the one translation (errors.ts toVarlinkError), EIO if it has no errno. */
  private internal(e: unknown, method: string): VarlinkError {
    this.opts.onInternalError?.(e, method);
    return toVarlinkError(e) ?? systemError('EIO');
  }

  private async dispatch(call: Call, state: ConnState, fds: number[], owned: Set<number>): Promise<HandlerResult> {
    const dot = call.method.lastIndexOf('.');
    const svc = dot > 0 ? this.services.get(call.method.slice(0, dot)) : undefined;
    const name = call.method.slice(dot + 1);
    const decl = svc?.iface.methods.get(name);
    if (!svc || !decl) throw new VarlinkError(ERR.MethodNotFound, { method: call.method });
    const handler = svc.handlers[name];
    if (!handler) throw new VarlinkError(ERR.MethodNotImplemented, { method: call.method });
    const check = validateCall(svc.iface, decl.input, call.parameters);
    if (!check.ok) throw invalidParameter(check.parameter);
    if (check.ignored.length) this.logIgnored(call.method, state.peer, check.ignored);
    if (svc.options?.[name]?.requiresMore && !call.more) throw new VarlinkError(ERR.ExpectedMore);
    const fdAt = (index: unknown, parameter: string): number => {
      if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= fds.length) throw invalidParameter(parameter);
      return fds[index];
    };
    const ctx: CallContext = {
      method: call.method,
      peer: state.peer,
      more: call.more,
      oneway: call.oneway,
      fd: fdAt,
      takeFd: (index, parameter) => {
        const fd = fdAt(index, parameter);
        if (!owned.delete(fd)) throw invalidParameter(parameter); // taken twice
        return fd;
      },
      stream: (parameters, outFds = []) => {
        if (!call.more) throw new Error('stream() without more');
        state.conn.send({ parameters, continues: true }, outFds);
        outFds.forEach(closeQuietly);
      },
      get disconnected() {
        return state.conn.isClosed;
      },
      onDisconnect: (cb) => {
        if (state.conn.isClosed) cb();
        else state.disconnectCbs.push(cb);
      },
    };
    return handler(check.parameters, ctx);
  }

  /** Fields a newer client sent that this server does not know (see validateCall). */
  private logIgnored(method: string, peer: PeerCred, ignored: string[]): void {
    this.opts.log ??= createLogger('varlink').child({ product: this.opts.product });
    const fields = ignored.slice(0, LOGGED_FIELDS_MAX).map((f) => (f.length > LOGGED_NAME_MAX ? `${f.slice(0, LOGGED_NAME_MAX)}…` : f));
    this.opts.log.debug(
      { method, uid: peer.uid, fields, ...(ignored.length > fields.length ? { more: ignored.length - fields.length } : {}) },
      'ignoring unknown parameters',
    );
  }
}

function statIno(p: string): number | undefined {
  try {
    return fs.lstatSync(p).ino;
  } catch {
    return undefined;
  }
}
