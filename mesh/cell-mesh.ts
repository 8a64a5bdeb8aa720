import type { Logger } from '../platform/logger.js';
import { silentLogger } from '../platform/logger.js';
import type { Store } from '../platform/store/store.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { AntiEntropy, type ExchangeResult } from './anti-entropy.js';
import { signRecord, type CellRecord, type CellRecordContent, type ClaimProof, type VerifiedRecord } from './cell-record.js';
import { claimProofVerifier, signHandover } from './claim-proof.js';
import {
  Directory,
  type ChangeListener,
  type ConflictListener,
  type DirectoryView,
  type LivenessClaim,
  type MerchantConflict,
} from './directory.js';
import { FailureDetector } from './failure-detector.js';
import { membershipOptions, type MembershipOptions, type MembershipPreset } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import { MembershipTopic } from './membership-wire.js';
import { noopMeshMetrics, type MeshMetrics } from './mesh-metrics.js';
import { RecordIntake } from './record-intake.js';
import type { RecordSigner } from './record-signer.js';
import type { MeshTransport, PeerId } from './transport.js';

/** The Store key of the last incarnation this cell used (a decimal integer). */
export const INCARNATION_KEY = 'mesh/incarnation';

export interface CellMeshInit {
  /** This cell's id (CELL_ID_PATTERN); stable across restarts. */
  readonly cellId: string;
  /**
   * The transport, already started by the caller (other mesh services share it). CellMesh
   * registers its topics and protocols on it and takes over its peer events (re-exposed through
   * `onPeerConnected` / `onPeerDisconnected`).
   */
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  /** The cell's Store, already open; CellMesh keeps its incarnation under `mesh/`. */
  readonly store: Store;
  /** Signs this cell's record with the key of `transport.self`; verifies others'. */
  readonly signer: RecordSigner;
  /**
   * Operator public keys (`ed25519:<base64>`) whose signed placements let a claim displace a
   * merchant's home (docs/mesh.md, "Trust: who may claim a merchant"); none by default.
   */
  readonly operatorKeys?: readonly string[];
  /** What the first record says about this cell (endpoints, tenants, merchants, load, capacity). */
  readonly record: CellRecordContent;
  /** Addresses of cells to join through; empty (or absent) for the first cell of a cluster. */
  readonly bootstrap?: readonly string[];
  /** Overrides of the preset's timings and bounds (membership-config.ts). */
  readonly options?: Partial<MembershipOptions>;
  readonly preset?: MembershipPreset;
  readonly metrics?: MeshMetrics;
  readonly logger?: Logger;
}

export type CellMeshState = 'new' | 'starting' | 'running' | 'leaving' | 'stopped';

export type PeerListener = (peer: PeerId) => void;

/** The parts of its record a cell may change at runtime. */
export type CellRecordPatch = Partial<CellRecordContent>;

interface RedialState {
  readonly attempts: number;
  readonly nextAtMs: number;
}

/**
 * One cell's membership in the mesh: its signed record, the directory of all cells, failure
 * detection and anti-entropy, composed on one MeshTransport.
 *
 * Lifecycle (a Startable; each part owns its timers and clears them on stop):
 * - `start()`: bumps and persists the incarnation in the Store, signs the first record, serves
 *   the membership protocols, subscribes the topics with their validators, starts heartbeats,
 *   probes and anti-entropy, publishes the record, and joins in the background through the
 *   bootstrap addresses (dial with retries and jittered backoff, then one anti-entropy exchange
 *   with the first that answers: a pull of the directory and a push of this record).
 *   `waitJoined()` tells when that happened.
 * - Connection keeper: every `connectionMaintenanceIntervalMs` it dials known live cells it is
 *   not connected to, at most `maxConcurrentDials` at once, until `maxConnections` connections
 *   are open; when more cells are known than that, which ones is drawn at random (so cells do
 *   not all pick the same ones, and gossip still reaches everyone through the overlay). Failed
 *   dials back off per peer. A cell left with no connection goes back to its bootstrap list.
 *   It also expires tombstones.
 * - `leave()`: graceful. Publishes a 'leaving' record, awaits the caller's drain, publishes a
 *   'left' record and pushes it straight to every connected peer (a lost publish cannot delay
 *   the news), then stops. Others know at once and never suspect a cell that left.
 * - `stop()`: stops timers and handlers without telling anyone, like a crash as far as the
 *   others can tell (they detect it). The transport stays up; its owner stops it.
 * A CellMesh starts once; a restarted cell is a new CellMesh on the same Store (it gets a higher
 * incarnation, so its new record wins over the one the others hold).
 */
export class CellMesh {
  readonly cellId: string;
  readonly options: MembershipOptions;
  private readonly init: CellMeshInit;
  private readonly metrics: MeshMetrics;
  private readonly logger: Logger;
  private readonly directoryState: Directory;
  private readonly intake: RecordIntake;
  private readonly failureDetector: FailureDetector;
  private readonly antiEntropy: AntiEntropy;
  private stateValue: CellMeshState = 'new';
  private own: VerifiedRecord | undefined;
  private maintenanceTimer: TimerHandle | undefined;
  private readonly sleepers = new Set<() => void>();
  private joinState: 'pending' | 'joined' | 'failed' = 'pending';
  private readonly joinWaiters = new Set<{ resolve: () => void; reject: (error: Error) => void }>();
  private joinLoopRunning = false;
  private rejoinAttempts = 0;
  private nextRejoinAtMs = 0;
  private readonly dialing = new Set<PeerId>();
  private readonly redial = new Map<PeerId, RedialState>();
  /** When each dead cell was last dialled (bounded by maxTombstones). */
  private readonly deadDialedAtMs = new Map<PeerId, number>();
  private readonly connectedListeners = new Set<PeerListener>();
  private readonly disconnectedListeners = new Set<PeerListener>();
  private persistChain: Promise<void> = Promise.resolve();
  /** When this cell last handed its own record to the transport (see ownRecordLacked). */
  private ownPublishedAtMs = Number.NEGATIVE_INFINITY;

  constructor(init: CellMeshInit) {
    this.init = init;
    this.cellId = init.cellId;
    this.options = membershipOptions(init.options, init.preset);
    this.metrics = init.metrics ?? noopMeshMetrics;
    this.logger = init.logger ?? silentLogger;
    const { transport, clock, random } = init;
    this.directoryState = new Directory({
      selfCellId: init.cellId,
      maxCells: this.options.maxCells,
      maxTombstones: this.options.maxTombstones,
      tombstoneRetentionMs: this.options.tombstoneRetentionMs,
      verifyClaimProof: claimProofVerifier({ signer: init.signer, ...(init.operatorKeys === undefined ? {} : { operatorKeys: init.operatorKeys }) }),
      logger: this.logger,
    });
    this.directoryState.onConflict((conflict) => {
      this.metrics.conflictDetected();
      if (conflict.unproven !== undefined) {
        this.metrics.unprovenClaimDetected();
        this.logger.warn({ ...conflict }, 'a cell claims a merchant above its home without a handover or an operator placement; routing ignores the claim');
      } else {
        this.logger.warn({ ...conflict }, 'merchant claimed by more than one cell at the same epoch');
      }
    });
    this.intake = new RecordIntake({
      directory: this.directoryState,
      signer: init.signer,
      clock,
      metrics: this.metrics,
      logger: this.logger,
      selfPeer: transport.self,
      maxMessageBytes: this.options.maxMessageBytes,
      onNewerOwnRecord: (record) => {
        this.logger.warn({ incarnation: record.incarnation, version: record.version }, 'a newer record of this cell exists: moving to a higher incarnation');
        this.refute({ kind: 'suspect', incarnation: record.incarnation });
      },
    });
    this.failureDetector = new FailureDetector({
      directory: this.directoryState,
      transport,
      clock,
      random,
      options: this.options,
      metrics: this.metrics,
      logger: this.logger,
      ownOrder: () => this.ownRecord(),
      refute: (claim) => this.refute(claim),
      onNewerRecordSeen: (peer) => this.antiEntropy.requestExchange(peer, 'newer-heartbeat'),
    });
    this.antiEntropy = new AntiEntropy({
      directory: this.directoryState,
      transport,
      clock,
      random,
      options: this.options,
      metrics: this.metrics,
      logger: this.logger,
      intake: this.intake,
      liveness: this.failureDetector,
      onOwnRecordLacked: () => this.ownRecordLacked(),
    });
  }

  get state(): CellMeshState {
    return this.stateValue;
  }

  /** The directory of all cells (read-only). */
  get directory(): DirectoryView {
    return this.directoryState;
  }

  /** This cell's incarnation now (bumped at every start and refutation). */
  get incarnation(): number {
    return this.ownRecord().incarnation;
  }

  /** This cell's current record. Throws NOT_STARTED before `start()`. */
  ownRecord(): CellRecord {
    if (this.own === undefined) throw new MembershipError('NOT_STARTED');
    return this.own.record;
  }

  /** Lifeguard's local health multiplier (0 = healthy). */
  localHealth(): number {
    return this.failureDetector.localHealth();
  }

  /**
   * The interval of this cell's heartbeats now: `heartbeatIntervalMs`, or longer in a cluster
   * too large for `heartbeatReceiveBudgetPerSecond` (membership-config.ts).
   */
  heartbeatIntervalMs(): number {
    return this.failureDetector.heartbeatIntervalMs();
  }

  /** Serving cells this cell knows of, itself included, as its failure detector last counted them. */
  servingCellCount(): number {
    return this.failureDetector.servingCellCount();
  }

  async start(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.stateValue !== 'new') throw new MembershipError('ALREADY_STARTED');
    this.stateValue = 'starting';
    try {
      throwIfAborted(options.signal);
      const incarnation = await this.nextIncarnation();
      throwIfAborted(options.signal);
      const { transport } = this.init;
      const first: CellRecord = {
        cellId: this.cellId,
        peerId: transport.self,
        incarnation,
        version: 0,
        status: 'alive',
        ...copyContent(this.init.record),
      };
      this.install(first);
      this.assertSignerMatches();
      this.failureDetector.registerHandlers();
      this.antiEntropy.registerHandlers();
      transport.subscribe(MembershipTopic.directory, this.intake.handleGossip, this.intake.validateGossip);
      transport.setPeerEvents({
        onPeerConnected: (peer) => this.peerConnected(peer),
        onPeerDisconnected: (peer) => this.peerDisconnected(peer),
      });
      this.stateValue = 'running';
      this.failureDetector.start();
      this.antiEntropy.start();
      this.scheduleMaintenance();
      this.publishOwnRecord();
      this.logger.info({ cellId: this.cellId, incarnation, peer: transport.self }, 'cell mesh started');
      void this.join();
    } catch (error) {
      if (this.stateValue === 'starting') this.stateValue = 'stopped';
      throw error;
    }
  }

  /**
   * Resolves once this cell has pulled the directory from a bootstrap peer (at once when it has
   * no bootstrap addresses); rejects with BOOTSTRAP_FAILED after `bootstrapMaxAttempts` rounds,
   * STOPPED when stopped first, ABORTED on the signal.
   */
  waitJoined(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.joinState === 'joined') return Promise.resolve();
    if (this.joinState === 'failed') return Promise.reject(new MembershipError('BOOTSTRAP_FAILED'));
    return new Promise<void>((resolve, reject) => {
      const signal = options.signal;
      const onAbort = (): void => {
        this.joinWaiters.delete(waiter);
        reject(new MembershipError('ABORTED'));
      };
      const waiter = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (error: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      if (signal?.aborted === true) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.joinWaiters.add(waiter);
    });
  }

  /**
   * Changes this cell's record: bumps its version, signs it and publishes it on
   * `cellmesh/directory/v1`. Resolves with the new record once handed to the transport (the
   * publish itself is best effort; anti-entropy repairs what it misses). Rejects with
   * INVALID_RECORD (nothing changes) or NOT_STARTED.
   */
  async updateOwnRecord(patch: CellRecordPatch): Promise<CellRecord> {
    if (this.stateValue !== 'running' && this.stateValue !== 'leaving') throw new MembershipError('NOT_STARTED');
    const current = this.ownRecord();
    let content: CellRecordContent;
    try {
      content = copyContent({ ...pickContent(current), ...patch });
    } catch (error) {
      throw new MembershipError('INVALID_RECORD', 'the record patch is not a valid record content', { cause: error });
    }
    const next: CellRecord = { ...current, ...content, version: current.version + 1 };
    this.install(next);
    await this.publishOwnRecord();
    return next;
  }

  /**
   * Leaves the cluster gracefully (see the class comment). `drain` runs between the 'leaving'
   * and 'left' records: hand merchants over there. Resolves once stopped.
   */
  async leave(options: { drain?: () => Promise<void>; signal?: AbortSignal } = {}): Promise<void> {
    if (this.stateValue !== 'running') throw new MembershipError('NOT_STARTED', `cannot leave from state ${this.stateValue}`);
    this.stateValue = 'leaving';
    try {
      this.installStatus('leaving');
      await this.publishOwnRecord();
      throwIfAborted(options.signal);
      if (options.drain !== undefined) await options.drain();
      throwIfAborted(options.signal);
      this.installStatus('left');
      await this.publishOwnRecord();
      const own = this.own as VerifiedRecord;
      const peers = this.init.transport.connectedPeers().slice(0, this.options.maxConnections);
      await Promise.allSettled(peers.map((peer) => this.antiEntropy.push(peer, [own.signed], this.options.leavePushTimeoutMs)));
      this.logger.info({ cellId: this.cellId }, 'cell left the mesh');
    } finally {
      this.halt();
    }
  }

  /** Stops without telling anyone (the others will detect it). Idempotent. */
  async stop(): Promise<void> {
    this.halt();
  }

  /** Runs one anti-entropy exchange with `peer` now (tests, the simulator, operators). */
  syncWith(peer: PeerId): Promise<ExchangeResult> {
    return this.antiEntropy.exchange(peer);
  }

  homeCellOf(tenant: string, merchant: string): string | undefined {
    return this.directoryState.homeCellOf(tenant, merchant);
  }

  conflicts(): MerchantConflict[] {
    return this.directoryState.conflicts();
  }

  /**
   * This cell's signed handover of a merchant it claims to cell `toCell` at `epoch` (the move
   * protocol's commit carries it; the new home's claim publishes it). Undefined when this cell
   * does not claim the merchant or does not know the target's peer.
   */
  handoverProof(tenant: string, merchant: string, toCell: string, epoch: number): ClaimProof | undefined {
    const own = this.ownRecord();
    const claim = own.merchants.find((held) => held.tenant === tenant && held.merchant === merchant);
    const toPeer = this.directoryState.peerOf(toCell);
    if (claim === undefined || toPeer === undefined) return undefined;
    return signHandover(this.init.signer, { tenant, merchant, fromCell: this.cellId, fromPeer: own.peerId, fromEpoch: claim.epoch, toCell, toPeer, epoch });
  }

  /** Records of the cells that can take new work: alive or merely suspect (this one included), by cell id. */
  liveCells(): CellRecord[] {
    const cells: CellRecord[] = [];
    for (const entry of this.directoryState.values()) {
      if (entry.liveness === 'alive' || entry.liveness === 'suspect') cells.push(entry.record);
    }
    return cells.sort((a, b) => (a.cellId < b.cellId ? -1 : a.cellId > b.cellId ? 1 : 0));
  }

  peerOf(cellId: string): PeerId | undefined {
    return this.directoryState.peerOf(cellId);
  }

  onChange(listener: ChangeListener): () => void {
    return this.directoryState.onChange(listener);
  }

  onConflict(listener: ConflictListener): () => void {
    return this.directoryState.onConflict(listener);
  }

  onPeerConnected(listener: PeerListener): () => void {
    this.connectedListeners.add(listener);
    return () => this.connectedListeners.delete(listener);
  }

  onPeerDisconnected(listener: PeerListener): () => void {
    this.disconnectedListeners.add(listener);
    return () => this.disconnectedListeners.delete(listener);
  }

  private async nextIncarnation(): Promise<number> {
    const stored = await this.init.store.get(INCARNATION_KEY);
    let incarnation = 0;
    if (stored !== undefined) {
      if (!/^\d{1,15}$/.test(stored)) throw new MembershipError('STORE_CORRUPT', `${INCARNATION_KEY} holds ${JSON.stringify(stored.slice(0, 32))}`);
      incarnation = Number(stored) + 1;
    }
    await this.init.store.write([{ type: 'put', key: INCARNATION_KEY, value: String(incarnation) }]);
    return incarnation;
  }

  /** Persists an incarnation used by a refutation; writes land in order. */
  private persistIncarnation(incarnation: number): Promise<void> {
    this.persistChain = this.persistChain
      .then(() => this.init.store.write([{ type: 'put', key: INCARNATION_KEY, value: String(incarnation) }]))
      .catch((error: unknown) => {
        // The record goes out anyway: staying alive matters more. A restart before a later
        // write could reuse this incarnation; the cell then sees its own newer record and
        // moves above it (onNewerOwnRecord).
        this.logger.error({ err: error, incarnation }, 'could not persist the incarnation');
      });
    return this.persistChain;
  }

  private install(record: CellRecord): void {
    const verified = signRecord(record, this.init.signer);
    this.own = verified;
    this.directoryState.setOwn(verified, this.init.clock.now());
  }

  private installStatus(status: CellRecord['status']): void {
    const current = this.ownRecord();
    this.install({ ...current, status, version: current.version + 1 });
  }

  private assertSignerMatches(): void {
    const own = this.own as VerifiedRecord;
    const bytes = new TextEncoder().encode('cellmesh/signer-check');
    if (!this.init.signer.verify(own.record.peerId, bytes, this.init.signer.sign(bytes))) {
      this.stateValue = 'stopped';
      throw new MembershipError('SIGNER_MISMATCH');
    }
  }

  private refute(claim: LivenessClaim): void {
    if (this.stateValue !== 'running' && this.stateValue !== 'leaving') return;
    const current = this.ownRecord();
    if (claim.incarnation < current.incarnation) return;
    const incarnation = Math.max(current.incarnation, claim.incarnation) + 1;
    this.install({ ...current, incarnation, version: 0 });
    this.metrics.refuted();
    this.failureDetector.noteRefutation();
    this.logger.info({ claim: claim.kind, claimed: claim.incarnation, incarnation }, 'refuting a claim about this cell');
    void this.persistIncarnation(incarnation).then(() => {
      // A later refutation may have moved on; publish whatever is newest.
      void this.publishOwnRecord();
      this.failureDetector.publishHeartbeat();
    });
  }

  /**
   * A peer pulled holding an older record of this cell: republish it, unless it went out less
   * than `probeTimeoutMs` (a round trip's bound) ago, when pulls sent before it arrived are
   * still coming in.
   */
  private ownRecordLacked(): void {
    if (this.init.clock.now() - this.ownPublishedAtMs < this.options.probeTimeoutMs) return;
    this.metrics.ownRecordRepublished();
    void this.publishOwnRecord();
  }

  private publishOwnRecord(): Promise<void> {
    const own = this.own;
    if (own === undefined || (this.stateValue !== 'running' && this.stateValue !== 'leaving')) return Promise.resolve();
    this.ownPublishedAtMs = this.init.clock.now();
    const bytes = new TextEncoder().encode(JSON.stringify(own.signed));
    return this.init.transport.publish(MembershipTopic.directory, bytes).catch((error: unknown) => {
      this.logger.debug({ err: error }, 'publishing the own record failed');
    });
  }

  private async join(): Promise<void> {
    const addresses = this.bootstrapAddresses();
    if (addresses.length === 0) {
      this.settleJoin('joined');
      return;
    }
    this.joinLoopRunning = true;
    try {
      for (let attempt = 0; attempt < this.options.bootstrapMaxAttempts; attempt++) {
        for (const address of addresses) {
          if (!this.isActive()) return;
          if (await this.joinThrough(address)) {
            this.settleJoin('joined');
            return;
          }
        }
        await this.sleep(this.backoffMs(attempt, this.options.bootstrapRetryBaseMs, this.options.bootstrapRetryMaxMs));
      }
      this.logger.warn({ addresses }, 'no bootstrap address answered; the connection keeper goes on trying');
      this.settleJoin('failed');
    } finally {
      this.joinLoopRunning = false;
    }
  }

  /** Dials `address`, pulls the directory from it and pushes this record; true on success. */
  private async joinThrough(address: string): Promise<boolean> {
    try {
      const peer = await this.dialWithTimeout(address);
      if (!this.isActive()) return false;
      const result = await this.antiEntropy.exchange(peer);
      if (result.skipped) return false;
      this.logger.info({ address, peer, received: result.received }, 'joined the mesh');
      void this.publishOwnRecord();
      this.failureDetector.publishHeartbeat();
      return true;
    } catch (error) {
      this.logger.debug({ err: error, address }, 'bootstrap attempt failed');
      return false;
    }
  }

  private bootstrapAddresses(): string[] {
    const selfSuffix = `/p2p/${this.init.transport.self}`;
    return (this.init.bootstrap ?? []).filter((address) => !address.endsWith(selfSuffix));
  }

  private settleJoin(state: 'joined' | 'failed', error?: Error): void {
    if (this.joinState !== 'pending') return;
    this.joinState = state;
    for (const waiter of this.joinWaiters) {
      if (state === 'joined') waiter.resolve();
      else waiter.reject(error ?? new MembershipError('BOOTSTRAP_FAILED'));
    }
    this.joinWaiters.clear();
  }

  private scheduleMaintenance(): void {
    this.maintenanceTimer = this.init.clock.setTimer(this.options.connectionMaintenanceIntervalMs, () => {
      if (!this.isActive()) return;
      this.maintain();
      this.scheduleMaintenance();
    });
  }

  /** The connection keeper's round: expire tombstones, rejoin when isolated, dial missing cells. */
  private maintain(): void {
    const { transport, clock, random } = this.init;
    const nowMs = clock.now();
    this.directoryState.sweep(nowMs);
    for (const peer of this.redial.keys()) if (this.directoryState.cellOfPeer(peer) === undefined) this.redial.delete(peer);
    const connected = new Set(transport.connectedPeers());
    if (connected.size === 0) this.rejoinIfIsolated(nowMs);
    if (connected.size >= this.options.maxConnections) return;
    const candidates: CellRecord[] = [];
    for (const entry of this.directoryState.values()) {
      const { record } = entry;
      if (record.cellId === this.cellId || record.endpoints.p2p.length === 0) continue;
      if (connected.has(record.peerId) || this.dialing.has(record.peerId)) continue;
      const backoff = this.redial.get(record.peerId);
      if (backoff !== undefined && backoff.nextAtMs > nowMs) continue;
      if (entry.liveness === 'alive') candidates.push(record);
      else if (entry.liveness === 'dead' && this.deadDialDue(record.peerId, nowMs)) candidates.push(record);
    }
    const room = Math.min(this.options.maxConnections - connected.size, this.options.maxConcurrentDials - this.dialing.size);
    for (let picked = 0; picked < room && candidates.length > 0; picked++) {
      const index = Math.floor(random.next() * candidates.length);
      const [record] = candidates.splice(index, 1);
      if (record !== undefined) void this.dialCell(record);
    }
  }

  /** Whether a dead cell is due for its occasional dial; records the attempt when it is. */
  private deadDialDue(peer: PeerId, nowMs: number): boolean {
    const lastMs = this.deadDialedAtMs.get(peer);
    if (lastMs !== undefined && nowMs - lastMs < this.options.deadRedialIntervalMs) return false;
    if (this.deadDialedAtMs.size >= this.options.maxTombstones) this.deadDialedAtMs.clear();
    this.deadDialedAtMs.set(peer, nowMs);
    return true;
  }

  private rejoinIfIsolated(nowMs: number): void {
    const addresses = this.bootstrapAddresses();
    if (addresses.length === 0 || this.joinLoopRunning || nowMs < this.nextRejoinAtMs) return;
    const address = addresses[this.rejoinAttempts % addresses.length] as string;
    this.nextRejoinAtMs = nowMs + this.backoffMs(this.rejoinAttempts, this.options.bootstrapRetryBaseMs, this.options.bootstrapRetryMaxMs);
    this.rejoinAttempts++;
    void this.joinThrough(address).then((joined) => {
      if (!joined) return;
      this.rejoinAttempts = 0;
      this.settleJoin('joined');
    });
  }

  private async dialCell(record: CellRecord): Promise<void> {
    const peer = record.peerId;
    this.dialing.add(peer);
    this.init.transport.addPeerAddresses(peer, record.endpoints.p2p);
    try {
      for (const address of record.endpoints.p2p) {
        try {
          await this.dialWithTimeout(address);
          this.redial.delete(peer);
          return;
        } catch {
          // Try the next address.
        }
      }
      const attempts = (this.redial.get(peer)?.attempts ?? 0) + 1;
      const delayMs = this.backoffMs(attempts - 1, this.options.redialBackoffBaseMs, this.options.redialBackoffMaxMs);
      this.redial.set(peer, { attempts, nextAtMs: this.init.clock.now() + delayMs });
    } finally {
      this.dialing.delete(peer);
    }
  }

  private async dialWithTimeout(address: string): Promise<PeerId> {
    const controller = new AbortController();
    const timer = this.init.clock.setTimer(this.options.dialTimeoutMs, () => controller.abort());
    try {
      return await this.init.transport.dial(address, { signal: controller.signal });
    } finally {
      timer.cancel();
    }
  }

  /** Exponential backoff with jitter: base * 2^attempt, capped, times 0.75-1.25. */
  private backoffMs(attempt: number, baseMs: number, maxMs: number): number {
    const exponential = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
    return Math.round(exponential * (0.75 + 0.5 * this.init.random.next()));
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        handle.cancel();
        this.sleepers.delete(wake);
        resolve();
      };
      const handle = this.init.clock.setTimer(delayMs, wake);
      this.sleepers.add(wake);
    });
  }

  private peerConnected(peer: PeerId): void {
    this.redial.delete(peer);
    this.failureDetector.heardFromPeer(peer);
    for (const listener of this.connectedListeners) this.callListener(listener, peer);
  }

  private peerDisconnected(peer: PeerId): void {
    this.failureDetector.peerDisconnected(peer);
    for (const listener of this.disconnectedListeners) this.callListener(listener, peer);
  }

  private callListener(listener: PeerListener, peer: PeerId): void {
    try {
      listener(peer);
    } catch (error) {
      this.logger.error({ err: error, peer }, 'peer listener failed');
    }
  }

  private isActive(): boolean {
    return this.stateValue === 'running' || this.stateValue === 'leaving';
  }

  private halt(): void {
    if (this.stateValue === 'stopped') return;
    const wasStarted = this.stateValue !== 'new';
    this.stateValue = 'stopped';
    this.failureDetector.stop();
    this.antiEntropy.stop();
    this.maintenanceTimer?.cancel();
    for (const wake of [...this.sleepers]) wake();
    if (wasStarted) {
      this.init.transport.unsubscribe(MembershipTopic.directory);
      this.init.transport.setPeerEvents({});
    }
    this.settleJoin('failed', new MembershipError('STOPPED'));
  }
}

function pickContent(record: CellRecord): CellRecordContent {
  const { endpoints, tenants, merchants, handedOver, load, capacity } = record;
  return { endpoints, tenants, merchants, ...(handedOver === undefined ? {} : { handedOver }), load, capacity };
}

/** A deep copy of the content, so callers cannot change a signed record by mutating their objects. */
function copyContent(content: CellRecordContent): CellRecordContent {
  return {
    endpoints: { ws: content.endpoints.ws, http: content.endpoints.http, p2p: [...content.endpoints.p2p] },
    tenants: [...content.tenants],
    merchants: content.merchants.map((claim) => ({ tenant: claim.tenant, merchant: claim.merchant, epoch: claim.epoch, ...(claim.proof === undefined ? {} : { proof: { ...claim.proof } }) })),
    ...(content.handedOver === undefined ? {} : { handedOver: content.handedOver.map((note) => ({ ...note })) }),
    load: { devices: content.load.devices, messagesPerSecond: content.load.messagesPerSecond },
    capacity: { maxDevices: content.capacity.maxDevices },
  };
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new MembershipError('ABORTED');
}
