import type { Store } from '../../platform/store/store.js';
import type { Identity } from '../access/tokens.js';
import type { ConversationSummary } from '../protocol/frames.js';
import type { ConversationLog } from './conversation-log.js';
import { MAX_CONVERSATIONS_PER_DEVICE } from './delivery.js';
import type { DeviceConnection } from './device.js';
import { keys, lastField } from './keys.js';
import { parsePartyId, partyId } from './principal.js';
import { jsonBytes, responseByteBudget } from './response-bytes.js';

export interface InboxSources {
  store: Store;
  log: ConversationLog;
  maxBackpressureBytes: number;
}

export interface InboxQuery {
  /** The asking device's connection: its cursors in memory are fresher than the stored ones. */
  connection?: DeviceConnection | undefined;
  /** Conversations with ids after this one (the last of the page before). */
  after?: string | undefined;
  /** Only these conversations (an agent at a desk sees its own consultations). */
  only?: ReadonlySet<string>;
}

/**
 * The user's conversations with cursors and unread counts, as seen from its device, in order of
 * their ids from after `after`: a page bounded in bytes like a history page; `hasMore` says
 * that the next page starts after the last conversation of this one.
 */
export async function readInbox(sources: InboxSources, identity: Identity, query: InboxQuery): Promise<{ conversations: ConversationSummary[]; hasMore: boolean }> {
  const { store, log } = sources;
  const { connection, after, only } = query;
  const { tenant, user, device } = identity;
  const party = partyId(identity);
  const index = identity.merchant !== undefined ? keys.merchantConversations(tenant, identity.merchant) : keys.customerConversations(tenant, user);
  // From `after` on (the index key of a conversation is the prefix and its id); `after` itself is skipped below.
  const limit = MAX_CONVERSATIONS_PER_DEVICE + 1;
  const [conversationEntries, cursorEntries] = await Promise.all([
    store.range({ gte: after === undefined ? index.gte : index.gte + after, lt: index.lt, limit }),
    connection === undefined ? store.range({ ...keys.deliveryCursors(tenant, party, device), limit: MAX_CONVERSATIONS_PER_DEVICE }) : Promise.resolve([]),
  ]);
  const storedCursors = new Map(cursorEntries.map(([key, value]) => [lastField(key), Number(value)]));
  const budgetBytes = responseByteBudget(sources.maxBackpressureBytes);
  const conversations: ConversationSummary[] = [];
  let bytes = 0;
  for (const [key] of conversationEntries) {
    const conv = lastField(key);
    if (conv === after || (only !== undefined && !only.has(conv))) continue;
    const state = await log.conversation(tenant, conv);
    const readSeq = state.reads.get(party) ?? 0;
    const summary: ConversationSummary = {
      conv,
      merchant: state.merchant,
      customer: state.customer,
      lastSeq: state.durableSeq,
      deliveredSeq: connection?.cursors.get(conv)?.ackedSeq ?? storedCursors.get(conv) ?? 0,
      readSeq,
      unread: Math.max(0, state.durableSeq - readSeq),
      reads: readsOfOthers(state.reads, party),
    };
    bytes += jsonBytes(summary);
    if (bytes > budgetBytes && conversations.length > 0) return { conversations, hasMore: true };
    conversations.push(summary);
  }
  return { conversations, hasMore: conversationEntries.length === limit };
}

/** The read cursors of a conversation other than `party`'s, as `inbox` reports them. */
function readsOfOthers(reads: ReadonlyMap<string, number>, party: string): ConversationSummary['reads'] {
  const others: ConversationSummary['reads'] = [];
  for (const [reader, seq] of reads) {
    const parsed = reader === party ? undefined : parsePartyId(reader);
    if (parsed !== undefined) others.push({ user: parsed.user, role: parsed.role, seq });
  }
  return others;
}
