import type { Store } from '../../platform/store/store.js';
import type { ChatMessage } from '../protocol/frames.js';
import { keys, lastField } from './keys.js';
import { conversationParty } from './principal.js';

/**
 * Sending a message means its sender has read everything up to it, but a send does not write
 * the sender's read cursor (`r/`): that would be a third store write per message. The stored
 * cursor is instead completed by the sender's own messages among the conversation's newest
 * SENT_READ_WINDOW ones:
 *
 *   read cursor of P = max(stored r/P, the seq of P's newest message among the newest SENT_READ_WINDOW)
 *
 * The conversation log keeps this true: the batch that pushes a party's newest message out of
 * that window writes the party's cursor in the same atomic write (conversation-log.ts), and the
 * retention sweeper has the log write them before it deletes any message of the window.
 */
export const SENT_READ_WINDOW = 64;

export interface LoadedReads {
  /** Every party's read cursor. */
  reads: Map<string, number>;
  /** The cursors as stored. */
  stored: Map<string, number>;
  /** Parties whose newest message is beyond their stored cursor, with that message's seq. */
  uncovered: Map<string, number>;
}

/**
 * The read cursors of a conversation from its stored cursors and its newest messages (at least
 * the newest SENT_READ_WINDOW, ascending).
 */
export function readsFrom(conv: string, storedEntries: ReadonlyArray<readonly [string, string]>, newest: readonly ChatMessage[]): LoadedReads {
  const stored = new Map(storedEntries.map(([key, value]) => [lastField(key), Number(value)]));
  const reads = new Map(stored);
  const uncovered = new Map<string, number>();
  const lastSeq = newest.at(-1)?.seq ?? 0;
  for (const message of newest) {
    if (message.role === 'system' || message.seq <= lastSeq - SENT_READ_WINDOW) continue;
    const party = conversationParty(conv, message.role, message.from);
    if (message.seq > (reads.get(party) ?? 0)) reads.set(party, message.seq);
    if (message.seq > (stored.get(party) ?? 0)) uncovered.set(party, message.seq);
  }
  return { reads, stored, uncovered };
}

/** What the log keeps of a conversation's read cursors (ConversationState). */
export interface ReadCursorState {
  readonly reads: ReadonlyMap<string, number>;
  readonly storedReads: Map<string, number>;
  readonly uncoveredSends: Map<string, number>;
  /** Reads being written, by party. */
  readonly readWrites: ReadonlyMap<string, unknown>;
}

/** A conversation's read cursors as the store holds them, for readers outside the log (export). */
export async function storedReadCursors(store: Store, tenant: string, conv: string): Promise<Map<string, number>> {
  const [newest, cursors] = await Promise.all([
    store.range({ ...keys.allMessages(tenant, conv), reverse: true, limit: SENT_READ_WINDOW }),
    store.range({ ...keys.readCursors(tenant, conv), limit: 10_000 }),
  ]);
  const messages = newest.reverse().map(([, value]) => JSON.parse(value) as ChatMessage);
  return readsFrom(conv, cursors, messages).reads;
}

/**
 * The cursors a write that makes `lastSeq` durable must carry (read-cursors.ts): those of the
 * parties whose newest message it pushes out of the newest SENT_READ_WINDOW, unless `sending`
 * (their new message takes over) or a read of theirs is being written (it lands a higher value).
 */
export function windowCheckpoints(state: ReadCursorState, lastSeq: number, sending: ReadonlyMap<string, number>): Map<string, number> {
  const cursors = new Map<string, number>();
  if (state.uncoveredSends.size === 0) return cursors;
  for (const [party, seq] of state.uncoveredSends) {
    if (seq > lastSeq - SENT_READ_WINDOW || sending.has(party) || state.readWrites.has(party)) continue;
    cursors.set(party, state.reads.get(party)!);
  }
  return cursors;
}

/** `written` cursors are durable: the stored ones move, and the sends they cover need no more writing. */
export function coverStoredReads(state: ReadCursorState, written: ReadonlyMap<string, number>): void {
  for (const [party, seq] of written) {
    if (seq <= (state.storedReads.get(party) ?? 0)) continue;
    state.storedReads.set(party, seq);
    if ((state.uncoveredSends.get(party) ?? Infinity) <= seq) state.uncoveredSends.delete(party);
  }
}
