/**
 * Dialling a cell: a dial bounded by the injected clock, and the jittered exponential backoff
 * between attempts that the joiner and the connection keeper share.
 */
import type { Clock } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import type { MeshTransport, PeerId } from './transport.js';

/** Dials `address`, aborting after `timeoutMs` on `clock`. */
export async function dialWithTimeout(transport: MeshTransport, clock: Clock, address: string, timeoutMs: number): Promise<PeerId> {
  const controller = new AbortController();
  const timer = clock.setTimer(timeoutMs, () => controller.abort());
  try {
    return await transport.dial(address, { signal: controller.signal });
  } finally {
    timer.cancel();
  }
}

/** Exponential backoff with jitter: base * 2^attempt, capped, times 0.75-1.25. */
export function backoffMs(random: Random, attempt: number, baseMs: number, maxMs: number): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(exponential * (0.75 + 0.5 * random.next()));
}
