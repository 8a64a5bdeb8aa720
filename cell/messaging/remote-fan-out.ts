import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import { parseConversationId, type ChatMessage, type ConsultationView } from '../protocol/frames.js';
import { clusterErrorCode, type ClusterPort } from './cluster-port.js';
import { crossCellEntry, type CrossCellEntry, type CrossCellEntryOf } from './cross-cell-wire.js';
import { KeyedSerializer } from './keyed-serializer.js';
import type { Party } from './principal.js';

export interface RemoteFanOutSettings {
  /** Fan-outs waiting or running at once, over all conversations. */
  maxQueuedTasks: number;
  /** How long a cell stays a follower of a user without being confirmed (see RemoteFanOut). */
  followTtlMs: number;
  /** Users whose followers are remembered; the least recently used beyond fall back to locate alone. */
  maxFollowedUsers: number;
}

export interface RemoteFanOutStats {
  /** Entries made durable for other cells. */
  entriesEnqueued: number;
  /** Fan-outs dropped because too many waited (the receivers backfill on their next entry). */
  fanOutsDropped: number;
  /** Enqueues that failed for a cell other than the origin (ditto). */
  enqueueFailures: number;
  /** Locates that failed (treated as "no other cell"). */
  locateFailures: number;
}

/**
 * The home cell's side of delivery to other cells: after a message (or a read receipt) of a
 * conversation it hosts became durable, the cells that hold devices of the conversation's
 * customer get it through their durable outboxes. (Agents work in their merchant's home cell,
 * so only the customer can be elsewhere.)
 *
 * One conversation's fan-outs run one at a time, in the order the log made its messages
 * durable, so each receiving cell gets them in seq order and rarely has to backfill. A message
 * relayed from an access cell (its origin) always goes back there, whatever the location cache
 * says: that is how the sending device learns its seq. The origin is `remember`ed only after
 * the locate, when the cache holds a complete answer; remembering it into an empty cache would
 * make the customer's other access cells look absent until the entry expires.
 *
 * Followers. A cell that was sent a user's entries keeps getting them, whatever `locate` says,
 * until it answers `gone` (it holds no device of the user any more) or `followTtlMs` passes
 * without a locate, a relayed send or a history `follow` confirming it. Without this a partition
 * longer than the location cache's TTL would hide the access cell from `locate`, and what was
 * written meanwhile would never be enqueued for it; with it, the outbox holds it until the heal.
 *
 * Failures never reach the sender of the message (it is durable here): a receiving cell that
 * missed an entry notices the gap at its next entry of the conversation and backfills.
 */
export class RemoteFanOut {
  private readonly serializer: KeyedSerializer;
  private readonly counts: RemoteFanOutStats = { entriesEnqueued: 0, fanOutsDropped: 0, enqueueFailures: 0, locateFailures: 0 };
  /** `tenant/customer` to follower cell to expiry (clock ms); least recently used first. Only customers are followed. */
  private readonly followers = new Map<string, Map<string, number>>();

  constructor(
    private readonly cluster: ClusterPort,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly settings: RemoteFanOutSettings,
  ) {
    this.serializer = new KeyedSerializer(settings.maxQueuedTasks);
  }

  /** `cell` holds devices of the user now: it gets the user's entries from now on. */
  follow(tenant: string, user: string, cell: string): void {
    if (cell === this.cluster.selfCellId) return;
    const key = `${tenant}/${user}`;
    const cells = this.followers.get(key) ?? new Map<string, number>();
    this.followers.delete(key);
    cells.set(cell, this.clock.now() + this.settings.followTtlMs);
    this.followers.set(key, cells);
    while (this.followers.size > this.settings.maxFollowedUsers) this.followers.delete(this.followers.keys().next().value as string);
  }

  /** `cell` left the cluster: it follows nobody any more. */
  forgetCell(cell: string): void {
    for (const [key, cells] of this.followers) {
      if (cells.delete(cell) && cells.size === 0) this.followers.delete(key);
    }
  }

  /** `cell` said it holds no device of the user any more. */
  unfollow(tenant: string, user: string, cell: string): void {
    const key = `${tenant}/${user}`;
    const cells = this.followers.get(key);
    if (cells === undefined) return;
    cells.delete(cell);
    if (cells.size === 0) this.followers.delete(key);
  }

  /** Whether any cell follows the customer (holds its devices, as far as this cell knows) now. */
  hasFollowers(tenant: string, customer: string): boolean {
    return this.followersOf(tenant, customer).length > 0;
  }

  stats(): Readonly<RemoteFanOutStats> {
    return { ...this.counts };
  }

  /**
   * Sends a durable message to the customer's other cells, and to `origin` when given.
   * Resolves once enqueued, with the number of other cells it was for (the in-cell closure
   * counts it); rejects only when the origin's enqueue failed.
   */
  message(tenant: string, message: ChatMessage, origin?: string): Promise<number> {
    return this.fanOut(tenant, message.conv, { v: 1, kind: 'message', tenant, message }, origin, true);
  }

  /** Sends a message back to the access cell that relayed it (a resend whose seq was known); no locate. */
  toOrigin(tenant: string, message: ChatMessage, origin: string): Promise<number> {
    return this.fanOut(tenant, message.conv, { v: 1, kind: 'message', tenant, message }, origin, false);
  }

  /** Sends a moved read cursor (of `reader`, a party of the conversation) to the customer's other cells; never rejects. */
  receipt(tenant: string, conv: string, reader: Party, seq: number): Promise<void> {
    const payload: CrossCellEntry = { v: 1, kind: 'receipt', tenant, conv, user: reader.user, role: reader.role, seq };
    return settled(this.fanOut(tenant, conv, payload, undefined, true));
  }

  /** Sends the customer's changed consultation (its `consultation` frame) to the customer's other cells; never rejects. */
  consultation(tenant: string, view: ConsultationView): Promise<void> {
    const payload: CrossCellEntry = { v: 1, kind: 'consultation', tenant, conv: view.conv, view };
    return settled(this.fanOut(tenant, view.conv, payload, undefined, true));
  }

  /** Tells the customer's other cells that an agent is typing in `conv`; never rejects. */
  typing(tenant: string, conv: string, agent: string): Promise<void> {
    const payload: CrossCellEntry = { v: 1, kind: 'typing', tenant, conv, user: agent, role: 'agent' };
    return settled(this.fanOut(tenant, conv, payload, undefined, true));
  }

  /**
   * Sends the desk's answer to a request relayed from `origin`, after what this conversation
   * fanned out before it (the system message of a close reaches the device before its `ok`).
   * Rejects when the enqueue failed.
   */
  async answer(tenant: string, payload: CrossCellEntryOf<'desk-answer'>, origin: string): Promise<void> {
    await this.fanOut(tenant, payload.conv, payload, origin, false);
  }

  /** Resolves with the number of other cells the entry was for. */
  private fanOut(tenant: string, conv: string, payload: CrossCellEntry, origin: string | undefined, locate: boolean): Promise<number> {
    const customer = parseConversationId(conv)?.customer;
    if (customer === undefined) return Promise.resolve(0);
    const task = this.serializer.run(`${tenant}/${conv}`, async () => {
      const located = locate ? await this.locate(tenant, customer) : [];
      if (origin !== undefined && locate) this.cluster.remember(tenant, customer, origin);
      for (const cell of origin === undefined ? located : [...located, origin]) this.follow(tenant, customer, cell);
      const targets = new Set<string>(origin === undefined ? [] : [origin]);
      if (locate) for (const cell of this.followersOf(tenant, customer)) targets.add(cell);
      targets.delete(this.cluster.selfCellId);
      const entry = crossCellEntry(payload);
      const cells = [...targets];
      const outcomes = await Promise.allSettled(cells.map((cell) => this.cluster.enqueue(cell, [entry])));
      let originFailure: unknown;
      outcomes.forEach((outcome, index) => {
        const cell = cells[index]!;
        if (outcome.status === 'fulfilled') {
          this.counts.entriesEnqueued++;
          return;
        }
        if (cell === origin) {
          originFailure = outcome.reason;
          return;
        }
        this.counts.enqueueFailures++;
        this.logger.warn({ err: outcome.reason, code: clusterErrorCode(outcome.reason), cell, conv }, 'cross-cell entry not enqueued; the cell backfills later');
      });
      if (originFailure !== undefined) throw originFailure;
      return cells.length;
    });
    task.catch((error: unknown) => {
      if (clusterErrorCode(error) === 'SERIALIZER_FULL') {
        this.counts.fanOutsDropped++;
        this.logger.warn({ conv }, 'too many cross-cell deliveries wait; this one is dropped and backfilled later');
      }
    });
    return task;
  }

  /** The user's followers that have not expired; drops the expired ones. */
  private followersOf(tenant: string, user: string): string[] {
    const key = `${tenant}/${user}`;
    const cells = this.followers.get(key);
    if (cells === undefined) return [];
    const nowMs = this.clock.now();
    for (const [cell, expiresAtMs] of cells) if (expiresAtMs <= nowMs) cells.delete(cell);
    if (cells.size === 0) this.followers.delete(key);
    return [...cells.keys()];
  }

  private async locate(tenant: string, user: string): Promise<string[]> {
    try {
      return await this.cluster.locate(tenant, user);
    } catch (error) {
      this.counts.locateFailures++;
      this.logger.warn({ err: error, code: clusterErrorCode(error), user }, 'locating a user failed; delivering to no other cell');
      return [];
    }
  }
}

/** Resolves when `task` settles, whatever its outcome (for the hints that never reject). */
function settled(task: Promise<unknown>): Promise<void> {
  return task.then(
    () => undefined,
    () => undefined,
  );
}
