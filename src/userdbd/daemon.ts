// userdbd: io.systemd.NamespaceResource + io.systemd.UserDatabase on one socket, backed by the
// registry under the state directory and by the BPF user namespace policy.
import fs from 'node:fs';
import path from 'node:path';
import { VarlinkServer } from '../ipc/server.js';
import { createLogger, type Logger } from '../log.js';
import { NamespaceResource, type NamespacePolicy } from './namespace-resource.js';
import { Registry } from './registry.js';
import { userDatabaseService } from './user-database.js';
import { sdNotify } from '../sys/notify.js';
import { userdbdStatusService } from './status.js';
import { USERDBD_SOCKET as DEFAULT_LISTEN } from '../sockets.js';

export type { NamespacePolicy } from './namespace-resource.js';

export const DEFAULT_USERDB_LINK = '/run/systemd/userdb/io.systemd.NamespaceResource';
export const DEFAULT_STATE_DIR = '/run/mountgate/userdbd';
const DEFAULT_SWEEP_MS = 60_000;

export interface UserdbdOptions {
  /** Socket path when not socket-activated (default DEFAULT_LISTEN). */
  listen?: string;
  /** Symlink to the socket for userdb clients; default DEFAULT_USERDB_LINK when listening on
   * DEFAULT_LISTEN, none otherwise; null: none. */
  userdbLink?: string | null;
  stateDir?: string;
  /** Exit after this long without connections (socket activation). */
  idleExitSeconds?: number;
  /** Without a policy whose LSM is active, user namespace methods answer
   * UserNamespaceInterfaceNotSupported. */
  policy?: NamespacePolicy;
  /** Allocate even when the policy is not enforcing (the operator's explicit choice). */
  allowWithoutPolicy?: boolean;
  /** Interval of the liveness sweep that backs up the policy's death reports; 0 disables it. */
  sweepIntervalMs?: number;
  logger?: Logger;
  env?: NodeJS.ProcessEnv;
}

export interface Userdbd {
  readonly resource: NamespaceResource;
  readonly registry: Registry;
  /** Resolves once the daemon stopped (close() or idle exit). */
  readonly done: Promise<void>;
  close(): Promise<void>;
}

export async function startUserdbd(opts: UserdbdOptions = {}): Promise<Userdbd> {
  const log = opts.logger ?? createLogger('userdbd');
  const env = opts.env ?? process.env;
  const registry = Registry.open(opts.stateDir ?? DEFAULT_STATE_DIR);
  const resource = new NamespaceResource({ registry, policy: opts.policy, allowWithoutPolicy: opts.allowWithoutPolicy, logger: log });
  const reaped = await resource.reapDead();
  const unmapped = await resource.settlePending();
  resource.manageAll();
  log.info({ registered: registry.size, reaped, unmapped, policy: opts.policy?.status() }, 'registry loaded');

  let closing: Promise<void> | undefined;
  let resolveDone = (): void => {};
  const done = new Promise<void>((r) => (resolveDone = r));
  const server = new VarlinkServer({
    idleTimeoutMs: opts.idleExitSeconds ? opts.idleExitSeconds * 1000 : undefined,
    onIdle: () => {
      log.info('idle, exiting');
      void close();
    },
    onCall: ({ method, peer, error, ms }) => log.info({ method, uid: peer.uid, error, ms: Math.round(ms * 10) / 10 }, 'call'),
    onInternalError: (err, method) => log.error({ err, method }, 'handler failed'),
  });
  server.addService(resource.service());
  server.addService(userDatabaseService(registry));
  server.addService(userdbdStatusService(registry, opts.policy));

  let link: string | null = null;
  if (server.listenActivated(env) === 0) {
    const listen = opts.listen ?? DEFAULT_LISTEN;
    server.listenPath(listen);
    link = opts.userdbLink === undefined ? (listen === DEFAULT_LISTEN ? DEFAULT_USERDB_LINK : null) : opts.userdbLink;
    if (link) symlinkReplacing(listen, link);
  }

  const sweepMs = opts.sweepIntervalMs ?? DEFAULT_SWEEP_MS;
  const sweep = sweepMs > 0 ? setInterval(() => void resource.reapDead().catch((err: unknown) => log.error({ err }, 'sweep failed')), sweepMs) : undefined;
  sweep?.unref();
  if (opts.policy) void followDeaths(opts.policy, resource, log);

  const close = (): Promise<void> => {
    closing ??= (async () => {
      clearInterval(sweep);
      server.close();
      if (link) removeLinkTo(link, opts.listen ?? DEFAULT_LISTEN);
      await registry.exclusive(() => registry.close());
      resolveDone();
    })();
    return closing;
  };
  sdNotify('READY=1', env);
  log.info({ listen: opts.listen ?? DEFAULT_LISTEN, link }, 'ready');
  return { resource, registry, done, close };
}

/** Releases namespaces as the policy reports their deaths (ends when the policy is closed). */
async function followDeaths(policy: NamespacePolicy, resource: NamespaceResource, log: Logger): Promise<void> {
  try {
    for await (const d of policy.deaths()) {
      if (await resource.release(d.inode)) log.info({ userns: d.inode }, 'namespace died, released');
    }
  } catch (err) {
    log.error({ err }, 'death events stopped; relying on the liveness sweep');
  }
}

function symlinkReplacing(target: string, link: string): void {
  fs.mkdirSync(path.dirname(link), { recursive: true });
  fs.rmSync(link, { force: true });
  fs.symlinkSync(target, link);
}

function removeLinkTo(link: string, target: string): void {
  try {
    if (fs.readlinkSync(link) === target) fs.rmSync(link, { force: true });
  } catch {
    // already gone
  }
}
