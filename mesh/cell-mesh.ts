/**
 * One cell's membership in the mesh, composed: its own record (own-record.ts), the directory,
 * failure detection, anti-entropy, joining (joiner.ts) and the connection keeper
 * (connection-keeper.ts) on one MeshTransport; leaving, and the mesh's public surface to the cell.
 */
import type { Logger } from '../platform/logger.js';
import { silentLogger } from '../platform/logger.js';
import type { Store } from '../platform/store/store.js';
import type { Clock } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { AntiEntropy, type ExchangeResult } from './anti-entropy.js';
import { isRouterRecord, type CellRecord, type CellRecordContent, type ClaimProof, type MemberRole } from './cell-record.js';
import { CellError, ErrorCode } from '../cell/protocol/errors.js';
import { claimProofVerifier, signHandover } from './claim-proof.js';
import { ConnectionKeeper } from './connection-keeper.js';
import {
  Directory,
  type ChangeListener,
  type ConflictListener,
  type DirectoryView,
  type LivenessClaim,
  type MerchantConflict,
} from './directory.js';
import { FailureDetector } from './failure-detector.js';
import { Joiner } from './joiner.js';
import { membershipOptions, type MembershipOptions, type MembershipPreset } from './membership-config.js';
import { MembershipError } from './membership-errors.js';
import { MembershipTopic } from './membership-wire.js';
import { noopMeshMetrics, type MeshMetrics } from './mesh-metrics.js';
import { copyContent, OwnRecord, pickContent } from './own-record.js';
import { RecordIntake } from './record-intake.js';
import type { RecordSigner } from './record-signer.js';
import type { MeshTransport, PeerId } from './transport.js';

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
  /**
   * `router`: this node is an observer (`cellmesh router`): it joins, gossips, keeps the
   * directory and is probed like any member, but its record says it hosts nothing, so it is
   * never a merchant's home nor a move target (cell-record.ts, MemberRoleSchema). Default: a cell.
   */
  readonly role?: MemberRole | undefined;
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
 *   `waitJoined()` tells when that happened (Joiner).
 * - Connection keeper: every `connectionMaintenanceIntervalMs` it dials known live cells it is
 *   not connected to, up to `maxConnections`, rejoins through the bootstrap list when isolated,
 *   and expires tombstones (ConnectionKeeper).
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
  private readonly own: OwnRecord;
  private readonly intake: RecordIntake;
  private readonly failureDetector: FailureDetector;
  private readonly antiEntropy: AntiEntropy;
  private readonly joiner: Joiner;
  private readonly keeper: ConnectionKeeper;
  private stateValue: CellMeshState = 'new';
  private readonly connectedListeners = new Set<PeerListener>();
  private readonly disconnectedListeners = new Set<PeerListener>();

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
    this.own = new OwnRecord({
      store: init.store,
      signer: init.signer,
      directory: this.directoryState,
      transport,
      clock,
      metrics: this.metrics,
      logger: this.logger,
      republishAfterMs: this.options.probeTimeoutMs,
      mayPublish: () => this.isActive(),
    });
    this.failureDetector = new FailureDetector({
      directory: this.directoryState,
      transport,
      clock,
      random,
      options: this.options,
      metrics: this.metrics,
      logger: this.logger,
      ownOrder: () => this.own.record,
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
      onOwnRecordLacked: () => this.own.lacked(),
    });
    this.joiner = new Joiner({
      transport,
      clock,
      random,
      options: this.options,
      logger: this.logger,
      bootstrap: init.bootstrap ?? [],
      isActive: () => this.isActive(),
      exchange: (peer) => this.antiEntropy.exchange(peer),
      announce: () => {
        void this.own.publish();
        this.failureDetector.publishHeartbeat();
      },
    });
    this.keeper = new ConnectionKeeper({
      directory: this.directoryState,
      transport,
      clock,
      random,
      options: this.options,
      isActive: () => this.isActive(),
      isolated: (nowMs) => this.joiner.rejoinIfIsolated(nowMs),
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
      const incarnation = await this.own.nextIncarnation();
      throwIfAborted(options.signal);
      const { transport } = this.init;
      const first: CellRecord = {
        cellId: this.cellId,
        peerId: transport.self,
        incarnation,
        version: 0,
        status: 'alive',
        ...(this.init.role === undefined ? {} : { role: this.init.role }),
        ...copyContent(this.init.record),
      };
      this.own.install(first);
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
      this.keeper.start();
      void this.own.publish();
      this.logger.info({ cellId: this.cellId, incarnation, peer: transport.self }, 'cell mesh started');
      void this.joiner.join();
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
    return this.joiner.waitJoined(options);
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
    this.own.install(next);
    await this.own.publish();
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
      this.own.installStatus('leaving');
      await this.own.publish();
      throwIfAborted(options.signal);
      if (options.drain !== undefined) await options.drain();
      throwIfAborted(options.signal);
      this.own.installStatus('left');
      await this.own.publish();
      const signed = this.own.signed;
      const peers = this.init.transport.connectedPeers().slice(0, this.options.maxConnections);
      await Promise.allSettled(peers.map((peer) => this.antiEntropy.push(peer, [signed], this.options.leavePushTimeoutMs)));
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
   * does not claim the merchant or does not know the target's peer. Throws MOVE_FAILED when the
   * target is a router, which hosts nothing.
   */
  handoverProof(tenant: string, merchant: string, toCell: string, epoch: number): ClaimProof | undefined {
    const own = this.ownRecord();
    const claim = own.merchants.find((held) => held.tenant === tenant && held.merchant === merchant);
    const target = this.directoryState.get(toCell);
    if (target !== undefined && isRouterRecord(target.record)) throw new CellError(ErrorCode.MoveFailed, `${toCell} is a router: it hosts no merchants`);
    const toPeer = target?.record.peerId;
    if (claim === undefined || toPeer === undefined) return undefined;
    return signHandover(this.init.signer, { tenant, merchant, fromCell: this.cellId, fromPeer: own.peerId, fromEpoch: claim.epoch, toCell, toPeer, epoch });
  }

  /**
   * Records of the cells that can take new work: alive or merely suspect (this one included), by
   * cell id. Routers are members but not cells: they host nothing and are left out.
   */
  liveCells(): CellRecord[] {
    const cells: CellRecord[] = [];
    for (const entry of this.directoryState.values()) {
      if ((entry.liveness === 'alive' || entry.liveness === 'suspect') && !isRouterRecord(entry.record)) cells.push(entry.record);
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

  private assertSignerMatches(): void {
    const bytes = new TextEncoder().encode('cellmesh/signer-check');
    if (!this.init.signer.verify(this.own.record.peerId, bytes, this.init.signer.sign(bytes))) {
      this.stateValue = 'stopped';
      throw new MembershipError('SIGNER_MISMATCH');
    }
  }

  private refute(claim: LivenessClaim): void {
    if (this.stateValue !== 'running' && this.stateValue !== 'leaving') return;
    const current = this.ownRecord();
    if (claim.incarnation < current.incarnation) return;
    const incarnation = Math.max(current.incarnation, claim.incarnation) + 1;
    this.own.install({ ...current, incarnation, version: 0 });
    this.metrics.refuted();
    this.failureDetector.noteRefutation();
    this.logger.info({ claim: claim.kind, claimed: claim.incarnation, incarnation }, 'refuting a claim about this cell');
    void this.own.persistIncarnation(incarnation).then(() => {
      // A later refutation may have moved on; publish whatever is newest.
      void this.own.publish();
      this.failureDetector.publishHeartbeat();
    });
  }

  private peerConnected(peer: PeerId): void {
    this.keeper.connected(peer);
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
    this.keeper.stop();
    if (wasStarted) {
      this.init.transport.unsubscribe(MembershipTopic.directory);
      this.init.transport.setPeerEvents({});
    }
    this.joiner.stop(new MembershipError('STOPPED'));
  }
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new MembershipError('ABORTED');
}
