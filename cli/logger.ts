import { pino } from 'pino';
import type { Logger } from '../platform/logger.js';

/** JSON lines on stderr, so stdout stays free for what a command prints for people or scripts. */
export function createLogger(level: string, name: string): Logger {
  return pino({ level, name, base: { pid: process.pid } }, pino.destination(2));
}
