import type { Logger } from '../cell/logger.js';
import { SystemClock } from '../platform/clock.js';

/**
 * Waits for SIGTERM or SIGINT, then runs `stop` and exits 0; exits 1 when `stop` takes longer
 * than `graceMs` or fails. A second signal exits at once.
 */
export async function runUntilSignal(stop: () => Promise<void>, graceMs: number, logger: Logger): Promise<never> {
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  logger.info({ signal }, 'shutting down gracefully');
  const forceExit = (reason: string, code: number) => () => {
    logger.error({ signal }, reason);
    process.exit(code);
  };
  process.once('SIGTERM', forceExit('second signal: exiting now', 1));
  process.once('SIGINT', forceExit('second signal: exiting now', 1));
  // The clock's timer, not setTimeout: a grace of 25 days or more (shutdownGraceSeconds is not
  // capped) would make setTimeout exit at once.
  new SystemClock().setTimer(graceMs, forceExit(`shutdown took longer than ${graceMs} ms: exiting now`, 1));
  try {
    await stop();
  } catch (error) {
    logger.error({ err: error }, 'shutdown failed');
    process.exit(1);
  }
  process.exit(0);
}
