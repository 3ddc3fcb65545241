#!/usr/bin/env node
// The `mountgate` command.
import { parseArgs } from 'node:util';
import { VarlinkServer } from '../ipc/server.js';
import { createLogger } from '../log.js';

const USAGE = `Usage: mountgate COMMAND [OPTIONS]

Commands:
  serve [--listen PATH] [--idle-exit SECONDS]
      Run a Varlink server with the org.varlink.service interface on PATH, or on the
      sockets passed by systemd socket activation (LISTEN_FDS).
  help
      Show this text.
`;

async function serve(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { listen: { type: 'string' }, 'idle-exit': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const log = createLogger('mountgate');
  const idle = values['idle-exit'] ? Number(values['idle-exit']) * 1000 : undefined;
  const server = new VarlinkServer({
    idleTimeoutMs: idle,
    onIdle: () => {
      log.info('idle, exiting');
      server.close();
    },
    onCall: ({ method, peer, error, ms }) => log.info({ method, uid: peer.uid, error, ms: Math.round(ms * 10) / 10 }, 'call'),
    onInternalError: (err, method) => log.error({ err, method }, 'handler failed'),
  });
  const activated = server.listenActivated();
  if (!activated) {
    if (!values.listen) {
      process.stderr.write('mountgate serve: --listen PATH is required without socket activation\n');
      return 2;
    }
    server.listenPath(values.listen);
  }
  log.info({ listen: values.listen ?? `${activated} activated socket(s)` }, 'listening');
  const stop = (): void => server.close();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return -1; // keep running
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return serve(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`mountgate: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mountgate: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
