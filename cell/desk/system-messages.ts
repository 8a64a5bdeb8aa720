import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import { randomId, type Random } from '../../platform/random.js';
import type { StoreOp } from '../../platform/store/store.js';
import type { AppendRequest, AppendResult } from '../messaging/conversation-log.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { conversationIdOf, type DeskNotice } from '../protocol/frames.js';
import { operatingErrorOf } from '../protocol/operating-errors.js';
import { noticeText } from './desk-notices.js';
import type { OpenDesk } from './open-desk.js';

/** What the store refused (a system message, a desk's state) is tried again after this long, doubling up to the max. */
export const MIN_STORE_RETRY_MS = 100;
export const MAX_STORE_RETRY_MS = 1_000;
const SYSTEM_USER = 'desk';

/** The desk's writer of system messages: in order per conversation, until the store takes them. */
export class SystemMessages {
  constructor(
    private readonly options: {
      clock: Clock;
      random: Random;
      logger: Logger;
      /** Appends to a conversation this cell hosts. */
      append(request: AppendRequest): Promise<AppendResult>;
      /** Whether the desk still runs here (a stopped desk gives its messages up). */
      runs(open: OpenDesk): boolean;
    },
  ) {}

  /**
   * Appends a system message with the records it carries, after the conversation's earlier ones.
   * The rules already decided in memory, so the log must follow: a write the store refuses is
   * tried again (backing off up to MAX_STORE_RETRY_MS) for as long as this desk runs here.
   * A desk that stopped (the cell stops, the merchant moved away) gives it up: the desk that
   * takes over reads the records and the log, which still agree.
   */
  announce(open: OpenDesk, customer: string, notice: DeskNotice, alsoWrite: StoreOp[]): Promise<void> {
    const conv = conversationIdOf(open.merchant, customer);
    const request: AppendRequest = { tenant: open.tenant, conv, from: SYSTEM_USER, role: 'system', device: SYSTEM_USER, cmid: `desk-${randomId(this.options.random)}`, body: noticeText(notice), event: notice, alsoWrite };
    const earlier = open.announcing.get(customer);
    const written = (earlier === undefined ? this.appendUntilWritten(open, request) : earlier.then(() => this.appendUntilWritten(open, request))).catch((error: unknown) => {
      this.options.logger.warn({ err: error, conv, notice: notice.type }, 'the desk gave up a system message: it no longer runs here');
    });
    open.announcing.set(customer, written);
    void written.then(() => {
      if (open.announcing.get(customer) === written) open.announcing.delete(customer);
    });
    return written;
  }

  private async appendUntilWritten(open: OpenDesk, request: AppendRequest): Promise<void> {
    for (let backoffMs = MIN_STORE_RETRY_MS; ; backoffMs = Math.min(backoffMs * 2, MAX_STORE_RETRY_MS)) {
      if (!this.options.runs(open)) throw new CellError(ErrorCode.MerchantNotHosted, `the desk of ${open.merchant} no longer runs here`);
      try {
        await this.options.append(request);
        return;
      } catch (error) {
        if (operatingErrorOf(error)?.code !== ErrorCode.StoreUnavailable) throw error;
        this.options.logger.warn({ err: error, conv: request.conv, retryInMs: backoffMs }, 'the store refused a system message of the desk; trying again');
        await new Promise<void>((resolve) => this.options.clock.setTimer(backoffMs, resolve));
      }
    }
  }
}
