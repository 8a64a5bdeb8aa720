import { z } from 'zod';
import type { Clock } from '../platform/clock.js';
import type { Store } from '../platform/store/store.js';
import { parseJson } from '../platform/wire-json.js';

/**
 * What cross-cell forwarding (forward-wire.ts) keeps in a cell's Store. Keys are ASCII; cell ids
 * are URI-encoded, so '/' separates fields:
 *   mesh/outbox/<dest>/<seq, 16 digits>   an entry waiting for <dest>: {key, payload, enqueuedAtMs}
 *   mesh/outbox-acked/<dest>              the highest seq <dest> acknowledged (so numbering never restarts)
 *   mesh/outbox-epoch                     this outbox store's epoch {id, generation}
 *   mesh/inbox-hw/<source>                the receiver's mark for <source> {epochId, generation, hw}
 */

const SEQ_DIGITS = 16;
/** Scans at start read the store in pages of this many entries. */
const SCAN_PAGE_ENTRIES = 1_024;

export const StoredEntry = z.object({ key: z.string(), payload: z.json(), enqueuedAtMs: z.number() });
export const StoredMark = z.object({ epochId: z.string(), generation: z.number().int().min(1), hw: z.number().int().min(0) });
export type StoredMark = z.infer<typeof StoredMark>;

function encodeSeq(seq: number): string {
  return seq.toString().padStart(SEQ_DIGITS, '0');
}

const OUTBOX_PREFIX = 'mesh/outbox/';
/** '0' follows '/' in ASCII: closes the range of every `mesh/outbox/...` key. */
const OUTBOX_PREFIX_END = 'mesh/outbox0';

const ACKED_PREFIX = 'mesh/outbox-acked/';
const ACKED_PREFIX_END = 'mesh/outbox-acked0';

export const outboxKeys = {
  entry: (destination: string, seq: number) => `${OUTBOX_PREFIX}${encodeURIComponent(destination)}/${encodeSeq(seq)}`,
  entries: (destination: string) => `${OUTBOX_PREFIX}${encodeURIComponent(destination)}/`,
  acked: (destination: string) => `${ACKED_PREFIX}${encodeURIComponent(destination)}`,
  epoch: 'mesh/outbox-epoch',
  inboxMark: (source: string) => `mesh/inbox-hw/${encodeURIComponent(source)}`,
};

/** The destination and seq of an outbox entry key; undefined for another key. */
export function parseEntryKey(key: string): { destination: string; seq: number } | undefined {
  if (!key.startsWith(OUTBOX_PREFIX)) return undefined;
  const rest = key.slice(OUTBOX_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const seq = Number(rest.slice(slash + 1));
  if (!Number.isSafeInteger(seq) || seq < 1) return undefined;
  try {
    return { destination: decodeURIComponent(rest.slice(0, slash)), seq };
  } catch {
    return undefined;
  }
}

/** What an outbox store holds for one destination, as read at start. */
export interface StoredDestination {
  /** Entries stored and not acknowledged. */
  waiting: number;
  /** When the first of them was enqueued (clock ms); undefined when none waits. */
  oldestEnqueuedAtMs: number | undefined;
  /** Highest seq acknowledged. */
  ackedSeq: number;
  /** Where numbering resumes: above every stored entry and every acknowledged one. */
  nextSeq: number;
}

/**
 * Reads every destination with stored entries or an acknowledged mark. `destination` is called
 * once per destination found and gives the record to fill in (the outbox's own state).
 */
export async function scanOutboxStore(store: Store, clock: Clock, destination: (id: string) => StoredDestination): Promise<void> {
  let from = OUTBOX_PREFIX;
  for (;;) {
    const [first] = await store.range({ gte: from, lt: OUTBOX_PREFIX_END, limit: 1 });
    if (first === undefined) break;
    const parsed = parseEntryKey(first[0]);
    if (parsed === undefined) {
      // Not an entry key (should not exist): step over it.
      from = `${first[0]}\0`;
      continue;
    }
    const state = destination(parsed.destination);
    const prefix = outboxKeys.entries(parsed.destination);
    state.oldestEnqueuedAtMs = parseJson(StoredEntry, first[1])?.enqueuedAtMs ?? clock.now();
    let lastSeq = 0;
    let cursor = prefix;
    for (;;) {
      const page = await store.range({ gte: cursor, lt: `${prefix}\x7f`, limit: SCAN_PAGE_ENTRIES });
      for (const [key] of page) lastSeq = Math.max(lastSeq, parseEntryKey(key)?.seq ?? 0);
      state.waiting += page.length;
      if (page.length < SCAN_PAGE_ENTRIES) break;
      cursor = `${page[page.length - 1]![0]}\0`;
    }
    state.nextSeq = lastSeq + 1;
    // Every later destination's key sorts after this one's entries ('0' follows '/').
    from = `${OUTBOX_PREFIX}${encodeURIComponent(parsed.destination)}0`;
  }
  // Destinations with nothing waiting still have an acked mark: numbering resumes above it,
  // or the receiver would drop the next entries as duplicates of long-acknowledged ones.
  let cursor = ACKED_PREFIX;
  for (;;) {
    const page = await store.range({ gte: cursor, lt: ACKED_PREFIX_END, limit: SCAN_PAGE_ENTRIES });
    for (const [key, value] of page) {
      let id: string;
      try {
        id = decodeURIComponent(key.slice(ACKED_PREFIX.length));
      } catch {
        continue;
      }
      const acked = Number(value);
      if (!Number.isSafeInteger(acked) || acked < 0) continue;
      const state = destination(id);
      state.ackedSeq = Math.max(state.ackedSeq, acked);
      state.nextSeq = Math.max(state.nextSeq, acked + 1);
    }
    if (page.length < SCAN_PAGE_ENTRIES) break;
    cursor = `${page[page.length - 1]![0]}\0`;
  }
}
