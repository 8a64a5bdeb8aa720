import { CellCore } from '../cell/cell-core.js';
import type { LimitsConfig, TenantConfig } from '../cell/settings.js';
import { silentLogger } from '../platform/logger.js';
import { noopMetrics } from '../platform/metrics.js';
import { MerchantClaimsStore, meshMerchantClaims, recordClaims, tenantsHosting } from '../mesh/merchant-claims.js';
import type { MoveHost } from '../cell/move-host.js';
import { MerchantMover } from '../mesh/merchant-move.js';
import { CellMetrics } from '../cell/metrics.js';
import type { Store } from '../platform/store/store.js';
import { CellMesh } from '../mesh/cell-mesh.js';
import { createClusterPort } from '../mesh/cluster-port-adapter.js';
import { publishLoadPeriodically } from '../mesh/load-publisher.js';
import { LocationService } from '../mesh/location.js';
import type { MembershipOptions, MembershipPreset } from '../mesh/membership-config.js';
import { memoryAddress, type MemoryNetwork, type MemoryTransport } from '../mesh/memory-network.js';
import { Inbox } from '../mesh/inbox.js';
import { Outbox } from '../mesh/outbox.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { DeviceEndpoint, DeviceLink } from './device-link.js';
import { FencedTransport } from './fenced-transport.js';
import { stream } from './rng.js';
import { FencedClock, type Life, type SimClock } from './sim-clock.js';
import type { SimKeyring } from './sim-keys.js';
import type { SimStore } from './sim-store.js';

export interface SimCellInit {
  readonly cellId: string;
  readonly seed: number;
  /** The life of this incarnation: it ends with a crash or a leave, and with it every pending call. */
  readonly life: Life;
  /** 0 for the first start of this cell, 1 after its first restart, ... (names its random stream). */
  readonly startCount: number;
  readonly clock: SimClock;
  readonly network: MemoryNetwork;
  readonly keyring: SimKeyring;
  readonly disk: SimStore;
  /** The tenant as the cell's config has it (the merchants it was set up with; moves may have changed what it hosts). */
  readonly tenant: TenantConfig;
  readonly limits: LimitsConfig;
  readonly preset: MembershipPreset;
  readonly meshOptions: Partial<MembershipOptions>;
  /** Cell ids to join through. */
  readonly bootstrap: readonly string[];
}

export function peerOf(cellId: string): string {
  return `peer-${cellId}`;
}

/**
 * Starts an incarnation as cell/cell.ts starts a cell: open the disk, read which merchants moves
 * left with this cell, then build the core on them. Never settles when the incarnation dies first
 * (a crash during start-up), as a dead process's calls never return.
 */
export async function openSimCell(init: SimCellInit): Promise<SimCellIncarnation> {
  await init.disk.open();
  const claims = new MerchantClaimsStore(init.disk.view(init.life));
  await claims.load();
  return new SimCellIncarnation(init, claims);
}

/**
 * One incarnation of a simulated cell: the production core (CellCore) and mesh services
 * (CellMesh, LocationService, Outbox, Inbox, the cluster port adapter, the merchant mover) wired
 * as cell/cell.ts and mesh/mesh-node.ts wire them, on the simulator's ports: a fenced virtual
 * clock, a seeded random stream, the cell's simulated disk and a MemoryTransport. A crash ends
 * the incarnation; a restart is a new one on the same disk.
 */
export class SimCellIncarnation implements DeviceEndpoint {
  readonly life: Life;
  readonly links = new Set<DeviceLink>();
  readonly core: CellCore;
  readonly maxFrameBytes: number;
  readonly metrics = new CellMetrics(noopMetrics);
  readonly clock: Clock;
  readonly store: Store;
  mesh: CellMesh | undefined;
  location: LocationService | undefined;
  outbox: Outbox | undefined;
  inbox: Inbox | undefined;
  transport: MemoryTransport | undefined;
  mover: MerchantMover | undefined;
  private loadTimer: TimerHandle | undefined;
  private state: 'starting' | 'running' | 'leaving' | 'left' | 'crashed' = 'starting';

  private readonly hosted: ReturnType<MerchantClaimsStore['hosted']>;
  private readonly moveHost: MoveHost;

  constructor(
    private readonly init: SimCellInit,
    private readonly claims: MerchantClaimsStore,
  ) {
    this.life = init.life;
    this.clock = new FencedClock(init.clock, this.life);
    this.store = init.disk.view(this.life);
    this.maxFrameBytes = init.limits.maxFrameBytes;
    this.hosted = claims.hosted([init.tenant]);
    this.core = new CellCore({
      cellId: init.cellId,
      tenants: tenantsHosting([init.tenant], this.hosted),
      limits: init.limits,
      clock: this.clock,
      random: stream(init.seed, `cell/${init.cellId}/${init.startCount}/core`),
      store: this.store,
      metrics: this.metrics,
      logger: silentLogger,
    });
    this.moveHost = this.core.moveHost();
  }

  /** Whether this incarnation's core hosts `merchant` now (its config, then the moves). */
  hosts(tenant: string, merchant: string): boolean {
    return this.moveHost.hosts(tenant, merchant);
  }

  get cellId(): string {
    return this.init.cellId;
  }

  get status(): 'starting' | 'running' | 'leaving' | 'left' | 'crashed' {
    return this.state;
  }

  /** Accepts devices (from construction, as the access server listens before the mesh starts) unless gone. */
  get acceptsDevices(): boolean {
    return this.state === 'starting' || this.state === 'running';
  }

  /** Starts the mesh node and joins the cell to its cluster (cell/cell.ts's startCellMesh, in order). */
  async start(): Promise<void> {
    const { init } = this;
    const random = stream(init.seed, `cell/${init.cellId}/${init.startCount}/mesh`);
    const peer = peerOf(init.cellId);
    if (init.network.endpoint(peer) !== undefined) init.network.forget(peer);
    const inner = init.network.createTransport(peer);
    this.transport = inner;
    const transport = new FencedTransport(inner, this.life);
    await transport.start();
    const { merchants, handedOver } = recordClaims(this.hosted, this.claims);
    const mesh = new CellMesh({
      cellId: init.cellId,
      transport,
      clock: this.clock,
      random,
      store: this.store,
      signer: init.keyring.signerFor(peer),
      record: {
        endpoints: { ws: `ws://${init.cellId}.sim/v1/ws`, http: `http://${init.cellId}.sim`, p2p: inner.addresses() },
        tenants: [init.tenant.id],
        merchants,
        handedOver,
        load: { devices: 0, messagesPerSecond: 0 },
        capacity: { maxDevices: 100_000 },
      },
      bootstrap: init.bootstrap.map((cellId) => memoryAddress(peerOf(cellId))),
      options: init.meshOptions,
      preset: init.preset,
      logger: silentLogger,
    });
    this.mesh = mesh;
    const cellOfPeer = (candidate: string): string | undefined => mesh.directory.cellOfPeer(candidate);
    const location = new LocationService({ transport, clock: this.clock, random, cellId: init.cellId, cellOfPeer, localUsers: (tenant, users) => this.core.localUsers(tenant, users) });
    const maxEntryBytes = 2 * init.limits.maxFrameBytes;
    const outbox = new Outbox(
      { store: this.store, transport, clock: this.clock, random, cellId: init.cellId, resolvePeer: (cellId) => mesh.peerOf(cellId) },
      { maxEntryBytes, maxBatchBytes: Math.max(256 * 1024, 4 * maxEntryBytes) },
    );
    const inbox = new Inbox({ store: this.store, transport, cellOfPeer });
    this.location = location;
    this.outbox = outbox;
    this.inbox = inbox;
    await mesh.start();
    location.start();
    await outbox.start();
    inbox.start();
    mesh.onPeerConnected((connected) => {
      const cellId = cellOfPeer(connected);
      if (cellId !== undefined) outbox.nudge(cellId);
    });
    // As mesh/mesh-node.ts does in a cell process; a crash ends the incarnation's timers with it.
    this.loadTimer = publishLoadPeriodically(mesh, this.clock, { devices: () => this.core.presence.connections, messagesTotal: () => this.metrics.messagesInTotal() }, () => undefined);
    const clusterPort = createClusterPort({ cellId: init.cellId, directory: mesh.directory, location, outbox, inbox, transport });
    this.core.attachCluster(clusterPort);
    this.mover = new MerchantMover({
      cellId: init.cellId,
      store: this.store,
      cluster: clusterPort,
      clock: this.clock,
      logger: silentLogger,
      host: this.moveHost,
      claims: meshMerchantClaims(mesh, this.claims),
    });
    if (this.state === 'starting') this.state = 'running';
  }

  /** kill -9: everything in memory is gone; the disk keeps what was durable. */
  crash(): void {
    if (this.state === 'crashed' || this.state === 'left') return;
    this.state = 'crashed';
    this.life.end();
    this.init.disk.crash();
    for (const link of [...this.links]) link.breakByCrash();
    this.links.clear();
    // The other cells see the connections drop (the OS resets them when a process dies).
    this.stopTransport();
  }

  /** SIGTERM: 'leaving', drain the devices and writes, 'left', then stop (mesh/mesh-node.ts's leave). */
  async leave(): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'leaving';
    this.loadTimer?.cancel();
    const mesh = this.mesh!;
    await mesh.leave({ drain: () => this.core.drain() }).catch(() => undefined);
    this.location?.stop();
    await this.outbox?.stop();
    await this.inbox?.stop();
    await mesh.stop();
    this.state = 'left';
    this.life.end();
    for (const link of [...this.links]) link.breakByCrash();
    this.links.clear();
    this.stopTransport();
  }

  /** Stops the transport (synchronously: MemoryTransport.stop does not wait) and removes the peer from the network. */
  private stopTransport(): void {
    const transport = this.transport;
    if (transport === undefined) return;
    void transport.stop();
    const peer = peerOf(this.init.cellId);
    if (this.init.network.endpoint(peer) === transport) this.init.network.forget(peer);
  }

  /** Entries waiting in this cell's outbox: for live destinations, and for destinations `gone` says left the cluster. */
  outboxWaiting(gone: (cellId: string) => boolean): { live: number; gone: number } {
    const waiting = { live: 0, gone: 0 };
    if (this.outbox === undefined || !this.life.alive) return waiting;
    for (const [destination, info] of this.outbox.waiting()) {
      if (gone(destination)) waiting.gone += info.entries;
      else waiting.live += info.entries;
    }
    return waiting;
  }
}
