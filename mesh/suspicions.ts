/**
 * Lifeguard's suspicion state machine: a cell suspected (by this cell's probes or by another
 * cell's claim) is declared dead when its suspicion times out, sooner the more cells confirm it;
 * and the claims this publishes, or reannounces to the one cell that must refute them.
 */
import type { Logger } from '../platform/logger.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { invariant } from '../platform/invariant.js';
import { isServing, isTombstone, type Directory, type DirectoryEntry, type LivenessClaim } from './directory.js';
import { suspicionTimeoutMs } from './detector-timing.js';
import type { LocalHealth } from './local-health.js';
import type { MembershipOptions } from './membership-config.js';
import { encodeJson, MembershipProtocol, MembershipTopic, type LivenessClaimMessage } from './membership-wire.js';
import type { MeshMetrics } from './mesh-metrics.js';
import type { MeshTransport } from './transport.js';

export interface SuspicionsInit {
  readonly directory: Directory;
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly options: MembershipOptions;
  readonly metrics: MeshMetrics;
  readonly logger: Logger;
  readonly health: LocalHealth;
  readonly isRunning: () => boolean;
  /** Serving cells (this one included) at the failure detector's last probe round. */
  readonly servingCellsSeen: () => number;
}

interface Suspicion {
  readonly incarnation: number;
  readonly startedMs: number;
  /** Distinct cells that suspect it, this one included when it does; at most K + 1 are kept. */
  readonly suspectors: Set<string>;
  timer: TimerHandle | undefined;
}

/** Cells of the directory that serve (alive, suspect or leaving), this one included. */
export function countServingCells(directory: Directory): number {
  let count = 0;
  for (const entry of directory.values()) if (isServing(entry.liveness)) count++;
  return count;
}

/**
 * The suspicions this cell holds, at most one per directory entry, each with at most K + 1
 * suspectors (K = `suspicionConfirmations`). The first claim (own or received) starts a timer of
 * `suspicionMaxMs`, shrinking toward `suspicionMinMs` with each further cell's claim
 * (suspicionTimeoutMs). At expiry the cell is declared dead; `{kind: 'dead'}` is published if
 * this cell was one of the suspectors. A record with a higher incarnation (the suspect's
 * refutation) clears a suspicion anywhere, any time (`directoryChanged`).
 */
export class Suspicions {
  private readonly suspicions = new Map<string, Suspicion>();
  private readonly lastReannounceMs = new Map<string, number>();

  constructor(private readonly init: SuspicionsInit) {}

  private get selfCellId(): string {
    return this.init.directory.selfCellId;
  }

  /** A suspicion heard from others that this cell has not confirmed yet and that still counts confirmations. */
  awaitsConfirmationHere(cellId: string): boolean {
    const suspicion = this.suspicions.get(cellId);
    return suspicion !== undefined && !suspicion.suspectors.has(this.selfCellId) && suspicion.suspectors.size <= this.init.options.suspicionConfirmations;
  }

  /** This cell's own probes failed: suspect the cell (or confirm a suspicion heard from others). */
  suspectLocally(cellId: string, incarnation: number): void {
    const entry = this.init.directory.get(cellId);
    if (entry === undefined || !isServing(entry.liveness) || incarnation < entry.record.incarnation) return;
    const suspicion = this.suspicions.get(cellId);
    if (suspicion !== undefined && suspicion.incarnation > incarnation) return;
    if (suspicion !== undefined && suspicion.incarnation === incarnation) {
      if (suspicion.suspectors.has(this.selfCellId)) return;
      // K confirmations are here already, so the same gossip brought them everywhere: one more
      // claim would shorten no timeout. Staying silent (memberlist's rule) keeps a partition to
      // about K + 1 claims per cut-off cell instead of one from every cell of the other side.
      if (suspicion.suspectors.size > this.init.options.suspicionConfirmations) return;
      this.confirm(cellId, suspicion, this.selfCellId);
    } else {
      if (!this.markSuspect(cellId, entry, incarnation)) return;
      this.startSuspicion(cellId, incarnation, this.selfCellId);
    }
    this.init.metrics.suspectDeclared();
    this.init.logger.info({ cellId, incarnation }, 'cell suspected');
    this.publishClaim({ kind: 'suspect', cellId, incarnation, by: this.selfCellId });
  }

  /** A claim by another cell about another cell (already authenticated as coming from `claim.by`). */
  applyClaim(claim: LivenessClaimMessage): void {
    const { directory, clock } = this.init;
    const entry = directory.get(claim.cellId);
    if (entry === undefined || claim.incarnation < entry.record.incarnation) return;
    if (claim.kind === 'dead') {
      if (directory.applyClaim(claim.cellId, { kind: 'dead', incarnation: claim.incarnation }, clock.now()) === 'applied') {
        this.init.logger.info({ cellId: claim.cellId, incarnation: claim.incarnation, by: claim.by }, 'cell declared dead by another cell');
      }
      return;
    }
    if (isTombstone(entry.liveness)) return;
    const suspicion = this.suspicions.get(claim.cellId);
    if (suspicion !== undefined && suspicion.incarnation > claim.incarnation) return;
    if (suspicion !== undefined && suspicion.incarnation === claim.incarnation) {
      this.confirm(claim.cellId, suspicion, claim.by);
      return;
    }
    if (this.markSuspect(claim.cellId, entry, claim.incarnation)) this.startSuspicion(claim.cellId, claim.incarnation, claim.by);
  }

  /**
   * Tells a cell that is still heard from what this cell holds against it, so it can refute: a
   * request to that cell alone. Gossiped, the claim would go to every cell, and mark the cell
   * dead again where its refutation (or the cell's side of a healed partition) had it alive.
   */
  reannounce(cellId: string, claim: LivenessClaim): void {
    if (claim.kind === 'suspect' && this.suspicions.get(cellId)?.suspectors.has(this.selfCellId) !== true) return;
    const peer = this.init.directory.get(cellId)?.record.peerId;
    if (peer === undefined) return;
    const nowMs = this.init.clock.now();
    const lastMs = this.lastReannounceMs.get(cellId);
    if (lastMs !== undefined && nowMs - lastMs < this.init.options.claimReannounceIntervalMs) return;
    this.lastReannounceMs.set(cellId, nowMs);
    this.init.metrics.claimReannounced();
    const message: LivenessClaimMessage = { kind: claim.kind, cellId, incarnation: claim.incarnation, by: this.selfCellId };
    this.init.transport.request(peer, MembershipProtocol.claim, encodeJson(message), { timeoutMs: this.init.options.probeTimeoutMs }).catch((error: unknown) => {
      // The next heartbeat heard from it tries again (after claimReannounceIntervalMs).
      this.init.logger.debug({ err: error, cellId }, 'reannouncing a claim failed');
    });
  }

  /** The directory entry of `cellId` changed (`after` undefined: removed): drop what no longer holds. */
  directoryChanged(cellId: string, after: DirectoryEntry | undefined): void {
    if (after === undefined || after.claim === undefined) this.lastReannounceMs.delete(cellId);
    const suspicion = this.suspicions.get(cellId);
    if (suspicion !== undefined && (after === undefined || after.liveness !== 'suspect' || after.claim?.incarnation !== suspicion.incarnation)) {
      suspicion.timer?.cancel();
      this.suspicions.delete(cellId);
    }
  }

  /** Cancels every suspicion timer and forgets everything (the detector stopped). */
  clear(): void {
    for (const suspicion of this.suspicions.values()) suspicion.timer?.cancel();
    this.suspicions.clear();
    this.lastReannounceMs.clear();
  }

  /** Marks the cell suspect in the directory; false when the directory holds something stronger. */
  private markSuspect(cellId: string, entry: DirectoryEntry, incarnation: number): boolean {
    const outcome = this.init.directory.applyClaim(cellId, { kind: 'suspect', incarnation }, this.init.clock.now());
    if (outcome === 'applied') return true;
    // Already suspect at this incarnation without a timer (should not happen; be safe).
    return entry.claim?.kind === 'suspect' && entry.claim.incarnation === incarnation && !this.suspicions.has(cellId);
  }

  private startSuspicion(cellId: string, incarnation: number, firstSuspector: string): void {
    this.suspicions.get(cellId)?.timer?.cancel();
    const suspicion: Suspicion = { incarnation, startedMs: this.init.clock.now(), suspectors: new Set([firstSuspector]), timer: undefined };
    this.suspicions.set(cellId, suspicion);
    this.scheduleSuspicion(cellId, suspicion);
  }

  private confirm(cellId: string, suspicion: Suspicion, by: string): void {
    if (suspicion.suspectors.has(by) || suspicion.suspectors.size > this.init.options.suspicionConfirmations) return;
    suspicion.suspectors.add(by);
    this.scheduleSuspicion(cellId, suspicion);
  }

  private scheduleSuspicion(cellId: string, suspicion: Suspicion): void {
    const { options, clock } = this.init;
    invariant(suspicion.suspectors.size >= 1 && suspicion.suspectors.size <= options.suspicionConfirmations + 1, () => `suspicion of ${cellId} has ${suspicion.suspectors.size} suspectors, outside 1..K+1`);
    suspicion.timer?.cancel();
    // The count changes the timeout only below K + 2 cells (suspicionTimeoutMs): counted afresh
    // near there, taken from the last probe round above. A directory walk for every claim heard
    // made a partition of a 1,000-cell mesh cost n^3.
    const seen = this.init.servingCellsSeen();
    const servingCells = seen < options.suspicionConfirmations + 4 ? countServingCells(this.init.directory) : seen;
    const timeoutMs = suspicionTimeoutMs(suspicion.suspectors.size - 1, options, this.init.health.value, servingCells);
    const remainingMs = Math.max(0, suspicion.startedMs + timeoutMs - clock.now());
    suspicion.timer = clock.setTimer(remainingMs, () => this.suspicionExpired(cellId, suspicion));
  }

  private suspicionExpired(cellId: string, suspicion: Suspicion): void {
    if (!this.init.isRunning() || this.suspicions.get(cellId) !== suspicion) return;
    this.suspicions.delete(cellId);
    const entry = this.init.directory.get(cellId);
    if (entry === undefined || entry.liveness !== 'suspect' || entry.claim?.incarnation !== suspicion.incarnation) return;
    this.init.directory.applyClaim(cellId, { kind: 'dead', incarnation: suspicion.incarnation }, this.init.clock.now());
    this.init.metrics.deadDeclared();
    this.init.logger.info({ cellId, incarnation: suspicion.incarnation, suspectors: suspicion.suspectors.size }, 'cell declared dead');
    // Every cell holding the suspicion declares the death by its own timer at about the same
    // time; the claim is for those that missed it, and the suspectors' claims are enough.
    if (suspicion.suspectors.has(this.selfCellId)) this.publishClaim({ kind: 'dead', cellId, incarnation: suspicion.incarnation, by: this.selfCellId });
  }

  private publishClaim(claim: LivenessClaimMessage): void {
    const topic = MembershipTopic.membership;
    this.init.transport.publish(topic, encodeJson(claim)).catch((error: unknown) => {
      this.init.logger.debug({ err: error, topic }, 'publish failed');
    });
  }
}
