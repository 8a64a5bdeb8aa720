import type { Clock } from '../platform/clock.js';

interface CacheEntry {
  readonly cells: readonly string[];
  readonly expiresAtMs: number;
}

/**
 * The location service's answers, by user key: the cells that held devices of the user, until
 * the answer expires; at most `maxEntries`, the least recently used evicted beyond (0: nothing
 * is cached).
 */
export class LocationCache {
  /** Map order is insertion order: re-inserting marks an entry most recently used. */
  private readonly entries = new Map<string, CacheEntry>();

  constructor(
    private readonly clock: Clock,
    private readonly maxEntries: number,
  ) {}

  /** The fresh answer for `key`, marked most recently used; undefined when none is. */
  get(key: string): readonly string[] | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAtMs <= this.clock.now()) {
      this.entries.delete(key);
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.cells;
  }

  put(key: string, cells: readonly string[], expiresAtMs: number): void {
    if (this.maxEntries === 0) return;
    this.entries.delete(key);
    this.entries.set(key, { cells, expiresAtMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /**
   * Adds `cellId` to the answer for `key`, if one is fresh; false when none is. The answer keeps
   * its expiry: the watches of the query behind it last only that long.
   */
  add(key: string, cellId: string): boolean {
    const cells = this.get(key);
    if (cells === undefined) return false;
    if (!cells.includes(cellId)) this.put(key, [...cells, cellId].sort(), this.entries.get(key)!.expiresAtMs);
    return true;
  }

  /** Drops `cellId` from the answer for `key`. */
  remove(key: string, cellId: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined || !entry.cells.includes(cellId)) return;
    const cells = entry.cells.filter((cell) => cell !== cellId);
    // An emptied entry is dropped rather than kept as a negative answer: the user probably moved,
    // and the next locate should ask where to.
    if (cells.length === 0) this.entries.delete(key);
    else this.entries.set(key, { cells, expiresAtMs: entry.expiresAtMs });
  }

  /** Drops every answer naming `cellId` (not just trims it). */
  removeCell(cellId: string): void {
    for (const [key, entry] of this.entries) if (entry.cells.includes(cellId)) this.entries.delete(key);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }
}
