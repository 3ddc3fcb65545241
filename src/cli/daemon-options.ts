// What `mountgate mntfsd` and `mountgate userdbd` share: their common options (how they run is
// ipc/host.ts). Each daemon's command lives in its own module so that starting one does not
// load the other's code (socket activation pays for every module imported before the first reply).
import { parseCommand, usageError, type Command, type CommandOptions, type ParsedCommand } from './args.js';

/** The options both daemons take (--state-dir: mntfsd's copies, userdbd's registry). */
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
  const given = 'idle-exit' in values && typeof values['idle-exit'] === 'string' ? values['idle-exit'] : undefined;
  // Number('') is 0: an empty value is not "never".
  const idle = given === undefined ? undefined : given.trim() === '' ? NaN : Number(given);
  if (idle !== undefined && !(idle >= 0)) return usageError(cmd, '--idle-exit must be a number of seconds (0: never)');
  return { values, idleExitSeconds: idle };
}
