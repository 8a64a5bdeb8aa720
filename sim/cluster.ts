// The simulated cluster: one slot per cell (its disk, its merchants, the cells it bootstraps
// through) and the incarnation running in it, and the bookkeeping of a cell's life: start, a
// failed start, crash, restart and a graceful leave, with the fault spans they leave in the report.
import type { TenantConfig } from '../cell/settings.js';
import { LimitsConfig } from '../cell/settings.js';
import { membershipOptions, type MembershipOptions, type MembershipPreset } from '../mesh/membership-config.js';
import { StoreError } from '../platform/store/store.js';
import type { DeviceEndpoint } from './device-link.js';
import type { MerchantPlan } from './population.js';
import { sampleIndexes, stream } from './rng.js';
import { SimCellIncarnation, openSimCell } from './sim-cell.js';
import { Life } from './sim-clock.js';
import { SimKeyring } from './sim-keys.js';
import { SimStore } from './sim-store.js';
import { TENANT, TENANT_SECRET, type FaultSpan, type SimWorld } from './sim-world.js';

/** Cells a new or restarted cell bootstraps through. */
const BOOTSTRAP_CELLS = 3;

export interface CellSlot {
  readonly id: string;
  readonly index: number;
  readonly merchants: MerchantPlan[];
  readonly disk: SimStore;
  readonly bootstrap: string[];
  incarnation: SimCellIncarnation | undefined;
  /** The life of the latest start; it ends with a crash even before the incarnation is built. */
  life: Life | undefined;
  startCount: number;
  status: 'up' | 'crashed' | 'left';
  readonly downIntervals: Array<[number, number]>;
  downSinceMs: number | undefined;
  /** When a disk fault was in force ([from, to]; to undefined while it lasts). */
  readonly diskFaultIntervals: Array<[number, number | undefined]>;
}

export interface ClusterHooks {
  /** A crashed cell was started again (by the timeline, the final heal or its supervisor). */
  readonly restarted: (slot: CellSlot) => void;
}

export function cellIdOf(index: number): string {
  return `cell-${String(index).padStart(4, '0')}`;
}

export class Cluster {
  readonly slots = new Map<string, CellSlot>();
  /** Cell starts that failed on their disk (the supervisor started them again). */
  failedStarts = 0;
  private readonly keyring: SimKeyring;
  private readonly limits = LimitsConfig.parse({});
  private readonly meshPreset: MembershipPreset;
  private readonly meshOptions: Partial<MembershipOptions>;

  constructor(
    private readonly world: SimWorld,
    private readonly hooks: ClusterHooks,
    /** Test only: every cell gets a disk that acknowledges writes before they are durable (sim/sim-store.ts). */
    private readonly brokenDurability: boolean,
  ) {
    const { scenario } = world;
    this.keyring = new SimKeyring(world.seed, scenario.mesh.signatures);
    this.meshPreset = scenario.mesh.preset as MembershipPreset;
    this.meshOptions = scenario.mesh.timings as Partial<MembershipOptions>;
    // Validates the overrides against the preset now, rather than in the first cell.
    membershipOptions(this.meshOptions, this.meshPreset);
  }

  upSlots(): CellSlot[] {
    return [...this.slots.values()].filter((slot) => slot.status === 'up');
  }

  /** The running incarnation of `cellId` when it accepts device connections. */
  deviceEndpointOf(cellId: string): DeviceEndpoint | undefined {
    const incarnation = this.slots.get(cellId)?.incarnation;
    return incarnation !== undefined && incarnation.acceptsDevices ? incarnation : undefined;
  }

  /** A new cell with `merchantCount` merchants of its own, bootstrapping through up to three running cells. */
  addSlot(index: number, merchantCount: number): CellSlot {
    const { world } = this;
    const id = cellIdOf(index);
    const merchants = world.population.addMerchants(id, index, merchantCount);
    const existing = this.upSlots();
    const bootstrap = sampleIndexes(world.setupRandom, existing.length, Math.min(BOOTSTRAP_CELLS, existing.length)).map((at) => existing[at]!.id);
    const slot: CellSlot = {
      id,
      index,
      merchants,
      disk: new SimStore(world.clock, world.scenario.network.storeWrite, stream(world.seed, `disk/${id}`), this.brokenDurability),
      bootstrap,
      incarnation: undefined,
      life: undefined,
      startCount: 0,
      status: 'up',
      downIntervals: [],
      downSinceMs: undefined,
      diskFaultIntervals: [],
    };
    this.slots.set(id, slot);
    return slot;
  }

  startCell(slot: CellSlot): void {
    const { world } = this;
    // A merchant with a desk has its agents in the config, as an operator seeds them: the cell's
    // people directory creates them on first start, and they travel with the merchant's moves.
    const merchants = slot.merchants.map((merchant) => (merchant.desk === undefined ? { id: merchant.id } : { id: merchant.id, agents: merchant.desk.map((agent) => ({ id: agent.id, capacity: agent.capacity, groups: [...agent.groups] })) }));
    const tenant: TenantConfig = { id: TENANT, secret: TENANT_SECRET, origins: [], merchants };
    const bootstrap = slot.bootstrap.filter((id) => this.slots.get(id)?.status !== 'left');
    if (slot.startCount > 0 && bootstrap.length < BOOTSTRAP_CELLS) {
      // An operator would point a cell whose seeds are gone at others.
      const others = this.upSlots().filter((other) => other !== slot && !bootstrap.includes(other.id));
      for (const at of sampleIndexes(world.faultRandom, others.length, BOOTSTRAP_CELLS - bootstrap.length)) bootstrap.push(others[at]!.id);
    }
    const life = new Life();
    slot.life = life;
    slot.incarnation = undefined;
    const opening = openSimCell({
      cellId: slot.id,
      seed: world.seed,
      life,
      startCount: slot.startCount,
      clock: world.clock,
      network: world.network,
      keyring: this.keyring,
      disk: slot.disk,
      tenant,
      limits: this.limits,
      desk: world.deskConfig,
      preset: this.meshPreset,
      meshOptions: this.meshOptions,
      bootstrap,
    });
    slot.startCount++;
    opening
      .then((incarnation) => {
        slot.incarnation = incarnation;
        return incarnation.start();
      })
      .catch((error: unknown) => {
        if (!life.alive) return;
        if (causedByStore(error)) {
          // A cell whose disk fails at start exits; its supervisor starts it again.
          this.failedStarts++;
          this.crash(slot);
          world.clock.setTimer(1_000, () => this.restart(slot));
          return;
        }
        world.history.violation('unhandled-rejection', `cell ${slot.id} failed to start: ${messageOf(error)}`, world.clock.now());
      });
  }

  crash(slot: CellSlot): void {
    if (slot.status !== 'up') return;
    if (slot.incarnation !== undefined) {
      slot.incarnation.crash();
    } else {
      // Still opening its disk: the process dies before it served anything.
      slot.life?.end();
      slot.disk.crash();
    }
    slot.status = 'crashed';
    slot.downSinceMs = this.world.clock.now();
    this.world.faultSpans.push({ kind: 'crash', startS: this.world.seconds(), endS: undefined, detail: slot.id });
  }

  restart(slot: CellSlot): void {
    const { world } = this;
    if (slot.status !== 'crashed') return;
    slot.status = 'up';
    slot.downIntervals.push([slot.downSinceMs ?? world.clock.now(), world.clock.now()]);
    slot.downSinceMs = undefined;
    const span = world.faultSpans.find((candidate) => candidate.kind === 'crash' && candidate.detail === slot.id && candidate.endS === undefined);
    if (span !== undefined) span.endS = world.seconds();
    this.startCell(slot);
    this.hooks.restarted(slot);
  }

  /**
   * A graceful leave (SIGTERM): the cell is marked left, `beforeDrain` lets the world react
   * (its merchants' conversations end, its devices go), then the cell drains and leaves.
   */
  leave(slot: CellSlot, beforeDrain: (incarnation: SimCellIncarnation) => void): void {
    const { world } = this;
    const incarnation = slot.incarnation;
    if (slot.status !== 'up' || incarnation === undefined) return;
    slot.status = 'left';
    slot.downSinceMs = world.clock.now();
    const span: FaultSpan = { kind: 'leave', startS: world.seconds(), endS: undefined, detail: slot.id };
    world.faultSpans.push(span);
    beforeDrain(incarnation);
    void incarnation.leave().then(() => {
      span.endS = world.seconds();
    });
  }

  /** Outbox entries waiting in the running cells: for live destinations, and for cells that left. */
  outboxWaiting(): { live: number; gone: number } {
    const total = { live: 0, gone: 0 };
    const gone = (cellId: string): boolean => this.slots.get(cellId)?.status === 'left';
    for (const slot of this.upSlots()) {
      const waiting = slot.incarnation?.outboxWaiting(gone);
      total.live += waiting?.live ?? 0;
      total.gone += waiting?.gone ?? 0;
    }
    return total;
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Whether `error` is, or was caused by, a failure of the store (a disk fault, in the simulator). */
function causedByStore(error: unknown): boolean {
  for (let cause = error, depth = 0; cause !== undefined && depth < 8; cause = (cause as { cause?: unknown }).cause, depth++) {
    if (cause instanceof StoreError) return true;
    if (typeof cause !== 'object' || cause === null) return false;
  }
  return false;
}
