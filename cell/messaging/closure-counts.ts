/**
 * The in-cell closure of a home cell (docs/routing.md, "In-cell closure"): of the messages made
 * durable here since the cell started, how many never crossed a cell boundary, and the same for
 * the conversations they belong to. Routing exists to keep this near 1.
 *
 * Each message is counted once in the cluster, by its home cell, on one of three paths:
 * - `in_cell`: sent by a device connected here, and copied to no other cell;
 * - `relayed`: its send came from another cell (a customer connected elsewhere, or a send an
 *   old home passed on after a move);
 * - `copied`: sent here, and then copied to other cells holding devices of the customer (the
 *   mirror of a customer connected to two cells), or its copy was dropped for a backlog and
 *   will be backfilled (counted as crossed, so that the ratio is never overstated).
 *
 * A conversation crossed once any of its messages did. Conversations are remembered in a
 * bounded map (the least recently active forgotten first); one forgotten and seen again is
 * counted again, so with more active conversations than the bound the conversation figures
 * are approximate, the message figures never.
 */

export type ClosurePath = 'in_cell' | 'relayed' | 'copied';

export interface ClosureSnapshot {
  readonly messages: {
    readonly inCell: number;
    readonly relayed: number;
    readonly copied: number;
    readonly total: number;
    /** inCell / total; null before the first message. */
    readonly inCellRatio: number | null;
  };
  readonly conversations: {
    /** Conversations hosted here that had a message since the start. */
    readonly total: number;
    /** Of those, the ones with a message that crossed a cell boundary. */
    readonly crossed: number;
    readonly inCell: number;
    readonly inCellRatio: number | null;
  };
}

/** What a cell's counts add up from (its `GET /v1/admin/closure` answer carries more). */
export interface ClosureCounted {
  readonly messages: { readonly inCell: number; readonly relayed: number; readonly copied: number; readonly total: number };
  readonly conversations: { readonly total: number; readonly crossed: number };
}

/** The counts of several cells summed, with the ratios of the sum (each message is counted by its home only). */
export function sumClosures(counts: readonly ClosureCounted[]): ClosureSnapshot {
  const messages = { inCell: 0, relayed: 0, copied: 0, total: 0 };
  const conversations = { total: 0, crossed: 0 };
  for (const count of counts) {
    messages.inCell += count.messages.inCell;
    messages.relayed += count.messages.relayed;
    messages.copied += count.messages.copied;
    messages.total += count.messages.total;
    conversations.total += count.conversations.total;
    conversations.crossed += count.conversations.crossed;
  }
  const inCell = conversations.total - conversations.crossed;
  return {
    messages: { ...messages, inCellRatio: messages.total === 0 ? null : messages.inCell / messages.total },
    conversations: { ...conversations, inCell, inCellRatio: conversations.total === 0 ? null : inCell / conversations.total },
  };
}

/** Default bound of the conversations remembered (about 100 bytes each). */
export const MAX_CLOSURE_CONVERSATIONS = 100_000;

export class ClosureCounts {
  private readonly messages = { in_cell: 0, relayed: 0, copied: 0 };
  private conversationsSeen = 0;
  private conversationsCrossed = 0;
  /** `tenant/conv` to whether it crossed; least recently active first. */
  private readonly conversations = new Map<string, boolean>();

  constructor(private readonly maxConversations = MAX_CLOSURE_CONVERSATIONS) {}

  /** A message of conversation `conv`, hosted here, took `path`. */
  count(tenant: string, conv: string, path: ClosurePath): void {
    this.messages[path]++;
    const key = `${tenant}/${conv}`;
    const crossedBefore = this.conversations.get(key);
    const crossed = path !== 'in_cell';
    if (crossedBefore === undefined) this.conversationsSeen++;
    if (crossed && crossedBefore !== true) this.conversationsCrossed++;
    this.conversations.delete(key);
    this.conversations.set(key, crossed || crossedBefore === true);
    if (this.conversations.size > this.maxConversations) this.conversations.delete(this.conversations.keys().next().value!);
  }

  snapshot(): ClosureSnapshot {
    const { in_cell: inCell, relayed, copied } = this.messages;
    const total = inCell + relayed + copied;
    const seen = this.conversationsSeen;
    const crossed = this.conversationsCrossed;
    return {
      messages: { inCell, relayed, copied, total, inCellRatio: total === 0 ? null : inCell / total },
      conversations: { total: seen, crossed, inCell: seen - crossed, inCellRatio: seen === 0 ? null : (seen - crossed) / seen },
    };
  }
}
