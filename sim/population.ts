import type { Random } from '../platform/random.js';
import { pickIndex, ZipfSampler } from './rng.js';

export interface MerchantPlan {
  readonly id: string;
  /** Its home cell: where it started, then where the last move the simulator saw took it. */
  cellId: string;
  /** Agent user ids; each agent has one device on the home cell. */
  readonly agents: readonly string[];
  /** Its desk's agents (ids as in `agents`), when the merchant has a desk; else its desk is open. */
  readonly desk: readonly DeskAgentPlan[] | undefined;
}

/** An agent registered at a merchant's desk. */
export interface DeskAgentPlan {
  readonly id: string;
  readonly capacity: number;
  readonly groups: readonly string[];
}

/** Who works at the desks: the scenario's `desk`. */
export interface DeskPopulation {
  readonly share: number;
  readonly capacity: { readonly min: number; readonly max: number };
  readonly groups: readonly string[];
  readonly groupsPerAgent: number;
}

export interface CustomerPlan {
  readonly id: string;
  /** The merchant the customer came for: its home cell is the customer's access cell (the router's choice). */
  readonly primary: MerchantPlan;
  /** A merchant of another cell the customer also talks to (a cross-cell conversation), if any. */
  readonly secondary: MerchantPlan | undefined;
  readonly devices: number;
}

export interface PopulationSettings {
  readonly agentsPerMerchant: number;
  readonly zipfExponent: number;
  readonly secondDeviceShare: number;
  readonly crossCellShare: number;
  readonly desk: DeskPopulation | undefined;
}

/**
 * Who is in the simulated world: merchants on cells, their agents, customers and their devices,
 * and which merchants each customer talks to. Popularity is Zipf over a seeded shuffle of the
 * merchants, so popular merchants are spread over the cells.
 */
export class Population {
  readonly merchants: MerchantPlan[] = [];
  readonly customers: CustomerPlan[] = [];
  private readonly byId = new Map<string, MerchantPlan>();
  private readonly ranked: MerchantPlan[] = [];
  private sampler: ZipfSampler | undefined;
  private customerCount = 0;

  constructor(
    private readonly settings: PopulationSettings,
    private readonly random: Random,
    /** The desks' draws, a stream of their own: a scenario with desks keeps the other draws of its seed. */
    private readonly deskRandom: Random,
  ) {}

  merchant(id: string): MerchantPlan | undefined {
    return this.byId.get(id);
  }

  /** Adds `count` merchants homed on `cellId`; `cellIndex` names them (`m<cell>-<k>`). */
  addMerchants(cellId: string, cellIndex: number, count: number): MerchantPlan[] {
    const added: MerchantPlan[] = [];
    for (let k = 0; k < count; k++) {
      const id = `m${cellIndex}-${k}`;
      const agents = Array.from({ length: this.settings.agentsPerMerchant }, (_, index) => `${id}-a${index}`);
      const merchant: MerchantPlan = { id, cellId, agents, desk: this.deskOf(agents) };
      this.merchants.push(merchant);
      this.byId.set(id, merchant);
      // Insert at a random rank: a seeded shuffle, built incrementally.
      this.ranked.splice(pickIndex(this.random, this.ranked.length + 1), 0, merchant);
      added.push(merchant);
    }
    this.sampler = undefined;
    return added;
  }

  /** Adds `count` customers; their primary merchant is drawn by popularity, from `pool` when given. */
  addCustomers(count: number, pool?: readonly MerchantPlan[]): CustomerPlan[] {
    const added: CustomerPlan[] = [];
    const poolSampler = pool === undefined || pool.length === 0 ? undefined : new ZipfSampler(pool.length, this.settings.zipfExponent);
    for (let index = 0; index < count; index++) {
      const primary = poolSampler !== undefined ? pool![poolSampler.sample(this.random)]! : this.drawMerchant();
      let secondary: MerchantPlan | undefined;
      if (this.random.next() < this.settings.crossCellShare) {
        for (let attempt = 0; attempt < 16 && secondary === undefined; attempt++) {
          const candidate = this.drawMerchant();
          if (candidate.cellId !== primary.cellId) secondary = candidate;
        }
      }
      const devices = this.random.next() < this.settings.secondDeviceShare ? 2 : 1;
      const customer: CustomerPlan = { id: `u${this.customerCount++}`, primary, secondary, devices };
      this.customers.push(customer);
      added.push(customer);
    }
    return added;
  }

  private deskOf(agents: readonly string[]): DeskAgentPlan[] | undefined {
    const desk = this.settings.desk;
    if (desk === undefined || this.deskRandom.next() >= desk.share) return undefined;
    return agents.map((id) => {
      const capacity = desk.capacity.min + pickIndex(this.deskRandom, desk.capacity.max - desk.capacity.min + 1);
      const count = 1 + pickIndex(this.deskRandom, Math.min(desk.groupsPerAgent, desk.groups.length));
      const groups = new Set<string>();
      while (groups.size < count) groups.add(desk.groups[pickIndex(this.deskRandom, desk.groups.length)]!);
      return { id, capacity, groups: [...groups].sort() };
    });
  }

  private drawMerchant(): MerchantPlan {
    this.sampler ??= new ZipfSampler(this.ranked.length, this.settings.zipfExponent);
    return this.ranked[this.sampler.sample(this.random)]!;
  }
}
