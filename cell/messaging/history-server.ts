/**
 * The history protocol's home side: pages of a hosted conversation for other cells' mirrors,
 * bounded in bytes, with the conversation's read cursors.
 */
import { invariant } from '../../platform/invariant.js';
import { parseConversationId, type ChatMessage } from '../protocol/frames.js';
import type { ConversationState } from './conversation-log.js';
import type { CrossCellContext } from './cross-cell-context.js';
import { HISTORY_MAX_READS, HISTORY_MAX_REQUEST_BYTES, HistoryRequest, decodeJson, encodeJson, type HistoryPage, type HistoryResponse } from './cross-cell-wire.js';
import { parsePartyId } from './principal.js';
import type { RemoteFanOut } from './remote-fan-out.js';

export class HistoryServer {
  constructor(
    private readonly context: CrossCellContext,
    private readonly fanOut: RemoteFanOut,
  ) {}

  /** Home side: a page of a hosted conversation for another cell's mirror. */
  async serve(fromCell: string, data: Uint8Array): Promise<Uint8Array> {
    const answer = (response: HistoryResponse): Uint8Array => encodeJson(response);
    const request = decodeJson(HistoryRequest, data, HISTORY_MAX_REQUEST_BYTES);
    if (request === undefined) return answer({ ok: false, code: 'BAD_REQUEST', message: 'not a valid history request' });
    const { merchant, customer } = parseConversationId(request.conv)!;
    if (!this.context.host.hosts(request.tenant, merchant)) {
      return answer({ ok: false, code: 'NOT_HOSTED', message: `merchant ${merchant} is not hosted by cell ${this.context.cluster.selfCellId}` });
    }
    if (request.follow === true) {
      // The asker holds the customer's devices now; the cached location may say otherwise, and
      // may not find the customer's other cells either: ask the mesh again next time.
      this.fanOut.follow(request.tenant, customer, fromCell);
      this.context.cluster.invalidate(request.tenant, customer);
    }
    const { log } = this.context;
    let state: ConversationState;
    let page: ChatMessage[];
    try {
      state = await log.conversation(request.tenant, request.conv);
      page = await log.messages(request.tenant, request.conv, request.afterSeq + 1, state.durableSeq + 1, request.limit);
    } catch (error) {
      this.context.logger.warn({ err: error, fromCell, conv: request.conv }, 'could not serve a history page');
      return answer({ ok: false, code: 'STORE_UNAVAILABLE', message: 'the store could not be read' });
    }
    // Outside the try: a log that broke its contract is a bug, not a store that could not be read.
    const first = page[0];
    const last = page[page.length - 1];
    invariant(
      first === undefined || last === undefined || (first.seq > request.afterSeq && last.seq <= state.durableSeq),
      () => `history page ${first?.seq}..${last?.seq} of ${request.conv} outside (${request.afterSeq}, ${state.durableSeq}]`,
    );
    let bytes = 0;
    let fits = 0;
    for (const message of page) {
      bytes += JSON.stringify(message).length;
      if (fits > 0 && bytes > this.context.settings.historyPageBytes) break;
      fits++;
    }
    const reads: HistoryPage['reads'] = [];
    for (const [party, seq] of state.reads) {
      const reader = parsePartyId(party);
      if (reader !== undefined && reads.length < HISTORY_MAX_READS) reads.push({ user: reader.user, role: reader.role, seq });
    }
    this.context.counts.historyPagesServed++;
    return answer({ ok: true, lastSeq: state.durableSeq, messages: page.slice(0, fits), reads });
  }
}
