// userdbd: io.systemd.NamespaceResource + io.systemd.UserDatabase on one socket, backed by the
// registry under the state directory and by the BPF user namespace policy.
import fs from 'node:fs';
import path from 'node:path';
import { startHost, type Hosted, type HostedOptions } from '../ipc/host.js';
import { createLogger, type Logger } from '../log.js';
import { NamespaceResource, type NamespacePolicy } from './namespace-resource.js';
import { NamespaceManager } from './manager.js';
import { Registry } from './registry.js';
import { userDatabaseService } from './user-database.js';
import { userdbdStatusService } from './status.js';
import { USERDBD_SOCKET as DEFAULT_LISTEN } from '../sockets.js';

export type { NamespacePolicy } from './namespace-resource.js';

export const DEFAULT_USERDB_LINK = '/run/systemd/userdb/io.systemd.NamespaceResource';
export const DEFAULT_STATE_DIR = '/run/mountgate/userdbd';
const DEFAULT_SWEEP_MS = 60_000;

/** idleExitSeconds applies only while no namespace is registered. */
export interface UserdbdOptions extends HostedOptions {
  /** Symlink to the socket for userdb clients; default DEFAULT_USERDB_LINK when listening on
   * DEFAULT_LISTEN, none otherwise; null: none. */
  userdbLink?: string | null;
  stateDir?: string;
  /** Without a policy whose LSM is active, user namespace methods answer
   * UserNamespaceInterfaceNotSupported. */
  policy?: NamespacePolicy;
  /** Allocate even when the policy is not enforcing (the operator's explicit choice). */
  allowWithoutPolicy?: boolean;
  /** Interval of the liveness sweep that backs up the policy's death reports; 0 disables it. */
  sweepIntervalMs?: number;
}

export interface Userdbd extends Hosted {
  readonly resource: NamespaceResource;
  readonly registry: Registry;
}

export async function startUserdbd(opts: UserdbdOptions = {}): Promise<Userdbd> {
  const log = opts.logger ?? createLogger('userdbd');
  const env = opts.env ?? process.env;
  const registry = Registry.open(opts.stateDir ?? DEFAULT_STATE_DIR);
  // The lifecycle (manager.ts) and the Varlink methods (namespace-resource.ts) apart, as
  // systemd's nsresourced-manager.c and nsresourcework.c.
  const manager = new NamespaceManager({ registry, policy: opts.policy, logger: log });
  const resource = new NamespaceResource({ registry, policy: opts.policy, allowWithoutPolicy: opts.allowWithoutPolicy, logger: log, manager });
  const reaped = await manager.reapDead();
  const unmapped = await manager.settlePending();
  manager.manageAll();
  log.info({ registered: registry.size, reaped, unmapped, policy: opts.policy?.status() }, 'registry loaded');

  const listen = opts.listen ?? DEFAULT_LISTEN;
  const sweepMs = opts.sweepIntervalMs ?? DEFAULT_SWEEP_MS;
  let sweep: NodeJS.Timeout | undefined;
  let link: string | null = null;
  const host = startHost({
    log,
    services: [resource.service(), userDatabaseService(registry), userdbdStatusService(registry, opts.policy)],
    listen,
    env,
    idleExitSeconds: opts.idleExitSeconds,
    // The registered namespaces' deaths come to this process (the policy's reports, the
    // sweep): it stays while there are any, so their ranges are freed when they die.
    mayExit: () => registry.size === 0,
    onClose: async () => {
      clearInterval(sweep);
      if (link) removeLinkTo(link, listen);
      await registry.exclusive(() => registry.close());
    },
    ownsProcess: opts.ownsProcess,
  });
  if (!host.activated) {
    link = opts.userdbLink === undefined ? (listen === DEFAULT_LISTEN ? DEFAULT_USERDB_LINK : null) : opts.userdbLink;
    if (link) symlinkReplacing(listen, link);
  }
  sweep = sweepMs > 0 ? setInterval(() => void manager.reapDead().catch((err: unknown) => log.error({ err }, 'sweep failed')), sweepMs) : undefined;
  sweep?.unref();
  if (opts.policy) void followDeaths(opts.policy, manager, log);
  host.ready('ready', { link });
  return { resource, registry, done: host.done, close: host.close };
}

/** Releases namespaces as the policy reports their deaths (ends when the policy is closed). */
async function followDeaths(policy: NamespacePolicy, manager: NamespaceManager, log: Logger): Promise<void> {
  try {
    for await (const d of policy.deaths()) {
      if (await manager.release(d.inode)) log.info({ userns: d.inode }, 'namespace died, released');
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
