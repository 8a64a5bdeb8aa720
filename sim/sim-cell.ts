import type { CellCore } from '../cell/cell-core.js';
import type { DeskConfig, LimitsConfig, TenantConfig } from '../cell/settings.js';
import type { MoveHost } from '../cell/move-host.js';
import type { CellMesh } from '../mesh/cell-mesh.js';
import type { LocationService } from '../mesh/location.js';
import type { MembershipOptions, MembershipPreset } from '../mesh/membership-config.js';
import type { MerchantMover } from '../mesh/merchant-move.js';
import { memoryAddress, type MemoryNetwork, type MemoryTransport } from '../mesh/memory-network.js';
import type { Inbox } from '../mesh/inbox.js';
import type { Outbox } from '../mesh/outbox.js';
import type { Clock } from '../platform/clock.js';
import { silentLogger } from '../platform/logger.js';
import { noopMetrics } from '../platform/metrics.js';
import type { Store } from '../platform/store/store.js';
import { assembleCell, type AssembledCell, type AssembledMesh } from '../assembly/assemble-cell.js';
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
  /** The desk's settings (the scenario's `desk`; the desks' agents come with `tenant`). */
  readonly desk: DeskConfig;
  readonly preset: MembershipPreset;
  readonly meshOptions: Partial<MembershipOptions>;
  /** Cell ids to join through. */
  readonly bootstrap: readonly string[];
}

export function peerOf(cellId: string): string {
  return `peer-${cellId}`;
}

/**
 * Starts an incarnation as a process starts a cell, through the same assembly
 * (assembly/assemble-cell.ts): open the disk, read which merchants moves left with this cell,
 * build the core on them and accept devices; `start()` then waits for the mesh to be joined.
 * Never settles when the incarnation dies first (a crash during start-up), as a dead process's
 * calls never return.
 */
export function openSimCell(init: SimCellInit): Promise<SimCellIncarnation> {
  const incarnation = new SimCellIncarnation(init);
  return incarnation.opened.then(() => incarnation);
}

/**
 * One incarnation of a simulated cell: the production core and mesh services, assembled by
 * assembleCell on the simulator's ports: a fenced virtual clock, seeded random streams, the
 * cell's simulated disk and a MemoryTransport. A crash ends the incarnation; a restart is a new
 * one on the same disk.
 */
export class SimCellIncarnation implements DeviceEndpoint {
  readonly life: Life;
  readonly links = new Set<DeviceLink>();
  readonly maxFrameBytes: number;
  readonly clock: Clock;
  readonly store: Store;
  /** Resolves once the core exists and devices are accepted (before the mesh is joined). */
  readonly opened: Promise<void>;
  /** The MemoryTransport under the fence (the simulator cuts and heals its links). */
  transport: MemoryTransport | undefined;
  private opening: { core: CellCore; moveHost: MoveHost } | undefined;
  private cluster: AssembledMesh<FencedTransport> | undefined;
  private readonly assembled: Promise<AssembledCell<FencedTransport>>;
  private accepting = true;
  private state: 'starting' | 'running' | 'leaving' | 'left' | 'crashed' = 'starting';

  constructor(private readonly init: SimCellInit) {
    this.life = init.life;
    this.clock = new FencedClock(init.clock, this.life);
    this.store = init.disk.view(this.life);
    this.maxFrameBytes = init.limits.maxFrameBytes;
    let markOpened!: () => void;
    let failOpening!: (error: unknown) => void;
    this.opened = new Promise<void>((resolve, reject) => {
      markOpened = resolve;
      failOpening = reject;
    });
    this.assembled = this.assemble(() => markOpened());
    // A failure before the core exists rejects `opened`; after, `start()` reports it.
    this.assembled.catch(failOpening);
  }

  private async assemble(onOpen: () => void): Promise<AssembledCell<FencedTransport>> {
    const { init } = this;
    const peer = peerOf(init.cellId);
    await init.disk.open();
    return assembleCell({
      cellId: init.cellId,
      tenants: [init.tenant],
      limits: init.limits,
      desk: init.desk,
      clock: this.clock,
      random: stream(init.seed, `cell/${init.cellId}/${init.startCount}/core`),
      store: this.store,
      logger: silentLogger,
      // Nothing reads a simulated cell's figures: counting them would only cost time.
      metrics: noopMetrics,
      devices: {
        open: async ({ core }) => {
          this.opening = { core, moveHost: core.moveHost() };
          onOpen();
          return { ws: `ws://${init.cellId}.sim/v1/ws`, http: `http://${init.cellId}.sim` };
        },
        stopAccepting: () => {
          this.accepting = false;
        },
      },
      mesh: {
        createTransport: async () => {
          if (init.network.endpoint(peer) !== undefined) init.network.forget(peer);
          const inner = init.network.createTransport(peer);
          this.transport = inner;
          return { transport: new FencedTransport(inner, this.life), signer: init.keyring.signerFor(peer) };
        },
        bootstrap: init.bootstrap.map((cellId) => memoryAddress(peerOf(cellId))),
        options: init.meshOptions,
        preset: init.preset,
        random: stream(init.seed, `cell/${init.cellId}/${init.startCount}/mesh`),
      },
    });
  }

  /** The production core of this incarnation; there once `opened` resolved. */
  get core(): CellCore {
    if (this.opening === undefined) throw new Error(`cell ${this.init.cellId} has no core before it opened`);
    return this.opening.core;
  }

  get mesh(): CellMesh | undefined {
    return this.cluster?.mesh;
  }

  get location(): LocationService | undefined {
    return this.cluster?.location;
  }

  get outbox(): Outbox | undefined {
    return this.cluster?.outbox;
  }

  get inbox(): Inbox | undefined {
    return this.cluster?.inbox;
  }

  get mover(): MerchantMover | undefined {
    return this.cluster?.mover;
  }

  /** Whether the merchant's desk runs here now: hosted, and its state read from the store (not still loading). */
  deskRuns(tenant: string, merchant: string): boolean {
    return this.opening !== undefined && this.hosts(tenant, merchant) && this.opening.core.desk.hasDesk(tenant, merchant);
  }

  /** Whether this incarnation's core hosts `merchant` now (its config, then the moves). */
  hosts(tenant: string, merchant: string): boolean {
    return this.opening?.moveHost.hosts(tenant, merchant) ?? false;
  }

  get cellId(): string {
    return this.init.cellId;
  }

  get status(): 'starting' | 'running' | 'leaving' | 'left' | 'crashed' {
    return this.state;
  }

  /** Accepts devices once the core exists (the access server listens before the mesh starts), unless gone. */
  get acceptsDevices(): boolean {
    return this.opening !== undefined && this.accepting && (this.state === 'starting' || this.state === 'running');
  }

  /** Waits until the cell has joined its cluster (the rest of the assembly after `opened`). */
  async start(): Promise<void> {
    const cell = await this.assembled;
    this.cluster = cell.cluster;
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

  /** SIGTERM: the assembly's graceful stop ('leaving', drain the devices and writes, 'left', stop). */
  async leave(): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'leaving';
    await (await this.assembled).stop();
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
    const outbox = this.cluster?.outbox;
    if (outbox === undefined || !this.life.alive) return waiting;
    for (const [destination, info] of outbox.waiting()) {
      if (gone(destination)) waiting.gone += info.entries;
      else waiting.live += info.entries;
    }
    return waiting;
  }
}
