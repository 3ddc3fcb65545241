// Structured JSON logs (pino) on stderr; requests are logged with method and peer uid.
// One root logger per process: every module's logger is a child of it, so they share one
// level ($MOUNTGATE_LOG_LEVEL, read once) and one stderr stream, which pino flushes on exit.
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger | undefined;

/** A logger whose records carry `name` (the daemon or module), a child of the process's root. */
export function createLogger(name: string): Logger {
  root ??= pino({ level: process.env.MOUNTGATE_LOG_LEVEL ?? 'info' }, pino.destination({ fd: 2, sync: false }));
  return root.child({ name });
}
