import type { DeviceConnection } from './device.js';

/** The device a relayed desk request answers, and the `id` of its frame. */
export interface DeskRequester {
  readonly connection: DeviceConnection;
  readonly requestId: string | undefined;
}

/**
 * The `close` and `rate` frames this access cell relayed to their merchant's home cell and whose
 * answer it waits for, by request name. A name is the device's session (random per connection)
 * and a counter, so it is unique across the cell's restarts without a store.
 *
 * In memory only and bounded: beyond `maxEntries` the oldest is forgotten, and its device gets
 * no answer (its consultation's system message and `consultation` frame still come). After a
 * restart of this cell the same holds for every request under way.
 */
export class RelayedDeskRequests {
  /** Insertion-ordered, oldest first. */
  private readonly waiting = new Map<string, DeskRequester>();
  private counter = 0;

  constructor(private readonly maxEntries: number) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError('maxEntries must be a positive integer');
  }

  /** Records that `requester` waits for an answer; returns the request's name. */
  track(requester: DeskRequester): string {
    const request = `${requester.connection.session}.${(this.counter++).toString(36)}`;
    this.waiting.set(request, requester);
    while (this.waiting.size > this.maxEntries) this.waiting.delete(this.waiting.keys().next().value!);
    return request;
  }

  /** The request's device, once: undefined when it was answered already, forgotten, or never tracked. */
  settle(request: string): DeskRequester | undefined {
    const requester = this.waiting.get(request);
    this.waiting.delete(request);
    return requester;
  }
}
