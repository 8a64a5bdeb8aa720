import type { Logger } from '../platform/logger.js';
import { SystemClock } from '../platform/clock.js';

/**
 * Listens for SIGTERM and SIGINT from now on; resolves with the first one. From then on a
 * further signal exits 1 at once. Call it before the process starts its work and announces it:
 * a signal that arrives while nothing listens kills the process without a graceful stop (an
 * orchestrator that stops a pod right after it started, a test that signals on the listening
 * line).
 */
export function listenForStopSignal(logger: Logger): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      const exitNow = (): void => {
        logger.error({ signal }, 'second signal: exiting now');
        process.exit(1);
      };
      process.once('SIGTERM', exitNow);
      process.once('SIGINT', exitNow);
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

/**
 * Waits for `stopSignal` (from listenForStopSignal), then runs `stop` and exits 0; exits 1 when
 * `stop` takes longer than `graceMs` or fails.
 */
export async function runUntilSignal(stopSignal: Promise<NodeJS.Signals>, stop: () => Promise<void>, graceMs: number, logger: Logger): Promise<never> {
  const signal = await stopSignal;
  logger.info({ signal }, 'shutting down gracefully');
  // The clock's timer, not setTimeout: a grace of 25 days or more (shutdownGraceSeconds is not
  // capped) would make setTimeout exit at once.
  new SystemClock().setTimer(graceMs, () => {
    logger.error({ signal }, `shutdown took longer than ${graceMs} ms: exiting now`);
    process.exit(1);
  });
  try {
    await stop();
  } catch (error) {
    logger.error({ err: error }, 'shutdown failed');
    process.exit(1);
  }
  process.exit(0);
}
