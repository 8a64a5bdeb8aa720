import type { Metrics } from '../platform/metrics.js';

/** How a record reached this cell. */
export type RecordSource = 'gossip' | 'anti-entropy';

/** Why a received record was refused. */
export type RecordRejectReason =
  /** The message was larger than the configured bound. */
  | 'too-large'
  /** Not a SignedRecord envelope, or the record fails the schema. */
  | 'malformed'
  /** The signature does not verify against the record's peer id. */
  | 'bad-signature'
  /** Gossip published by a peer other than the record's owner. */
  | 'forged-owner'
  /** The cell id is held by another live peer (or the peer by another cell id). */
  | 'peer-mismatch'
  /** The directory is at `maxCells`. */
  | 'directory-full';

export type ProbeOutcome = 'ack' | 'indirect-ack' | 'failed';

/**
 * The membership core's metrics: it reports events through this interface, named after what
 * happened, and never sees the metrics port.
 * Methods must be cheap and must not throw.
 */
export interface MeshMetrics {
  recordAccepted(source: RecordSource): void;
  recordStale(source: RecordSource): void;
  recordRejected(source: RecordSource, reason: RecordRejectReason): void;
  /** A heartbeat, claim or request that failed validation; `channel` is its topic or protocol. */
  messageRejected(channel: string, reason: string): void;
  antiEntropyRound(role: 'asker' | 'answerer', outcome: 'ok' | 'failed'): void;
  /** Records that anti-entropy brought which gossip had not (accepted as newer). */
  recordsRepaired(count: number): void;
  probe(outcome: ProbeOutcome): void;
  suspectDeclared(): void;
  deadDeclared(): void;
  refuted(): void;
  /** A claim held against a cell still heard from was sent to it, so it can refute. */
  claimReannounced(): void;
  /** A peer's anti-entropy digest showed it had missed this cell's record, which went out again. */
  ownRecordRepublished(): void;
  conflictDetected(): void;
  /** A conflict that includes claims above the home's epoch without proof. */
  unprovenClaimDetected(): void;
  localHealth(multiplier: number): void;
}

/** Metrics that go nowhere: the default when none are injected. */
export const noopMeshMetrics: MeshMetrics = {
  recordAccepted: () => {},
  recordStale: () => {},
  recordRejected: () => {},
  messageRejected: () => {},
  antiEntropyRound: () => {},
  recordsRepaired: () => {},
  probe: () => {},
  suspectDeclared: () => {},
  deadDeclared: () => {},
  refuted: () => {},
  claimReannounced: () => {},
  ownRecordRepublished: () => {},
  conflictDetected: () => {},
  unprovenClaimDetected: () => {},
  localHealth: () => {},
};

/**
 * MeshMetrics on the metrics port (`cellmesh_mesh_*`). Membership events are rare next to
 * chat traffic, so a labelled counter's child is looked up per event.
 */
export function meshMetricsOn(metrics: Metrics): MeshMetrics {
  const records = metrics.labelledCounter({
    name: 'cellmesh_mesh_records_received_total',
    help: 'Valid cell records received, by source and whether they were newer (accepted) or not (stale).',
    labelNames: ['source', 'outcome'],
  });
  const rejected = metrics.labelledCounter({
    name: 'cellmesh_mesh_records_rejected_total',
    help: 'Cell records refused, by source and reason.',
    labelNames: ['source', 'reason'],
  });
  const messages = metrics.labelledCounter({
    name: 'cellmesh_mesh_messages_rejected_total',
    help: 'Membership messages and requests that failed validation, by topic or protocol and reason.',
    labelNames: ['channel', 'reason'],
  });
  const rounds = metrics.labelledCounter({
    name: 'cellmesh_mesh_anti_entropy_rounds_total',
    help: 'Anti-entropy rounds, by role and outcome.',
    labelNames: ['role', 'outcome'],
  });
  const repaired = metrics.counter({
    name: 'cellmesh_mesh_anti_entropy_records_repaired_total',
    help: 'Records accepted through anti-entropy (that gossip had not delivered).',
  });
  const probes = metrics.labelledCounter({
    name: 'cellmesh_mesh_probes_total',
    help: 'Failure-detector probes, by outcome.',
    labelNames: ['outcome'],
  });
  const suspects = metrics.counter({ name: 'cellmesh_mesh_suspect_declarations_total', help: 'Cells this cell declared suspect.' });
  const deaths = metrics.counter({ name: 'cellmesh_mesh_dead_declarations_total', help: 'Cells this cell declared dead.' });
  const refutations = metrics.counter({ name: 'cellmesh_mesh_refutations_total', help: 'Suspicions of this cell it refuted.' });
  const reannounced = metrics.counter({
    name: 'cellmesh_mesh_claims_reannounced_total',
    help: 'Suspect or dead claims this cell sent to the cell they are about, because it was still heard from.',
  });
  const republished = metrics.counter({
    name: 'cellmesh_mesh_own_record_republished_total',
    help: "Times this cell republished its own record because a peer's anti-entropy digest showed it had missed it.",
  });
  const conflicts = metrics.counter({
    name: 'cellmesh_mesh_merchant_conflicts_total',
    help: 'Merchant conflicts: two or more cells at the same epoch, or claims above the home without proof (each new conflict once).',
  });
  const unprovenClaims = metrics.counter({
    name: 'cellmesh_mesh_unproven_claims_total',
    help: "Conflicts with claims above a merchant's home that carry no handover or operator placement, ignored by routing (each new conflict once).",
  });
  const health = metrics.gauge({
    name: 'cellmesh_mesh_local_health_multiplier',
    help: "Lifeguard local health multiplier (0 = healthy); this cell's timeouts scale by it plus one.",
  });
  return {
    recordAccepted: (source) => records.labels({ source, outcome: 'accepted' }).inc(),
    recordStale: (source) => records.labels({ source, outcome: 'stale' }).inc(),
    recordRejected: (source, reason) => rejected.labels({ source, reason }).inc(),
    messageRejected: (channel, reason) => messages.labels({ channel, reason }).inc(),
    antiEntropyRound: (role, outcome) => rounds.labels({ role, outcome }).inc(),
    recordsRepaired: (count) => {
      if (count > 0) repaired.inc(count);
    },
    probe: (outcome) => probes.labels({ outcome }).inc(),
    suspectDeclared: () => suspects.inc(),
    deadDeclared: () => deaths.inc(),
    refuted: () => refutations.inc(),
    claimReannounced: () => reannounced.inc(),
    ownRecordRepublished: () => republished.inc(),
    conflictDetected: () => conflicts.inc(),
    unprovenClaimDetected: () => unprovenClaims.inc(),
    localHealth: (multiplier) => health.set(multiplier),
  };
}
