/**
 * What the parts of the cross-cell relay share: the cell's ports and settings, the counters
 * behind CrossCellStats, and the small acts every part does (find a merchant's home cell elsewhere,
 * enqueue an entry for another cell, drop a forwarded entry).
 */
import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { Store } from '../../platform/store/store.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { clusterErrorCode, type ClusterPort } from './cluster-port.js';
import type { ConversationLog } from './conversation-log.js';
import { crossCellEntry, type CrossCellEntry } from './cross-cell-wire.js';
import { ClosureCounts } from './closure-counts.js';
import type { CrossCellHost, CrossCellParts, CrossCellSettings, CrossCellStats } from './cross-cell-settings.js';
import type { RemoteFanOutStats } from './remote-fan-out.js';

/** The relay's own counters (the fan-out keeps its own). */
export type CrossCellCounts = { -readonly [Key in Exclude<keyof CrossCellStats, keyof RemoteFanOutStats>]: number };

export interface CrossCellContextInit extends CrossCellParts {
  readonly settings: CrossCellSettings;
}

export class CrossCellContext {
  readonly cluster: ClusterPort;
  readonly log: ConversationLog;
  readonly store: Store;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly host: CrossCellHost;
  readonly settings: CrossCellSettings;
  readonly counts: CrossCellCounts = { relayedSends: 0, mirroredMessages: 0, historyPagesServed: 0, entriesDropped: 0, goneHints: 0, refreshFailures: 0, repairedMessages: 0 };
  /** The in-cell closure of the messages this cell hosts (counted by the home side). */
  readonly closure = new ClosureCounts();

  constructor(init: CrossCellContextInit) {
    this.cluster = init.cluster;
    this.log = init.log;
    this.store = init.store;
    this.clock = init.clock;
    this.logger = init.logger;
    this.host = init.host;
    this.settings = init.settings;
  }

  /** The cell hosting the merchant when it is another cell of the cluster; undefined otherwise. */
  remoteHomeOf(tenant: string, merchant: string): string | undefined {
    const home = this.cluster.homeCellOf(tenant, merchant);
    return home === this.cluster.selfCellId ? undefined : home;
  }

  /** Enqueues one entry durably for `destination`; a failure is a CellError the device understands. */
  async enqueue(destination: string, payload: CrossCellEntry): Promise<void> {
    try {
      await this.cluster.enqueue(destination, [crossCellEntry(payload)]);
    } catch (error) {
      const code = clusterErrorCode(error);
      if (code === 'OUTBOX_INVALID_ENTRY') throw new CellError(ErrorCode.PayloadTooLarge, 'the message is too large to forward to its home cell');
      throw new CellError(ErrorCode.StoreUnavailable, `could not store the forward to cell ${destination} (${code ?? 'error'}); retry`);
    }
  }

  drop(source: string, key: string, reason: string): void {
    this.counts.entriesDropped++;
    this.logger.warn({ source, key, reason }, 'dropping a forwarded entry');
  }
}
