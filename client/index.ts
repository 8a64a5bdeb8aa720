import { SystemClock } from '../platform/clock.js';
import { SystemRandom } from '../platform/random.js';
import { openClient, type CellmeshClient } from './client.js';
import type { CellmeshClientOptions } from './settings.js';
import { WsTransport, type WsTransportInit } from './ws-transport.js';

/**
 * The public surface of the client SDK for Node.js. Browsers import `client/browser.ts`, which
 * has the same surface without the Node adapters.
 */
export * from './portable.js';
export { WsTransport, type WsTransportInit } from './ws-transport.js';
export { mintCustomerToken, type CustomerTokenOptions } from './server-tokens.js';

export interface NodeConnectOptions extends Omit<CellmeshClientOptions, 'transport' | 'clock' | 'random'> {
  /** Settings of the `ws` transport. */
  ws?: WsTransportInit;
  /** Stops waiting for the first session; the client is then closed. */
  signal?: AbortSignal;
}

/**
 * A client on the real world's ports (the `ws` package, the system clock, the system's
 * cryptographic randomness), resolved once the cell welcomed it. Until then failed attempts are
 * retried with backoff; bound the wait with `signal` (for example `AbortSignal.timeout(5_000)`)
 * or `maxReconnectAttempts`.
 */
export async function connectNode(options: NodeConnectOptions): Promise<CellmeshClient> {
  const { ws, signal, ...clientOptions } = options;
  return openClient({ ...clientOptions, transport: new WsTransport(ws), clock: new SystemClock(), random: new SystemRandom() }, signal);
}
