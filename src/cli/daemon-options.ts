// What `mountgate mntfsd` and `mountgate userdbd` share: their common options and signal
// handling. Each daemon's command lives in its own module so that starting one does not load
// the other's code (socket activation pays for every module imported before the first reply).
import { parseCommand, usageError, type Command, type CommandOptions, type ParsedCommand } from './args.js';

/** The options both daemons take. */
const DAEMON_OPTIONS = {
  listen: { type: 'string' },
  'state-dir': { type: 'string' },
  'idle-exit': { type: 'string' },
} as const;

export interface ParsedDaemon<O extends CommandOptions> {
  values: ParsedCommand<typeof DAEMON_OPTIONS & O>['values'];
  idleExitSeconds: number | undefined;
}

/** parseCommand() with the daemons' common options, and --idle-exit checked. */
export function parseDaemon<const O extends CommandOptions>(cmd: Command, args: string[], options: O): ParsedDaemon<O> | number {
  const parsed = parseCommand(cmd, args, { options: { ...DAEMON_OPTIONS, ...options } });
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  const idle = 'idle-exit' in values && typeof values['idle-exit'] === 'string' ? Number(values['idle-exit']) : undefined;
  if (idle !== undefined && !(idle > 0)) return usageError(cmd, '--idle-exit must be a positive number');
  return { values, idleExitSeconds: idle };
}

/** Stops the daemon on SIGTERM (systemd) or SIGINT (a terminal). */
export function stopOnSignals(stop: () => void): void {
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
