/**
 * SWIM probing: one peer per probe interval in a shuffled round-robin over the directory, at once
 * a cell whose connection closed or whose suspicion by others awaits confirmation here; the
 * direct ping, the indirect ping through k helpers, and serving a helper's half (ping-req).
 */
import type { Clock } from '../platform/clock.js';
import { invariant } from '../platform/invariant.js';
import { randomInt, type Random } from '../platform/random.js';
import { MAX_CONTROL_MESSAGE_BYTES } from './control-messages.js';
import { isServing, type Directory } from './directory.js';
import type { LocalHealth } from './local-health.js';
import type { MembershipOptions } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import { decodeJson, encodeJson, MembershipProtocol, PingAnswerSchema, PingReqAnswerSchema, PingReqRequestSchema, type PingAnswer, type PingRequest } from './membership-wire.js';
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
  /** The body of a ping to `cellId`: this cell's own order and the updates it piggybacks. */
  readonly pingRequest: (cellId: string) => PingRequest;
  /** `peer` answered a ping from this cell with `answer` (its own order and its updates). */
  readonly pingAnswered: (peer: PeerId, answer: PingAnswer) => void;
  /** `peer` answered for its cell (a helper's ack): that cell is alive. */
  readonly heardFromPeer: (peer: PeerId) => void;
}

type PingResult = 'ack' | 'refused' | 'none';
type IndirectResult = 'ack' | 'nack' | 'none';
/** `suspicion`: a failure suspects the cell. `dead-check`: a cell held dead (or suspect, after a heal), pinged to learn whether it is back. */
type ProbePurpose = 'suspicion' | 'dead-check';

/**
 * Every probe round (`probeIntervalMs` x LHM+1) this cell pings the next cell of a shuffled
 * round-robin list of the directory (SWIM: every member is probed by someone about once per
 * round, and by each cell once per pass, whatever the cluster's size). Cells whose connection
 * the transport reported closed, and suspects heard of from others that this cell has not
 * confirmed yet (and has not heard from for `suspectAfterMs` x LHM+1), are pinged at once. A
 * direct ping waits `probeTimeoutMs` x LHM+1; if it fails, k = `indirectProbes` random other live
 * connected cells are asked to ping the cell; they answer ack or nack. If none acks, the cell is
 * suspected (Suspicions). A cell held dead (not left) that is connected again is pinged in its
 * turn too, direct only: its answer shows it alive, and the claim is reannounced for it to refute
 * (memberlist gossips to the dead the same way), which is how a healed partition comes back; the
 * first such answer has the other connected dead cells pinged over the next rounds as well
 * (deadCellAnswered), with the room the round's probes leave.
 *
 * Bounds: the round-robin list and the pending sets hold at most one entry per directory entry;
 * at most `maxConcurrentProbes` probes run at once.
 */
export class Prober {
  /** Cells to probe at the next chance (their connection closed). */
  private readonly pendingProbes = new Set<string>();
  /** Suspects heard of from others, to confirm (or not) here at the next chance. */
  private readonly confirmations = new Set<string>();
  /** Cells held dead or suspect to ping soon, direct only: a cell held dead answered, so a partition may have healed. */
  private readonly deadChecks = new Set<string>();
  private lastDeadSweepMs = Number.NEGATIVE_INFINITY;
  private readonly probing = new Set<string>();
  /** The current pass of the round-robin, shuffled; `next` is the position of the next probe. */
  private order: string[] = [];
  private next = 0;

  constructor(private readonly init: ProberInit) {}

  private get selfCellId(): string {
    return this.init.directory.selfCellId;
  }

  /** `cellId` was heard from: a probe pending for its closed connection is needless. */
  heard(cellId: string): void {
    this.pendingProbes.delete(cellId);
  }

  /** Probes `cellId` at the next chance, whenever it was last heard. */
  probeSoon(cellId: string): void {
    this.pendingProbes.add(cellId);
  }

  /** Another cell suspects `cellId`: confirm it here (or not) at the next chance. */
  confirmSoon(cellId: string): void {
    this.confirmations.add(cellId);
  }

  /**
   * A cell held dead answered, pinged or came back: a partition may have healed, and the other cells held
   * dead or suspect may be back too. Each connected one is pinged (direct only) over the next
   * rounds, a few a round, instead of waiting for its turn of the round-robin: after a heal
   * every cell of one side must hear from some cell of the other to learn it must refute (a
   * suspicion raised during the partition never reached its cell), and waiting for the
   * round-robin alone left the last of a large side to chance for many rounds. At most one
   * sweep per `deadRedialIntervalMs`; cells held dead after a crash are not connected and cost nothing.
   */
  deadCellAnswered(): void {
    const { clock, options, directory, transport } = this.init;
    const nowMs = clock.now();
    if (nowMs - this.lastDeadSweepMs < options.deadRedialIntervalMs) return;
    this.lastDeadSweepMs = nowMs;
    const connected = new Set(transport.connectedPeers());
    const suspect: string[] = [];
    const dead: string[] = [];
    for (const entry of directory.values()) {
      if (!connected.has(entry.record.peerId)) continue;
      if (entry.liveness === 'suspect') suspect.push(entry.record.cellId);
      else if (entry.liveness === 'dead') dead.push(entry.record.cellId);
    }
    // In random order: every cell of a side sweeping the other side in the same order would ping
    // the same few cells first, and leave the same last ones waiting. Suspects first: they are
    // few, and each suspicion lasts until its cell hears of it.
    shuffle(suspect, this.init.random);
    shuffle(dead, this.init.random);
    for (const cellId of [...suspect, ...dead]) this.deadChecks.add(cellId);
  }

  /** A cell joined the directory: it takes a random place in what is left of this pass (SWIM). */
  added(cellId: string): void {
    if (cellId === this.selfCellId) return;
    const at = this.next + randomInt(this.init.random, this.order.length - this.next + 1);
    this.order.splice(at, 0, cellId);
  }

  /** `cellId` left the directory (its place in the pass is skipped when reached). */
  forget(cellId: string): void {
    this.pendingProbes.delete(cellId);
    this.confirmations.delete(cellId);
    this.deadChecks.delete(cellId);
  }

  clear(): void {
    this.pendingProbes.clear();
    this.confirmations.clear();
    this.deadChecks.clear();
    this.lastDeadSweepMs = Number.NEGATIVE_INFINITY;
    this.order = [];
    this.next = 0;
  }

  /** One probe round: the urgent probes, the next cell of the round-robin, then dead checks with the room left. */
  probeRound(): void {
    const { options, directory } = this.init;
    this.startDueProbes();
    if (this.probing.size >= options.maxConcurrentProbes) return;
    const target = this.nextInTurn();
    if (target !== undefined) void this.probe(target.cellId, target.purpose);
    for (const cellId of this.deadChecks) {
      if (this.probing.size >= options.maxConcurrentProbes) return;
      this.deadChecks.delete(cellId);
      const liveness = directory.get(cellId)?.liveness;
      if (liveness === 'dead' || liveness === 'suspect') void this.probe(cellId, 'dead-check');
    }
  }

  /** Starts the probes of closed connections and of suspicions to confirm, up to the concurrency bound; returns how many. */
  startDueProbes(): number {
    const { directory, options, clock, health, suspicions } = this.init;
    let started = 0;
    for (const cellId of this.pendingProbes) {
      if (this.probing.size >= options.maxConcurrentProbes) return started;
      if (this.probing.has(cellId)) continue;
      this.pendingProbes.delete(cellId);
      const liveness = directory.get(cellId)?.liveness;
      if (liveness === 'alive' || liveness === 'leaving') {
        void this.probe(cellId, 'suspicion');
        started++;
      } else if (liveness === 'suspect') {
        this.confirmations.add(cellId);
      }
    }
    const heardWithinMs = options.suspectAfterMs * (health.value + 1);
    for (const cellId of this.confirmations) {
      if (this.probing.size >= options.maxConcurrentProbes) return started;
      if (this.probing.has(cellId)) continue;
      this.confirmations.delete(cellId);
      const entry = directory.get(cellId);
      if (entry === undefined || entry.liveness !== 'suspect' || !suspicions.awaitsConfirmationHere(cellId)) continue;
      // Heard from it lately (a request, an answer): its refutation is what is due, not a probe.
      if (clock.now() - entry.lastHeardMs <= heardWithinMs) continue;
      void this.probe(cellId, 'suspicion');
      started++;
    }
    return started;
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
    const answer = await this.ping(target, peer, Math.min(timeoutMs, this.init.options.probeTimeoutMs * (this.init.health.value + 1)));
    return encodeJson({ ok: answer === 'ack' });
  }

  /** The next cell of the pass to probe, with why; a new shuffled pass starts when this one is done. */
  private nextInTurn(): { cellId: string; purpose: ProbePurpose } | undefined {
    let connected: Set<PeerId> | undefined;
    for (let attempts = 0; attempts < 2; attempts++) {
      while (this.next < this.order.length) {
        const cellId = this.order[this.next++] as string;
        const entry = this.init.directory.get(cellId);
        if (entry === undefined || this.probing.has(cellId)) continue;
        if (isServing(entry.liveness)) return { cellId, purpose: 'suspicion' };
        if (entry.liveness !== 'dead') continue;
        connected ??= new Set(this.init.transport.connectedPeers());
        if (connected.has(entry.record.peerId)) return { cellId, purpose: 'dead-check' };
      }
      this.startPass();
    }
    return undefined;
  }

  /** A new pass over every cell but this one, shuffled (Fisher-Yates on the injected Random keeps runs reproducible). */
  private startPass(): void {
    const cells: string[] = [];
    for (const entry of this.init.directory.values()) {
      const cellId = entry.record.cellId;
      if (cellId !== this.selfCellId && (isServing(entry.liveness) || entry.liveness === 'dead')) cells.push(cellId);
    }
    shuffle(cells, this.init.random);
    this.order = cells;
    this.next = 0;
  }

  private async probe(cellId: string, purpose: ProbePurpose): Promise<void> {
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
      const direct = await this.ping(cellId, peer, timeoutMs);
      if (!this.init.isRunning()) return;
      if (direct === 'ack') {
        metrics.probe('ack');
        health.lower();
        return;
      }
      if (purpose === 'dead-check') return;
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
      if (direct === 'none' && !results.includes('nack')) health.raise('probe-unanswered');
      this.init.suspicions.suspectLocally(cellId, incarnation);
    } finally {
      this.probing.delete(cellId);
    }
  }

  /** Connected cells held alive, in random order, without `exclude`. */
  private liveConnectedCells(exclude: string): string[] {
    const { directory, transport, random } = this.init;
    const cells: string[] = [];
    for (const peer of transport.connectedPeers()) {
      const cellId = directory.cellOfPeer(peer);
      if (cellId === undefined || cellId === exclude || cellId === this.selfCellId) continue;
      if (directory.get(cellId)?.liveness === 'alive') cells.push(cellId);
    }
    shuffle(cells, random);
    return cells;
  }

  /** Pings `cellId` at `peer` with this cell's piggybacked updates; an ack is an answer from that very cell. */
  private async ping(cellId: string, peer: PeerId, timeoutMs: number): Promise<PingResult> {
    try {
      const answer = await this.init.transport.request(peer, MembershipProtocol.ping, encodeJson(this.init.pingRequest(cellId)), { timeoutMs });
      const decoded = decodeJson(answer, PingAnswerSchema, MAX_CONTROL_MESSAGE_BYTES);
      if (!decoded.ok) return 'refused';
      if (this.init.isRunning()) this.init.pingAnswered(peer, decoded.value);
      return decoded.value.cellId === cellId ? 'ack' : 'refused';
    } catch (error) {
      // A refused connection or a failing handler is an answer of the network or the peer: this
      // cell is not the slow one. Only silence (timeout) says nothing.
      const answered = error instanceof MeshTransportError && (error.code === 'PEER_UNREACHABLE' || error.code === 'PROTOCOL_UNSUPPORTED' || error.code === 'REMOTE_HANDLER_FAILED');
      return answered ? 'refused' : 'none';
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

function shuffle(cells: string[], random: Random): void {
  for (let index = cells.length - 1; index > 0; index--) {
    const other = randomInt(random, index + 1);
    [cells[index], cells[other]] = [cells[other] as string, cells[index] as string];
  }
}
