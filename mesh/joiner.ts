/**
 * Joining the mesh through the bootstrap addresses: dial with retries and jittered backoff, one
 * anti-entropy exchange with the first that answers, `waitJoined` for the outcome, and going back
 * to the bootstrap list when a cell finds itself with no connection.
 */
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Random } from '../platform/random.js';
import type { ExchangeResult } from './anti-entropy.js';
import { backoffMs, dialWithTimeout } from './dialling.js';
import type { MembershipOptions } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import type { MeshTransport, PeerId } from './transport.js';

export interface JoinerInit {
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  readonly options: MembershipOptions;
  readonly logger: Logger;
  /** Addresses of cells to join through (this cell's own are skipped). */
  readonly bootstrap: readonly string[];
  /** Whether the mesh is running or leaving. */
  readonly isActive: () => boolean;
  /** Pulls the directory from `peer` and pushes this cell's record. */
  readonly exchange: (peer: PeerId) => Promise<ExchangeResult>;
  /** Joined through a peer: tell the cells this one now reaches (own record and heartbeat). */
  readonly announce: () => void;
}

/** How joining went: pending until the first exchange, or until the attempts run out or the mesh stops. */
export class Joiner {
  private state: 'pending' | 'joined' | 'failed' = 'pending';
  private readonly waiters = new Set<{ resolve: () => void; reject: (error: Error) => void }>();
  private loopRunning = false;
  private rejoinAttempts = 0;
  private nextRejoinAtMs = 0;
  private readonly sleepers = new Set<() => void>();

  constructor(private readonly init: JoinerInit) {}

  /**
   * Resolves once this cell has pulled the directory from a bootstrap peer (at once when it has
   * no bootstrap addresses); rejects with BOOTSTRAP_FAILED after `bootstrapMaxAttempts` rounds,
   * STOPPED when stopped first, ABORTED on the signal.
   */
  waitJoined(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.state === 'joined') return Promise.resolve();
    if (this.state === 'failed') return Promise.reject(new MembershipError('BOOTSTRAP_FAILED'));
    return new Promise<void>((resolve, reject) => {
      const signal = options.signal;
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        reject(new MembershipError('ABORTED'));
      };
      const waiter = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (error: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      if (signal?.aborted === true) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  /** Tries the bootstrap addresses in rounds until one answers or `bootstrapMaxAttempts` rounds pass. */
  async join(): Promise<void> {
    const { options } = this.init;
    const addresses = this.bootstrapAddresses();
    if (addresses.length === 0) {
      this.settle('joined');
      return;
    }
    this.loopRunning = true;
    try {
      for (let attempt = 0; attempt < options.bootstrapMaxAttempts; attempt++) {
        for (const address of addresses) {
          if (!this.init.isActive()) return;
          if (await this.joinThrough(address)) {
            this.settle('joined');
            return;
          }
        }
        await this.sleep(backoffMs(this.init.random, attempt, options.bootstrapRetryBaseMs, options.bootstrapRetryMaxMs));
      }
      this.init.logger.warn({ addresses }, 'no bootstrap address answered; the connection keeper goes on trying');
      this.settle('failed');
    } finally {
      this.loopRunning = false;
    }
  }

  /** The cell has no connection: tries the next bootstrap address, with backoff between tries. */
  rejoinIfIsolated(nowMs: number): void {
    const { options } = this.init;
    const addresses = this.bootstrapAddresses();
    if (addresses.length === 0 || this.loopRunning || nowMs < this.nextRejoinAtMs) return;
    const address = addresses[this.rejoinAttempts % addresses.length] as string;
    this.nextRejoinAtMs = nowMs + backoffMs(this.init.random, this.rejoinAttempts, options.bootstrapRetryBaseMs, options.bootstrapRetryMaxMs);
    this.rejoinAttempts++;
    void this.joinThrough(address).then((joined) => {
      if (!joined) return;
      this.rejoinAttempts = 0;
      this.settle('joined');
    });
  }

  /** The mesh stopped: wakes the join loop and fails the waiters with `error`. */
  stop(error: Error): void {
    for (const wake of [...this.sleepers]) wake();
    this.settle('failed', error);
  }

  /** Dials `address`, pulls the directory from it and pushes this record; true on success. */
  private async joinThrough(address: string): Promise<boolean> {
    try {
      const peer = await dialWithTimeout(this.init.transport, this.init.clock, address, this.init.options.dialTimeoutMs);
      if (!this.init.isActive()) return false;
      const result = await this.init.exchange(peer);
      if (result.skipped) return false;
      this.init.logger.info({ address, peer, received: result.received }, 'joined the mesh');
      this.init.announce();
      return true;
    } catch (error) {
      this.init.logger.debug({ err: error, address }, 'bootstrap attempt failed');
      return false;
    }
  }

  private bootstrapAddresses(): string[] {
    const selfSuffix = `/p2p/${this.init.transport.self}`;
    return this.init.bootstrap.filter((address) => !address.endsWith(selfSuffix));
  }

  private settle(state: 'joined' | 'failed', error?: Error): void {
    if (this.state !== 'pending') return;
    this.state = state;
    for (const waiter of this.waiters) {
      if (state === 'joined') waiter.resolve();
      else waiter.reject(error ?? new MembershipError('BOOTSTRAP_FAILED'));
    }
    this.waiters.clear();
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        handle.cancel();
        this.sleepers.delete(wake);
        resolve();
      };
      const handle = this.init.clock.setTimer(delayMs, wake);
      this.sleepers.add(wake);
    });
  }
}
