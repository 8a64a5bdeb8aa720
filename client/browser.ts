import { setChainedTimer } from '../platform/chained-timer.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { BrowserTransport, type WebSocketConstructor } from './browser-transport.js';
import { openClient, type CellmeshClient } from './client.js';
import type { CellmeshClientOptions } from './settings.js';

/**
 * The public surface of the client SDK for browsers: everything in `portable.ts` plus browser
 * adapters of the clock and randomness ports. It imports nothing from Node (the platform's
 * SystemClock unrefs Node timers and SystemRandom reads node:crypto, so neither runs here).
 */
export * from './portable.js';

/** The clock port on the page's wall clock and timers. */
export class BrowserClock implements Clock {
  now(): number {
    return Date.now(); // real-clock-ok: this is the adapter
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    return setChainedTimer(setPageTimer, delayMs, callback);
  }
}

/** One page timer; browsers cap its delay like Node (MAX_TIMER_DELAY_MS). */
function setPageTimer(delayMs: number, callback: () => void): TimerHandle {
  const timer = setTimeout(callback, delayMs); // real-clock-ok: this is the adapter
  return { cancel: () => clearTimeout(timer) };
}

/** The randomness port on Web Crypto, drawn in blocks to keep calls into it rare. */
export class CryptoRandom implements Random {
  private readonly block = new Uint32Array(256);
  private offset = this.block.length;

  next(): number {
    if (this.offset >= this.block.length) {
      globalThis.crypto.getRandomValues(this.block);
      this.offset = 0;
    }
    const value = this.block[this.offset] ?? 0;
    this.offset++;
    return value / 4294967296;
  }
}

export interface BrowserConnectOptions extends Omit<CellmeshClientOptions, 'transport' | 'clock' | 'random'> {
  /** Another WebSocket implementation than `globalThis.WebSocket`. */
  webSocket?: WebSocketConstructor;
  /** Stops waiting for the first session; the client is then closed. */
  signal?: AbortSignal;
}

/** A client on the browser's WebSocket, clock and Web Crypto, resolved once the cell welcomed it. */
export async function connectBrowser(options: BrowserConnectOptions): Promise<CellmeshClient> {
  const { webSocket, signal, ...clientOptions } = options;
  return openClient(
    { ...clientOptions, transport: new BrowserTransport(webSocket), clock: new BrowserClock(), random: new CryptoRandom() },
    signal,
  );
}
