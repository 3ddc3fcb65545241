// `mountgate mntfsd` and `mountgate userdbd`: parse options, start the daemon, stop on signals.
import { parseArgs } from 'node:util';
import { MNTFSD_SOCKET, startMntfsd, USERDBD_SOCKET } from '../mntfsd/daemon.js';

export const MNTFSD_USAGE = `Usage: mountgate mntfsd [OPTIONS]

Serve io.systemd.MountFileSystem: verify signed disk images and return idmapped mount fds.
Uses the socket passed by systemd (LISTEN_FDS) when started by socket activation.

Options:
  --listen PATH        socket path (default ${MNTFSD_SOCKET})
  --userdbd PATH       userdbd socket that records returned mounts (default ${USERDBD_SOCKET});
                       'none' to not register mounts
  --verity-certs DIR   trust the certificates (*.crt) in DIR; repeatable
                       (default /etc/verity.d /run/verity.d /usr/local/lib/verity.d /usr/lib/verity.d)
  --trusted-dir DIR    trust images directly inside DIR by location; repeatable (default none)
  --state-dir DIR      accepted for symmetry with userdbd; mntfsd keeps its state in memory
  --idle-exit SECONDS  exit after this long without connections
  -h, --help           show this text
`;

function stopOnSignals(stop: () => void): void {
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

export async function mntfsdCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: 'string' },
      userdbd: { type: 'string' },
      'verity-certs': { type: 'string', multiple: true },
      'trusted-dir': { type: 'string', multiple: true },
      'state-dir': { type: 'string' },
      'idle-exit': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(MNTFSD_USAGE);
    return 0;
  }
  const idle = values['idle-exit'] === undefined ? undefined : Number(values['idle-exit']);
  if (idle !== undefined && !(idle > 0)) {
    process.stderr.write(`mountgate mntfsd: --idle-exit must be a positive number\n${MNTFSD_USAGE}`);
    return 2;
  }
  const daemon = startMntfsd({
    listen: values.listen,
    userdbd: values.userdbd === 'none' ? null : values.userdbd,
    certificateDirectories: values['verity-certs'],
    trustedDirectories: values['trusted-dir'],
    idleExitSeconds: idle,
  });
  stopOnSignals(() => daemon.close());
  return -1;
}
