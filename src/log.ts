// Structured JSON logs (pino) on stderr; requests are logged with method and peer uid.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(name: string): Logger {
  return pino({ name, level: process.env.MOUNTGATE_LOG_LEVEL ?? 'info' }, pino.destination({ fd: 2, sync: false }));
}
