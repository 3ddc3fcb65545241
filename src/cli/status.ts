// `mountgate status`: what the daemons hold right now: user ranges and their owners, the BPF
// policy, verified images and mounts handed out. Asks each daemon's io.mountgate.*.GetStatus.
import { MNTFSD_SOCKET, USERDBD_SOCKET } from '../client/index.js';
import { VarlinkClient, callMethod } from '../ipc/client.js';
import { ProtocolError, VarlinkError } from '../ipc/errors.js';
import type { ErrorMap, VarlinkInterface } from '../ipc/interfaces/define.js';
import { MntfsdStatus as MntfsdInterface, type GetStatusReply as MntfsdStatusReply } from '../ipc/interfaces/io.mountgate.Mntfsd.js';
import { UserdbdStatus as UserdbdInterface, type GetStatusReply as UserdbdStatusReply } from '../ipc/interfaces/io.mountgate.Userdbd.js';
import { parseCommand, type Command } from './args.js';

const STATUS_USAGE = `Usage: mountgate status [OPTIONS]

Show what userdbd and mntfsd hold: the user ranges in use and by whom, whether the BPF
policy is attached, the verified images and how many mounts were handed out.

Options:
  --userdbd PATH  userdbd socket (default ${USERDBD_SOCKET})
  --mntfsd PATH   mntfsd socket (default ${MNTFSD_SOCKET})
  --json          print the status as JSON on stdout
  -h, --help      show this text

Exit status: 0 at least one daemon answered, 1 neither is reachable, 2 usage error.
`;

/** A daemon that accepts but never answers must not hang the command. */
const TIMEOUT_MS = 10_000;

/** userdbd's GetStatus reply (io.mountgate.Userdbd), the policy's optional fields filled in. */
export type UserdbdStatus = Omit<UserdbdStatusReply, 'policy'> & {
  policy: UserdbdStatusReply['policy'] & { hooks: string[]; reason: string | null };
};
/** mntfsd's GetStatus reply (io.mountgate.Mntfsd). */
export type MntfsdStatus = MntfsdStatusReply;

export type DaemonStatus<T> =
  | { socket: string; state: 'ok'; status: T }
  /** Not reachable (no socket, refused, timed out). */
  | { socket: string; state: 'unreachable'; error: string }
  /** Reachable, but it answered with an error or something unexpected. */
  | { socket: string; state: 'error'; error: string };

export interface Status {
  userdbd: DaemonStatus<UserdbdStatus>;
  mntfsd: DaemonStatus<MntfsdStatus>;
}

type StatusInterface<R extends object> = VarlinkInterface<{ GetStatus: { parameters: Record<string, never>; reply: R } }, ErrorMap>;

async function query<T, R extends object>(socket: string, def: StatusInterface<R>, normalize: (reply: R) => T): Promise<DaemonStatus<T>> {
  let client: VarlinkClient;
  try {
    client = await VarlinkClient.connect(socket);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { socket, state: 'unreachable', error: e.code ?? e.message };
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
    });
    const reply = await Promise.race([callMethod(client, def, 'GetStatus', {}), timeout]);
    return { socket, state: 'ok', status: normalize(reply.parameters) };
  } catch (err) {
    if (err instanceof VarlinkError) return { socket, state: 'error', error: err.error };
    if (err instanceof ProtocolError) return { socket, state: 'error', error: `unexpected reply: ${err.message}` };
    return { socket, state: 'unreachable', error: (err as Error).message };
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

async function getStatus(sockets: { userdbd?: string; mntfsd?: string } = {}): Promise<Status> {
  const [userdbd, mntfsd] = await Promise.all([
    query(sockets.userdbd ?? USERDBD_SOCKET, UserdbdInterface, (r): UserdbdStatus => ({ ...r, policy: { ...r.policy, hooks: r.policy.hooks ?? [], reason: r.policy.reason ?? null } })),
    query(sockets.mntfsd ?? MNTFSD_SOCKET, MntfsdInterface, (r): MntfsdStatus => r),
  ]);
  return { userdbd, mntfsd };
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `    ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}`);
}

function policyText(p: UserdbdStatus['policy']): string {
  const state = p.attached ? 'attached' : 'NOT attached';
  const details = [p.lsm ? 'BPF LSM active' : 'BPF LSM not active', p.pinned ? 'pinned' : 'not pinned', `${p.managed} namespace(s) managed`];
  const hooks = p.hooks.length > 0 ? `; hooks: ${p.hooks.join(' ')}` : '';
  return `${state} (${details.join(', ')})${p.reason ? `: ${p.reason}` : ''}${hooks}`;
}

function userdbdText(d: DaemonStatus<UserdbdStatus>): string[] {
  const lines = [`userdbd  ${d.socket}`];
  if (d.state !== 'ok') return [...lines, `  ${d.state === 'unreachable' ? 'not reachable' : 'error'}: ${d.error}`];
  const s = d.status;
  lines.push(`  BPF policy:     ${policyText(s.policy)}`);
  lines.push(`  Ranges in use:  ${s.namespaces.length}`);
  if (s.namespaces.length) {
    lines.push(
      ...table([
        ['NAME', 'OWNER', 'USERNS', 'UIDS', 'DELEGATED'],
        ...s.namespaces.map((n) => [
          n.name,
          String(n.owner),
          String(n.userNamespaceInode),
          `${n.base}-${n.base + n.size - 1}`,
          n.delegations.length ? n.delegations.map((b) => `${b}-${b + 65535}`).join(',') : '-',
        ]),
      ]),
    );
  }
  return lines;
}

function mntfsdText(d: DaemonStatus<MntfsdStatus>): string[] {
  const lines = [`mntfsd   ${d.socket}`];
  if (d.state !== 'ok') return [...lines, `  ${d.state === 'unreachable' ? 'not reachable' : 'error'}: ${d.error}`];
  const s = d.status;
  lines.push(`  Mounts handed out:  ${s.mountsHandedOut}`);
  lines.push(`  Verifications:      ${s.verifications} (cache hits: ${s.cacheHits})`);
  lines.push(`  Verified images:    ${s.cachedImages.length}`);
  const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
  lines.push(`  Verified copies:    ${mib(s.copyBytesInMemory)} in memory (budget ${mib(s.copyMemoryBudget)}), ${mib(s.copyBytesOnDisk)} on disk`);
  if (s.cachedImages.length) lines.push(...table([['ROOT HASH', 'FS'], ...s.cachedImages.map((c) => [c.rootHash, c.fileSystemType])]));
  return lines;
}

function formatStatus(s: Status): string {
  return `${[...userdbdText(s.userdbd), '', ...mntfsdText(s.mntfsd)].join('\n')}\n`;
}

const STATUS: Command = { name: 'status', usage: STATUS_USAGE };

export async function statusCommand(args: string[]): Promise<number> {
  const parsed = parseCommand(STATUS, args, {
    options: {
      userdbd: { type: 'string' },
      mntfsd: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  const status = await getStatus({ userdbd: values.userdbd, mntfsd: values.mntfsd });
  process.stdout.write(values.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
  return status.userdbd.state === 'unreachable' && status.mntfsd.state === 'unreachable' ? 1 : 0;
}
