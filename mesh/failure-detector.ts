/**
 * SWIM failure detection with Lifeguard's refinements, composed: pings and their piggybacked
 * updates, hearing from cells, the membership messages and their handlers, wired to probing
 * (probes.ts), dissemination (dissemination.ts), suspicions (suspicions.ts), view repairs
 * (view-repair.ts) and the local health multiplier (local-health.ts).
 */
import type { Logger } from '../platform/logger.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { ControlMessageDecoder, MAX_CONTROL_MESSAGE_BYTES } from './control-messages.js';
import { isServing, type Directory, type DirectoryEntry, type LivenessClaim } from './directory.js';
import { Dissemination } from './dissemination.js';
import { LocalHealth } from './local-health.js';
import type { MembershipOptions } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import {
  decodeJson,
  encodeJson,
  LivenessClaimMessageSchema,
  MembershipProtocol,
  MembershipTopic,
  PingRequestSchema,
  type LivenessClaimMessage,
  type OwnOrder,
  type PingAnswer,
  type PingRequest,
} from './membership-wire.js';
import type { MeshMetrics } from './mesh-metrics.js';
import { Prober } from './probes.js';
import { countServingCells, Suspicions } from './suspicions.js';
import type { MeshMessage, MeshTransport, PeerId, ValidationResult } from './transport.js';
import { claimToReannounce, pullCalledFor, ViewRepairs } from './view-repair.js';

export interface FailureDetectorInit {
  readonly directory: Directory;
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  readonly options: MembershipOptions;
  readonly metrics: MeshMetrics;
  readonly logger: Logger;
  /** The (incarnation, version) of this cell's own record now. */
  readonly ownOrder: () => { readonly incarnation: number; readonly version: number };
  /** A suspect or dead claim about this cell at or above its incarnation arrived: refute it. */
  readonly refute: (claim: LivenessClaim) => void;
  /** A ping, its answer or a piggybacked update shows a record newer than the one held, or an unknown cell: pull from `peer`. */
  readonly onNewerRecordSeen: (peer: PeerId, cellId: string) => void;
}

/**
 * SWIM failure detection with Lifeguard's refinements, on the mesh transport. No cell broadcasts
 * a heartbeat: liveness and membership ride on the probes, so a quiet cell's traffic does not
 * grow with the cluster.
 *
 * - Probes: every `probeIntervalMs` (x LHM+1) this cell pings one cell, the next of a shuffled
 *   round-robin over the directory (`/cellmesh/ping/1.0.0`, `probeTimeoutMs` x LHM+1); a cell
 *   whose connection the transport reported closed, and a suspect heard of from others, at once.
 *   If the direct ping fails, k = `indirectProbes` random other live connected cells are asked to
 *   ping it (`/cellmesh/ping-req/1.0.0`); they answer ack or nack. If none acks, the cell is
 *   suspected: marked suspect here and a claim `{kind: 'suspect', cellId, incarnation, by}` is
 *   published on `cellmesh/membership/v1`. See Prober.
 * - Dissemination: a ping carries the pinger's own order `{cellId, incarnation, version}` and an
 *   answer the answerer's; both piggyback the orders of records that changed lately, each sent
 *   λ·log(n) times (Dissemination). A receiver that holds an older record (or none) pulls it from
 *   the sender; one that holds a claim against a cell announcing itself reannounces it to that
 *   cell. Any ping, answer, request, own record or claim from a cell counts as hearing from it.
 * - Suspicion: the first claim (own or received) starts a timer of `suspicionMaxMs`, shrinking
 *   toward `suspicionMinMs` with each further cell's claim (suspicionTimeoutMs). A cell whose
 *   own probes fail when it holds K confirmations already publishes nothing. At expiry the
 *   cell is declared dead; `{kind: 'dead'}` is published if this cell was one of the
 *   suspectors. A record with a higher incarnation (the suspect's refutation) clears it
 *   anywhere, any time. See Suspicions.
 * - Refutation: a claim about this cell at >= its incarnation calls `refute` (the mesh bumps its
 *   incarnation and republishes its record). A cell held dead here that pings or answers gets the
 *   dead claim re-announced to it alone (`/cellmesh/claim/1.0.0`, at most every
 *   `claimReannounceIntervalMs`; in a large cluster after a random wait, see
 *   ViewRepairs.disagreementHeard) so it learns to refute, which is how both sides of a healed
 *   partition come back.
 * - Local health multiplier (0..`maxLocalHealth`): +1 when a probe fails with no answer at all
 *   (no direct reply, not even a refused connection, and no nack from a helper: this cell may be
 *   the slow one), +1 at every refutation, +1 when its own probe timer fires more than a round
 *   late (its event loop stalled); -1 on every successful probe. Every timeout above scales by
 *   LHM + 1.
 *
 * Bounds: suspicions, pending probes and updates to disseminate hold at most one entry per
 * directory entry, deferred repairs at most `maxCells`; at most `maxConcurrentProbes` probes run
 * at once; a suspicion keeps at most K + 1 suspectors; a message piggybacks at most
 * MAX_PIGGYBACKED_UPDATES updates.
 */
export class FailureDetector {
  private running = false;
  private probeTimer: TimerHandle | undefined;
  private readonly health: LocalHealth;
  private readonly suspicions: Suspicions;
  private readonly prober: Prober;
  private readonly repairs: ViewRepairs;
  private readonly dissemination: Dissemination;
  private readonly decoder = new ControlMessageDecoder();
  /** Serving cells of the directory (this one included), kept up to date from its changes. */
  private servingCells = 1;
  private unsubscribeDirectory: (() => void) | undefined;
  private unfollowDissemination: (() => void) | undefined;

  constructor(private readonly init: FailureDetectorInit) {
    const { directory, transport, clock, random, options, metrics, logger } = init;
    const isRunning = (): boolean => this.running;
    this.health = new LocalHealth(options.maxLocalHealth, metrics, logger);
    this.dissemination = new Dissemination(directory, options.maxCells);
    this.suspicions = new Suspicions({
      directory,
      transport,
      clock,
      options,
      metrics,
      logger,
      health: this.health,
      isRunning,
      servingCellsSeen: () => this.servingCells,
      confirmationWanted: (cellId) => this.prober.confirmSoon(cellId),
    });
    this.prober = new Prober({
      directory,
      transport,
      clock,
      random,
      options,
      metrics,
      health: this.health,
      suspicions: this.suspicions,
      isRunning,
      pingRequest: (cellId) => this.pingRequest(cellId),
      pingAnswered: (peer, { cellId, incarnation, version, updates }) => this.orderAnnounced(peer, { self: { cellId, incarnation, version }, updates }),
      heardFromPeer: (peer) => this.heardFromPeer(peer),
    });
    this.repairs = new ViewRepairs({
      directory,
      clock,
      random,
      options,
      isRunning,
      servingCells: () => this.servingCells,
      pull: (peer, cellId) => init.onNewerRecordSeen(peer, cellId),
      reannounce: (cellId, claim) => this.suspicions.reannounce(cellId, claim),
    });
  }

  private get selfCellId(): string {
    return this.init.directory.selfCellId;
  }

  /** The local health multiplier now (0 = healthy). */
  localHealth(): number {
    return this.health.value;
  }

  /** Serves the ping protocols; call once, before `start` (handlers answer only while running). */
  registerHandlers(): void {
    const { transport } = this.init;
    transport.handle(MembershipProtocol.ping, (from, request) => this.answerPing(from, request));
    transport.handle(MembershipProtocol.pingReq, (from, request) => this.prober.answerPingReq(from, request));
    transport.handle(MembershipProtocol.claim, (from, request) => this.answerClaim(from, request));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const { transport, directory } = this.init;
    transport.subscribe(MembershipTopic.membership, (message) => this.handleClaim(message), (message) => this.validateClaim(message));
    this.unsubscribeDirectory = directory.onChange((cellId, before, after) => this.onDirectoryChange(cellId, before, after));
    this.unfollowDissemination = this.dissemination.follow();
    this.health.report();
    this.servingCells = countServingCells(directory);
    for (const entry of directory.values()) this.prober.added(entry.record.cellId);
    this.scheduleProbeRound();
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.probeTimer?.cancel();
    this.suspicions.clear();
    this.prober.clear();
    this.repairs.clear();
    this.dissemination.clear();
    this.unsubscribeDirectory?.();
    this.unfollowDissemination?.();
    this.init.transport.unsubscribe(MembershipTopic.membership);
  }

  /** Serving cells of the directory, this one included. */
  servingCellCount(): number {
    return this.servingCells;
  }

  /** A request or message from `peer` arrived: that cell is alive. */
  heardFromPeer(peer: PeerId): void {
    const cellId = this.init.directory.cellOfPeer(peer);
    if (cellId === undefined || cellId === this.selfCellId) return;
    this.init.directory.markHeard(cellId, this.init.clock.now());
    this.prober.heard(cellId);
  }

  /** The transport reports the connection to `peer` closed: probe that cell at once. */
  peerDisconnected(peer: PeerId): void {
    if (!this.running) return;
    const cellId = this.init.directory.cellOfPeer(peer);
    if (cellId === undefined || cellId === this.selfCellId) return;
    const entry = this.init.directory.get(cellId);
    if (entry === undefined || !isServing(entry.liveness)) return;
    this.prober.probeSoon(cellId);
    // Not inside the transport's callback: the probe starts on the next turn of the clock.
    this.init.clock.setTimer(0, () => {
      if (this.running) this.prober.startDueProbes();
    });
  }

  /** This cell had to refute a claim about itself: a sign it may be the slow one. */
  noteRefutation(): void {
    this.health.raise('refuted');
  }

  /** A dead claim relayed by anti-entropy (a tombstone), without a claimant. */
  applyRelayedDeadClaim(cellId: string, incarnation: number): void {
    if (cellId === this.selfCellId) {
      if (incarnation >= this.init.ownOrder().incarnation) this.init.refute({ kind: 'dead', incarnation });
      return;
    }
    const outcome = this.init.directory.applyClaim(cellId, { kind: 'dead', incarnation }, this.init.clock.now());
    if (outcome === 'applied') this.init.logger.info({ cellId, incarnation }, 'cell learned dead through anti-entropy');
  }

  /** A claim by another cell (already authenticated as coming from `claim.by`). */
  applyClaim(claim: LivenessClaimMessage): void {
    if (claim.cellId === this.selfCellId) {
      if (claim.incarnation >= this.init.ownOrder().incarnation) this.init.refute({ kind: claim.kind, incarnation: claim.incarnation });
      return;
    }
    this.suspicions.applyClaim(claim);
  }

  /** The body of a ping to `cellId`: this cell's order and the updates it has to spread. */
  private pingRequest(cellId: string): PingRequest {
    const self: OwnOrder = { cellId: this.selfCellId, ...this.init.ownOrder() };
    const updates = this.dissemination.take(this.servingCells, cellId);
    return updates === undefined ? { self } : { self, updates };
  }

  /**
   * `peer` told its own order (a ping or a ping's answer) and piggybacked updates. Its own order
   * counts only from the peer that holds the cell (or for a cell not known yet, to pull it).
   */
  private orderAnnounced(peer: PeerId, announced: { readonly self?: OwnOrder | undefined; readonly updates?: readonly OwnOrder[] | undefined }): void {
    const { directory, clock } = this.init;
    const self = announced.self;
    if (self !== undefined && self.cellId !== this.selfCellId) {
      const entry = directory.get(self.cellId);
      if (entry === undefined || entry.record.peerId === peer) {
        if (entry !== undefined) {
          directory.markHeard(self.cellId, clock.now());
          this.prober.heard(self.cellId);
        }
        if (entry?.liveness === 'dead') this.prober.deadCellAnswered();
        if (pullCalledFor(entry, self) || claimToReannounce(entry, self) !== undefined) this.repairs.disagreementHeard(peer, self.cellId, self);
      }
    }
    for (const update of announced.updates ?? []) {
      // Another cell's order, passed on: the sender holds that record, so pull it from there.
      if (update.cellId === this.selfCellId || update.cellId === self?.cellId) continue;
      if (pullCalledFor(directory.get(update.cellId), update)) this.repairs.disagreementHeard(peer, update.cellId, update);
    }
  }

  private validateClaim(message: MeshMessage): ValidationResult {
    const claim = this.decoder.claim(message);
    if (claim === undefined) return this.rejectMessage(MembershipTopic.membership, 'malformed');
    if (claim.by === this.selfCellId) return this.rejectMessage(MembershipTopic.membership, 'forged-owner');
    const claimant = this.init.directory.get(claim.by);
    // A claim from a cell not known yet is dropped quietly; its record will come.
    if (claimant === undefined) return 'ignore';
    if (claimant.record.peerId !== message.from) return this.rejectMessage(MembershipTopic.membership, 'forged-owner');
    return 'accept';
  }

  private handleClaim(message: MeshMessage): void {
    const claim = this.decoder.claim(message);
    if (claim === undefined || !this.running) return;
    this.heardFromPeer(message.from);
    this.applyClaim(claim);
  }

  private rejectMessage(channel: string, reason: string): ValidationResult {
    this.init.metrics.messageRejected(channel, reason);
    return 'reject';
  }

  private async answerPing(from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    if (!this.running) throw new MembershipError('STOPPED');
    const decoded = decodeJson(request, PingRequestSchema, MAX_CONTROL_MESSAGE_BYTES);
    if (!decoded.ok) {
      this.init.metrics.messageRejected(MembershipProtocol.ping, 'malformed');
      throw new MembershipError('BAD_MESSAGE', 'malformed ping');
    }
    this.heardFromPeer(from);
    this.orderAnnounced(from, decoded.value);
    const order = this.init.ownOrder();
    const updates = this.dissemination.take(this.servingCells, this.init.directory.cellOfPeer(from));
    const answer: PingAnswer = { cellId: this.selfCellId, incarnation: order.incarnation, version: order.version };
    return encodeJson(updates === undefined ? answer : { ...answer, updates });
  }

  /** A claim about this cell reannounced by the cell holding it (Suspicions.reannounce): refute it if it holds. */
  private async answerClaim(from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    if (!this.running) throw new MembershipError('STOPPED');
    const decoded = decodeJson(request, LivenessClaimMessageSchema, MAX_CONTROL_MESSAGE_BYTES);
    if (!decoded.ok || decoded.value.cellId !== this.selfCellId) {
      this.init.metrics.messageRejected(MembershipProtocol.claim, 'malformed');
      throw new MembershipError('BAD_MESSAGE', 'malformed claim, or not about this cell');
    }
    const claim = decoded.value;
    if (this.init.directory.cellOfPeer(from) !== claim.by) {
      this.init.metrics.messageRejected(MembershipProtocol.claim, 'forged-owner');
      throw new MembershipError('BAD_MESSAGE', 'the claim is not by the cell that sent it');
    }
    this.heardFromPeer(from);
    this.applyClaim(claim);
    return encodeJson({});
  }

  private scheduleProbeRound(): void {
    const intervalMs = this.init.options.probeIntervalMs * (this.health.value + 1);
    const dueMs = this.init.clock.now() + intervalMs;
    this.probeTimer = this.init.clock.setTimer(intervalMs, () => {
      if (!this.running) return;
      // A timer that fires more than a whole round late means this cell's event loop was
      // stalled: it may be the one that cannot keep up, so it gives others more time.
      if (this.init.clock.now() - dueMs > intervalMs) this.health.raise('probe-round-late');
      this.prober.probeRound();
      this.scheduleProbeRound();
    });
  }

  private onDirectoryChange(cellId: string, before: DirectoryEntry | undefined, after: DirectoryEntry | undefined): void {
    this.servingCells += Number(after !== undefined && isServing(after.liveness)) - Number(before !== undefined && isServing(before.liveness));
    if (before === undefined && after !== undefined) this.prober.added(cellId);
    // A cell held dead is back (it refuted, or restarted): a healed partition brings back the rest too.
    if (before?.liveness === 'dead' && after !== undefined && isServing(after.liveness)) this.prober.deadCellAnswered();
    if (after === undefined) this.prober.forget(cellId);
    this.suspicions.directoryChanged(cellId, after);
  }
}
