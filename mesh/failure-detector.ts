import type { Logger } from '../platform/logger.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { randomInt, type Random } from '../platform/random.js';
import { CELL_ID_PATTERN, compareRecordOrder } from './cell-record.js';
import { isServing, isTombstone, type Directory, type DirectoryEntry, type LivenessClaim } from './directory.js';
import { budgetedIntervalMs, type MembershipOptions } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import {
  decodeJson,
  encodeJson,
  HeartbeatSchema,
  LivenessClaimMessageSchema,
  MAX_HEARTBEAT_INTERVAL_MS,
  MembershipProtocol,
  MembershipTopic,
  PingAnswerSchema,
  PingReqAnswerSchema,
  PingReqRequestSchema,
  PingRequestSchema,
  type Heartbeat,
  type LivenessClaimMessage,
} from './membership-wire.js';
import type { MeshMetrics } from './mesh-metrics.js';
import { sameBytes } from './same-bytes.js';
import { MeshTransportError, type MeshMessage, type MeshTransport, type PeerId, type ValidationResult } from './transport.js';

/** Small control messages (heartbeats, claims, pings) are refused above this size. */
const MAX_CONTROL_MESSAGE_BYTES = 4 * 1024;

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

/** The (incarnation, version) a heartbeat announced, which a deferred repair judges the view by when it fires. */
interface DeferredRepair {
  readonly order: { readonly incarnation: number; readonly version: number };
  readonly timer: TimerHandle;
}

interface Suspicion {
  readonly incarnation: number;
  readonly startedMs: number;
  /** Distinct cells that suspect it, this one included when it does; at most K + 1 are kept. */
  readonly suspectors: Set<string>;
  timer: TimerHandle | undefined;
}

type PingResult = 'ack' | 'refused' | 'none';
type IndirectResult = 'ack' | 'nack' | 'none';

/**
 * Lifeguard's dynamic suspicion timeout: `max` with no confirmation, shrinking logarithmically
 * to `min` as `confirmations` (other cells' independent suspicions) reach K; scaled by the
 * local health multiplier + 1. As in memberlist, a cluster too small to give K confirmations
 * (fewer than K cells besides this one and the suspect: `servingCells` counts both) expects
 * none and waits `min` alone, or a crash in a three-cell cluster would take the full `max`.
 */
export function suspicionTimeoutMs(confirmations: number, options: MembershipOptions, healthMultiplier: number, servingCells = Number.POSITIVE_INFINITY): number {
  const { suspicionMinMs: minMs, suspicionMaxMs: maxMs, suspicionConfirmations: k } = options;
  if (servingCells - 2 < k) return minMs * (healthMultiplier + 1);
  const counted = Math.max(0, Math.min(confirmations, k));
  const fraction = Math.log(counted + 1) / Math.log(k + 1);
  return Math.max(minMs, Math.floor(maxMs - (maxMs - minMs) * fraction)) * (healthMultiplier + 1);
}

/**
 * The interval at which a cell publishes its heartbeat when it knows `servingCells` serving cells
 * (itself included): `heartbeatIntervalMs`, stretched when needed so that the others' heartbeats
 * add up to at most `heartbeatReceiveBudgetPerSecond` per cell, whatever the size of the cluster
 * (each of the n - 1 others receives one heartbeat per interval from each cell). With the
 * presets' budgets nothing changes up to 51 cells; at 1,000 cells on the LAN preset a cell
 * publishes every 10 s instead of every 500 ms. A budget of 0 turns the stretching off.
 */
export function heartbeatIntervalMs(servingCells: number, options: MembershipOptions): number {
  return budgetedIntervalMs(servingCells, options.heartbeatIntervalMs, options.heartbeatReceiveBudgetPerSecond, options.maxCells);
}

/** A cell announcing `order` has a record newer than `entry`, the one held of it, or none is held: pull it. */
function pullCalledFor(entry: DirectoryEntry | undefined, order: DeferredRepair['order']): boolean {
  return entry === undefined || compareRecordOrder(order, entry.record) > 0;
}

/** The claim to reannounce to a cell announcing `order`: held suspect or dead at its incarnation, it must refute. */
function claimToReannounce(entry: DirectoryEntry | undefined, order: DeferredRepair['order']): LivenessClaim | undefined {
  return entry?.claim !== undefined && order.incarnation <= entry.claim.incarnation ? entry.claim : undefined;
}

/**
 * SWIM failure detection with Lifeguard's refinements, on the mesh transport.
 *
 * - Heartbeats: every `heartbeatIntervalMs` this cell publishes `{cellId, incarnation, version}`
 *   on `cellmesh/heartbeat/v1`. Any heartbeat, own record, request or probe answer from a cell
 *   counts as hearing from it. In a cluster too large for `heartbeatReceiveBudgetPerSecond` the
 *   interval stretches (heartbeatIntervalMs() above) and the heartbeat says so (`intervalMs`);
 *   `suspectAfterMs` stretches by the same factor, taken from the longer of this cell's own
 *   interval and the one the heard cell announced, so a cell is never probed for keeping to a
 *   slower schedule than this one's.
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
 * - Suspicion: the first claim (own or received) starts a timer of `suspicionMaxMs`, shrinking
 *   toward `suspicionMinMs` with each further cell's claim (suspicionTimeoutMs). A cell whose
 *   own probes fail when it holds K confirmations already publishes nothing. At expiry the
 *   cell is declared dead; `{kind: 'dead'}` is published if this cell was one of the
 *   suspectors. A record with a higher incarnation (the suspect's refutation) clears it
 *   anywhere, any time.
 * - Refutation: a claim about this cell at >= its incarnation calls `refute` (the mesh bumps its
 *   incarnation and republishes its record). A cell still heard from while held dead here gets
 *   the dead claim re-announced to it alone (`/cellmesh/claim/1.0.0`, at most every
 *   `claimReannounceIntervalMs`; in a large cluster after a random wait, see
 *   viewDisagreementHeard) so it learns to refute, which is how both sides of a healed
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
  private health = 0;
  private heartbeatTimer: TimerHandle | undefined;
  private probeTimer: TimerHandle | undefined;
  private readonly suspicions = new Map<string, Suspicion>();
  /** Cells to probe at the next chance regardless of when they were last heard (disconnected). */
  private readonly pendingProbes = new Set<string>();
  private readonly probing = new Set<string>();
  private readonly lastReannounceMs = new Map<string, number>();
  /**
   * The heartbeat and the claim last decoded, by content: a transport may hand the validator and
   * the handler different copies of the same message (libp2p does), and decoding it twice was
   * the largest single cost of a cell in large simulated clusters.
   */
  private lastHeartbeat: { readonly bytes: Uint8Array; readonly heartbeat: Heartbeat | undefined } | undefined;
  private lastClaim: { readonly bytes: Uint8Array; readonly claim: LivenessClaimMessage | undefined } | undefined;
  /** Heartbeat intervals other cells announced, when longer than `heartbeatIntervalMs` (bounded by the directory). */
  private readonly announcedIntervalMs = new Map<string, number>();
  /** Repairs waiting to see whether gossip makes them needless (see viewDisagreementHeard); at most maxCells. */
  private readonly deferredRepairs = new Map<string, DeferredRepair>();
  /** Serving cells (this one included) at the last probe round: what the heartbeat interval follows. */
  private servingCellsSeen = 1;
  private unsubscribeDirectory: (() => void) | undefined;

  /** The heartbeat interval of the largest cluster the options allow: a cap on announced ones. */
  private readonly longestIntervalMs: number;

  constructor(private readonly init: FailureDetectorInit) {
    this.longestIntervalMs = heartbeatIntervalMs(init.options.maxCells, init.options);
  }

  private get selfCellId(): string {
    return this.init.directory.selfCellId;
  }

  /** The local health multiplier now (0 = healthy). */
  localHealth(): number {
    return this.health;
  }

  /** Serves the ping protocols; call once, before `start` (handlers answer only while running). */
  registerHandlers(): void {
    const { transport } = this.init;
    transport.handle(MembershipProtocol.ping, (from, request) => this.answerPing(from, request));
    transport.handle(MembershipProtocol.pingReq, (from, request) => this.answerPingReq(from, request));
    transport.handle(MembershipProtocol.claim, (from, request) => this.answerClaim(from, request));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const { transport, directory } = this.init;
    transport.subscribe(MembershipTopic.heartbeat, (message) => this.handleHeartbeat(message), (message) => this.validateHeartbeat(message));
    transport.subscribe(MembershipTopic.membership, (message) => this.handleClaim(message), (message) => this.validateClaim(message));
    this.unsubscribeDirectory = directory.onChange((cellId, _before, after) => this.onDirectoryChange(cellId, after));
    this.init.metrics.localHealth(this.health);
    this.servingCellsSeen = this.servingCells();
    this.publishHeartbeat();
    this.scheduleHeartbeat();
    this.scheduleProbeRound();
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.heartbeatTimer?.cancel();
    this.probeTimer?.cancel();
    for (const suspicion of this.suspicions.values()) suspicion.timer?.cancel();
    this.suspicions.clear();
    this.pendingProbes.clear();
    this.lastReannounceMs.clear();
    this.announcedIntervalMs.clear();
    for (const repair of this.deferredRepairs.values()) repair.timer.cancel();
    this.deferredRepairs.clear();
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

  /** The interval of this cell's heartbeats now (see heartbeatIntervalMs()). */
  heartbeatIntervalMs(): number {
    return heartbeatIntervalMs(this.servingCellsSeen, this.init.options);
  }

  /**
   * How long `cellId` may stay silent before it is probed, health multiplier aside:
   * `suspectAfterMs` stretched by the longer of this cell's heartbeat interval and the one
   * `cellId` announced, relative to `heartbeatIntervalMs`.
   */
  private silenceAllowedMs(cellId: string | undefined, ownIntervalMs: number): number {
    const { suspectAfterMs, heartbeatIntervalMs: baseMs } = this.init.options;
    const announcedMs = cellId === undefined ? 0 : (this.announcedIntervalMs.get(cellId) ?? 0);
    const intervalMs = Math.max(ownIntervalMs, announcedMs);
    return intervalMs <= baseMs ? suspectAfterMs : Math.ceil((suspectAfterMs * intervalMs) / baseMs);
  }

  /** A request or message from `peer` arrived: that cell is alive. */
  heardFromPeer(peer: PeerId): void {
    const cellId = this.init.directory.cellOfPeer(peer);
    if (cellId === undefined || cellId === this.selfCellId) return;
    this.init.directory.markHeard(cellId, this.init.clock.now());
    this.pendingProbes.delete(cellId);
  }

  /** The transport reports the connection to `peer` closed: probe that cell at once. */
  peerDisconnected(peer: PeerId): void {
    if (!this.running) return;
    const cellId = this.init.directory.cellOfPeer(peer);
    if (cellId === undefined || cellId === this.selfCellId) return;
    const entry = this.init.directory.get(cellId);
    if (entry === undefined || !isServing(entry.liveness)) return;
    this.pendingProbes.add(cellId);
    // Not inside the transport's callback: the probe starts on the next turn of the clock.
    this.init.clock.setTimer(0, () => {
      if (this.running) this.startDueProbes();
    });
  }

  /** This cell had to refute a claim about itself: a sign it may be the slow one. */
  noteRefutation(): void {
    this.raiseHealth('refuted');
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
    const { directory, clock } = this.init;
    if (claim.cellId === this.selfCellId) {
      if (claim.incarnation >= this.init.ownOrder().incarnation) this.init.refute({ kind: claim.kind, incarnation: claim.incarnation });
      return;
    }
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

  private validateHeartbeat(message: MeshMessage): ValidationResult {
    const heartbeat = this.decodeHeartbeat(message);
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
    const heartbeat = this.decodeHeartbeat(message);
    if (heartbeat === undefined || !this.running) return;
    const { directory, clock } = this.init;
    const entry = directory.get(heartbeat.cellId);
    if (entry !== undefined && entry.record.peerId === message.from) {
      directory.markHeard(heartbeat.cellId, clock.now());
      this.pendingProbes.delete(heartbeat.cellId);
      this.noteAnnouncedInterval(heartbeat);
    }
    if (pullCalledFor(entry, heartbeat) || claimToReannounce(entry, heartbeat) !== undefined) {
      this.viewDisagreementHeard(message.from, heartbeat.cellId, heartbeat);
    }
  }

  private repair(peer: PeerId, cellId: string, order: DeferredRepair['order']): void {
    const entry = this.init.directory.get(cellId);
    if (pullCalledFor(entry, order)) this.init.onNewerRecordSeen(peer, cellId);
    const claim = claimToReannounce(entry, order);
    if (claim !== undefined) this.reannounce(cellId, claim);
  }

  /**
   * `peer`, the owner of `cellId`, announced `order`, which disagrees with the view held here
   * (pullCalledFor, claimToReannounce). In a small cluster the repair runs at once (cheap, and the earliest).
   * In a cluster past the heartbeat budget every cell hears the owner at about the same time:
   * after a join, a restart or a heal, every cell pulling would be n full-directory exchanges
   * per changed record, and every cell reannouncing n floods per cell held dead (at a heal, n x
   * the cells cut off, both ways). So the repair waits a random time of up to 2 x
   * `probeTimeoutMs` and runs only if the view still disagrees then. The first few to run
   * settle it for the rest: the owner refutes a reannounced claim with a new record, and
   * republishes a record a pull shows was missed (AntiEntropy, onOwnRecordLacked); a record
   * and the heartbeat announcing it are published together, and the record often follows.
   */
  private viewDisagreementHeard(peer: PeerId, cellId: string, order: DeferredRepair['order']): void {
    if (this.heartbeatIntervalMs() <= this.init.options.heartbeatIntervalMs) {
      this.repair(peer, cellId, order);
      return;
    }
    const waiting = this.deferredRepairs.get(cellId);
    if (waiting !== undefined && compareRecordOrder(waiting.order, order) >= 0) return;
    if (waiting === undefined && this.deferredRepairs.size >= this.init.options.maxCells) return;
    waiting?.timer.cancel();
    const delayMs = Math.round(2 * this.init.options.probeTimeoutMs * this.init.random.next());
    const timer = this.init.clock.setTimer(delayMs, () => {
      this.deferredRepairs.delete(cellId);
      if (this.running) this.repair(peer, cellId, order);
    });
    this.deferredRepairs.set(cellId, { order: { incarnation: order.incarnation, version: order.version }, timer });
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
    const claim = this.decodeClaim(message);
    if (claim === undefined) return this.rejectMessage(MembershipTopic.membership, 'malformed');
    if (claim.by === this.selfCellId) return this.rejectMessage(MembershipTopic.membership, 'forged-owner');
    const claimant = this.init.directory.get(claim.by);
    // A claim from a cell not known yet is dropped quietly; its record will come.
    if (claimant === undefined) return 'ignore';
    if (claimant.record.peerId !== message.from) return this.rejectMessage(MembershipTopic.membership, 'forged-owner');
    return 'accept';
  }

  private handleClaim(message: MeshMessage): void {
    const claim = this.decodeClaim(message);
    if (claim === undefined || !this.running) return;
    this.heardFromPeer(message.from);
    this.applyClaim(claim);
  }

  private rejectMessage(channel: string, reason: string): ValidationResult {
    this.init.metrics.messageRejected(channel, reason);
    return 'reject';
  }

  private decodeHeartbeat(message: MeshMessage): Heartbeat | undefined {
    const bytes = message.data;
    const last = this.lastHeartbeat;
    if (last !== undefined && sameBytes(last.bytes, bytes)) return last.heartbeat;
    const heartbeat = decodeHeartbeatBytes(bytes);
    this.lastHeartbeat = { bytes, heartbeat };
    return heartbeat;
  }

  private decodeClaim(message: MeshMessage): LivenessClaimMessage | undefined {
    const bytes = message.data;
    const last = this.lastClaim;
    if (last !== undefined && sameBytes(last.bytes, bytes)) return last.claim;
    const decoded = decodeJson(bytes, LivenessClaimMessageSchema, MAX_CONTROL_MESSAGE_BYTES);
    const claim = decoded.ok ? decoded.value : undefined;
    this.lastClaim = { bytes, claim };
    return claim;
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

  /** A claim about this cell reannounced by the cell holding it (see reannounce): refute it if it holds. */
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

  private async answerPingReq(from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    if (!this.running) throw new MembershipError('STOPPED');
    const decoded = decodeJson(request, PingReqRequestSchema, MAX_CONTROL_MESSAGE_BYTES);
    if (!decoded.ok) {
      this.init.metrics.messageRejected(MembershipProtocol.pingReq, decoded.reason);
      throw new MembershipError('BAD_MESSAGE', 'malformed ping-req');
    }
    this.heardFromPeer(from);
    const { target, peer, timeoutMs } = decoded.value;
    const answer = await this.ping(peer, Math.min(timeoutMs, this.init.options.probeTimeoutMs * (this.health + 1)));
    const ok = answer.result === 'ack' && answer.heartbeat?.cellId === target;
    if (ok) this.heardFromPeer(peer);
    return encodeJson({ ok });
  }

  private async ping(peer: PeerId, timeoutMs: number): Promise<{ result: PingResult; heartbeat?: Heartbeat }> {
    try {
      const answer = await this.init.transport.request(peer, MembershipProtocol.ping, encodeJson({}), { timeoutMs });
      const decoded = decodeJson(answer, PingAnswerSchema, MAX_CONTROL_MESSAGE_BYTES);
      return decoded.ok ? { result: 'ack', heartbeat: decoded.value } : { result: 'refused' };
    } catch (error) {
      // A refused connection or a failing handler is an answer of the network or the peer: this
      // cell is not the slow one. Only silence (timeout) says nothing.
      const answered = error instanceof MeshTransportError && (error.code === 'PEER_UNREACHABLE' || error.code === 'PROTOCOL_UNSUPPORTED' || error.code === 'REMOTE_HANDLER_FAILED');
      return { result: answered ? 'refused' : 'none' };
    }
  }

  private async pingIndirect(helper: PeerId, target: string, targetPeer: PeerId, timeoutMs: number): Promise<IndirectResult> {
    try {
      const answer = await this.init.transport.request(helper, MembershipProtocol.pingReq, encodeJson({ target, peer: targetPeer, timeoutMs }), {
        // The helper's ping takes up to timeoutMs; the rest is for the two legs to the helper.
        timeoutMs: 2 * timeoutMs,
      });
      const decoded = decodeJson(answer, PingReqAnswerSchema, MAX_CONTROL_MESSAGE_BYTES);
      if (!decoded.ok) return 'none';
      this.heardFromPeer(helper);
      return decoded.value.ok ? 'ack' : 'nack';
    } catch {
      return 'none';
    }
  }

  private scheduleHeartbeat(): void {
    const intervalMs = this.heartbeatIntervalMs();
    const dueMs = this.init.clock.now() + intervalMs;
    this.heartbeatTimer = this.init.clock.setTimer(intervalMs, () => {
      if (!this.running) return;
      // A timer that fires more than a whole interval late means this cell's event loop was
      // stalled: it may be the one that cannot keep up, so it gives others more time.
      if (this.init.clock.now() - dueMs > intervalMs) this.raiseHealth('heartbeat-late');
      this.publishHeartbeat();
      this.scheduleHeartbeat();
    });
  }

  private scheduleProbeRound(): void {
    this.probeTimer = this.init.clock.setTimer(this.init.options.probeIntervalMs * (this.health + 1), () => {
      if (!this.running) return;
      this.probeRound();
      this.scheduleProbeRound();
    });
  }

  private probeRound(): void {
    const started = this.startDueProbes();
    if (started > 0 || this.probing.size > 0) return;
    const candidates = this.liveConnectedCells(undefined);
    if (candidates.length === 0) return;
    const cellId = candidates[randomInt(this.init.random, candidates.length)] as string;
    void this.probe(cellId, 'health');
  }

  /** Starts probes of overdue or disconnected cells, up to the concurrency bound; returns how many. */
  private startDueProbes(): number {
    const { directory, options, clock } = this.init;
    const nowMs = clock.now();
    const ownIntervalMs = this.heartbeatIntervalMs();
    const healthFactor = this.health + 1;
    // Every cell gets at least this much silence; only the few past it need a closer look.
    const leastSilenceMs = this.silenceAllowedMs(undefined, ownIntervalMs) * healthFactor;
    const due: DirectoryEntry[] = [];
    let serving = 0;
    for (const entry of directory.values()) {
      if (isServing(entry.liveness)) serving++;
      const silentMs = nowMs - entry.lastHeardMs;
      if (silentMs <= leastSilenceMs && this.pendingProbes.size === 0) continue;
      const cellId = entry.record.cellId;
      if (cellId === this.selfCellId || this.probing.has(cellId)) continue;
      const overdue = this.pendingProbes.has(cellId) || silentMs > this.silenceAllowedMs(cellId, ownIntervalMs) * healthFactor;
      if (!overdue) continue;
      if (entry.liveness === 'alive' || entry.liveness === 'leaving') {
        due.push(entry);
      } else if (entry.liveness === 'suspect') {
        // Confirm (or not) a suspicion heard from others, once.
        const suspicion = this.suspicions.get(cellId);
        if (suspicion !== undefined && !suspicion.suspectors.has(this.selfCellId) && suspicion.suspectors.size <= options.suspicionConfirmations) {
          due.push(entry);
        }
      } else {
        this.pendingProbes.delete(cellId);
      }
    }
    due.sort((a, b) => {
      const pendingA = this.pendingProbes.has(a.record.cellId) ? 0 : 1;
      const pendingB = this.pendingProbes.has(b.record.cellId) ? 0 : 1;
      if (pendingA !== pendingB) return pendingA - pendingB;
      if (a.lastHeardMs !== b.lastHeardMs) return a.lastHeardMs - b.lastHeardMs;
      return a.record.cellId < b.record.cellId ? -1 : 1;
    });
    this.servingCellsSeen = Math.max(1, serving);
    const room = Math.max(0, options.maxConcurrentProbes - this.probing.size);
    const chosen = due.slice(0, room);
    for (const entry of chosen) void this.probe(entry.record.cellId, 'suspicion');
    return chosen.length;
  }

  private async probe(cellId: string, purpose: 'suspicion' | 'health'): Promise<void> {
    const entry = this.init.directory.get(cellId);
    if (entry === undefined || this.probing.has(cellId)) return;
    const peer = entry.record.peerId;
    const incarnation = Math.max(entry.record.incarnation, entry.claim?.incarnation ?? 0);
    this.probing.add(cellId);
    this.pendingProbes.delete(cellId);
    try {
      const timeoutMs = this.init.options.probeTimeoutMs * (this.health + 1);
      const direct = await this.ping(peer, timeoutMs);
      if (!this.running) return;
      if (direct.result === 'ack' && direct.heartbeat?.cellId === cellId) {
        this.heardFromPeer(peer);
        const held = this.init.directory.get(cellId);
        if (held !== undefined && compareRecordOrder(direct.heartbeat, held.record) > 0) this.viewDisagreementHeard(peer, cellId, direct.heartbeat);
        this.init.metrics.probe('ack');
        this.lowerHealth();
        return;
      }
      const helpers = this.liveConnectedCells(cellId)
        .slice(0, this.init.options.indirectProbes)
        .map((helper) => this.init.directory.peerOf(helper) as PeerId);
      const results = await Promise.all(helpers.map((helper) => this.pingIndirect(helper, cellId, peer, timeoutMs)));
      if (!this.running) return;
      if (results.includes('ack')) {
        this.init.directory.markHeard(cellId, this.init.clock.now());
        this.init.metrics.probe('indirect-ack');
        this.lowerHealth();
        return;
      }
      this.init.metrics.probe('failed');
      if (direct.result === 'none' && !results.includes('nack')) this.raiseHealth('probe-unanswered');
      if (purpose === 'suspicion') this.suspectLocally(cellId, incarnation);
    } finally {
      this.probing.delete(cellId);
    }
  }

  /** Connected cells held alive, in random order, without `exclude`. */
  private liveConnectedCells(exclude: string | undefined): string[] {
    const { directory, transport, random } = this.init;
    const cells: string[] = [];
    for (const peer of transport.connectedPeers()) {
      const cellId = directory.cellOfPeer(peer);
      if (cellId === undefined || cellId === exclude || cellId === this.selfCellId) continue;
      if (directory.get(cellId)?.liveness === 'alive') cells.push(cellId);
    }
    // Fisher-Yates on the injected Random keeps runs reproducible.
    for (let index = cells.length - 1; index > 0; index--) {
      const other = randomInt(random, index + 1);
      [cells[index], cells[other]] = [cells[other] as string, cells[index] as string];
    }
    return cells;
  }

  /** This cell's own probes failed: suspect the cell (or confirm a suspicion heard from others). */
  private suspectLocally(cellId: string, incarnation: number): void {
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
    suspicion.timer?.cancel();
    // The count changes the timeout only below K + 2 cells (suspicionTimeoutMs): counted afresh
    // near there, taken from the last probe round above. A directory walk for every claim heard
    // made a partition of a 1,000-cell mesh cost n^3.
    const servingCells = this.servingCellsSeen < this.init.options.suspicionConfirmations + 4 ? this.servingCells() : this.servingCellsSeen;
    const timeoutMs = suspicionTimeoutMs(suspicion.suspectors.size - 1, this.init.options, this.health, servingCells);
    const remainingMs = Math.max(0, suspicion.startedMs + timeoutMs - this.init.clock.now());
    suspicion.timer = this.init.clock.setTimer(remainingMs, () => this.suspicionExpired(cellId, suspicion));
  }

  /** Cells of the directory that serve (alive, suspect or leaving), this one included. */
  private servingCells(): number {
    let count = 0;
    for (const entry of this.init.directory.values()) if (isServing(entry.liveness)) count++;
    return count;
  }

  private suspicionExpired(cellId: string, suspicion: Suspicion): void {
    if (!this.running || this.suspicions.get(cellId) !== suspicion) return;
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

  /**
   * Tells a cell that is still heard from what this cell holds against it, so it can refute: a
   * request to that cell alone. Gossiped, the claim would go to every cell, and mark the cell
   * dead again where its refutation (or the cell's side of a healed partition) had it alive.
   */
  private reannounce(cellId: string, claim: LivenessClaim): void {
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

  private onDirectoryChange(cellId: string, after: DirectoryEntry | undefined): void {
    if (after === undefined) {
      this.pendingProbes.delete(cellId);
      this.announcedIntervalMs.delete(cellId);
    }
    if (after === undefined || after.claim === undefined) this.lastReannounceMs.delete(cellId);
    const suspicion = this.suspicions.get(cellId);
    if (suspicion !== undefined && (after === undefined || after.liveness !== 'suspect' || after.claim?.incarnation !== suspicion.incarnation)) {
      suspicion.timer?.cancel();
      this.suspicions.delete(cellId);
    }
  }

  private publishClaim(claim: LivenessClaimMessage): void {
    this.publish(MembershipTopic.membership, claim);
  }

  private publish(topic: string, value: unknown): void {
    this.init.transport.publish(topic, encodeJson(value)).catch((error: unknown) => {
      this.init.logger.debug({ err: error, topic }, 'publish failed');
    });
  }

  private raiseHealth(reason: string): void {
    if (this.health >= this.init.options.maxLocalHealth) return;
    this.health++;
    this.init.metrics.localHealth(this.health);
    this.init.logger.debug({ health: this.health, reason }, 'local health multiplier raised');
  }

  private lowerHealth(): void {
    if (this.health === 0) return;
    this.health--;
    this.init.metrics.localHealth(this.health);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes a heartbeat as `decodeJson(bytes, HeartbeatSchema, MAX_CONTROL_MESSAGE_BYTES)` does,
 * with the schema's checks written out for the common well-formed case: every cell decodes
 * every heartbeat it receives, and zod's generic walk was a tenth of a large cluster's CPU.
 * Anything the fast path does not accept goes through the schema, so both accept the same.
 */
function decodeHeartbeatBytes(bytes: Uint8Array): Heartbeat | undefined {
  if (bytes.byteLength > MAX_CONTROL_MESSAGE_BYTES) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { cellId, incarnation, version, intervalMs } = value as Record<string, unknown>;
    if (
      typeof cellId === 'string' &&
      CELL_ID_PATTERN.test(cellId) &&
      isCounter(incarnation) &&
      isCounter(version) &&
      (intervalMs === undefined || (Number.isSafeInteger(intervalMs) && (intervalMs as number) >= 1 && (intervalMs as number) <= MAX_HEARTBEAT_INTERVAL_MS))
    ) {
      return intervalMs === undefined ? { cellId, incarnation, version } : { cellId, incarnation, version, intervalMs: intervalMs as number };
    }
  }
  const parsed = HeartbeatSchema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

function isCounter(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}
