import type { Logger } from '../platform/logger.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { randomInt, type Random } from '../platform/random.js';
import { compareRecordOrder, type SignedRecord } from './cell-record.js';
import { isServing, type Directory } from './directory.js';
import type { MembershipOptions } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import {
  AntiEntropyAnswerSchema,
  AntiEntropyPushAnswerSchema,
  AntiEntropyPushSchema,
  AntiEntropyRequestSchema,
  decodeJson,
  encodeJson,
  MembershipProtocol,
  type AntiEntropyAnswer,
  type AntiEntropyRequest,
} from './membership-wire.js';
import type { MeshMetrics } from './mesh-metrics.js';
import type { RecordIntake } from './record-intake.js';
import type { MeshTransport, PeerId } from './transport.js';

/** What anti-entropy needs of the failure detector. */
export interface AntiEntropyLiveness {
  heardFromPeer(peer: PeerId): void;
  applyRelayedDeadClaim(cellId: string, incarnation: number): void;
}

export interface AntiEntropyInit {
  readonly directory: Directory;
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  readonly options: MembershipOptions;
  readonly metrics: MeshMetrics;
  readonly logger: Logger;
  readonly intake: RecordIntake;
  readonly liveness: AntiEntropyLiveness;
  /**
   * An asker's digest held this cell's own record at an older (incarnation, version): the last
   * publish of it did not reach that peer, and maybe not others. The mesh republishes it.
   */
  readonly onOwnRecordLacked: () => void;
}

export interface ExchangeResult {
  /** Digest/delta rounds run (more than one when answers were chunked). */
  readonly rounds: number;
  /** Records received that were newer than the ones held. */
  readonly received: number;
  /** Records the peer accepted from this cell's push. */
  readonly pushed: number;
  /** True when the exchange did not run: too many exchanges in flight. */
  readonly skipped: boolean;
}

/** Bytes a record takes in a message, for the per-message bound. */
function envelopeBytes(signed: SignedRecord): number {
  // The JSON escaping of the record text adds a little; 64 bytes cover the punctuation.
  return Buffer.byteLength(signed.record) + signed.signature.length + 64;
}

/**
 * The mean period of the anti-entropy loop in a cluster of `servingCells` serving cells:
 * `antiEntropyIntervalMs` up to `antiEntropyScaleAboveCells` cells, then longer by one period
 * for each doubling beyond, as memberlist's push-pull (`pushPullScale`): every exchange carries
 * a digest of the whole directory, so its cost grows with the cluster, and this keeps a cell's
 * anti-entropy work per second growing as n / log n rather than n. LAN preset: 2 s up to 32 cells,
 * 4 s up to 64, 8 s at 200, 12 s at 1,000. 0 turns the scaling off.
 */
export function antiEntropyIntervalMs(servingCells: number, options: MembershipOptions): number {
  const threshold = options.antiEntropyScaleAboveCells;
  if (threshold <= 0 || servingCells <= threshold) return options.antiEntropyIntervalMs;
  const multiplier = Math.ceil(Math.log2(servingCells) - Math.log2(threshold)) + 1;
  return options.antiEntropyIntervalMs * multiplier;
}

/**
 * Scuttlebutt-style anti-entropy: repairs whatever gossip missed (lost publishes, partitions,
 * a cell that joined late), so every view converges on the newest record of every cell.
 *
 * One exchange, asker A and answerer B, is a push-pull in two request/response round trips:
 * 1. A -> B `/cellmesh/anti-entropy/1.0.0` `{ digest: {cellId: [incarnation, version]}, claims }`
 *    where `claims` are A's dead tombstones `[{cellId, incarnation}]`. B applies the claims, and
 *    answers `{ records, claims, newer, more }`: the signed records B holds newer than A's digest
 *    (or absent from it), B's own dead tombstones, the cell ids for which A's digest is newer
 *    than B's records, and whether `records` was cut at the size bound.
 * 2. A ingests the records (each verified against its owner's key; relays are fine, forgeries are
 *    not), applies the claims, then pushes the records B lacks with
 *    `/cellmesh/anti-entropy-push/1.0.0` `{ records }` (chunked), answered `{ accepted }`.
 * While `more` is true A repeats step 1 with its updated digest, up to `antiEntropyMaxRounds`.
 * When A's digest holds B's own record at an older order, B also calls `onOwnRecordLacked`: a
 * cell that heard B's heartbeat before B's record pulls from B (after a wait, in a large
 * cluster), and B republishing its record spares the cells still waiting their own pull.
 * Every message holds at most `antiEntropyMaxRecordsPerMessage` records and about
 * `antiEntropyMaxBytesPerMessage` bytes of them.
 *
 * When: every `antiEntropyIntervalMs` (jittered to 50-150 %, so cells do not synchronise; longer
 * in clusters above `antiEntropyScaleAboveCells`, see antiEntropyIntervalMs()) with one random
 * connected peer that has not left; right after joining through a bootstrap peer;
 * and whenever a heartbeat shows a record newer than the one held (a pull from that sender).
 * At most `maxConcurrentExchanges` run at once, one per peer.
 */
export class AntiEntropy {
  private running = false;
  private timer: TimerHandle | undefined;
  private readonly inFlight = new Map<PeerId, Promise<ExchangeResult>>();

  constructor(private readonly init: AntiEntropyInit) {}

  /** Serves the anti-entropy protocols; call once (handlers answer only while running). */
  registerHandlers(): void {
    const { transport } = this.init;
    transport.handle(MembershipProtocol.antiEntropy, (from, request) => this.answerExchange(from, request));
    transport.handle(MembershipProtocol.antiEntropyPush, (from, request) => this.answerPush(from, request));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.scheduleRound();
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
  }

  /**
   * Runs one exchange with `peer` (joining the one under way with it, if any). Rejects with the
   * transport's error or MembershipError BAD_MESSAGE / STOPPED.
   */
  exchange(peer: PeerId): Promise<ExchangeResult> {
    if (!this.running) return Promise.reject(new MembershipError('STOPPED'));
    const existing = this.inFlight.get(peer);
    if (existing !== undefined) return existing;
    if (this.inFlight.size >= this.init.options.maxConcurrentExchanges) {
      return Promise.resolve({ rounds: 0, received: 0, pushed: 0, skipped: true });
    }
    const exchange = this.runExchange(peer).finally(() => this.inFlight.delete(peer));
    this.inFlight.set(peer, exchange);
    return exchange;
  }

  /** An exchange in the background; failures are logged, never thrown. */
  requestExchange(peer: PeerId, reason: string): void {
    if (!this.running || peer === this.init.transport.self) return;
    this.exchange(peer).catch((error: unknown) => {
      this.init.logger.debug({ err: error, peer, reason }, 'anti-entropy exchange failed');
    });
  }

  /** Pushes `records` to `peer` in bounded chunks; resolves with how many it accepted. */
  async push(peer: PeerId, records: readonly SignedRecord[], timeoutMs: number): Promise<number> {
    let accepted = 0;
    for (const chunk of this.chunks(records)) {
      const answer = await this.init.transport.request(peer, MembershipProtocol.antiEntropyPush, encodeJson({ records: chunk }), { timeoutMs });
      const decoded = decodeJson(answer, AntiEntropyPushAnswerSchema, this.init.options.maxMessageBytes);
      if (!decoded.ok) throw new MembershipError('BAD_MESSAGE', 'malformed anti-entropy push answer');
      accepted += decoded.value.accepted;
    }
    return accepted;
  }

  private scheduleRound(): void {
    const { random, clock } = this.init;
    const delayMs = Math.round(this.intervalMs() * (0.5 + random.next()));
    this.timer = clock.setTimer(delayMs, () => {
      if (!this.running) return;
      const peer = this.pickPeer();
      if (peer !== undefined) this.requestExchange(peer, 'periodic');
      this.scheduleRound();
    });
  }

  /** The mean period of the loop now (antiEntropyIntervalMs() for the serving cells known). */
  intervalMs(): number {
    let serving = 0;
    for (const entry of this.init.directory.values()) if (isServing(entry.liveness)) serving++;
    return antiEntropyIntervalMs(serving, this.init.options);
  }

  /** A random connected peer, excluding cells known to have left. */
  private pickPeer(): PeerId | undefined {
    const { transport, directory, random } = this.init;
    const peers = transport.connectedPeers().filter((peer) => {
      const cellId = directory.cellOfPeer(peer);
      return cellId === undefined || directory.get(cellId)?.liveness !== 'left';
    });
    return peers.length === 0 ? undefined : peers[randomInt(random, peers.length)];
  }

  private async runExchange(peer: PeerId): Promise<ExchangeResult> {
    const { directory, transport, options, metrics, intake, liveness } = this.init;
    let rounds = 0;
    let received = 0;
    let pushed = 0;
    try {
      while (rounds < options.antiEntropyMaxRounds) {
        rounds++;
        const request: AntiEntropyRequest = { digest: directory.digest(), claims: directory.deadClaims() };
        const bytes = await transport.request(peer, MembershipProtocol.antiEntropy, encodeJson(request), { timeoutMs: options.antiEntropyTimeoutMs });
        if (!this.running) throw new MembershipError('STOPPED');
        const decoded = decodeJson(bytes, AntiEntropyAnswerSchema, options.maxMessageBytes);
        if (!decoded.ok) {
          metrics.messageRejected(MembershipProtocol.antiEntropy, decoded.reason);
          throw new MembershipError('BAD_MESSAGE', `malformed anti-entropy answer from ${peer}`);
        }
        liveness.heardFromPeer(peer);
        const answer: AntiEntropyAnswer = decoded.value;
        for (const signed of answer.records) if (intake.ingestRelayed(signed).kind === 'accepted') received++;
        for (const claim of answer.claims) liveness.applyRelayedDeadClaim(claim.cellId, claim.incarnation);
        if (answer.newer.length > 0) {
          const records: SignedRecord[] = [];
          for (const cellId of answer.newer) {
            const entry = directory.get(cellId);
            if (entry !== undefined) records.push(entry.signed);
          }
          pushed += await this.push(peer, records, options.antiEntropyTimeoutMs);
        }
        if (!answer.more) break;
      }
      metrics.antiEntropyRound('asker', 'ok');
      metrics.recordsRepaired(received);
      return { rounds, received, pushed, skipped: false };
    } catch (error) {
      metrics.antiEntropyRound('asker', 'failed');
      metrics.recordsRepaired(received);
      throw error;
    }
  }

  private async answerExchange(from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    if (!this.running) throw new MembershipError('STOPPED');
    const { directory, options, metrics, liveness } = this.init;
    const decoded = decodeJson(request, AntiEntropyRequestSchema, options.maxMessageBytes);
    if (!decoded.ok) {
      metrics.messageRejected(MembershipProtocol.antiEntropy, decoded.reason);
      metrics.antiEntropyRound('answerer', 'failed');
      throw new MembershipError('BAD_MESSAGE', 'malformed anti-entropy request');
    }
    liveness.heardFromPeer(from);
    for (const claim of decoded.value.claims) liveness.applyRelayedDeadClaim(claim.cellId, claim.incarnation);
    this.noteOwnRecordSeenBy(decoded.value.digest);
    const records: SignedRecord[] = [];
    let bytes = 0;
    let more = false;
    for (const signed of directory.newerThan(decoded.value.digest)) {
      const size = envelopeBytes(signed);
      if (records.length >= options.antiEntropyMaxRecordsPerMessage || (records.length > 0 && bytes + size > options.antiEntropyMaxBytesPerMessage)) {
        more = true;
        break;
      }
      records.push(signed);
      bytes += size;
    }
    // `newer` is bounded like the directory: the asker pushes those records in chunks.
    const newer = directory.olderThan(decoded.value.digest).slice(0, options.maxCells);
    const answer: AntiEntropyAnswer = { records, claims: directory.deadClaims(), newer, more };
    metrics.antiEntropyRound('answerer', 'ok');
    return encodeJson(answer);
  }

  /** Only an older order counts: a digest without this cell is a newcomer's bootstrap pull. */
  private noteOwnRecordSeenBy(digest: Readonly<Record<string, readonly [number, number]>>): void {
    const { directory } = this.init;
    const held = Object.hasOwn(digest, directory.selfCellId) ? digest[directory.selfCellId] : undefined;
    const own = directory.get(directory.selfCellId);
    if (held === undefined || own === undefined) return;
    if (compareRecordOrder({ incarnation: held[0], version: held[1] }, own.record) < 0) this.init.onOwnRecordLacked();
  }

  private async answerPush(from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    if (!this.running) throw new MembershipError('STOPPED');
    const { options, metrics, liveness, intake } = this.init;
    const decoded = decodeJson(request, AntiEntropyPushSchema, options.maxMessageBytes);
    if (!decoded.ok) {
      metrics.messageRejected(MembershipProtocol.antiEntropyPush, decoded.reason);
      throw new MembershipError('BAD_MESSAGE', 'malformed anti-entropy push');
    }
    liveness.heardFromPeer(from);
    let accepted = 0;
    for (const signed of decoded.value.records) if (intake.ingestRelayed(signed).kind === 'accepted') accepted++;
    metrics.recordsRepaired(accepted);
    return encodeJson({ accepted });
  }

  /** Splits records into messages within the record-count and byte bounds. */
  private *chunks(records: readonly SignedRecord[]): Generator<SignedRecord[]> {
    const { antiEntropyMaxRecordsPerMessage: maxRecords, antiEntropyMaxBytesPerMessage: maxBytes } = this.init.options;
    let chunk: SignedRecord[] = [];
    let bytes = 0;
    for (const signed of records) {
      const size = envelopeBytes(signed);
      if (chunk.length > 0 && (chunk.length >= maxRecords || bytes + size > maxBytes)) {
        yield chunk;
        chunk = [];
        bytes = 0;
      }
      chunk.push(signed);
      bytes += size;
    }
    if (chunk.length > 0) yield chunk;
  }
}
