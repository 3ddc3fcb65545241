// The daemon host: what userdbd and mntfsd do alike to serve their Varlink services. It listens on
// the socket systemd passes ($LISTEN_FDS, sd_listen_fds(3)) or else on a path, logs every call
// with method and peer uid, sends READY=1 (sd_notify(3)) once the daemon is ready, exits when
// idle, stops on SIGTERM/SIGINT when it runs the process, and closes once, whoever asks first.
// The daemons only supply their services and what to release after the server (onClose).
//
// Idle exit: by default only under socket activation, after DEFAULT_IDLE_EXIT_SECONDS without
// connections; the socket unit then starts the daemon again on the next connection. systemd's
// own workers do the same: systemd-mountwork and systemd-nsresourcework exit after
// LISTEN_IDLE_USEC (90 s) without a connection (run() in mountwork.c and nsresourcework.c).
// A daemon that still holds something an exit would lose says so through mayExit(): the
// host then keeps checking, once per idle period, until it may go.
import { sdNotify } from '../sys/notify.js';
import type { Logger } from '../log.js';
import { VarlinkServer, type Service } from './server.js';

/** Idle exit under socket activation when no --idle-exit is given (systemd's LISTEN_IDLE_USEC). */
export const DEFAULT_IDLE_EXIT_SECONDS = 90;

/** How a daemon's start function is hosted (userdbd's and mntfsd's options extend it). */
export interface HostedOptions {
  /** The socket path when not socket-activated (default: the daemon's well-known path). */
  listen?: string;
  /** Seconds without connections before exiting; 0: never. Default: DEFAULT_IDLE_EXIT_SECONDS
   * when socket-activated, never otherwise. */
  idleExitSeconds?: number;
  /** The daemon's logger (default: a child of the process's root logger). */
  logger?: Logger;
  /** Where $LISTEN_FDS, $LISTEN_PID and $NOTIFY_SOCKET are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** The daemon is this process (the CLI): stop on SIGTERM and SIGINT, and exit once stopped. */
  ownsProcess?: boolean;
}

/** What a hosted daemon's start function returns, besides its own state. */
export interface Hosted {
  /** Resolves once the daemon stopped (close(), idle exit or a signal). */
  readonly done: Promise<void>;
  /** Stops the daemon; every call returns the same promise. */
  close(): Promise<void>;
}

export interface HostOptions extends Omit<HostedOptions, 'listen' | 'logger'> {
  log: Logger;
  /** GetInfo's product. */
  product?: string;
  services: readonly Service[];
  /** The socket path when not socket-activated. */
  listen: string;
  /** Whether an idle daemon may exit now (default: always). */
  mayExit?: () => boolean;
  /** Releases the daemon's own state, after the server stopped accepting and dropped its clients. */
  onClose?: () => void | Promise<void>;
}

export interface DaemonHost extends Hosted {
  /** How many sockets systemd passed (0: listening on `listen`). */
  readonly activated: number;
  /** Sends READY=1 and logs MSG with what the host listens on, the idle exit in effect, and FIELDS. */
  ready(msg: string, fields?: Record<string, unknown>): void;
}

/** A process that does not exit this long after its daemon stopped has a handle left open; it
 * must go anyway, since systemd starts no new instance for the socket while this one runs. */
const EXIT_GRACE_MS = 5000;

export function startHost(opts: HostOptions): DaemonHost {
  const { log } = opts;
  const env = opts.env ?? process.env;
  let lastCall = 0;
  let recheck: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;
  let resolveDone = (): void => {};
  const done = new Promise<void>((r) => (resolveDone = r));

  // The server arms its idle timer as it starts listening, before activation is known: it gets
  // the default too, and onIdle() ignores it unless idle exit applies.
  const timeoutSeconds = opts.idleExitSeconds ?? DEFAULT_IDLE_EXIT_SECONDS;
  const server: VarlinkServer = new VarlinkServer({
    product: opts.product,
    idleTimeoutMs: timeoutSeconds > 0 ? timeoutSeconds * 1000 : undefined,
    onIdle: () => onIdle(),
    onCall: ({ method, peer, error, ms }) => {
      lastCall = performance.now();
      log.info({ method, uid: peer.uid, error, ms: Math.round(ms * 10) / 10 }, 'call');
    },
    onInternalError: (err, method) => log.error({ err, method }, 'handler failed'),
  });
  for (const s of opts.services) server.addService(s);
  const activated = server.listenActivated(env);
  if (!activated) server.listenPath(opts.listen);
  const idleExitSeconds = opts.idleExitSeconds ?? (activated ? DEFAULT_IDLE_EXIT_SECONDS : 0);
  const idleMs = idleExitSeconds * 1000;

  /** The server saw no connection for idleMs: exit, unless the daemon still holds something. */
  function onIdle(): void {
    if (closing || idleMs === 0) return;
    if (opts.mayExit?.() ?? true) {
      log.info('idle, exiting');
      void close();
      return;
    }
    // The server calls again only after its next connection ends: check once per idle period
    // meanwhile, counting calls as activity (a connection that makes none does no harm).
    recheck ??= setInterval(() => {
      if (server.connectionCount === 0 && performance.now() - lastCall >= idleMs) onIdle();
    }, idleMs);
  }

  const stop = (): void => void close();
  const close = (): Promise<void> => {
    closing ??= (async () => {
      clearInterval(recheck);
      if (opts.ownsProcess) {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
      }
      server.close();
      try {
        await opts.onClose?.();
      } finally {
        resolveDone();
        if (opts.ownsProcess) setTimeout(() => process.exit(), EXIT_GRACE_MS).unref();
      }
    })();
    return closing;
  };
  if (opts.ownsProcess) {
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  }

  const listening = activated ? `${activated} activated socket(s)` : opts.listen;
  return {
    activated,
    ready(msg, fields = {}) {
      sdNotify('READY=1', env);
      log.info({ listen: listening, idleExitSeconds, ...fields }, msg);
    },
    done,
    close,
  };
}
