// `mountgate mntfsd`: parse options and start the daemon (ipc/host.ts runs it until stopped).
import { startMntfsd } from '../mntfsd/daemon.js';
import { DEFAULT_IDLE_EXIT_SECONDS } from '../ipc/host.js';
import { MNTFSD_SOCKET, USERDBD_SOCKET } from '../sockets.js';
import { usageError, type Command } from './args.js';
import { parseDaemon } from './daemon-options.js';

const MNTFSD_USAGE = `Usage: mountgate mntfsd [OPTIONS]

Serve io.systemd.MountFileSystem: verify signed disk images and return idmapped mount fds.
Uses the socket passed by systemd (LISTEN_FDS) when started by socket activation.

Options:
  --listen PATH        socket path (default ${MNTFSD_SOCKET})
  --userdbd PATH       userdbd socket that records returned mounts (default ${USERDBD_SOCKET});
                       'none' to not register mounts
  --verity-certs DIR   trust the certificates (*.crt) in DIR; repeatable
                       (default /etc/verity.d /run/verity.d /usr/local/lib/verity.d /usr/lib/verity.d)
  --trusted-dir DIR    trust images directly inside DIR by location; repeatable (default none)
  --verity BACKEND     how verified partitions are served: dm-verity (kernel device-mapper),
                       copy (verified into private memory), auto (default: dm-verity when
                       /dev/mapper/control and the verity target exist, else copy)
  --state-dir DIR      root-only directory (created 0700 if missing) for verified copies that
                       do not fit --copy-memory, as unnamed files that vanish with the daemon
                       (default: $STATE_DIRECTORY, which systemd sets from the unit's
                       StateDirectory=; without it none, copies stay in memory)
  --copy-memory BYTES  memory for verified copies, with an optional K/M/G suffix (default: a
                       quarter of this machine's memory); unused copies are evicted to stay
                       within it, and new copies that still do not fit go to --state-dir
  --idle-exit SECONDS  exit after this long without connections (mounts handed out stay
                       valid); 0: never (default: ${DEFAULT_IDLE_EXIT_SECONDS} when socket-activated, else never)
  -h, --help           show this text
`;

const MNTFSD: Command = { name: 'mntfsd', usage: MNTFSD_USAGE };

export async function mntfsdCommand(args: string[]): Promise<number> {
  const parsed = parseDaemon(MNTFSD, args, {
    userdbd: { type: 'string' },
    'verity-certs': { type: 'string', multiple: true },
    'trusted-dir': { type: 'string', multiple: true },
    verity: { type: 'string' },
    'copy-memory': { type: 'string' },
  });
  if (typeof parsed === 'number') return parsed;
  const { values, idleExitSeconds } = parsed;
  const verity = values.verity ?? 'auto';
  if (verity !== 'auto' && verity !== 'dm-verity' && verity !== 'copy') return usageError(MNTFSD, '--verity must be auto, dm-verity or copy');
  const copyMemoryBudget = values['copy-memory'] === undefined ? undefined : parseBytes(values['copy-memory']);
  if (copyMemoryBudget === null) return usageError(MNTFSD, '--copy-memory must be a number of bytes, optionally with K, M or G');
  startMntfsd({
    listen: values.listen,
    userdbd: values.userdbd === 'none' ? null : values.userdbd,
    certificateDirectories: values['verity-certs'],
    trustedDirectories: values['trusted-dir'],
    idleExitSeconds,
    verity,
    // systemd passes the unit's StateDirectory= as $STATE_DIRECTORY (systemd.exec(5)).
    stateDir: values['state-dir'] ?? (process.env.STATE_DIRECTORY || undefined),
    copyMemoryBudget,
    ownsProcess: true,
  });
  return -1;
}

/** "512M" → 536870912 (binary suffixes, as systemd's parse_size()); null if malformed. */
export function parseBytes(s: string): number | null {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(s.trim());
  if (!m) return null;
  const n = Number(m[1]) * 1024 ** 'BKMGT'.indexOf((m[2] || 'B').toUpperCase());
  return Number.isSafeInteger(n) ? n : null;
}
