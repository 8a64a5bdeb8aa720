import type { ChatMessage } from '../protocol/frames.js';
import type { ClusterPort } from './cluster-port.js';
import type { ConversationLog } from './conversation-log.js';
import {
  HISTORY_MAX_RESPONSE_BYTES,
  HISTORY_PROTOCOL,
  HistoryResponse,
  decodeJson,
  encodeJson,
  readerParty,
  type HistoryPage,
  type HistoryRequest,
} from './cross-cell-wire.js';
import { KeyedSerializer } from './keyed-serializer.js';

export interface MirrorSettings {
  /** Messages asked per history page. */
  historyPageMessages: number;
  /** Timeout of one history request. */
  historyTimeoutMs: number;
  /** Mirror operations waiting or running at once, over all conversations. */
  maxQueuedTasks: number;
}

/** Codes of a history exchange that failed; the mirror is unchanged by it. */
export type MirrorErrorCode = 'HISTORY_REFUSED' | 'HISTORY_BAD_RESPONSE';

export class MirrorError extends Error {
  constructor(
    readonly code: MirrorErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'MirrorError';
  }
}

/**
 * An access cell's copy of conversations that other cells host: the messages keep the home
 * cell's seqs and are stored under the same keys as local ones (ConversationLog.mirror).
 *
 * Invariant: a mirror holds a gap-free prefix of its conversation, seqs 1 to its head. Whatever
 * would break it (a forwarded message beyond head + 1, a receipt beyond head, a device asking
 * for more) is preceded by a backfill of the missing range from the home cell over the history
 * protocol, in bounded pages. So delivery, sync and history read a mirror as they read a local
 * conversation, and a device's cursor can never lie outside what the mirror holds.
 *
 * Operations on one conversation run one at a time (KeyedSerializer), since each reads the head
 * and then writes after it.
 */
export class ConversationMirror {
  private readonly serializer: KeyedSerializer;

  constructor(
    private readonly log: ConversationLog,
    private readonly cluster: Pick<ClusterPort, 'request'>,
    private readonly settings: MirrorSettings,
  ) {
    this.serializer = new KeyedSerializer(settings.maxQueuedTasks);
  }

  /**
   * Applies messages that `home` forwarded (ascending, of one conversation). A gap between the
   * head and the first of them is backfilled first. Resolves with the messages newly written,
   * backfilled ones included, ascending.
   */
  apply(tenant: string, conv: string, home: string, messages: readonly ChatMessage[]): Promise<ChatMessage[]> {
    return this.serializer.run(`${tenant}/${conv}`, async () => {
      const first = messages[0];
      if (first === undefined) return [];
      const written = await this.backfill(tenant, conv, home, first.seq - 1, false);
      written.push(...(await this.log.mirror(tenant, conv, messages, [])));
      return written;
    });
  }

  /**
   * Moves the read cursor of `party` (a party id, principal.ts) in the mirror forward to `seq`
   * (a receipt from the home cell, or this cell's own customer reading), backfilling up to `seq`
   * first. Resolves with the messages newly written and whether the cursor moved.
   */
  markRead(tenant: string, conv: string, home: string, party: string, seq: number): Promise<{ written: ChatMessage[]; moved: boolean }> {
    return this.serializer.run(`${tenant}/${conv}`, async () => {
      const written = await this.backfill(tenant, conv, home, seq, false);
      const moved = await this.log.markRead(tenant, conv, party, seq);
      return { written, moved };
    });
  }

  /**
   * Copies everything the home cell has after the head, and its read cursors. `follow` tells
   * the home cell that this cell holds the customer's devices now (see HistoryRequest).
   * Resolves with the messages newly written.
   */
  catchUp(tenant: string, conv: string, home: string, follow: boolean): Promise<ChatMessage[]> {
    return this.serializer.run(`${tenant}/${conv}`, () => this.backfill(tenant, conv, home, Number.MAX_SAFE_INTEGER, follow));
  }

  /**
   * Fetches pages from the head on until the mirror holds `untilSeq` or the home cell has
   * nothing more. The first request always goes out when `follow` is set, so that the home
   * cell hears it even when nothing is missing.
   */
  private async backfill(tenant: string, conv: string, home: string, untilSeq: number, follow: boolean): Promise<ChatMessage[]> {
    const written: ChatMessage[] = [];
    let state = await this.log.conversation(tenant, conv);
    let askFollow = follow;
    while (state.durableSeq < untilSeq || askFollow) {
      const afterSeq = state.durableSeq;
      const limit = Math.max(1, Math.min(this.settings.historyPageMessages, untilSeq - afterSeq));
      const page = await this.fetchPage(home, { v: 1, tenant, conv, afterSeq, limit, ...(askFollow ? { follow: true } : {}) });
      askFollow = false;
      const reads = page.reads.map(({ user, role, seq }) => [readerParty(conv, user, role), seq] as const);
      // A page that starts past the head: the home cell's retention deleted what lies between.
      const afterDeleted = (page.messages[0]?.seq ?? 0) > afterSeq + 1;
      written.push(...(await this.log.mirror(tenant, conv, page.messages, reads, afterDeleted)));
      state = await this.log.conversation(tenant, conv);
      // The home cell holds no more: `untilSeq` was an upper bound (a catch-up), or it lost data.
      if (page.messages.length === 0 || page.lastSeq <= state.durableSeq) break;
    }
    return written;
  }

  private async fetchPage(home: string, request: HistoryRequest): Promise<HistoryPage> {
    const answer = await this.cluster.request(home, HISTORY_PROTOCOL, encodeJson(request), { timeoutMs: this.settings.historyTimeoutMs });
    const response = decodeJson(HistoryResponse, answer, HISTORY_MAX_RESPONSE_BYTES);
    if (response === undefined) throw new MirrorError('HISTORY_BAD_RESPONSE', `unreadable history page of ${request.conv} from ${home}`);
    if (!response.ok) throw new MirrorError('HISTORY_REFUSED', `${home} refused history of ${request.conv}: ${response.code}`);
    // The page may start past `afterSeq + 1` when the home cell's retention deleted what lies between; then it goes on without a gap.
    const start = response.messages[0]?.seq ?? request.afterSeq + 1;
    const gap = response.messages.findIndex((message, index) => message.conv !== request.conv || message.seq !== start + index);
    if (start <= request.afterSeq || gap >= 0 || (response.messages.length === 0 && response.lastSeq > request.afterSeq)) {
      throw new MirrorError('HISTORY_BAD_RESPONSE', `history page of ${request.conv} from ${home} does not continue seq ${request.afterSeq}`);
    }
    return response;
  }
}
