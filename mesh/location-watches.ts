import type { Clock } from '../platform/clock.js';
import type { PeerId } from './transport.js';

/**
 * Users other cells asked for lately, by user key, each to its askers' peers and the clock ms
 * their watch ends; least recently asked first. The location service tells a watcher when a
 * device of a watched user connects here (location.ts explains why).
 */
export class LocationWatches {
  private readonly watches = new Map<string, Map<PeerId, number>>();

  constructor(
    private readonly clock: Clock,
    /** Most users watched; the least recently asked are dropped beyond (0: nothing is watched). */
    private readonly maxWatchedUsers: number,
    /** Called for each live watch dropped to stay within `maxWatchedUsers`. */
    private readonly onDropped: () => void,
  ) {}

  /** Remembers `asker` as a watcher of the users for `watchMs`; drops expired and excess watches, oldest first. */
  watch(asker: PeerId, keys: Iterable<string>, watchMs: number): void {
    if (this.maxWatchedUsers === 0) return;
    const nowMs = this.clock.now();
    const endsAtMs = nowMs + watchMs;
    for (const key of keys) {
      const askers = this.watches.get(key) ?? new Map<PeerId, number>();
      this.watches.delete(key);
      askers.set(asker, Math.max(askers.get(asker) ?? 0, endsAtMs));
      this.watches.set(key, askers);
    }
    // Least recently asked first: the expired ones are at the front (with one watch length for all askers).
    for (const [key, askers] of this.watches) {
      const live = lastWatchEndMs(askers) > nowMs;
      if (live && this.watches.size <= this.maxWatchedUsers) break;
      if (live) this.onDropped();
      this.watches.delete(key);
    }
  }

  /** The peers watching the user now; their expired watches are dropped. */
  watchers(key: string): PeerId[] {
    const askers = this.watches.get(key);
    if (askers === undefined) return [];
    const nowMs = this.clock.now();
    const live: PeerId[] = [];
    for (const [asker, endsAtMs] of askers) {
      if (endsAtMs <= nowMs) askers.delete(asker);
      else live.push(asker);
    }
    if (askers.size === 0) this.watches.delete(key);
    return live;
  }

  clear(): void {
    this.watches.clear();
  }
}

/** When the last of a user's watches ends (clock ms). */
function lastWatchEndMs(askers: ReadonlyMap<PeerId, number>): number {
  let endMs = 0;
  for (const askerEndMs of askers.values()) endMs = Math.max(endMs, askerEndMs);
  return endMs;
}
