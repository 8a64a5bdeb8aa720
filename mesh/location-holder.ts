import type { Clock } from '../platform/clock.js';
import { decodeJson, encodeJson } from '../platform/wire-json.js';
import { LOCATE_NOTICE_PROTOCOL, LOCATE_REPLY_PROTOCOL, LOCATE_WIRE_MAX_BYTES, LocateQuery, userKey, type LocateNotice, type LocateReply } from './locate-wire.js';
import type { LocationMetrics } from './location-metrics.js';
import { LocationWatches } from './location-watches.js';
import { sameBytes } from './same-bytes.js';
import type { MeshMessage, MeshTransport, PeerId, ValidationResult } from './transport.js';

export interface LocationHolderComponents {
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly cellId: string;
  readonly cellOfPeer: (peer: PeerId) => string | undefined;
  /**
   * The users of `userIds` with a device here that wants conversations homed at `askerCellId`
   * (a device routed for another merchant does not: docs/routing.md, "In-cell closure").
   */
  readonly localUsers: (tenant: string, userIds: readonly string[], askerCellId: string) => readonly string[] | Promise<readonly string[]>;
  /** Whether the location service runs; queries heard while it does not are not answered. */
  readonly running: () => boolean;
}

export interface LocationHolderSettings {
  readonly maxWatchedUsers: number;
  readonly maxConcurrentReplies: number;
  readonly replyTimeoutMs: number;
}

/**
 * The holding side of user location (location.ts): hears other cells' queries, answers those
 * whose users have a device on this cell, and watches the users asked for, so that a device of
 * one connecting here later is told to the askers at once.
 */
export class LocationHolder {
  private readonly watches: LocationWatches;
  private repliesInFlight = 0;
  /** The last query message decoded, for its second reading (see decodeQuery). */
  private lastQuery: { readonly bytes: Uint8Array; readonly query: LocateQuery | undefined } | undefined;

  constructor(
    private readonly components: LocationHolderComponents,
    private readonly settings: LocationHolderSettings,
    private readonly metrics: LocationMetrics,
  ) {
    this.watches = new LocationWatches(components.clock, settings.maxWatchedUsers, () => metrics.watchDropped());
  }

  /** Forgets every watch (the service stopped). */
  clear(): void {
    this.watches.clear();
  }

  /**
   * A device of the user connected to this cell: the cells watching the user (they asked for it
   * lately and may be serving an answer without this cell) are told, one notice each.
   */
  userArrived(tenant: string, userId: string): void {
    const askers = this.watches.watchers(userKey(tenant, userId));
    if (askers.length === 0) return;
    const notice = encodeJson({ cellId: this.components.cellId, users: [{ tenant, userId }] } satisfies LocateNotice);
    for (const asker of askers) {
      this.metrics.noticeSent();
      // Best effort: a lost notice leaves the asker's answer short until its TTL (location.ts).
      this.components.transport.request(asker, LOCATE_NOTICE_PROTOCOL, notice, { timeoutMs: this.settings.replyTimeoutMs }).catch(() => undefined);
    }
  }


  /**
   * The query in `bytes`, decoded once: the topic validator and the handler each get a copy of
   * the same message, so the last one decoded is recognised by content (as heartbeats are).
   */
  private decodeQuery(bytes: Uint8Array): LocateQuery | undefined {
    const last = this.lastQuery;
    if (last !== undefined && sameBytes(last.bytes, bytes)) return last.query;
    const query = decodeJson(LocateQuery, bytes, LOCATE_WIRE_MAX_BYTES);
    this.lastQuery = { bytes, query };
    return query;
  }

  validateQuery(message: MeshMessage): ValidationResult {
    const query = this.decodeQuery(message.data);
    if (query === undefined) {
      this.metrics.rejected('malformed');
      return 'reject';
    }
    const senderCell = this.components.cellOfPeer(message.from);
    // A peer the directory does not know yet (a cell still joining) is ignored, not penalised;
    // a known peer asking in another cell's name is rejected.
    if (senderCell === undefined) {
      this.metrics.rejected('unknown-sender');
      return 'ignore';
    }
    if (senderCell !== query.fromCellId) {
      this.metrics.rejected('sender-mismatch');
      return 'reject';
    }
    return 'accept';
  }

  onQuery(message: MeshMessage): void {
    if (!this.components.running()) return;
    // Validators ran already; decoding here too keeps the handler safe on transports that skip them.
    const query = this.decodeQuery(message.data);
    if (query === undefined || query.fromCellId === this.components.cellId) return;
    if (this.components.cellOfPeer(message.from) !== query.fromCellId) return;
    // Watched before the answer is looked up, so a device connecting meanwhile is told of either way.
    if (query.watchMs !== undefined && query.watchMs > 0) {
      this.watches.watch(
        message.from,
        query.users.map(({ tenant, userId }) => userKey(tenant, userId)),
        query.watchMs,
      );
    }
    if (this.repliesInFlight >= this.settings.maxConcurrentReplies) {
      this.metrics.rejected('reply-overload');
      return;
    }
    this.repliesInFlight++;
    void this.answer(message.from, query).finally(() => {
      this.repliesInFlight--;
    });
  }

  private async answer(asker: PeerId, query: LocateQuery): Promise<void> {
    const byTenant = new Map<string, string[]>();
    for (const { tenant, userId } of query.users) {
      let users = byTenant.get(tenant);
      if (users === undefined) byTenant.set(tenant, (users = []));
      users.push(userId);
    }
    const held: Array<{ tenant: string; userId: string }> = [];
    try {
      for (const [tenant, userIds] of byTenant) {
        const asked = new Set(userIds);
        for (const userId of await this.components.localUsers(tenant, userIds, query.fromCellId)) {
          // Only users that were asked for, each once: a presence callback cannot widen the answer.
          if (asked.delete(userId)) held.push({ tenant, userId });
        }
      }
    } catch {
      this.metrics.rejected('local-users-failed');
      return;
    }
    if (held.length === 0 || !this.components.running()) return;
    const reply: LocateReply = { queryId: query.queryId, cellId: this.components.cellId, users: held };
    this.metrics.replySent();
    try {
      await this.components.transport.request(asker, LOCATE_REPLY_PROTOCOL, encodeJson(reply), { timeoutMs: this.settings.replyTimeoutMs });
    } catch {
      // Best effort: the asker's window closes anyway; it will ask again on its next miss.
    }
  }
}
