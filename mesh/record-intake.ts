import type { Logger } from '../platform/logger.js';
import type { Clock } from '../platform/clock.js';
import { compareRecordOrder, openEnvelope, openSignedRecord, SignedRecordSchema, type CellRecord, type VerifiedRecord } from './cell-record.js';
import type { Directory } from './directory.js';
import { decodeJson } from './membership-wire.js';
import type { MeshMetrics, RecordRejectReason, RecordSource } from './mesh-metrics.js';
import type { RecordSigner } from './record-signer.js';
import { sameBytes } from './same-bytes.js';
import type { MeshMessage, PeerId, ValidationResult } from './transport.js';

export type IngestOutcome =
  | { readonly kind: 'accepted'; readonly record: CellRecord }
  | { readonly kind: 'stale' }
  | { readonly kind: 'rejected'; readonly reason: RecordRejectReason };

export interface RecordIntakeInit {
  readonly directory: Directory;
  readonly signer: RecordSigner;
  readonly clock: Clock;
  readonly metrics: MeshMetrics;
  readonly logger: Logger;
  /** This cell's transport identity. */
  readonly selfPeer: PeerId;
  readonly maxMessageBytes: number;
  /**
   * A valid record of this very cell newer than the one it holds: it ran before with state this
   * run does not know (a lost Store). The mesh answers by moving to a higher incarnation.
   */
  readonly onNewerOwnRecord: (record: CellRecord) => void;
}

type Checked = { ok: true; verified: VerifiedRecord; newer: boolean } | { ok: false; reason: RecordRejectReason };
type Opened = { ok: true; verified: VerifiedRecord } | { ok: false; reason: RecordRejectReason };

/**
 * The one gate every received cell record goes through, by gossip or by anti-entropy:
 * decode, validate (zod), verify the owner's signature, and for gossip require that the
 * publisher is the owner. Then the directory's own rules (order, peer binding, bounds) apply.
 */
export class RecordIntake {
  /**
   * The last gossip message that decoded and verified, by content: the validator and the handler
   * receive separate copies of each message, and opening one (JSON, schema, signature) is the
   * costly part of intake. Only successes are kept, so a rejected message is opened afresh every
   * time; the checks against the publisher and the directory run for every delivery.
   */
  private lastOpened: { readonly bytes: Uint8Array; readonly verified: VerifiedRecord } | undefined;

  constructor(private readonly init: RecordIntakeInit) {}

  /** The validator of `cellmesh/directory/v1`: authenticates without changing state. */
  readonly validateGossip = (message: MeshMessage): ValidationResult => {
    const checked = this.checkGossip(message);
    if (!checked.ok) {
      this.init.metrics.recordRejected('gossip', checked.reason);
      return 'reject';
    }
    // An authenticated record published by its owner is news from that cell, even when stale.
    if (checked.verified.record.cellId !== this.init.directory.selfCellId) {
      this.init.directory.markHeard(checked.verified.record.cellId, this.init.clock.now());
    }
    if (checked.newer || this.holdsSameOrder(checked.verified.record)) return 'accept';
    this.init.metrics.recordStale('gossip');
    return 'ignore';
  };

  /**
   * The record held for its cell has the same (incarnation, version): its owner published it
   * again, or this cell took it by anti-entropy before the gossip came (a joining cell pushes
   * its record to its bootstrap peer, then publishes it through that one connection). Such a
   * copy is passed on (the handler finds it stale): ignoring it would stop the publish at the
   * first cell that already has it, and every other cell would have to pull it. Older ones are
   * ignored, so replays go no further.
   */
  private holdsSameOrder(record: CellRecord): boolean {
    if (record.cellId === this.init.directory.selfCellId) return false;
    const held = this.init.directory.get(record.cellId);
    return held !== undefined && compareRecordOrder(record, held.record) === 0;
  }

  /** The handler of `cellmesh/directory/v1` (runs after the validator accepted). */
  readonly handleGossip = (message: MeshMessage): void => {
    const checked = this.checkGossip(message);
    if (checked.ok) this.merge(checked.verified, 'gossip', true);
  };

  /** Ingests an envelope relayed by anti-entropy (any sender; the signature is what counts). */
  ingestRelayed(envelope: unknown): IngestOutcome {
    const opened = openSignedRecord(envelope, this.init.signer);
    if (!opened.ok) {
      this.init.metrics.recordRejected('anti-entropy', opened.reason);
      return { kind: 'rejected', reason: opened.reason };
    }
    const checked = this.checkVerified(opened.verified);
    if (!checked.ok) {
      this.init.metrics.recordRejected('anti-entropy', checked.reason);
      return { kind: 'rejected', reason: checked.reason };
    }
    if (!checked.newer) {
      this.init.metrics.recordStale('anti-entropy');
      return { kind: 'stale' };
    }
    return this.merge(checked.verified, 'anti-entropy', false);
  }

  private checkGossip(message: MeshMessage): Checked {
    const opened = this.openGossip(message.data);
    if (!opened.ok) return opened;
    // Gossip must come from the record's owner: relays of others' records go by anti-entropy.
    if (opened.verified.record.peerId !== message.from) return { ok: false, reason: 'forged-owner' };
    // The directory may have changed since the validator ran: judge the record against it anew.
    return this.checkVerified(opened.verified);
  }

  /** Decodes and verifies a gossip message's bytes, or reuses the last result for the same bytes. */
  private openGossip(data: Uint8Array): Opened {
    const last = this.lastOpened;
    if (last !== undefined && sameBytes(last.bytes, data)) return { ok: true, verified: last.verified };
    const decoded = decodeJson(data, SignedRecordSchema, this.init.maxMessageBytes);
    if (!decoded.ok) return { ok: false, reason: decoded.reason };
    const opened = openEnvelope(decoded.value, this.init.signer);
    if (!opened.ok) return { ok: false, reason: opened.reason };
    // A copy (a Buffer's slice would be a view): the cache must not change if whoever owns `data` reuses its buffer.
    this.lastOpened = { bytes: new Uint8Array(data), verified: opened.verified };
    return opened;
  }

  private checkVerified(verified: VerifiedRecord): Checked {
    const { record } = verified;
    const { directory } = this.init;
    if (record.cellId === directory.selfCellId) {
      if (record.peerId !== this.init.selfPeer) {
        this.init.logger.warn({ cellId: record.cellId, peer: record.peerId }, 'another peer publishes records under this cell id');
        return { ok: false, reason: 'peer-mismatch' };
      }
      const own = directory.get(record.cellId);
      return { ok: true, verified, newer: own === undefined || compareRecordOrder(record, own.record) > 0 };
    }
    const assessment = directory.assess(record);
    if (assessment === 'peer-mismatch' || assessment === 'directory-full') return { ok: false, reason: assessment };
    return { ok: true, verified, newer: assessment === 'newer' };
  }

  private merge(verified: VerifiedRecord, source: RecordSource, heard: boolean): IngestOutcome {
    const { record } = verified;
    const { directory, metrics } = this.init;
    if (record.cellId === directory.selfCellId) {
      const own = directory.get(record.cellId);
      if (own !== undefined && compareRecordOrder(record, own.record) <= 0) {
        metrics.recordStale(source);
        return { kind: 'stale' };
      }
      metrics.recordAccepted(source);
      this.init.onNewerOwnRecord(record);
      return { kind: 'accepted', record };
    }
    const outcome = directory.mergeRecord(verified, { nowMs: this.init.clock.now(), heard });
    switch (outcome) {
      case 'added':
      case 'updated':
        metrics.recordAccepted(source);
        return { kind: 'accepted', record };
      case 'stale':
        metrics.recordStale(source);
        return { kind: 'stale' };
      default:
        metrics.recordRejected(source, outcome);
        return { kind: 'rejected', reason: outcome };
    }
  }
}
