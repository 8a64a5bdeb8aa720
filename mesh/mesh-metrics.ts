import { Counter, Gauge, type Registry } from 'prom-client';

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
 * The mesh's metrics port: the membership core reports through it and never sees prom-client.
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
 * MeshMetrics on prom-client, registered in the given registry (a cell's own, never the global
 * one, so many cells can share a process in tests and the simulator).
 */
export class PromMeshMetrics implements MeshMetrics {
  private readonly records: Counter<'source' | 'outcome'>;
  private readonly rejected: Counter<'source' | 'reason'>;
  private readonly messages: Counter<'channel' | 'reason'>;
  private readonly rounds: Counter<'role' | 'outcome'>;
  private readonly repaired: Counter;
  private readonly probes: Counter<'outcome'>;
  private readonly suspects: Counter;
  private readonly deaths: Counter;
  private readonly refutations: Counter;
  private readonly reannounced: Counter;
  private readonly republished: Counter;
  private readonly conflicts: Counter;
  private readonly unprovenClaims: Counter;
  private readonly health: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.records = new Counter({
      name: 'cellmesh_mesh_records_received_total',
      help: 'Valid cell records received, by source and whether they were newer (accepted) or not (stale).',
      labelNames: ['source', 'outcome'],
      registers,
    });
    this.rejected = new Counter({
      name: 'cellmesh_mesh_records_rejected_total',
      help: 'Cell records refused, by source and reason.',
      labelNames: ['source', 'reason'],
      registers,
    });
    this.messages = new Counter({
      name: 'cellmesh_mesh_messages_rejected_total',
      help: 'Membership messages and requests that failed validation, by topic or protocol and reason.',
      labelNames: ['channel', 'reason'],
      registers,
    });
    this.rounds = new Counter({
      name: 'cellmesh_mesh_anti_entropy_rounds_total',
      help: 'Anti-entropy rounds, by role and outcome.',
      labelNames: ['role', 'outcome'],
      registers,
    });
    this.repaired = new Counter({
      name: 'cellmesh_mesh_anti_entropy_records_repaired_total',
      help: 'Records accepted through anti-entropy (that gossip had not delivered).',
      registers,
    });
    this.probes = new Counter({
      name: 'cellmesh_mesh_probes_total',
      help: 'Failure-detector probes, by outcome.',
      labelNames: ['outcome'],
      registers,
    });
    this.suspects = new Counter({ name: 'cellmesh_mesh_suspect_declarations_total', help: 'Cells this cell declared suspect.', registers });
    this.deaths = new Counter({ name: 'cellmesh_mesh_dead_declarations_total', help: 'Cells this cell declared dead.', registers });
    this.refutations = new Counter({ name: 'cellmesh_mesh_refutations_total', help: 'Suspicions of this cell it refuted.', registers });
    this.reannounced = new Counter({
      name: 'cellmesh_mesh_claims_reannounced_total',
      help: 'Suspect or dead claims this cell sent to the cell they are about, because it was still heard from.',
      registers,
    });
    this.republished = new Counter({
      name: 'cellmesh_mesh_own_record_republished_total',
      help: "Times this cell republished its own record because a peer's anti-entropy digest showed it had missed it.",
      registers,
    });
    this.conflicts = new Counter({
      name: 'cellmesh_mesh_merchant_conflicts_total',
      help: 'Merchant conflicts: two or more cells at the same epoch, or claims above the home without proof (each new conflict once).',
      registers,
    });
    this.unprovenClaims = new Counter({
      name: 'cellmesh_mesh_unproven_claims_total',
      help: "Conflicts with claims above a merchant's home that carry no handover or operator placement, ignored by routing (each new conflict once).",
      registers,
    });
    this.health = new Gauge({
      name: 'cellmesh_mesh_local_health_multiplier',
      help: "Lifeguard local health multiplier (0 = healthy); this cell's timeouts scale by it plus one.",
      registers,
    });
  }

  recordAccepted(source: RecordSource): void {
    this.records.inc({ source, outcome: 'accepted' });
  }

  recordStale(source: RecordSource): void {
    this.records.inc({ source, outcome: 'stale' });
  }

  recordRejected(source: RecordSource, reason: RecordRejectReason): void {
    this.rejected.inc({ source, reason });
  }

  messageRejected(channel: string, reason: string): void {
    this.messages.inc({ channel, reason });
  }

  antiEntropyRound(role: 'asker' | 'answerer', outcome: 'ok' | 'failed'): void {
    this.rounds.inc({ role, outcome });
  }

  recordsRepaired(count: number): void {
    if (count > 0) this.repaired.inc(count);
  }

  probe(outcome: ProbeOutcome): void {
    this.probes.inc({ outcome });
  }

  suspectDeclared(): void {
    this.suspects.inc();
  }

  deadDeclared(): void {
    this.deaths.inc();
  }

  refuted(): void {
    this.refutations.inc();
  }

  claimReannounced(): void {
    this.reannounced.inc();
  }

  ownRecordRepublished(): void {
    this.republished.inc();
  }

  conflictDetected(): void {
    this.conflicts.inc();
  }

  unprovenClaimDetected(): void {
    this.unprovenClaims.inc();
  }

  localHealth(multiplier: number): void {
    this.health.set(multiplier);
  }
}
