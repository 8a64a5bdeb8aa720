import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { ChatMessage } from '../protocol/frames.js';
import type { DeviceConnection } from './device.js';

/** Who waits for the seq of a relayed send: the device that sent it, and HTTP callers. */
export interface RelayedSend {
  /** The connection to answer with `sent`; undefined for a send that came over HTTP. */
  connection: DeviceConnection | undefined;
  requestId: string | undefined;
  /** The body relayed, so that a resend of the cmid with another body is told apart. */
  readonly body: string;
  readonly receivedAtMs: number;
  readonly waiters: Set<Waiter>;
}

interface Waiter {
  resolve(message: ChatMessage): void;
  reject(error: Error): void;
  timer: TimerHandle;
}

/**
 * The sends this access cell relayed to their conversation's home cell and whose seq it has not
 * seen yet, by (tenant, conv, sender, cmid). When the message comes back (as a forwarded
 * message, or in a backfill) the device that sent it is answered with `sent`, like a local send.
 *
 * In memory only and bounded: beyond `maxEntries` the oldest is dropped. Nothing is lost then:
 * the message still reaches every device of the sender here as a delivery, and clients match
 * their own messages by cmid (docs/protocol.md, `queued`). The same holds after a restart.
 */
export class RelayedSends {
  /** Insertion-ordered, oldest first. */
  private readonly entries = new Map<string, RelayedSend>();

  constructor(
    private readonly clock: Clock,
    private readonly maxEntries: number,
    /** Called for each waiter that gives up (timeout, eviction); returns the error it gets. */
    private readonly pendingError: () => Error,
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError('maxEntries must be a positive integer');
  }

  /**
   * Records that `connection` (if any) waits for the send's seq. Returns true when the send was
   * not pending yet, so the caller relays it; false when it is (a resend), so it is not relayed
   * twice. A later device of the same send takes over the answer.
   */
  track(key: string, body: string, connection: DeviceConnection | undefined, requestId: string | undefined): boolean {
    const existing = this.entries.get(key);
    if (existing !== undefined) {
      if (connection !== undefined) {
        existing.connection = connection;
        existing.requestId = requestId;
      }
      return false;
    }
    this.entries.set(key, { connection, requestId, body, receivedAtMs: this.clock.now(), waiters: new Set() });
    while (this.entries.size > this.maxEntries) {
      const [oldestKey, oldest] = this.entries.entries().next().value as [string, RelayedSend];
      this.entries.delete(oldestKey);
      this.rejectWaiters(oldest, this.pendingError());
    }
    return true;
  }

  /** The body of the send under way with `key`; undefined when none is. */
  pendingBody(key: string): string | undefined {
    return this.entries.get(key)?.body;
  }

  /** Waits for the message of a tracked send, at most `timeoutMs`; rejects with `pendingError()` then. */
  wait(key: string, timeoutMs: number): Promise<ChatMessage> {
    const entry = this.entries.get(key);
    if (entry === undefined) return Promise.reject(this.pendingError());
    return new Promise<ChatMessage>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: this.clock.setTimer(timeoutMs, () => {
          entry.waiters.delete(waiter);
          reject(this.pendingError());
        }),
      };
      entry.waiters.add(waiter);
    });
  }

  /** The send's message arrived: removes it and resolves its HTTP waiters; returns who else waits. */
  settle(key: string, message: ChatMessage): RelayedSend | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    for (const waiter of entry.waiters) {
      waiter.timer.cancel();
      waiter.resolve(message);
    }
    entry.waiters.clear();
    return entry;
  }

  /** The send failed (not stored, or refused by the home cell): removes it and fails its waiters. */
  fail(key: string, error: Error): RelayedSend | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    this.rejectWaiters(entry, error);
    return entry;
  }

  private rejectWaiters(entry: RelayedSend, error: Error): void {
    for (const waiter of entry.waiters) {
      waiter.timer.cancel();
      waiter.reject(error);
    }
    entry.waiters.clear();
  }
}

/** The key of a send: a sender's cmid names one message per conversation for good. */
export function relayedSendKey(tenant: string, conv: string, sender: string, cmid: string): string {
  return `${tenant}/${conv}/${sender}/${cmid}`;
}
