import { MemoryStore } from '../platform/store/memory-store.js';
import { TrackedStore, whenStoresIdle } from './tracked-store.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { MemoryMetrics } from '../platform/memory-metrics.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import type { CellRecordContent, MemberRole, MerchantClaim } from '../mesh/cell-record.js';
import { compareRecordOrder } from '../mesh/cell-record.js';
import { CellMesh } from '../mesh/cell-mesh.js';
import type { MembershipOptions } from '../mesh/membership-config.js';
import { memoryAddress, MemoryNetwork, type MemoryTransport } from '../mesh/memory-network.js';
import { meshMetricsOn } from '../mesh/mesh-metrics.js';
import { ed25519PublicKeyOfSeed, ed25519SeedFrom, Ed25519RecordSigner, PublicKeyRegistry } from '../mesh/record-signer.js';
import type {
  MeshMessage,
  MeshTransport,
  MessageHandler,
  MessageValidator,
  PeerEvents,
  PeerId,
  RequestHandler,
  RequestOptions,
} from '../mesh/transport.js';

/**
 * A harness for membership tests (and later the simulator's mesh scenarios): cells running the
 * real CellMesh on a MemoryNetwork, a ManualClock and seeded randomness, so every run of a seed
 * is the same. Not part of the public surface.
 */

/** Holds back everything a cell would do while its event loop is "stalled", then runs it late. */
export class StallGate {
  private stalledUntilMs: number | undefined;
  private queue: Array<() => void> = [];

  constructor(private readonly clock: ManualClock) {}

  get stalled(): boolean {
    return this.stalledUntilMs !== undefined;
  }

  /** From now, for `durationMs` of virtual time, nothing of this cell runs; then all of it, in order. */
  stall(durationMs: number): void {
    this.stalledUntilMs = this.clock.now() + durationMs;
    this.clock.setTimer(durationMs, () => this.release());
  }

  run(work: () => void): void {
    if (this.stalledUntilMs === undefined) {
      work();
      return;
    }
    if (this.queue.length >= 100_000) throw new Error('stall queue overflow');
    this.queue.push(work);
  }

  whenOpen(): Promise<void> {
    if (this.stalledUntilMs === undefined) return Promise.resolve();
    return new Promise<void>((resolve) => this.run(resolve));
  }

  private release(): void {
    this.stalledUntilMs = undefined;
    const queued = this.queue;
    this.queue = [];
    for (const work of queued) work();
  }
}

/** A clock whose timers, while the gate is stalled, fire late (when it opens). */
export class GatedClock implements Clock {
  constructor(
    private readonly base: Clock,
    private readonly gate: StallGate,
  ) {}

  now(): number {
    return this.base.now();
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    let cancelled = false;
    const handle = this.base.setTimer(delayMs, () =>
      this.gate.run(() => {
        if (!cancelled) callback();
      }),
    );
    return {
      cancel: () => {
        cancelled = true;
        handle.cancel();
      },
    };
  }
}

/** A transport whose inbound messages, requests and answers wait while the gate is stalled. */
export class GatedTransport implements MeshTransport {
  constructor(
    readonly inner: MeshTransport,
    private readonly gate: StallGate,
  ) {}

  get self(): PeerId {
    return this.inner.self;
  }

  addresses(): string[] {
    return this.inner.addresses();
  }

  start(): Promise<void> {
    return this.inner.start();
  }

  stop(): Promise<void> {
    return this.inner.stop();
  }

  async dial(address: string, options?: { signal?: AbortSignal }): Promise<PeerId> {
    const peer = await this.inner.dial(address, options);
    await this.gate.whenOpen();
    return peer;
  }

  addPeerAddresses(peer: PeerId, addresses: readonly string[]): void {
    this.inner.addPeerAddresses(peer, addresses);
  }

  hangUp(peer: PeerId): Promise<void> {
    return this.inner.hangUp(peer);
  }

  connectedPeers(): PeerId[] {
    return this.inner.connectedPeers();
  }

  setPeerEvents(events: PeerEvents): void {
    this.inner.setPeerEvents({
      onPeerConnected: (peer) => this.gate.run(() => events.onPeerConnected?.(peer)),
      onPeerDisconnected: (peer) => this.gate.run(() => events.onPeerDisconnected?.(peer)),
    });
  }

  subscribe(topic: string, handler: MessageHandler, validator?: MessageValidator): void {
    this.inner.subscribe(topic, (message: MeshMessage) =>
      this.gate.run(() => {
        if (validator === undefined || validator(message) === 'accept') handler(message);
      }),
    );
  }

  unsubscribe(topic: string): void {
    this.inner.unsubscribe(topic);
  }

  publish(topic: string, data: Uint8Array): Promise<void> {
    return this.inner.publish(topic, data);
  }

  handle(protocol: string, handler: RequestHandler): void {
    this.inner.handle(protocol, async (from, request) => {
      await this.gate.whenOpen();
      return handler(from, request);
    });
  }

  request(peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    return this.inner.request(peer, protocol, data, options).then(
      async (answer) => {
        await this.gate.whenOpen();
        return answer;
      },
      async (error: unknown) => {
        await this.gate.whenOpen();
        throw error;
      },
    );
  }
}

export interface HarnessInit {
  readonly seed: number;
  /** Latency of one delivery, drawn uniformly in [min, max] ms; default [1, 1]. */
  readonly latencyMs?: readonly [number, number];
  /** Options every cell gets (a cell's own options override them). */
  readonly options?: Partial<MembershipOptions>;
}

export interface HarnessCellOptions {
  /** Cell ids to join through (their memory addresses are used). */
  readonly bootstrap?: readonly string[];
  readonly merchants?: readonly MerchantClaim[];
  readonly tenants?: readonly string[];
  /** Reuse a store (a restart); a fresh MemoryStore otherwise. */
  readonly store?: TrackedStore;
  readonly options?: Partial<MembershipOptions>;
  /** Wrap clock and transport in a StallGate so the test can stall this cell. */
  readonly stallable?: boolean;
  /** `router`: an observer that hosts nothing (no tenants, no merchants). */
  readonly role?: MemberRole;
}

export interface HarnessCell {
  readonly cellId: string;
  readonly peerId: PeerId;
  readonly mesh: CellMesh;
  readonly transport: MemoryTransport;
  readonly store: TrackedStore;
  /** What the cell's membership counted (`cellmesh_mesh_*`). */
  readonly metrics: MemoryMetrics;
  readonly gate: StallGate | undefined;
}

export class MeshHarness {
  readonly clock = new ManualClock();
  readonly random: SeededRandom;
  readonly network: MemoryNetwork;
  readonly keys = new PublicKeyRegistry();
  readonly cells = new Map<string, HarnessCell>();
  /** Every store a cell has used, crashed cells' included. */
  private readonly stores = new Set<TrackedStore>();
  private readonly seeds = new Map<PeerId, Uint8Array>();
  private readonly keyRandom: SeededRandom;
  private cellCount = 0;

  constructor(private readonly init: HarnessInit) {
    this.random = new SeededRandom(init.seed);
    this.keyRandom = new SeededRandom(init.seed ^ 0x5eed);
    const [minMs, maxMs] = init.latencyMs ?? [1, 1];
    this.network = new MemoryNetwork({
      clock: this.clock,
      random: this.random,
      latencyMs: (_from, _to, random) => minMs + Math.floor(random.next() * (maxMs - minMs + 1)),
    });
  }

  static peerOf(cellId: string): PeerId {
    return `peer-${cellId}`;
  }

  static addressOf(cellId: string): string {
    return memoryAddress(MeshHarness.peerOf(cellId));
  }

  /** The signing key seed of a peer, created once, so a restarted cell keeps its identity. */
  seedOf(peer: PeerId): Uint8Array {
    let seed = this.seeds.get(peer);
    if (seed === undefined) {
      seed = ed25519SeedFrom(this.keyRandom);
      this.seeds.set(peer, seed);
      this.keys.set(peer, ed25519PublicKeyOfSeed(seed));
    }
    return seed;
  }

  signerFor(peer: PeerId): Ed25519RecordSigner {
    return new Ed25519RecordSigner({ privateKey: this.seedOf(peer), publicKeyOf: this.keys.publicKeyOf });
  }

  /** Creates, and starts, a cell (its transport and its CellMesh). */
  async addCell(cellId: string, options: HarnessCellOptions = {}): Promise<HarnessCell> {
    const peerId = MeshHarness.peerOf(cellId);
    if (this.network.endpoint(peerId) !== undefined) this.network.forget(peerId);
    const memoryTransport = this.network.createTransport(peerId);
    await memoryTransport.start();
    const gate = options.stallable === true ? new StallGate(this.clock) : undefined;
    const transport: MeshTransport = gate === undefined ? memoryTransport : new GatedTransport(memoryTransport, gate);
    const clock: Clock = gate === undefined ? this.clock : new GatedClock(this.clock, gate);
    const store = options.store ?? new TrackedStore(new MemoryStore());
    if (options.store === undefined) await store.open();
    this.stores.add(store);
    const metrics = new MemoryMetrics();
    const content: CellRecordContent = {
      endpoints: { ws: `ws://${cellId}.cells.test:8080/ws`, http: `http://${cellId}.cells.test:8080`, p2p: memoryTransport.addresses() },
      tenants: options.role === 'router' ? [] : [...(options.tenants ?? ['mall'])],
      merchants: [...(options.merchants ?? [])],
      load: { devices: 0, messagesPerSecond: 0 },
      capacity: { maxDevices: 10_000 },
    };
    const mesh = new CellMesh({
      cellId,
      transport,
      clock,
      random: new SeededRandom(this.init.seed * 7919 + ++this.cellCount),
      store,
      signer: this.signerFor(peerId),
      record: content,
      role: options.role,
      bootstrap: (options.bootstrap ?? []).map((id) => MeshHarness.addressOf(id)),
      options: { ...this.init.options, ...options.options },
      metrics: meshMetricsOn(metrics),
    });
    const cell: HarnessCell = { cellId, peerId, mesh, transport: memoryTransport, store, metrics, gate };
    this.cells.set(cellId, cell);
    await mesh.start();
    return cell;
  }

  cell(cellId: string): HarnessCell {
    const cell = this.cells.get(cellId);
    if (cell === undefined) throw new Error(`no cell ${cellId}`);
    return cell;
  }

  /** Crash: timers stop and the transport goes down (the others see the connections close). */
  async crash(cellId: string): Promise<void> {
    const cell = this.cell(cellId);
    await cell.mesh.stop();
    await cell.transport.stop();
  }

  /** Cells whose mesh runs. */
  running(): HarnessCell[] {
    return [...this.cells.values()].filter((cell) => cell.mesh.state === 'running' || cell.mesh.state === 'leaving');
  }

  /**
   * Waits until the cells are done with the present instant: the network and the gates run on
   * the clock, so only a store operation can wake a cell while time stands still (TrackedStore).
   */
  settle(): Promise<void> {
    return whenStoresIdle(this.stores);
  }

  /** Advances virtual time 1 ms at a time, letting the cells finish each instant (`settle`). */
  async run(durationMs: number): Promise<void> {
    const endMs = this.clock.now() + durationMs;
    while (this.clock.now() < endMs) {
      this.clock.advance(1);
      await this.settle();
    }
  }

  /**
   * Runs until `condition` holds (checked every ms); resolves with the virtual time it took.
   * Throws when it does not hold within `maxMs`.
   */
  async runUntil(condition: () => boolean, maxMs: number): Promise<number> {
    const startMs = this.clock.now();
    await this.settle();
    while (!condition()) {
      if (this.clock.now() - startMs >= maxMs) throw new Error(`condition not met within ${maxMs} ms of virtual time`);
      this.clock.advance(1);
      await this.settle();
    }
    return this.clock.now() - startMs;
  }

  /**
   * True when every running cell holds the same record order and liveness for every cell, and
   * (when given) every running cell holds `expectedCells` entries.
   */
  converged(expectedCells?: number): boolean {
    const running = this.running();
    const reference = running[0];
    if (reference === undefined) return true;
    const view = viewOf(reference.mesh);
    if (expectedCells !== undefined && view.size !== expectedCells) return false;
    return running.every((cell) => sameView(view, viewOf(cell.mesh)));
  }
}

type View = Map<string, string>;

function viewOf(mesh: CellMesh): View {
  const view: View = new Map();
  for (const entry of mesh.directory.values()) {
    view.set(entry.record.cellId, `${entry.record.incarnation}.${entry.record.version}.${entry.liveness}`);
  }
  return view;
}

function sameView(a: View, b: View): boolean {
  if (a.size !== b.size) return false;
  for (const [cellId, value] of a) if (b.get(cellId) !== value) return false;
  return true;
}

/** The record order a mesh holds for a cell, as "incarnation.version", or undefined. */
export function orderHeld(mesh: CellMesh, cellId: string): string | undefined {
  const record = mesh.directory.get(cellId)?.record;
  return record === undefined ? undefined : `${record.incarnation}.${record.version}`;
}

/** True when `mesh` holds a record of `cellId` at least as new as `order`. */
export function holdsAtLeast(mesh: CellMesh, cellId: string, order: { incarnation: number; version: number }): boolean {
  const record = mesh.directory.get(cellId)?.record;
  return record !== undefined && compareRecordOrder(record, order) >= 0;
}
