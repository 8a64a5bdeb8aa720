import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Store, StoreOp } from '../platform/store/store.js';
import type { AttachmentReference, AttachmentStore } from './attachments/index.js';
import { keys, lastField, prefixRange } from './messaging/keys.js';
import { conversationParty } from './messaging/principal.js';
import { SENT_READ_WINDOW } from './messaging/read-cursors.js';
import { parseConversationId, type ChatMessage } from './protocol/frames.js';
import type { TenantConfig } from './settings.js';

/**
 * Deletes the messages a tenant no longer keeps (docs/operations.md, "Retention"): in every
 * conversation this cell stores (its own and its mirrors of other cells'), the messages older
 * than `retention.conversationDays`, with their idempotency records, but never the
 * conversation's newest message, which holds its head: seqs go on from it, and the read and
 * delivery cursors stay within it. History then starts at the first message kept. The
 * conversation's references to the attachments of a deleted message go too, when they were
 * uploaded before the cutoff (AttachmentStore.forget: the bytes go with the last reference);
 * `retention.attachmentsDays` bounds attachments on its own (cell/attachments/attachment-sweeper.ts).
 *
 * The sweep walks the customers' conversation index (`uc/`) a bounded slice at a time: each run
 * visits at most `maxConversationsPerRun` conversations and deletes at most `maxDeletesPerRun`
 * keys, logs what it did, and the next run goes on where it stopped; after the last conversation
 * of the last tenant it starts again from the first.
 */

const DAY_MS = 24 * 60 * 60 * 1000;

export interface RetentionSettings {
  /** Time between two runs. */
  intervalMs: number;
  maxConversationsPerRun: number;
  /** Messages deleted per run at most. */
  maxDeletesPerRun: number;
}

export const RETENTION_DEFAULTS: Readonly<RetentionSettings> = { intervalMs: 60_000, maxConversationsPerRun: 1_000, maxDeletesPerRun: 10_000 };

export interface RetentionSweeperInit {
  store: Store;
  clock: Clock;
  logger: Logger;
  tenants: readonly TenantConfig[];
  /** Drops the cached heads of a merchant's conversations after messages were deleted (CellCore.forgetConversations). */
  forgetConversations(tenant: string, merchant: string): void;
  /**
   * Writes the read cursors that a conversation's newest messages imply (ConversationLog.settleReads,
   * read-cursors.ts): called before any of those is deleted, which would take the cursors with it.
   */
  settleReadCursors(tenant: string, conv: string): Promise<void>;
  /** The cell's one attachment store. */
  attachments: Pick<AttachmentStore, 'forget'>;
  settings?: Partial<RetentionSettings> | undefined;
}

export interface SweepRun {
  conversationsVisited: number;
  messagesDeleted: number;
  /** Whether the run reached the end of every tenant's conversations (the next starts over). */
  passCompleted: boolean;
}

export class RetentionSweeper {
  private readonly settings: RetentionSettings;
  /** Tenants with a retention, and how long they keep messages. */
  private readonly kept: Array<{ tenant: string; keepMs: number }>;
  /** Where the next run goes on: the tenant's index, and the last conversation visited in it. */
  private position: { tenantIndex: number; afterConv: string | undefined } = { tenantIndex: 0, afterConv: undefined };
  private timer: TimerHandle | undefined;
  private running: Promise<SweepRun> | undefined;
  private stopped = false;

  constructor(private readonly init: RetentionSweeperInit) {
    this.settings = { ...RETENTION_DEFAULTS, ...init.settings };
    this.kept = init.tenants.flatMap((tenant) => (tenant.retention?.conversationDays === undefined ? [] : [{ tenant: tenant.id, keepMs: tenant.retention.conversationDays * DAY_MS }]));
  }

  /** Runs every `intervalMs` until `stop`; nothing to do (no tenant has a retention): never runs. */
  start(): void {
    if (this.kept.length === 0 || this.stopped) return;
    this.timer = this.init.clock.setTimer(this.settings.intervalMs, () => {
      this.running = this.runOnce();
      this.running
        .catch((error: unknown) => {
          this.init.logger.warn({ err: error }, 'a retention sweep failed; the next run tries again');
          return undefined;
        })
        .finally(() => {
          this.running = undefined;
          this.start();
        });
    });
  }

  /** Stops the timer and waits for a run under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    await this.running?.catch(() => undefined);
  }

  /** One bounded slice of the sweep, from where the last one stopped. */
  async runOnce(): Promise<SweepRun> {
    const run: SweepRun = { conversationsVisited: 0, messagesDeleted: 0, passCompleted: false };
    const touched = new Set<string>();
    while (run.conversationsVisited < this.settings.maxConversationsPerRun && run.messagesDeleted < this.settings.maxDeletesPerRun) {
      const current = this.kept[this.position.tenantIndex];
      if (current === undefined) {
        this.position = { tenantIndex: 0, afterConv: undefined };
        run.passCompleted = true;
        break;
      }
      const conv = await this.nextConversation(current.tenant);
      if (conv === undefined) {
        this.position = { tenantIndex: this.position.tenantIndex + 1, afterConv: undefined };
        continue;
      }
      const previous = this.position.afterConv;
      this.position.afterConv = conv;
      run.conversationsVisited++;
      const cutoffMs = this.init.clock.now() - current.keepMs;
      const budget = this.settings.maxDeletesPerRun - run.messagesDeleted;
      const deleted = await this.sweepConversation(current.tenant, conv, cutoffMs, budget);
      // The budget ran out inside this conversation: the next run goes on with it.
      if (deleted === budget) this.position.afterConv = previous;
      if (deleted === 0) continue;
      run.messagesDeleted += deleted;
      const merchant = parseConversationId(conv)!.merchant;
      touched.add(`${current.tenant}/${merchant}`);
    }
    for (const key of touched) {
      const [tenant, merchant] = key.split('/');
      this.init.forgetConversations(tenant!, merchant!);
    }
    this.init.logger.info({ ...run, position: { tenant: this.kept[this.position.tenantIndex]?.tenant, after: this.position.afterConv } }, 'retention sweep');
    return run;
  }

  /** The conversation after the position in the tenant's customer index (any customer's). */
  private async nextConversation(tenant: string): Promise<string | undefined> {
    const index = prefixRange(`uc/${tenant}/`);
    const after = this.position.afterConv;
    // Index keys are uc/<tenant>/<customer>/<conv>; resume after the key of the last one visited.
    const gte = after === undefined ? index.gte : `${keys.customerConversation(tenant, parseConversationId(after)!.customer, after)}\u0000`;
    const [entry] = await this.init.store.range({ gte, lt: index.lt, limit: 1 });
    return entry === undefined ? undefined : lastField(entry[0]);
  }

  /** Deletes the conversation's messages older than `cutoffMs`, at most `budget` of them, never its newest; resolves with how many. */
  private async sweepConversation(tenant: string, conv: string, cutoffMs: number, budget: number): Promise<number> {
    const { store } = this.init;
    const all = keys.allMessages(tenant, conv);
    const [newest] = await store.range({ ...all, reverse: true, limit: 1 });
    if (newest === undefined) return 0;
    const oldest = await store.range({ gte: all.gte, lt: newest[0], limit: budget });
    const ops: StoreOp[] = [];
    const attachments = new Set<string>();
    let lastDeletedSeq = 0;
    for (const [key, value] of oldest) {
      const message = JSON.parse(value) as ChatMessage;
      // Seqs grow with time: the first message young enough ends the sweep of this conversation.
      if (message.ts >= cutoffMs) break;
      ops.push({ type: 'del', key }, { type: 'del', key: keys.clientMessageId(tenant, conv, conversationParty(conv, message.role, message.from), message.cmid) });
      for (const attachment of message.attachments ?? []) attachments.add(attachment.id);
      lastDeletedSeq = message.seq;
    }
    if (lastDeletedSeq > Number(lastField(newest[0])) - SENT_READ_WINDOW) await this.init.settleReadCursors(tenant, conv);
    if (ops.length > 0) await store.write(ops);
    for (const id of attachments) await this.forgetAttachment(tenant, conv, id, cutoffMs);
    return ops.length / 2;
  }

  /** Drops the conversation's reference to an attachment of a deleted message, unless it was uploaded again since the cutoff. */
  private async forgetAttachment(tenant: string, conv: string, id: string, cutoffMs: number): Promise<void> {
    const stored = await this.init.store.get(keys.attachmentReference(tenant, conv, id));
    if (stored === undefined || (JSON.parse(stored) as AttachmentReference).createdAtMs >= cutoffMs) return;
    await this.init.attachments.forget(tenant, conv, id);
  }
}
