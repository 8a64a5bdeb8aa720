/**
 * SWIM probing: which cells are probed when (overdue, disconnected, or one at random for the
 * health multiplier), the direct ping and the indirect ping through k helpers, and serving a
 * helper's half (ping-req).
 */
import type { Clock } from '../platform/clock.js';
import { invariant } from '../platform/invariant.js';
import { randomInt, type Random } from '../platform/random.js';
import { compareRecordOrder } from './cell-record.js';
import { MAX_CONTROL_MESSAGE_BYTES } from './control-messages.js';
import { isServing, type Directory, type DirectoryEntry } from './directory.js';
import type { LocalHealth } from './local-health.js';
import type { MembershipOptions } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import { decodeJson, encodeJson, MembershipProtocol, PingAnswerSchema, PingReqAnswerSchema, PingReqRequestSchema, type Heartbeat } from './membership-wire.js';
import type { MeshMetrics } from './mesh-metrics.js';
import type { Suspicions } from './suspicions.js';
import { MeshTransportError, type MeshTransport, type PeerId } from './transport.js';

export interface ProberInit {
  readonly directory: Directory;
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  readonly options: MembershipOptions;
  readonly metrics: MeshMetrics;
  readonly health: LocalHealth;
  readonly suspicions: Suspicions;
  readonly isRunning: () => boolean;
  /** This cell's heartbeat interval now. */
  readonly ownIntervalMs: () => number;
  /** How long `cellId` (undefined: any cell) may stay silent before it is probed, health aside. */
  readonly silenceAllowedMs: (cellId: string | undefined, ownIntervalMs: number) => number;
  /** A selection walked the directory and counted its serving cells (this one included). */
  readonly servingCellsCounted: (count: number) => void;
  /** `peer` answered, or answered for its cell: that cell is alive. */
  readonly heardFromPeer: (peer: PeerId) => void;
  /** A probe's answer showed `cellId`'s record newer than the one held. */
  readonly newerOrderAnswered: (peer: PeerId, cellId: string, order: Heartbeat) => void;
}

type PingResult = 'ack' | 'refused' | 'none';
type IndirectResult = 'ack' | 'nack' | 'none';

/**
 * Every `probeIntervalMs` (x LHM+1) a cell not heard from for its allowed silence (x LHM+1), or
 * whose connection the transport reported closed (at once, not at the next round), gets a direct
 * ping (`probeTimeoutMs` x LHM+1). If it fails, k = `indirectProbes` random other live connected
 * cells are asked to ping it; they answer ack or nack. If none acks, the cell is suspected
 * (Suspicions). A suspect this cell only heard about is probed too (when overdue here as well),
 * so independent observers confirm each other's suspicion. When nothing is overdue, one random
 * connected cell gets a health probe: it feeds only the local health multiplier.
 *
 * Bounds: pending probes hold at most one entry per directory entry; at most
 * `maxConcurrentProbes` probes run at once (the health probe runs only when none does).
 */
export class Prober {
  /** Cells to probe at the next chance regardless of when they were last heard (disconnected). */
  private readonly pendingProbes = new Set<string>();
  private readonly probing = new Set<string>();

  constructor(private readonly init: ProberInit) {}

  private get selfCellId(): string {
    return this.init.directory.selfCellId;
  }

  /** `cellId` was heard from: no probe is pending for it any more. */
  heard(cellId: string): void {
    this.pendingProbes.delete(cellId);
  }

  /** Probes `cellId` at the next chance, whenever it was last heard. */
  probeSoon(cellId: string): void {
    this.pendingProbes.add(cellId);
  }

  /** `cellId` left the directory. */
  forget(cellId: string): void {
    this.pendingProbes.delete(cellId);
  }

  clear(): void {
    this.pendingProbes.clear();
  }

  /** One probe round: the overdue cells, or else a health probe of a random connected cell. */
  probeRound(): void {
    const started = this.startDueProbes();
    if (started > 0 || this.probing.size > 0) return;
    const candidates = this.liveConnectedCells(undefined);
    if (candidates.length === 0) return;
    const cellId = candidates[randomInt(this.init.random, candidates.length)] as string;
    void this.probe(cellId, 'health');
  }

  /** Starts probes of overdue or disconnected cells, up to the concurrency bound; returns how many. */
  startDueProbes(): number {
    const { directory, options, clock, health, suspicions } = this.init;
    const nowMs = clock.now();
    const ownIntervalMs = this.init.ownIntervalMs();
    const healthFactor = health.value + 1;
    // Every cell gets at least this much silence; only the few past it need a closer look.
    const leastSilenceMs = this.init.silenceAllowedMs(undefined, ownIntervalMs) * healthFactor;
    const due: DirectoryEntry[] = [];
    let serving = 0;
    for (const entry of directory.values()) {
      if (isServing(entry.liveness)) serving++;
      const silentMs = nowMs - entry.lastHeardMs;
      if (silentMs <= leastSilenceMs && this.pendingProbes.size === 0) continue;
      const cellId = entry.record.cellId;
      if (cellId === this.selfCellId || this.probing.has(cellId)) continue;
      const overdue = this.pendingProbes.has(cellId) || silentMs > this.init.silenceAllowedMs(cellId, ownIntervalMs) * healthFactor;
      if (!overdue) continue;
      if (entry.liveness === 'alive' || entry.liveness === 'leaving') {
        due.push(entry);
      } else if (entry.liveness === 'suspect') {
        // Confirm (or not) a suspicion heard from others, once.
        if (suspicions.awaitsConfirmationHere(cellId)) due.push(entry);
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
    this.init.servingCellsCounted(Math.max(1, serving));
    const room = Math.max(0, options.maxConcurrentProbes - this.probing.size);
    const chosen = due.slice(0, room);
    for (const entry of chosen) void this.probe(entry.record.cellId, 'suspicion');
    return chosen.length;
  }

  /** Serves a helper's half of an indirect probe: pings the target and answers whether it acked. */
  async answerPingReq(from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    if (!this.init.isRunning()) throw new MembershipError('STOPPED');
    const decoded = decodeJson(request, PingReqRequestSchema, MAX_CONTROL_MESSAGE_BYTES);
    if (!decoded.ok) {
      this.init.metrics.messageRejected(MembershipProtocol.pingReq, decoded.reason);
      throw new MembershipError('BAD_MESSAGE', 'malformed ping-req');
    }
    this.init.heardFromPeer(from);
    const { target, peer, timeoutMs } = decoded.value;
    const answer = await this.ping(peer, Math.min(timeoutMs, this.init.options.probeTimeoutMs * (this.init.health.value + 1)));
    const ok = answer.result === 'ack' && answer.heartbeat?.cellId === target;
    if (ok) this.init.heardFromPeer(peer);
    return encodeJson({ ok });
  }

  private async probe(cellId: string, purpose: 'suspicion' | 'health'): Promise<void> {
    const { directory, options, metrics, health } = this.init;
    const entry = directory.get(cellId);
    if (entry === undefined || this.probing.has(cellId)) return;
    const peer = entry.record.peerId;
    const incarnation = Math.max(entry.record.incarnation, entry.claim?.incarnation ?? 0);
    this.probing.add(cellId);
    invariant(this.probing.size <= Math.max(1, options.maxConcurrentProbes), () => `${this.probing.size} probes run, above maxConcurrentProbes ${options.maxConcurrentProbes}`);
    this.pendingProbes.delete(cellId);
    try {
      const timeoutMs = options.probeTimeoutMs * (health.value + 1);
      const direct = await this.ping(peer, timeoutMs);
      if (!this.init.isRunning()) return;
      if (direct.result === 'ack' && direct.heartbeat?.cellId === cellId) {
        this.init.heardFromPeer(peer);
        const held = directory.get(cellId);
        if (held !== undefined && compareRecordOrder(direct.heartbeat, held.record) > 0) this.init.newerOrderAnswered(peer, cellId, direct.heartbeat);
        metrics.probe('ack');
        health.lower();
        return;
      }
      const helpers = this.liveConnectedCells(cellId)
        .slice(0, options.indirectProbes)
        .map((helper) => directory.peerOf(helper) as PeerId);
      const results = await Promise.all(helpers.map((helper) => this.pingIndirect(helper, cellId, peer, timeoutMs)));
      if (!this.init.isRunning()) return;
      if (results.includes('ack')) {
        directory.markHeard(cellId, this.init.clock.now());
        metrics.probe('indirect-ack');
        health.lower();
        return;
      }
      metrics.probe('failed');
      if (direct.result === 'none' && !results.includes('nack')) health.raise('probe-unanswered');
      if (purpose === 'suspicion') this.init.suspicions.suspectLocally(cellId, incarnation);
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
      this.init.heardFromPeer(helper);
      return decoded.value.ok ? 'ack' : 'nack';
    } catch {
      return 'none';
    }
  }
}
