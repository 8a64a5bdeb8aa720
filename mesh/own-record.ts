/**
 * This cell's own record: its incarnation kept in the Store, the signed record installed in the
 * directory (only ever newer), and its publication on the directory topic.
 */
import type { Clock } from '../platform/clock.js';
import { invariant } from '../platform/invariant.js';
import type { Logger } from '../platform/logger.js';
import type { Store } from '../platform/store/store.js';
import { compareRecordOrder, signRecord, type CellRecord, type CellRecordContent, type SignedRecord, type VerifiedRecord } from './cell-record.js';
import type { Directory } from './directory.js';
import { MembershipError } from './membership-errors.js';
import { MembershipTopic } from './membership-wire.js';
import type { MeshMetrics } from './mesh-metrics.js';
import type { RecordSigner } from './record-signer.js';
import type { MeshTransport } from './transport.js';

/** The Store key of the last incarnation this cell used (a decimal integer). */
export const INCARNATION_KEY = 'mesh/incarnation';

export interface OwnRecordInit {
  readonly store: Store;
  readonly signer: RecordSigner;
  readonly directory: Directory;
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly metrics: MeshMetrics;
  readonly logger: Logger;
  /** A republish is skipped when the record went out less than this ago (a round trip's bound). */
  readonly republishAfterMs: number;
  /** Whether the record may be published now (the mesh is running or leaving). */
  readonly mayPublish: () => boolean;
}

/**
 * The record this cell signs about itself. Its (incarnation, version) only moves forward: every
 * change bumps the version, every start and refutation the incarnation (persisted first, so a
 * restart never reuses one).
 */
export class OwnRecord {
  private own: VerifiedRecord | undefined;
  private persistChain: Promise<void> = Promise.resolve();
  /** The highest incarnation handed to the Store. */
  private persistedIncarnation = -1;
  /** When this cell last handed its own record to the transport (see lacked). */
  private publishedAtMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly init: OwnRecordInit) {}

  /** The current record. Throws NOT_STARTED before the first `install`. */
  get record(): CellRecord {
    if (this.own === undefined) throw new MembershipError('NOT_STARTED');
    return this.own.record;
  }

  /** The current signed envelope. Throws NOT_STARTED before the first `install`. */
  get signed(): SignedRecord {
    if (this.own === undefined) throw new MembershipError('NOT_STARTED');
    return this.own.signed;
  }

  /** The incarnation of this start: one above the stored one (0 for a new cell), stored before it is used. */
  async nextIncarnation(): Promise<number> {
    const stored = await this.init.store.get(INCARNATION_KEY);
    let incarnation = 0;
    if (stored !== undefined) {
      if (!/^\d{1,15}$/.test(stored)) throw new MembershipError('STORE_CORRUPT', `${INCARNATION_KEY} holds ${JSON.stringify(stored.slice(0, 32))}`);
      incarnation = Number(stored) + 1;
    }
    await this.init.store.write([{ type: 'put', key: INCARNATION_KEY, value: String(incarnation) }]);
    this.persistedIncarnation = incarnation;
    return incarnation;
  }

  /** Persists an incarnation used by a refutation; writes land in order. */
  persistIncarnation(incarnation: number): Promise<void> {
    invariant(incarnation > this.persistedIncarnation, () => `incarnation ${incarnation} persisted after ${this.persistedIncarnation}`);
    this.persistedIncarnation = incarnation;
    this.persistChain = this.persistChain
      .then(() => this.init.store.write([{ type: 'put', key: INCARNATION_KEY, value: String(incarnation) }]))
      .catch((error: unknown) => {
        // The record goes out anyway: staying alive matters more. A restart before a later
        // write could reuse this incarnation; the cell then sees its own newer record and
        // moves above it (onNewerOwnRecord).
        this.init.logger.error({ err: error, incarnation }, 'could not persist the incarnation');
      });
    return this.persistChain;
  }

  /** Signs `record` and installs it here and in the directory; it must be newer than the current one. */
  install(record: CellRecord): void {
    const previous = this.own?.record;
    invariant(previous === undefined || compareRecordOrder(record, previous) > 0, () => `own record ${record.incarnation}.${record.version} installed after ${previous?.incarnation}.${previous?.version}`);
    const verified = signRecord(record, this.init.signer);
    this.own = verified;
    this.init.directory.setOwn(verified, this.init.clock.now());
  }

  /** Installs the current record with another status (leaving, left). */
  installStatus(status: CellRecord['status']): void {
    const current = this.record;
    this.install({ ...current, status, version: current.version + 1 });
  }

  /** Hands the current record to the transport (best effort: anti-entropy repairs what it misses). */
  publish(): Promise<void> {
    const own = this.own;
    if (own === undefined || !this.init.mayPublish()) return Promise.resolve();
    this.publishedAtMs = this.init.clock.now();
    const bytes = new TextEncoder().encode(JSON.stringify(own.signed));
    return this.init.transport.publish(MembershipTopic.directory, bytes).catch((error: unknown) => {
      this.init.logger.debug({ err: error }, 'publishing the own record failed');
    });
  }

  /**
   * A peer pulled holding an older record of this cell: republish it, unless it went out less
   * than `republishAfterMs` ago, when pulls sent before it arrived are still coming in.
   */
  lacked(): void {
    if (this.init.clock.now() - this.publishedAtMs < this.init.republishAfterMs) return;
    this.init.metrics.ownRecordRepublished();
    void this.publish();
  }
}

/** The content of a record: what a cell may change at runtime. */
export function pickContent(record: CellRecord): CellRecordContent {
  const { endpoints, tenants, merchants, handedOver, load, capacity } = record;
  return { endpoints, tenants, merchants, ...(handedOver === undefined ? {} : { handedOver }), load, capacity };
}

/** A deep copy of the content, so callers cannot change a signed record by mutating their objects. */
export function copyContent(content: CellRecordContent): CellRecordContent {
  return {
    endpoints: { ws: content.endpoints.ws, http: content.endpoints.http, p2p: [...content.endpoints.p2p] },
    tenants: [...content.tenants],
    merchants: content.merchants.map((claim) => ({ tenant: claim.tenant, merchant: claim.merchant, epoch: claim.epoch, ...(claim.proof === undefined ? {} : { proof: { ...claim.proof } }) })),
    ...(content.handedOver === undefined ? {} : { handedOver: content.handedOver.map((note) => ({ ...note })) }),
    load: { devices: content.load.devices, messagesPerSecond: content.load.messagesPerSecond },
    capacity: { maxDevices: content.capacity.maxDevices },
  };
}
