/**
 * SWIM failure detection with Lifeguard's refinements, composed: heartbeats, hearing from cells,
 * the membership messages and their handlers, wired to probing (probes.ts), suspicions
 * (suspicions.ts), view repairs (view-repair.ts) and the local health multiplier (local-health.ts).
 */
import type { Logger } from '../platform/logger.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { ControlMessageDecoder, MAX_CONTROL_MESSAGE_BYTES } from './control-messages.js';
import { heartbeatIntervalMs, silenceAllowedMs } from './detector-timing.js';
import { isServing, type Directory, type DirectoryEntry, type LivenessClaim } from './directory.js';
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
  type Heartbeat,
  type LivenessClaimMessage,
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
  /** A heartbeat or ping answer shows a record newer than the one held, or an unknown cell: pull. */
  readonly onNewerRecordSeen: (peer: PeerId, cellId: string) => void;
}

/**
 * SWIM failure detection with Lifeguard's refinements, on the mesh transport.
 *
 * - Heartbeats: every `heartbeatIntervalMs` this cell publishes `{cellId, incarnation, version}`
 *   on `cellmesh/heartbeat/v1`. Any heartbeat, own record, request or probe answer from a cell
 *   counts as hearing from it. In a cluster too large for `heartbeatReceiveBudgetPerSecond` the
 *   interval stretches (detector-timing.ts heartbeatIntervalMs()) and the heartbeat says so
 *   (`intervalMs`); `suspectAfterMs` stretches by the same factor, taken from the longer of this
 *   cell's own interval and the one the heard cell announced, so a cell is never probed for
 *   keeping to a slower schedule than this one's.
 * - Probes: every `probeIntervalMs` (x LHM+1) a cell not heard from for `suspectAfterMs`
 *   (x LHM+1), or whose connection the transport reported closed (at once, not at the next
 *   round), gets a direct ping (`/cellmesh/ping/1.0.0`, `probeTimeoutMs` x LHM+1). If it fails,
 *   k = `indirectProbes` random other live connected cells are asked to ping it
 *   (`/cellmesh/ping-req/1.0.0`); they answer ack or nack. If none acks, the cell is suspected:
 *   marked suspect here and a claim `{kind: 'suspect', cellId, incarnation, by}` is published on
 *   `cellmesh/membership/v1`. A suspect this cell only heard about is probed too (when overdue
 *   here as well), so independent observers confirm each other's suspicion.
 *   When nothing is overdue, one random connected cell gets a health probe: it feeds only the
 *   local health multiplier (Lifeguard probes every round; without it LHM would never decay).
 *   See Prober.
 * - Suspicion: the first claim (own or received) starts a timer of `suspicionMaxMs`, shrinking
 *   toward `suspicionMinMs` with each further cell's claim (suspicionTimeoutMs). A cell whose
 *   own probes fail when it holds K confirmations already publishes nothing. At expiry the
 *   cell is declared dead; `{kind: 'dead'}` is published if this cell was one of the
 *   suspectors. A record with a higher incarnation (the suspect's refutation) clears it
 *   anywhere, any time. See Suspicions.
 * - Refutation: a claim about this cell at >= its incarnation calls `refute` (the mesh bumps its
 *   incarnation and republishes its record). A cell still heard from while held dead here gets
 *   the dead claim re-announced to it alone (`/cellmesh/claim/1.0.0`, at most every
 *   `claimReannounceIntervalMs`; in a large cluster after a random wait, see
 *   ViewRepairs.disagreementHeard) so it learns to refute, which is how both sides of a healed
 *   partition come back.
 * - Local health multiplier (0..`maxLocalHealth`): +1 when a probe fails with no answer at all
 *   (no direct reply, not even a refused connection, and no nack from a helper: this cell may be
 *   the slow one), +1 at every refutation, +1 when its own heartbeat timer fires more than an
 *   interval late (its event loop stalled); -1 on every successful probe. Every timeout above
 *   scales by LHM + 1.
 *
 * Bounds: suspicions, pending probes and announced intervals hold at most one entry per
 * directory entry, deferred repairs at most `maxCells`; at most
 * `maxConcurrentProbes` probes run at once; a suspicion keeps at most K + 1 suspectors.
 */
export class FailureDetector {
  private running = false;
  private heartbeatTimer: TimerHandle | undefined;
  private probeTimer: TimerHandle | undefined;
  private readonly health: LocalHealth;
  private readonly suspicions: Suspicions;
  private readonly prober: Prober;
  private readonly repairs: ViewRepairs;
  private readonly decoder = new ControlMessageDecoder();
  /** Heartbeat intervals other cells announced, when longer than `heartbeatIntervalMs` (bounded by the directory). */
  private readonly announcedIntervalMs = new Map<string, number>();
  /** Serving cells (this one included) at the last probe round: what the heartbeat interval follows. */
  private servingCellsSeen = 1;
  private unsubscribeDirectory: (() => void) | undefined;

  /** The heartbeat interval of the largest cluster the options allow: a cap on announced ones. */
  private readonly longestIntervalMs: number;

  constructor(private readonly init: FailureDetectorInit) {
    const { directory, transport, clock, random, options, metrics, logger } = init;
    this.longestIntervalMs = heartbeatIntervalMs(options.maxCells, options);
    const isRunning = (): boolean => this.running;
    this.health = new LocalHealth(options.maxLocalHealth, metrics, logger);
    this.suspicions = new Suspicions({
      directory,
      transport,
      clock,
      options,
      metrics,
      logger,
      health: this.health,
      isRunning,
      servingCellsSeen: () => this.servingCellsSeen,
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
      ownIntervalMs: () => this.heartbeatIntervalMs(),
      silenceAllowedMs: (cellId, ownIntervalMs) => silenceAllowedMs(options, ownIntervalMs, cellId === undefined ? 0 : (this.announcedIntervalMs.get(cellId) ?? 0)),
      servingCellsCounted: (count) => {
        this.servingCellsSeen = count;
      },
      heardFromPeer: (peer) => this.heardFromPeer(peer),
      newerOrderAnswered: (peer, cellId, order) => this.repairs.disagreementHeard(peer, cellId, order),
    });
    this.repairs = new ViewRepairs({
      directory,
      clock,
      random,
      options,
      isRunning,
      ownIntervalMs: () => this.heartbeatIntervalMs(),
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
    transport.subscribe(MembershipTopic.heartbeat, (message) => this.handleHeartbeat(message), (message) => this.validateHeartbeat(message));
    transport.subscribe(MembershipTopic.membership, (message) => this.handleClaim(message), (message) => this.validateClaim(message));
    this.unsubscribeDirectory = directory.onChange((cellId, _before, after) => this.onDirectoryChange(cellId, after));
    this.health.report();
    this.servingCellsSeen = countServingCells(directory);
    this.publishHeartbeat();
    this.scheduleHeartbeat();
    this.scheduleProbeRound();
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.heartbeatTimer?.cancel();
    this.probeTimer?.cancel();
    this.suspicions.clear();
    this.prober.clear();
    this.announcedIntervalMs.clear();
    this.repairs.clear();
    this.unsubscribeDirectory?.();
    this.init.transport.unsubscribe(MembershipTopic.heartbeat);
    this.init.transport.unsubscribe(MembershipTopic.membership);
  }

  /** Publishes a heartbeat now (also after the own record changed, so peers see the version). */
  publishHeartbeat(): void {
    if (!this.running) return;
    const order = this.init.ownOrder();
    const intervalMs = this.heartbeatIntervalMs();
    const heartbeat: Heartbeat = { cellId: this.selfCellId, incarnation: order.incarnation, version: order.version };
    // Said only when stretched, so a small cluster's heartbeats stay as they were.
    this.publish(MembershipTopic.heartbeat, intervalMs > this.init.options.heartbeatIntervalMs ? { ...heartbeat, intervalMs } : heartbeat);
  }

  /** Serving cells (itself included) as of the last heartbeat or probe round. */
  servingCellCount(): number {
    return this.servingCellsSeen;
  }

  /** The interval of this cell's heartbeats now (see detector-timing.ts heartbeatIntervalMs()). */
  heartbeatIntervalMs(): number {
    return heartbeatIntervalMs(this.servingCellsSeen, this.init.options);
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

  private validateHeartbeat(message: MeshMessage): ValidationResult {
    const heartbeat = this.decoder.heartbeat(message);
    if (heartbeat === undefined) {
      this.init.metrics.messageRejected(MembershipTopic.heartbeat, 'malformed');
      return 'reject';
    }
    // The transport never delivers a cell's own publishes: a heartbeat naming this cell is forged.
    if (heartbeat.cellId === this.selfCellId) return this.rejectMessage(MembershipTopic.heartbeat, 'forged-owner');
    const entry = this.init.directory.get(heartbeat.cellId);
    if (entry !== undefined && entry.record.peerId !== message.from && heartbeat.incarnation <= entry.record.incarnation) {
      return this.rejectMessage(MembershipTopic.heartbeat, 'forged-owner');
    }
    return 'accept';
  }

  private handleHeartbeat(message: MeshMessage): void {
    const heartbeat = this.decoder.heartbeat(message);
    if (heartbeat === undefined || !this.running) return;
    const { directory, clock } = this.init;
    const entry = directory.get(heartbeat.cellId);
    if (entry !== undefined && entry.record.peerId === message.from) {
      directory.markHeard(heartbeat.cellId, clock.now());
      this.prober.heard(heartbeat.cellId);
      this.noteAnnouncedInterval(heartbeat);
    }
    if (pullCalledFor(entry, heartbeat) || claimToReannounce(entry, heartbeat) !== undefined) {
      this.repairs.disagreementHeard(message.from, heartbeat.cellId, heartbeat);
    }
  }

  private noteAnnouncedInterval(heartbeat: Heartbeat): void {
    const announcedMs = heartbeat.intervalMs;
    if (announcedMs === undefined || announcedMs <= this.init.options.heartbeatIntervalMs) {
      this.announcedIntervalMs.delete(heartbeat.cellId);
      return;
    }
    // No cell can need more than the interval of the largest cluster the options allow.
    this.announcedIntervalMs.set(heartbeat.cellId, Math.min(announcedMs, this.longestIntervalMs));
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
    if (!decodeJson(request, PingRequestSchema, MAX_CONTROL_MESSAGE_BYTES).ok) {
      this.init.metrics.messageRejected(MembershipProtocol.ping, 'malformed');
      throw new MembershipError('BAD_MESSAGE', 'malformed ping');
    }
    this.heardFromPeer(from);
    const order = this.init.ownOrder();
    return encodeJson({ cellId: this.selfCellId, incarnation: order.incarnation, version: order.version } satisfies Heartbeat);
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

  private scheduleHeartbeat(): void {
    const intervalMs = this.heartbeatIntervalMs();
    const dueMs = this.init.clock.now() + intervalMs;
    this.heartbeatTimer = this.init.clock.setTimer(intervalMs, () => {
      if (!this.running) return;
      // A timer that fires more than a whole interval late means this cell's event loop was
      // stalled: it may be the one that cannot keep up, so it gives others more time.
      if (this.init.clock.now() - dueMs > intervalMs) this.health.raise('heartbeat-late');
      this.publishHeartbeat();
      this.scheduleHeartbeat();
    });
  }

  private scheduleProbeRound(): void {
    this.probeTimer = this.init.clock.setTimer(this.init.options.probeIntervalMs * (this.health.value + 1), () => {
      if (!this.running) return;
      this.prober.probeRound();
      this.scheduleProbeRound();
    });
  }

  private onDirectoryChange(cellId: string, after: DirectoryEntry | undefined): void {
    if (after === undefined) {
      this.prober.forget(cellId);
      this.announcedIntervalMs.delete(cellId);
    }
    this.suspicions.directoryChanged(cellId, after);
  }

  private publish(topic: string, value: unknown): void {
    this.init.transport.publish(topic, encodeJson(value)).catch((error: unknown) => {
      this.init.logger.debug({ err: error, topic }, 'publish failed');
    });
  }
}
