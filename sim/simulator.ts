import { createHash } from 'node:crypto';
import { LimitsConfig, type TenantConfig } from '../cell/settings.js';
import type { ChatMessage } from '../cell/protocol/frames.js';
import { conversationIdOf } from '../cell/protocol/frames.js';
import { routeToMerchant } from '../router/route.js';
import { membershipOptions, type MembershipOptions, type MembershipPreset } from '../mesh/membership-config.js';
import { holdsClaims, type DirectoryView } from '../mesh/directory.js';
import type { LinkFaults } from '../mesh/memory-network.js';
import type { TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { DeviceActor, uniformMs, type ActorHost } from './actors.js';
import type { DeviceEndpoint, DeviceNetwork } from './device-link.js';
import { History, type InCellStats, type LatencySummary, type Violation } from './history.js';
import { describeLatency, latencySampler, type LatencySampler } from './latency.js';
import { Population, type CustomerPlan, type MerchantPlan } from './population.js';
import { exponential, pickIndex, sampleIndexes, stream, stringHash } from './rng.js';
import type { FaultAction, Scenario, TimelineEvent } from './scenario.js';
import { SimCellIncarnation, openSimCell, peerOf } from './sim-cell.js';
import { Life, SimClock } from './sim-clock.js';
import { SimKeyring } from './sim-keys.js';
import { SimNetwork } from './sim-network.js';
import { SimStore, type DiskFaults } from './sim-store.js';
import { StoreError } from '../platform/store/store.js';
import { ViewDigests } from './view-digests.js';

const TENANT = 'mall';
const TENANT_SECRET = 'cellmesh-simulator-tenant-secret-0123456789';
const START_MS = 1_700_000_000_000;
/** Cells a new or restarted cell bootstraps through. */
const BOOTSTRAP_CELLS = 3;
/** Loop iterations between two progress reports. */
const PROGRESS_EVERY_STEPS = 4_096;
/** ...and at least once per virtual second (a step of a large cluster can take long). */
const PROGRESS_EVERY_VIRTUAL_MS = 1_000;

export interface SimulationOptions {
  readonly scenario: Scenario;
  readonly seed: number;
  /** The scenario file, for the replay command in the report. */
  readonly scenarioFile?: string;
  /** Overrides the scenario's duration (ms): profile a big scenario on a shorter run. */
  readonly durationMs?: number;
  readonly onProgress?: (progress: SimProgress) => void;
  /** Test only: every cell gets a disk that acknowledges writes before they are durable (sim/sim-store.ts). */
  readonly brokenDurability?: boolean;
}

export type SimPhase = 'warmup' | 'traffic' | 'settle' | 'done';

export interface SimProgress {
  readonly phase: SimPhase;
  readonly virtualMs: number;
  /** Virtual ms the run will take at most (warmup + duration + settle). */
  readonly plannedMs: number;
  readonly messagesSent: number;
  readonly violations: number;
  readonly cellsUp: number;
}

export interface SeriesPoint {
  /** Virtual seconds since the start. */
  readonly t: number;
  readonly sent: number;
  readonly acked: number;
  readonly delivered: number;
  readonly outboxWaiting: number;
  /** Share of running cells whose membership view is the most common one. */
  readonly agreement: number;
  readonly cellsUp: number;
}

export interface FaultSpan {
  readonly kind: string;
  readonly startS: number;
  /** Undefined while it lasted to the final heal. */
  endS: number | undefined;
  /** What it did; a move's outcome is added when it ends. */
  detail: string;
}

export interface SimReport {
  readonly scenario: string;
  readonly seed: number;
  readonly replay: string;
  readonly cells: number;
  readonly cellsAtEnd: number;
  readonly merchants: number;
  readonly customers: number;
  readonly agents: number;
  readonly devices: number;
  readonly messagesSent: number;
  readonly messagesAcked: number;
  readonly deliveries: number;
  readonly receipts: number;
  /** Sends refused for good, by code (not violations: nothing was acknowledged). */
  readonly sendFailures: Record<string, number>;
  readonly sendFailuresDuringPartitions: Record<string, number>;
  readonly clientErrors: Record<string, number>;
  readonly virtualSeconds: number;
  readonly violations: number;
  readonly violationsByKind: Record<string, number>;
  readonly violationExamples: readonly Violation[];
  /** Virtual ms from the final heal until every live cell agreed on membership and merchant homes; null if never. */
  readonly convergeMsAfterHeal: number | null;
  /** Every heal of the run and the convergence after it (null: the next fault came first, or never). */
  readonly heals: readonly HealRecord[];
  readonly inCellDeliveryDuringPartition: InCellStats & { readonly boundMs: number; readonly required: number };
  readonly ackLatency: { readonly inCell: LatencySummary; readonly crossCell: LatencySummary };
  readonly bounds: { readonly convergeWithinMs: number; readonly inCellAckWithinMs: number; readonly inCellDeliveryRatioMin: number; readonly settleMaxMs: number };
  readonly faults: readonly FaultSpan[];
  readonly series: readonly SeriesPoint[];
  readonly outboxEntriesForLeftCells: number;
  readonly moves: { readonly started: number; readonly moved: number; readonly failed: Record<string, number>; readonly unsettled: number; readonly agentReroutes: number };
  readonly sendsPendingAtEnd: number;
  readonly sendsPendingInEndedConversations: number;
  readonly work: { readonly timersFired: number; readonly loopSteps: number; readonly storeWrites: number; readonly storeWritesLostToCrashes: number; readonly devicesNotOpenAtEnd: number };
  /**
   * What the `disk` faults did: reads and writes failed and slowed, and cell starts that failed
   * on their disk (the supervisor starts them again a second later). Not violations.
   */
  readonly disk: { readonly readErrors: number; readonly writeErrors: number; readonly latencySpikes: number; readonly failedStarts: number };
  /** Every `error` frame the cells sent to devices, by code (STORE_UNAVAILABLE: the requests a disk fault cost). */
  readonly errorAnswers: Record<string, number>;
  /** SHA-256 of the run's observable outcome (everything above): equal digests, equal runs. */
  readonly digest: string;
  /** Wall-clock figures: the only fields that differ between two runs of one seed. */
  readonly wallSeconds: number;
  /** Virtual seconds per wall second. */
  readonly simSpeed: number;
  /** CPU seconds of this process during the run (user + system): steadier than wall time on a shared machine. */
  readonly cpuSeconds: number;
}

interface CellSlot {
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
}

export interface HealRecord {
  /** Virtual seconds since the start. */
  readonly atS: number;
  readonly what: string;
  /** Virtual ms until every running cell agreed on membership and merchant homes; null when another fault came first or it never did. */
  convergedMs: number | null;
}

interface ActivePartition {
  readonly id: number;
  readonly blocks: ReadonlyArray<readonly [string[], string[]]>;
  readonly span: FaultSpan;
}

/** Runs one simulation to the end and returns its report. Throws only on a bug of the simulator or a crash of the code under test. */
export async function runSimulation(options: SimulationOptions): Promise<SimReport> {
  const simulation = new Simulation(options);
  return simulation.run();
}

class Simulation implements ActorHost {
  readonly clock = new SimClock(START_MS);
  readonly seed: number;
  readonly history = new History(START_MS);
  readonly tenant = TENANT;
  readonly secret = TENANT_SECRET;
  readonly tokenTtlSeconds: number;
  readonly clientErrors = new Map<string, number>();
  readonly deviceNetwork: DeviceNetwork;
  private readonly scenario: Scenario;
  private readonly durationMs: number;
  private readonly network: SimNetwork;
  private readonly keyring: SimKeyring;
  private readonly population: Population;
  private readonly workloadRandom: Random;
  private readonly faultRandom: Random;
  private readonly setupRandom: Random;
  private readonly deviceRandom: Random;
  /** Picks the cells of disk faults, apart from `faultRandom`, so they leave the other faults' picks as they were. */
  private readonly diskFaultRandom: Random;
  private failedStarts = 0;
  private readonly errorAnswers = new Map<string, number>();
  private readonly slots = new Map<string, CellSlot>();
  private readonly devices: DeviceActor[] = [];
  private readonly customerDevices = new Map<string, DeviceActor[]>();
  private readonly merchantConvs = new Map<string, string[]>();
  private readonly orphaned = new Set<string>();
  private readonly activeCustomers = new Set<string>();
  private readonly pendingReads = new Set<string>();
  private readonly partitions: ActivePartition[] = [];
  private readonly faultSpans: FaultSpan[] = [];
  private readonly series: SeriesPoint[] = [];
  private readonly viewDigests = new ViewDigests();
  private readonly limits = LimitsConfig.parse({});
  private readonly meshPreset: MembershipPreset;
  private readonly meshOptions: Partial<MembershipOptions>;
  private meshLatency: LatencySampler;
  private deviceLatency: LatencySampler;
  private nextPartitionId = 0;
  private deviceSerial = 0;
  private bodyCount = 0;
  private trafficOn = false;
  private phase: SimPhase = 'warmup';
  /** The mesh link faults in force, and the span of each in the report. */
  private linkFaults: Required<LinkFaults> = { lossRate: 0, duplicateRate: 0, reorderRate: 0, reorderDelayMs: 0 };
  private readonly linkFaultSpans = new Map<LinkFaultKind, FaultSpan>();
  private latencySpan: FaultSpan | undefined;
  /** Disk faults in force, oldest first (a later one on the same disk overrides). */
  private readonly diskFaultSpans: Array<{ readonly span: FaultSpan; readonly cells: readonly string[]; readonly faults: DiskFaults }> = [];
  /** When each disk fault was in force, by cell ([from, to]; to undefined while it lasts). */
  private readonly diskFaultIntervals = new Map<string, Array<[number, number | undefined]>>();
  private loopSteps = 0;
  private progressAtMs = 0;
  private healAtMs: number | undefined;
  private convergedAtMs: number | undefined;
  /** Heals (a partition ending, a restart, the final heal) and how long the directory took to converge after each. */
  private readonly heals: HealRecord[] = [];
  private convergenceTimer: TimerHandle | undefined;
  private devicesStopped = 0;
  /** Merchants with a move under way (one at a time each; a move whose source crashed stays here). */
  private readonly moving = new Set<string>();
  /** Cells each moved merchant was ever moved to or from: where the home check looks for it. */
  private readonly moveCells = new Map<string, Set<string>>();
  /** Merchants whose hosting cell left the cluster: hosted nowhere, on purpose. */
  private readonly homeless = new Set<string>();
  private readonly moveOutcomes = { started: 0, moved: 0, failed: {} as Record<string, number>, unsettled: 0 };
  private agentReroutes = 0;

  constructor(private readonly options: SimulationOptions) {
    this.scenario = options.scenario;
    this.seed = options.seed >>> 0;
    this.durationMs = options.durationMs ?? this.scenario.duration;
    const totalMs = this.scenario.warmup + this.durationMs + this.scenario.settle;
    this.tokenTtlSeconds = Math.ceil(totalMs / 1000) + 86_400;
    this.workloadRandom = stream(this.seed, 'workload');
    this.faultRandom = stream(this.seed, 'faults');
    this.setupRandom = stream(this.seed, 'setup');
    this.deviceRandom = stream(this.seed, 'device-network');
    this.diskFaultRandom = stream(this.seed, 'disk-faults');
    this.meshLatency = latencySampler(this.scenario.network.mesh.latency);
    this.deviceLatency = latencySampler(this.scenario.network.devices.latency);
    this.network = new SimNetwork({ clock: this.clock, random: stream(this.seed, 'mesh-network'), latencyMs: (_from, _to, random) => this.meshLatency(random) });
    this.keyring = new SimKeyring(this.seed, this.scenario.mesh.signatures);
    this.meshPreset = this.scenario.mesh.preset as MembershipPreset;
    this.meshOptions = this.scenario.mesh.timings as Partial<MembershipOptions>;
    // Validates the overrides against the preset now, rather than in the first cell.
    membershipOptions(this.meshOptions, this.meshPreset);
    this.population = new Population(
      {
        agentsPerMerchant: this.scenario.agentsPerMerchant,
        zipfExponent: this.scenario.merchantPopularity.zipf,
        secondDeviceShare: this.scenario.secondDeviceShare,
        crossCellShare: this.scenario.crossCellShare,
      },
      this.setupRandom,
    );
    this.deviceNetwork = {
      clock: this.clock,
      errorAnswered: (code) => {
        this.errorAnswers.set(code, (this.errorAnswers.get(code) ?? 0) + 1);
        // INTERNAL is a bug of the cell: every operating error (a failing disk among them) has its own code.
        if (code === 'INTERNAL') this.history.violation('internal-error', 'a cell answered a device INTERNAL', this.clock.now());
      },
      latencyMs: () => this.deviceLatency(this.deviceRandom),
      endpointOf: (cellId: string): DeviceEndpoint | undefined => {
        const incarnation = this.slots.get(cellId)?.incarnation;
        return incarnation !== undefined && incarnation.acceptsDevices ? incarnation : undefined;
      },
    };
  }

  async run(): Promise<SimReport> {
    const wallStartMs = performance.now(); // real-clock-ok: the run's wall time is reported, never fed to the simulation
    const cpuStart = process.cpuUsage();
    // A rejection nobody handles would crash a production process: it is a violation here.
    const onUnhandled = (reason: unknown): void => {
      this.history.violation('unhandled-rejection', error(reason), this.clock.now());
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      return await this.runPhases(wallStartMs, cpuStart);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  }

  private async runPhases(wallStartMs: number, cpuStart: NodeJS.CpuUsage): Promise<SimReport> {
    const { scenario } = this;
    const trafficStartMs = START_MS + scenario.warmup;
    const trafficEndMs = trafficStartMs + this.durationMs;
    const settleEndMs = trafficEndMs + scenario.settle;
    const plannedMs = settleEndMs - START_MS;
    this.setUp();
    this.scheduleSampling(this.sampleIntervalMs());
    this.clock.setTimer(scenario.warmup, () => {
      this.phase = 'traffic';
      this.trafficOn = true;
    });
    for (const event of this.timeline()) {
      this.clock.setTimer(scenario.warmup + event.atMs, () => this.apply(event));
    }
    this.clock.setTimer(scenario.warmup + this.durationMs, () => this.finalHeal());

    await this.runUntil(trafficEndMs, plannedMs);
    // The settle phase: everything must arrive and the directory converge; it ends early once they did.
    let done = false;
    const check = (): void => {
      if (this.convergedAtMs !== undefined && this.quiescent()) {
        done = true;
        return;
      }
      this.clock.setTimer(this.checkIntervalMs(), check);
    };
    this.clock.setTimer(0, check);
    await this.runUntil(settleEndMs, plannedMs, () => done);
    // A little more time for the last acks and receipts to travel, the same for every run.
    await this.runUntil(this.clock.now() + 2_000, plannedMs);
    this.phase = 'done';
    this.sample();

    this.finalChecks();
    const virtualSeconds = (this.clock.now() - START_MS) / 1000;
    const wallSeconds = (performance.now() - wallStartMs) / 1000; // real-clock-ok: reported only
    const cpu = process.cpuUsage(cpuStart);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    this.options.onProgress?.(this.progress(plannedMs));
    return this.report(virtualSeconds, wallSeconds, cpuSeconds);
  }

  // -- the loop -----------------------------------------------------------------------------------

  /**
   * Fires the timers of each virtual ms in turn and lets every promise chain they started run
   * before the next: a macrotask turn (setImmediate) drains the microtask queue, and nothing
   * in the simulated world waits on anything else (no I/O, no real timers), so each step
   * finishes all work of its ms, and the order of everything is fixed by the seed.
   */
  private async runUntil(endMs: number, plannedMs: number, stop?: () => boolean): Promise<void> {
    for (;;) {
      if (stop?.() === true) return;
      const next = this.clock.nextDueMs();
      if (next === undefined || next > endMs) {
        this.clock.advanceTo(endMs);
        await turn();
        return;
      }
      this.clock.advanceTo(next);
      await turn();
      if (++this.loopSteps % PROGRESS_EVERY_STEPS === 0 || next - this.progressAtMs >= PROGRESS_EVERY_VIRTUAL_MS) {
        this.progressAtMs = next;
        this.options.onProgress?.(this.progress(plannedMs));
      }
    }
  }

  private progress(plannedMs: number): SimProgress {
    return {
      phase: this.phase,
      virtualMs: this.clock.now() - START_MS,
      plannedMs,
      messagesSent: this.history.messagesSent,
      violations: this.history.violationTotal,
      cellsUp: this.upSlots().length,
    };
  }

  // -- set-up -------------------------------------------------------------------------------------

  private setUp(): void {
    const { scenario } = this;
    const startWindowMs = Math.floor(scenario.warmup * 0.3);
    for (let index = 0; index < scenario.cells; index++) {
      const slot = this.addSlot(index, scenario.merchantsPerCell);
      const startAtMs = scenario.cells <= 1 ? 0 : Math.floor((index * startWindowMs) / scenario.cells);
      this.clock.setTimer(startAtMs, () => this.startCell(slot));
    }
    const customers = this.population.addCustomers(scenario.customers);
    // Devices connect once their cells run: agents first, then customers, spread over the warmup.
    const agentsAtMs = Math.floor(scenario.warmup * 0.35);
    const customersFromMs = Math.floor(scenario.warmup * 0.4);
    const customersWindowMs = Math.max(1, Math.floor(scenario.warmup * 0.4));
    for (const merchant of this.population.merchants) this.clock.setTimer(agentsAtMs, () => this.addAgents(merchant));
    customers.forEach((customer, index) => {
      const atMs = customersFromMs + Math.floor((index * customersWindowMs) / Math.max(1, customers.length));
      this.clock.setTimer(atMs, () => this.addCustomer(customer));
    });
  }

  private addSlot(index: number, merchantCount: number): CellSlot {
    const id = cellIdOf(index);
    const merchants = this.population.addMerchants(id, index, merchantCount);
    const existing = [...this.slots.values()].filter((slot) => slot.status === 'up');
    const bootstrap = sampleIndexes(this.setupRandom, existing.length, Math.min(BOOTSTRAP_CELLS, existing.length)).map((at) => existing[at]!.id);
    const slot: CellSlot = {
      id,
      index,
      merchants,
      disk: new SimStore(this.clock, this.scenario.network.storeWrite, stream(this.seed, `disk/${id}`), this.options.brokenDurability === true),
      bootstrap,
      incarnation: undefined,
      life: undefined,
      startCount: 0,
      status: 'up',
      downIntervals: [],
      downSinceMs: undefined,
    };
    this.slots.set(id, slot);
    for (const merchant of merchants) this.merchantConvs.set(merchant.id, []);
    return slot;
  }

  private startCell(slot: CellSlot): void {
    const tenant: TenantConfig = { id: TENANT, secret: TENANT_SECRET, origins: [], merchants: slot.merchants.map((merchant) => ({ id: merchant.id })) };
    const bootstrap = slot.bootstrap.filter((id) => this.slots.get(id)?.status !== 'left');
    if (slot.startCount > 0 && bootstrap.length < BOOTSTRAP_CELLS) {
      // An operator would point a cell whose seeds are gone at others.
      const others = this.upSlots().filter((other) => other !== slot && !bootstrap.includes(other.id));
      for (const at of sampleIndexes(this.faultRandom, others.length, BOOTSTRAP_CELLS - bootstrap.length)) bootstrap.push(others[at]!.id);
    }
    const life = new Life();
    slot.life = life;
    slot.incarnation = undefined;
    const opening = openSimCell({
      cellId: slot.id,
      seed: this.seed,
      life,
      startCount: slot.startCount,
      clock: this.clock,
      network: this.network,
      keyring: this.keyring,
      disk: slot.disk,
      tenant,
      limits: this.limits,
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
          this.clock.setTimer(1_000, () => this.restart(slot));
          return;
        }
        this.history.violation('unhandled-rejection', `cell ${slot.id} failed to start: ${messageOf(error)}`, this.clock.now());
      });
  }

  private addAgents(merchant: MerchantPlan): void {
    merchant.agents.forEach((agent) => {
      const device = new DeviceActor(this, { user: agent, role: 'agent', merchant: merchant.id, device: 'd0' }, this.deviceSerial++, merchant.cellId);
      device.onMessage = (actor, message) => this.agentHeard(actor, merchant, message);
      this.devices.push(device);
      device.connect(merchant.cellId);
    });
  }

  private addCustomer(customer: CustomerPlan): void {
    const devices: DeviceActor[] = [];
    for (let index = 0; index < customer.devices; index++) {
      const device = new DeviceActor(this, { user: customer.id, role: 'customer', device: `d${index}` }, this.deviceSerial++, customer.primary.cellId);
      device.onMessage = (actor, message) => this.maybeRead(actor, message);
      devices.push(device);
      this.devices.push(device);
      device.connect(customer.primary.cellId);
    }
    this.customerDevices.set(customer.id, devices);
    for (const merchant of [customer.primary, customer.secondary]) {
      if (merchant !== undefined) this.merchantConvs.get(merchant.id)!.push(conversationIdOf(merchant.id, customer.id));
    }
    this.activeCustomers.add(customer.id);
    this.scheduleCustomerSend(customer);
  }

  // -- traffic ------------------------------------------------------------------------------------

  private scheduleCustomerSend(customer: CustomerPlan): void {
    const rate = this.scenario.traffic.customerMessagesPerMinute;
    if (rate <= 0) return;
    const delayMs = Math.max(1, Math.round(exponential(this.workloadRandom, 60_000 / rate)));
    this.clock.setTimer(delayMs, () => {
      if (!this.activeCustomers.has(customer.id)) return;
      if (this.trafficOn) this.customerSends(customer);
      if (this.phase === 'warmup' || this.phase === 'traffic') this.scheduleCustomerSend(customer);
    });
  }

  private customerSends(customer: CustomerPlan): void {
    const merchants = [customer.primary, customer.secondary].filter(
      (merchant): merchant is MerchantPlan => merchant !== undefined && !this.orphaned.has(conversationIdOf(merchant.id, customer.id)),
    );
    const devices = this.customerDevices.get(customer.id) ?? [];
    if (merchants.length === 0 || devices.length === 0) return;
    // Most messages go to the merchant the customer came for.
    const merchant = merchants.length > 1 && this.workloadRandom.next() < 0.3 ? merchants[1]! : merchants[0]!;
    const device = devices[pickIndex(this.workloadRandom, devices.length)]!;
    const conv = conversationIdOf(merchant.id, customer.id);
    device.send(conv, this.nextBody(), { inCell: device.cellId === merchant.cellId && !this.moving.has(merchant.id), duringPartition: this.partitions.length > 0 });
  }

  /** The agent in charge of a conversation answers some customer messages after a while. */
  private agentHeard(device: DeviceActor, merchant: MerchantPlan, message: ChatMessage): void {
    if (message.from === device.identity.user) return;
    this.maybeRead(device, message);
    if (message.role !== 'customer' || !this.trafficOn) return;
    const agents = merchant.agents;
    if (agents[stringHash(message.conv) % agents.length] !== device.identity.user) return;
    const { traffic } = this.scenario;
    if (this.workloadRandom.next() >= traffic.agentReplyProbability) return;
    const delayMs = uniformMs(this.workloadRandom, traffic.agentReplyDelay.min, traffic.agentReplyDelay.max);
    this.clock.setTimer(delayMs, () => {
      if (!this.trafficOn || this.orphaned.has(message.conv)) return;
      const customer = message.conv.slice(message.conv.indexOf(':') + 1);
      const customerCell = this.customerDevices.get(customer)?.[0]?.cellId;
      device.send(message.conv, this.nextBody(), { inCell: customerCell === merchant.cellId && !this.moving.has(merchant.id), duringPartition: this.partitions.length > 0 });
    });
  }

  private maybeRead(device: DeviceActor, message: ChatMessage): void {
    if (message.from === device.identity.user || !this.trafficOn) return;
    const { traffic } = this.scenario;
    if (this.workloadRandom.next() >= traffic.readProbability) return;
    const key = `${device.key}\u0000${message.conv}`;
    if (this.pendingReads.has(key)) return;
    this.pendingReads.add(key);
    this.clock.setTimer(uniformMs(this.workloadRandom, traffic.readDelay.min, traffic.readDelay.max), () => {
      this.pendingReads.delete(key);
      if (this.trafficOn) device.read(message.conv);
    });
  }

  private nextBody(): string {
    return `m${(this.bodyCount++).toString(36)}`;
  }

  deviceStopped(device: DeviceActor, reason: string): void {
    // An agent whose merchant moved is refused by its old cell: it asks the router, as real
    // clients do (GET /v1/route), and reconnects to the new home.
    if (device.identity.role === 'agent' && reason.includes(' MERCHANT_NOT_HOSTED ') && !this.homeless.has(device.identity.merchant ?? '')) {
      this.reroute(device);
      return;
    }
    this.devicesStopped++;
    this.history.violation('device-stopped', `${device.key} on ${device.cellId}: ${reason}`, this.clock.now());
  }

  // -- faults -------------------------------------------------------------------------------------

  /** The scenario's timeline and, in random-fault mode, faults drawn from the seed; in time order. */
  private timeline(): TimelineEvent[] {
    const events = [...this.scenario.timeline];
    const random = this.scenario.randomFaults;
    if (random !== undefined && random.enabled) {
      const draw = stream(this.seed, 'random-faults');
      let atMs = 0;
      for (;;) {
        atMs += Math.max(1_000, Math.round(exponential(draw, random.meanInterval)));
        if (atMs >= this.durationMs) break;
        const kind = random.kinds[pickIndex(draw, random.kinds.length)]!;
        const durationMs = Math.round(random.maxDuration * (0.1 + 0.9 * draw.next()));
        const share = `${Math.max(1, Math.round(100 * random.maxShare * (0.2 + 0.8 * draw.next())))}%`;
        let action: FaultAction;
        switch (kind) {
          case 'partition':
            action = { kind, groups: [[share], ['rest']], duration: durationMs };
            break;
          case 'oneWay':
            action = { kind, from: [share], to: ['rest'], duration: durationMs };
            break;
          case 'loss':
            action = { kind, rate: Math.round(1000 * random.maxLossRate * draw.next()) / 1000, duration: durationMs };
            break;
          case 'duplicate':
            action = { kind, rate: Math.round(1000 * 0.3 * draw.next()) / 1000, duration: durationMs };
            break;
          case 'reorder':
            action = { kind, rate: Math.round(1000 * 0.5 * draw.next()) / 1000, maxDelay: 10 + Math.round(490 * draw.next()), duration: durationMs };
            break;
          case 'move':
            action = { kind, merchants: 1 + Math.floor(3 * draw.next()), from: ['rest'], to: ['rest'] };
            break;
          case 'latency':
            action = { kind, mesh: { kind: 'uniform', min: 1, max: 20 + Math.round(480 * draw.next()) }, duration: durationMs };
            break;
          case 'crash':
            action = { kind, cells: ['random'], restartAfter: durationMs };
            break;
          case 'deviceFlap':
            action = { kind, fraction: Math.round(200 * draw.next()) / 1000 };
            break;
        }
        events.push({ atMs, action });
      }
      if (random.disk.enabled) events.push(...this.randomDiskFaults(random.maxDuration, random.disk));
    }
    // Stable: events at the same time keep the order they were listed (scenario first).
    return events.map((event, order) => ({ event, order })).sort((a, b) => a.event.atMs - b.event.atMs || a.order - b.order).map(({ event }) => event);
  }

  /** Disk faults drawn from a stream of their own, one cell at a time. */
  private randomDiskFaults(maxDurationMs: number, settings: { meanInterval: number; maxErrorRate: number; maxSpike: number }): TimelineEvent[] {
    const draw = stream(this.seed, 'random-disk-faults');
    const events: TimelineEvent[] = [];
    let atMs = 0;
    for (;;) {
      atMs += Math.max(1_000, Math.round(exponential(draw, settings.meanInterval)));
      if (atMs >= this.durationMs) return events;
      const rate = (): number => Math.round(1000 * settings.maxErrorRate * draw.next()) / 1000;
      const action: FaultAction = {
        kind: 'disk',
        cells: ['random'],
        readErrorRate: rate(),
        writeErrorRate: rate(),
        spikeRate: Math.round(1000 * 0.3 * draw.next()) / 1000,
        spike: Math.round(settings.maxSpike * draw.next()),
        duration: Math.round(maxDurationMs * (0.1 + 0.9 * draw.next())),
      };
      events.push({ atMs, action });
    }
  }

  private apply(event: TimelineEvent): void {
    if (this.phase !== 'traffic') return;
    const { action } = event;
    switch (action.kind) {
      case 'partition': {
        const groups = this.resolveGroups(action.groups);
        const blocks: Array<readonly [string[], string[]]> = [];
        for (let a = 0; a < groups.length; a++) {
          for (let b = a + 1; b < groups.length; b++) {
            blocks.push([groups[a]!, groups[b]!], [groups[b]!, groups[a]!]);
          }
        }
        this.addPartition('partition', blocks, groups.map((group) => describeCells(group)).join(' | '), action.duration);
        return;
      }
      case 'oneWay': {
        const [from, to] = this.resolveGroups([action.from, action.to]);
        this.addPartition('oneWay', [[from!, to!]], `${describeCells(from!)} -> ${describeCells(to!)}`, action.duration);
        return;
      }
      case 'heal':
        this.healPartitions();
        this.watchConvergence('heal');
        return;
      case 'loss':
      case 'duplicate':
      case 'reorder': {
        const delayMs = action.kind === 'reorder' ? action.maxDelay : 0;
        this.setLinkFault(action.kind, action.rate, delayMs);
        if (action.duration !== undefined) this.clock.setTimer(action.duration, () => this.phase === 'traffic' && this.setLinkFault(action.kind, 0, 0));
        return;
      }
      case 'latency': {
        this.setLatency(action.mesh, action.devices);
        if (action.duration !== undefined) this.clock.setTimer(action.duration, () => this.phase === 'traffic' && this.setLatency(undefined, undefined));
        return;
      }
      case 'crash': {
        const [cells] = this.resolveGroups([action.cells]);
        for (const cellId of cells!) {
          const slot = this.slots.get(cellId)!;
          this.crash(slot);
          if (action.restartAfter !== undefined) this.clock.setTimer(action.restartAfter, () => this.restart(slot));
        }
        return;
      }
      case 'restart': {
        const [cells] = this.resolveGroups([action.cells], 'crashed');
        for (const cellId of cells!) this.restart(this.slots.get(cellId)!);
        return;
      }
      case 'join':
        this.join(action.cells, action.merchantsPerCell ?? this.scenario.merchantsPerCell, action.customers ?? 0);
        return;
      case 'leave': {
        const [cells] = this.resolveGroups([action.cells]);
        for (const cellId of cells!) this.leave(this.slots.get(cellId)!);
        return;
      }
      case 'move':
        this.moveMerchants(action.merchants, action.from, action.to);
        return;
      case 'disk': {
        const [cells] = this.resolveGroups([action.cells], 'up', this.diskFaultRandom);
        const faults: DiskFaults = { readErrorRate: action.readErrorRate, writeErrorRate: action.writeErrorRate, spikeRate: action.spikeRate, spikeMs: action.spike };
        const span: FaultSpan = {
          kind: 'disk',
          startS: this.seconds(),
          endS: undefined,
          detail: `${describeCells(cells!)}: read errors ${faults.readErrorRate}, write errors ${faults.writeErrorRate}, spikes ${faults.spikeRate} x ${faults.spikeMs} ms`,
        };
        this.faultSpans.push(span);
        for (const cellId of cells!) {
          this.slots.get(cellId)!.disk.setFaults(faults);
          const intervals = this.diskFaultIntervals.get(cellId) ?? [];
          intervals.push([this.clock.now(), undefined]);
          this.diskFaultIntervals.set(cellId, intervals);
        }
        this.diskFaultSpans.push({ span, cells: cells!, faults });
        if (action.duration !== undefined) this.clock.setTimer(action.duration, () => this.phase === 'traffic' && this.endDiskFault(span));
        return;
      }
      case 'deviceFlap': {
        const open = this.devices.filter((device) => device.isOpen);
        const picked = sampleIndexes(this.faultRandom, open.length, Math.round(open.length * action.fraction));
        for (const at of picked) open[at]!.flap();
        this.faultSpans.push({ kind: 'deviceFlap', startS: this.seconds(), endS: this.seconds(), detail: `${picked.length} devices` });
        return;
      }
    }
  }

  /** The disk fault of `span` ends: its disks work again, unless a later fault took them over. */
  private endDiskFault(span: FaultSpan): void {
    const at = this.diskFaultSpans.findIndex((entry) => entry.span === span);
    if (at < 0) return;
    const [ended] = this.diskFaultSpans.splice(at, 1);
    span.endS = this.seconds();
    for (const cellId of ended!.cells) {
      const disk = this.slots.get(cellId)!.disk;
      const later = this.diskFaultSpans.findLast((entry) => entry.cells.includes(cellId));
      disk.setFaults(later?.faults);
      const open = this.diskFaultIntervals.get(cellId)?.find((interval) => interval[1] === undefined);
      if (open !== undefined) open[1] = this.clock.now();
    }
  }

  /** Resolves each group's selectors to cell ids; `rest` is every candidate no other group named. */
  private resolveGroups(groups: ReadonlyArray<readonly string[]>, among: 'up' | 'crashed' = 'up', random: Random = this.faultRandom): string[][] {
    const candidates = [...this.slots.values()].filter((slot) => slot.status === among).map((slot) => slot.id);
    const taken = new Set<string>();
    const resolved = groups.map((group) => {
      const cells = new Set<string>();
      for (const selector of group) {
        if (selector === 'rest') continue;
        // A cell belongs to one group of an event: later groups draw from what is left.
        const free = candidates.filter((cellId) => !taken.has(cellId) && !cells.has(cellId));
        for (const cellId of this.resolveSelector(selector, free, candidates.length, random)) cells.add(cellId);
      }
      for (const cellId of cells) taken.add(cellId);
      return cells;
    });
    groups.forEach((group, index) => {
      if (group.includes('rest')) for (const cellId of candidates) if (!taken.has(cellId)) resolved[index]!.add(cellId);
    });
    return resolved.map((cells) => [...cells].sort());
  }

  /** `total`: the number of candidates before earlier groups took theirs (what a share is of). */
  private resolveSelector(selector: string, candidates: readonly string[], total: number, random: Random): string[] {
    const isCandidate = (cellId: string): boolean => candidates.includes(cellId);
    if (selector === 'random') return candidates.length === 0 ? [] : [candidates[pickIndex(random, candidates.length)]!];
    if (selector.endsWith('%')) {
      const count = Math.round((total * Number(selector.slice(0, -1))) / 100);
      return sampleIndexes(random, candidates.length, Math.max(1, Math.min(candidates.length - 1, count))).map((at) => candidates[at]!);
    }
    if (selector.startsWith('cell-')) return isCandidate(selector) ? [selector] : [];
    const range = /^(\d+)-(\d+)$/.exec(selector);
    const [from, to] = range === null ? [Number(selector), Number(selector)] : [Number(range[1]), Number(range[2])];
    const cells: string[] = [];
    for (let index = from; index <= to; index++) if (isCandidate(cellIdOf(index))) cells.push(cellIdOf(index));
    return cells;
  }

  private addPartition(kind: string, blocks: Array<readonly [string[], string[]]>, detail: string, durationMs: number | undefined): void {
    const span: FaultSpan = { kind, startS: this.seconds(), endS: undefined, detail };
    this.faultSpans.push(span);
    const partition: ActivePartition = { id: this.nextPartitionId++, blocks, span };
    this.partitions.push(partition);
    for (const [from, to] of blocks) this.network.blockOneWay(from.map(peerOf), to.map(peerOf));
    const timeoutMs = this.scenario.network.mesh.connectionTimeout;
    if (timeoutMs > 0) this.clock.setTimer(timeoutMs, () => this.closeBlockedConnections(partition));
    if (durationMs !== undefined) {
      this.clock.setTimer(durationMs, () => {
        if (this.phase !== 'traffic') return;
        const at = this.partitions.indexOf(partition);
        if (at < 0) return;
        this.partitions.splice(at, 1);
        span.endS = this.seconds();
        this.reapplyBlocks();
        this.watchConvergence(`end of ${kind} ${detail}`);
      });
    }
  }

  /** Keep-alives across a partition failed: the connections it cut close at both ends. */
  private closeBlockedConnections(partition: ActivePartition): void {
    if (!this.partitions.includes(partition)) return;
    for (const [from, to] of partition.blocks) {
      const targets = new Set(to.map(peerOf));
      for (const cellId of from) {
        const transport = this.slots.get(cellId)?.incarnation?.transport;
        if (transport === undefined || !transport.isRunning) continue;
        for (const peer of transport.connectedPeers()) if (targets.has(peer)) void transport.hangUp(peer);
      }
    }
  }

  private healPartitions(): void {
    for (const partition of this.partitions) partition.span.endS = this.seconds();
    this.partitions.length = 0;
    this.reapplyBlocks();
  }

  private reapplyBlocks(): void {
    this.network.heal();
    for (const partition of this.partitions) for (const [from, to] of partition.blocks) this.network.blockOneWay(from.map(peerOf), to.map(peerOf));
  }

  /** Sets one kind of mesh link fault (0: off), ending the span of the one it replaces. */
  private setLinkFault(kind: LinkFaultKind, rate: number, reorderDelayMs: number): void {
    const faults = this.linkFaults;
    this.linkFaults =
      kind === 'loss' ? { ...faults, lossRate: rate } : kind === 'duplicate' ? { ...faults, duplicateRate: rate } : { ...faults, reorderRate: rate, reorderDelayMs };
    this.network.setFaults(this.linkFaults);
    const previous = this.linkFaultSpans.get(kind);
    if (previous !== undefined) previous.endS = this.seconds();
    this.linkFaultSpans.delete(kind);
    if (rate > 0) {
      const percent = `${Math.round(rate * 1000) / 10}%`;
      const detail =
        kind === 'loss' ? `${percent} of mesh deliveries lost` : kind === 'duplicate' ? `${percent} of mesh deliveries twice` : `${percent} of mesh deliveries up to ${reorderDelayMs} ms late`;
      const span: FaultSpan = { kind, startS: this.seconds(), endS: undefined, detail };
      this.linkFaultSpans.set(kind, span);
      this.faultSpans.push(span);
    }
  }

  private setLatency(mesh: Scenario['network']['mesh']['latency'] | undefined, devices: Scenario['network']['devices']['latency'] | undefined): void {
    this.meshLatency = latencySampler(mesh ?? this.scenario.network.mesh.latency);
    this.deviceLatency = latencySampler(devices ?? this.scenario.network.devices.latency);
    if (this.latencySpan !== undefined) this.latencySpan.endS = this.seconds();
    this.latencySpan = undefined;
    if (mesh !== undefined || devices !== undefined) {
      const parts = [mesh === undefined ? '' : `mesh ${describeLatency(mesh)}`, devices === undefined ? '' : `devices ${describeLatency(devices)}`].filter((part) => part !== '');
      this.latencySpan = { kind: 'latency', startS: this.seconds(), endS: undefined, detail: parts.join(', ') };
      this.faultSpans.push(this.latencySpan);
    }
  }

  private crash(slot: CellSlot): void {
    if (slot.status !== 'up') return;
    if (slot.incarnation !== undefined) {
      slot.incarnation.crash();
    } else {
      // Still opening its disk: the process dies before it served anything.
      slot.life?.end();
      slot.disk.crash();
    }
    slot.status = 'crashed';
    slot.downSinceMs = this.clock.now();
    this.faultSpans.push({ kind: 'crash', startS: this.seconds(), endS: undefined, detail: slot.id });
  }

  private restart(slot: CellSlot): void {
    if (slot.status !== 'crashed') return;
    slot.status = 'up';
    slot.downIntervals.push([slot.downSinceMs ?? this.clock.now(), this.clock.now()]);
    slot.downSinceMs = undefined;
    const span = this.faultSpans.find((candidate) => candidate.kind === 'crash' && candidate.detail === slot.id && candidate.endS === undefined);
    if (span !== undefined) span.endS = this.seconds();
    this.startCell(slot);
    if (this.phase === 'traffic') this.watchConvergence(`restart of ${slot.id}`);
  }

  private join(cells: number, merchantsPerCell: number, customerCount: number): void {
    const added: CellSlot[] = [];
    const newMerchants: MerchantPlan[] = [];
    for (let count = 0; count < cells; count++) {
      const slot = this.addSlot(this.slots.size, merchantsPerCell);
      added.push(slot);
      newMerchants.push(...slot.merchants);
      this.startCell(slot);
    }
    this.faultSpans.push({ kind: 'join', startS: this.seconds(), endS: this.seconds(), detail: added.map((slot) => slot.id).join(', ') });
    this.clock.setTimer(2_000, () => {
      for (const merchant of newMerchants) this.addAgents(merchant);
    });
    if (customerCount > 0 && newMerchants.length > 0) {
      const customers = this.population.addCustomers(customerCount, newMerchants);
      customers.forEach((customer, index) => this.clock.setTimer(3_000 + Math.floor((index * 2_000) / customers.length), () => this.addCustomer(customer)));
    }
  }

  /** A graceful leave: the cell drains and leaves; its merchants' conversations end; its customers move. */
  private leave(slot: CellSlot): void {
    if (slot.status !== 'up' || slot.incarnation === undefined) return;
    slot.status = 'left';
    slot.downSinceMs = this.clock.now();
    const span: FaultSpan = { kind: 'leave', startS: this.seconds(), endS: undefined, detail: slot.id };
    this.faultSpans.push(span);
    const hosted = this.population.merchants.filter((merchant) => this.candidateHomes(merchant).includes(slot.id) && slot.incarnation!.hosts(TENANT, merchant.id));
    const leaving = new Set(hosted.map((merchant) => merchant.id));
    for (const merchant of hosted) {
      this.homeless.add(merchant.id);
      for (const conv of this.merchantConvs.get(merchant.id) ?? []) this.orphaned.add(conv);
    }
    for (const device of this.devices) {
      if (device.identity.role === 'agent' && leaving.has(device.identity.merchant ?? '')) void device.close();
    }
    // Customers connected there reconnect where the router sends them now: to the home of a
    // merchant of theirs that stays (the first one's first; a move may have taken it elsewhere).
    for (const customer of this.population.customers) {
      const devices = this.customerDevices.get(customer.id);
      if (devices === undefined || devices[0]?.cellId !== slot.id) continue;
      const staying = [customer.primary, customer.secondary].find(
        (merchant) => merchant !== undefined && !leaving.has(merchant.id) && merchant.cellId !== slot.id && this.slots.get(merchant.cellId)?.status !== 'left',
      );
      const live = staying?.cellId;
      if (live === undefined) {
        this.activeCustomers.delete(customer.id);
        for (const device of devices) void device.close();
        continue;
      }
      for (const device of devices) this.clock.setTimer(1_000, () => device.moveTo(live));
    }
    void slot.incarnation.leave().then(() => {
      span.endS = this.seconds();
    });
  }

  /** Moves `count` merchants hosted by cells of `from` to cells of `to`, drawn from the seed. */
  private moveMerchants(count: number, from: readonly string[], to: readonly string[]): void {
    const [sources, targets] = this.resolveGroups([from, to]);
    const sourceCells = new Set(sources);
    const candidates = this.population.merchants.filter(
      (merchant) => sourceCells.has(merchant.cellId) && !this.moving.has(merchant.id) && this.slots.get(merchant.cellId)?.incarnation?.hosts(TENANT, merchant.id) === true,
    );
    for (const at of sampleIndexes(this.faultRandom, candidates.length, Math.min(count, candidates.length))) {
      const merchant = candidates[at]!;
      const choices = targets!.filter((cellId) => cellId !== merchant.cellId);
      if (choices.length > 0) this.moveMerchant(merchant, choices[pickIndex(this.faultRandom, choices.length)]!);
    }
  }

  /**
   * One move through the source cell's MerchantMover, as `POST /v1/admin/merchants/move` starts
   * it. The simulator follows the outcome only to aim its agents and classify sends; the checks
   * look at what the cells host.
   */
  private moveMerchant(merchant: MerchantPlan, to: string): void {
    const source = this.slots.get(merchant.cellId)!;
    const mover = source.incarnation?.mover;
    if (mover === undefined) return;
    const span: FaultSpan = { kind: 'move', startS: this.seconds(), endS: undefined, detail: `${merchant.id}: ${source.id} -> ${to}` };
    this.faultSpans.push(span);
    this.moving.add(merchant.id);
    this.history.merchantMoving(merchant.id);
    this.moveOutcomes.started++;
    const cells = this.moveCells.get(merchant.id) ?? new Set<string>();
    cells.add(source.id).add(to);
    this.moveCells.set(merchant.id, cells);
    // A move whose source crashes never settles (its process is gone): it stays under way.
    mover.move(TENANT, merchant.id, to).then(
      () => {
        this.moveOutcomes.moved++;
        merchant.cellId = to;
        this.settleMove(merchant, span);
      },
      (error: unknown) => {
        const code = (error as { code?: string }).code ?? 'UNKNOWN';
        this.moveOutcomes.failed[code] = (this.moveOutcomes.failed[code] ?? 0) + 1;
        span.detail += ` (failed: ${code})`;
        // A failure after the commit leaves the merchant at the target all the same.
        if (this.slots.get(to)?.incarnation?.hosts(TENANT, merchant.id) === true) merchant.cellId = to;
        this.settleMove(merchant, span);
      },
    );
  }

  private settleMove(merchant: MerchantPlan, span: FaultSpan): void {
    span.endS = this.seconds();
    this.moving.delete(merchant.id);
  }

  /** Asks the router of the agent's cell (or of any running cell) where its merchant lives, and goes there. */
  private reroute(device: DeviceActor, attempt = 0): void {
    const merchant = device.identity.merchant!;
    const viewer = [this.slots.get(device.cellId), ...this.upSlots()].find((slot) => slot?.status === 'up' && slot.incarnation?.mesh?.state === 'running');
    const route = viewer === undefined ? undefined : routeToMerchant(viewer.incarnation!.mesh!.directory, TENANT, merchant);
    if (route === undefined || (route.cellId === device.cellId && attempt < 30)) {
      // The directory has not caught up yet (or the old home still routes to itself): ask again.
      this.clock.setTimer(1_000, () => this.reroute(device, attempt + 1));
      return;
    }
    this.agentReroutes++;
    const plan = this.population.merchants.find((candidate) => candidate.id === merchant);
    if (plan !== undefined) plan.cellId = route.cellId;
    device.moveTo(route.cellId);
  }

  /** The end of traffic and faults: heal everything, restart crashed cells. */
  private finalHeal(): void {
    this.phase = 'settle';
    this.trafficOn = false;
    this.healAtMs = this.clock.now();
    this.healPartitions();
    for (const kind of LINK_FAULT_KINDS) this.setLinkFault(kind, 0, 0);
    this.setLatency(undefined, undefined);
    for (const { span } of [...this.diskFaultSpans]) this.endDiskFault(span);
    for (const slot of this.slots.values()) if (slot.status === 'crashed') this.restart(slot);
    this.watchConvergence('final heal');
  }

  /**
   * Measures how long the directory takes to converge after a heal: checked every
   * checkIntervalMs while no partition is in force. A fault that comes first ends the watch.
   */
  private watchConvergence(what: string): void {
    const record: HealRecord = { atS: this.seconds(), what, convergedMs: null };
    this.heals.push(record);
    const startedMs = this.clock.now();
    this.convergenceTimer?.cancel();
    const check = (): void => {
      this.convergenceTimer = undefined;
      if (this.partitions.length === 0 && this.converged()) {
        record.convergedMs = Math.round(this.clock.now() - startedMs);
        if (what === 'final heal') this.convergedAtMs = this.clock.now();
        return;
      }
      if (this.phase === 'done') return;
      this.convergenceTimer = this.clock.setTimer(this.checkIntervalMs(), check);
    };
    this.convergenceTimer = this.clock.setTimer(0, check);
  }

  private checkIntervalMs(): number {
    return this.slots.size > 200 ? 1_000 : 250;
  }

  // -- observation --------------------------------------------------------------------------------

  private upSlots(): CellSlot[] {
    return [...this.slots.values()].filter((slot) => slot.status === 'up');
  }

  private seconds(): number {
    return Math.round(this.clock.now() - START_MS) / 1000;
  }

  private sampleIntervalMs(): number {
    const total = this.scenario.warmup + this.durationMs + this.scenario.settle;
    return this.scenario.sampleInterval ?? Math.max(1_000, Math.round(total / 300 / 1_000) * 1_000);
  }

  private scheduleSampling(intervalMs: number): void {
    this.clock.setTimer(intervalMs, () => {
      if (this.phase === 'done') return;
      this.sample();
      this.scheduleSampling(intervalMs);
    });
  }

  /** Outbox entries waiting in the running cells: for live destinations, and for cells that left. */
  private outboxWaiting(): { live: number; gone: number } {
    const total = { live: 0, gone: 0 };
    const gone = (cellId: string): boolean => this.slots.get(cellId)?.status === 'left';
    for (const slot of this.upSlots()) {
      const waiting = slot.incarnation?.outboxWaiting(gone);
      total.live += waiting?.live ?? 0;
      total.gone += waiting?.gone ?? 0;
    }
    return total;
  }

  private sample(): void {
    const waiting = this.outboxWaiting();
    const outboxWaiting = waiting.live + waiting.gone;
    this.series.push({
      t: this.seconds(),
      sent: this.history.messagesSent,
      acked: this.history.messagesAcked,
      delivered: this.history.deliveries,
      outboxWaiting,
      agreement: Math.round(this.agreement() * 1000) / 1000,
      cellsUp: this.upSlots().length,
    });
  }

  /** Share of running cells whose membership view (cell, incarnation, liveness) is the most common one. */
  private agreement(): number {
    const digests = new Map<number, number>();
    let running = 0;
    for (const slot of this.upSlots()) {
      const mesh = slot.incarnation?.mesh;
      if (mesh === undefined || mesh.state !== 'running') continue;
      running++;
      const digest = this.viewDigests.of(mesh);
      digests.set(digest, (digests.get(digest) ?? 0) + 1);
    }
    if (running === 0) return 0;
    return Math.max(...digests.values()) / running;
  }

  /**
   * Every running cell holds every other as alive at its current incarnation, left ones as left
   * (or forgotten), and the right merchant homes. Homes are checked only once membership agrees,
   * and by homesAgree (the same answer as homeDisagreements(1) at a fraction of the cost).
   */
  private converged(): boolean {
    return this.membershipDisagreements(1).length === 0 && this.homesAgree();
  }

  private membershipDisagreements(limit: number): string[] {
    const problems: string[] = [];
    const up = this.upSlots();
    for (const viewer of up) {
      const mesh = viewer.incarnation?.mesh;
      if (mesh === undefined || mesh.state !== 'running') {
        problems.push(`${viewer.id} is not running its mesh`);
        if (problems.length >= limit) return problems;
        continue;
      }
      for (const slot of this.slots.values()) {
        const entry = mesh.directory.get(slot.id);
        if (slot.status === 'up') {
          const incarnation = slot.incarnation?.mesh?.state === 'running' ? slot.incarnation.mesh.incarnation : undefined;
          if (entry === undefined || entry.liveness !== 'alive' || entry.record.incarnation !== incarnation) {
            problems.push(`${viewer.id} holds ${slot.id} as ${entry === undefined ? 'unknown' : `${entry.liveness} incarnation ${entry.record.incarnation}`}; it is alive at incarnation ${incarnation}`);
          }
        } else if (slot.status === 'left' && entry !== undefined && entry.liveness !== 'left') {
          problems.push(`${viewer.id} holds ${slot.id}, which left, as ${entry.liveness}`);
        }
        if (problems.length >= limit) return problems;
      }
      if (mesh.conflicts().length > 0) {
        problems.push(`${viewer.id} reports merchant conflicts: ${mesh.conflicts().map((conflict) => conflict.merchant).join(', ')}`);
        if (problems.length >= limit) return problems;
      }
    }
    return problems;
  }

  /**
   * Each merchant is hosted by exactly one running cell (none once its cell left), and every
   * running cell's directory names that cell as its home. Which cell hosts it is what the cells'
   * cores say, so moves that failed or never finished are judged by their real outcome.
   */
  private homeDisagreements(limit: number): string[] {
    const problems: string[] = [];
    const homes = this.expectedHomes(problems, limit);
    if (problems.length >= limit) return problems;
    for (const viewer of this.upSlots()) {
      const mesh = viewer.incarnation?.mesh;
      if (mesh === undefined) continue;
      for (const [merchant, expected] of homes) {
        const held = mesh.homeCellOf(TENANT, merchant);
        if (held !== expected) {
          problems.push(`${viewer.id} holds ${held ?? 'no cell'} as the home of ${merchant}; it is ${expected ?? 'homeless (its cell left)'}`);
          if (problems.length >= limit) return problems;
        }
      }
    }
    return problems;
  }

  /** The running cell hosting each merchant, by the cells' cores; problems (more than one, or none) go to `problems`, up to `limit`. */
  private expectedHomes(problems: string[], limit: number): Map<string, string | undefined> {
    const homes = new Map<string, string | undefined>();
    for (const merchant of this.population.merchants) {
      const hosting = this.candidateHomes(merchant).filter((cellId) => {
        const slot = this.slots.get(cellId);
        return slot?.status === 'up' && slot.incarnation?.hosts(TENANT, merchant.id) === true;
      });
      if (hosting.length > 1) problems.push(`${merchant.id} is hosted by ${hosting.length} cells: ${hosting.join(', ')}`);
      else if (hosting.length === 0 && !this.homeless.has(merchant.id)) problems.push(`${merchant.id} is hosted by no running cell`);
      if (problems.length >= limit) return homes;
      homes.set(merchant.id, hosting[0]);
    }
    return homes;
  }

  /**
   * Whether homeDisagreements(1) finds nothing, for the convergence watch. Asking every viewer
   * for every merchant's home is cells x merchants lookups; instead each viewer's directory is
   * compared with those of viewers already found right, and only a viewer unlike all of them is
   * asked merchant by merchant. A directory's homes are a function of its records and their
   * liveness (the rule in mesh/directory.ts), so a viewer holding the same records (same
   * signatures) with the same claim-holding liveness as a right viewer is right too. The final
   * checks still ask every viewer (homeDisagreements).
   */
  private homesAgree(): boolean {
    const problems: string[] = [];
    const homes = this.expectedHomes(problems, 1);
    if (problems.length > 0) return false;
    const agreeing: DirectoryView[] = [];
    for (const viewer of this.upSlots()) {
      const mesh = viewer.incarnation?.mesh;
      if (mesh === undefined) continue;
      if (agreeing.some((known) => sameHomeInputs(known, mesh.directory))) continue;
      for (const [merchant, expected] of homes) {
        if (mesh.homeCellOf(TENANT, merchant) !== expected) return false;
      }
      // A bound on the comparisons per viewer when the views differ widely.
      if (agreeing.length < MAX_HOME_VIEWS_COMPARED) agreeing.push(mesh.directory);
    }
    return true;
  }

  /** The cells that may host `merchant`: where it started and every cell a move involved. */
  private candidateHomes(merchant: MerchantPlan): string[] {
    const moved = this.moveCells.get(merchant.id);
    if (moved === undefined) return [merchant.cellId];
    return [...new Set([merchant.cellId, ...moved])].sort();
  }

  /** Nothing left to arrive: every acked message on every device of its parties, and the outboxes empty. */
  private quiescent(): boolean {
    if (this.history.pendingSendsOutside(this.orphaned) > 0 || this.history.undelivered(this.orphaned, 1) > 0) return false;
    return this.outboxWaiting().live === 0;
  }

  private finalChecks(): void {
    const { invariants } = this.scenario;
    this.history.checkLost(this.orphaned);
    if (this.convergedAtMs === undefined) {
      for (const problem of [...this.membershipDisagreements(10), ...this.homeDisagreements(10)]) this.history.violation('membership', `not converged at the end: ${problem}`);
    } else if (this.convergedAtMs - (this.healAtMs ?? 0) > invariants.convergeWithin) {
      this.history.violation('membership', `converged ${this.convergedAtMs - (this.healAtMs ?? 0)} ms after the heal; the bound is ${invariants.convergeWithin} ms`);
    }
    // Exactly one home per merchant, checked on every live cell whatever the convergence said.
    for (const problem of this.homeDisagreements(10)) this.history.violation('merchant-home', problem);
    const inCell = this.inCellStats();
    if (inCell.eligible > 0 && inCell.ratio < invariants.inCellDeliveryRatioMin) {
      this.history.violation('in-cell-delivery', `${inCell.ackedWithinBound} of ${inCell.eligible} in-cell sends during partitions were acked within ${invariants.inCellAckWithin} ms (${(inCell.ratio * 100).toFixed(2)}%); at least ${invariants.inCellDeliveryRatioMin * 100}% must be`);
    }
  }

  /**
   * In-cell delivery during partitions, without the sends to a cell that was down or whose disk
   * failed meanwhile: the autonomy guarantee is about partitions, and a failing disk delays acks
   * by design (STORE_UNAVAILABLE, then the client's retry).
   */
  private inCellStats(): InCellStats {
    return this.history.inCellDelivery(this.scenario.invariants.inCellAckWithin, (cellId, fromMs, toMs) => {
      const slot = this.slots.get(cellId);
      if (slot === undefined) return true;
      if (slot.downSinceMs !== undefined && slot.downSinceMs <= toMs) return true;
      const diskFailed = this.diskFaultIntervals.get(cellId)?.some(([startMs, endMs]) => startMs <= toMs && (endMs === undefined || endMs >= fromMs)) === true;
      return diskFailed || slot.downIntervals.some(([downMs, upMs]) => downMs <= toMs && upMs >= fromMs);
    });
  }

  private report(virtualSeconds: number, wallSeconds: number, cpuSeconds: number): SimReport {
    const { scenario } = this;
    const inCell = this.inCellStats();
    let storeWrites = 0;
    let lost = 0;
    const disk = { readErrors: 0, writeErrors: 0, latencySpikes: 0, failedStarts: this.failedStarts };
    for (const slot of this.slots.values()) {
      const stats = slot.disk.stats();
      storeWrites += stats.writes;
      lost += stats.droppedByCrash;
      disk.readErrors += stats.readErrors;
      disk.writeErrors += stats.writeErrors;
      disk.latencySpikes += stats.latencySpikes;
    }
    const devicesNotOpenAtEnd = this.devices.filter((device) => !device.isOpen && device.client?.state !== 'closed').length;
    const file = this.options.scenarioFile ?? '<scenario file>';
    const durationFlag = this.options.durationMs === undefined ? '' : ` --duration ${this.options.durationMs / 1000}s`;
    const body = {
      scenario: scenario.name,
      seed: this.seed,
      replay: `npx cellmesh sim --scenario ${file} --seed ${this.seed}${durationFlag}`,
      cells: scenario.cells,
      cellsAtEnd: this.upSlots().length,
      merchants: this.population.merchants.length,
      customers: this.population.customers.length,
      agents: this.population.merchants.reduce((sum, merchant) => sum + merchant.agents.length, 0),
      devices: this.devices.length,
      messagesSent: this.history.messagesSent,
      messagesAcked: this.history.messagesAcked,
      deliveries: this.history.deliveries,
      receipts: this.history.receipts,
      sendFailures: this.history.failuresByCode(),
      sendFailuresDuringPartitions: this.history.failuresDuringPartitionsByCode(),
      clientErrors: Object.fromEntries([...this.clientErrors].sort(([a], [b]) => (a < b ? -1 : 1))),
      virtualSeconds,
      violations: this.history.violationTotal,
      violationsByKind: this.history.violationSummary(),
      violationExamples: this.history.violationExamples(),
      convergeMsAfterHeal: this.convergedAtMs === undefined || this.healAtMs === undefined ? null : Math.round(this.convergedAtMs - this.healAtMs),
      heals: this.heals,
      inCellDeliveryDuringPartition: { ...inCell, ratio: Math.round(inCell.ratio * 10_000) / 10_000, boundMs: scenario.invariants.inCellAckWithin, required: scenario.invariants.inCellDeliveryRatioMin },
      ackLatency: this.history.ackLatency(),
      bounds: {
        convergeWithinMs: scenario.invariants.convergeWithin,
        inCellAckWithinMs: scenario.invariants.inCellAckWithin,
        inCellDeliveryRatioMin: scenario.invariants.inCellDeliveryRatioMin,
        settleMaxMs: scenario.settle,
      },
      faults: this.faultSpans,
      series: this.series,
      work: { timersFired: this.clock.fired, loopSteps: this.loopSteps, storeWrites, storeWritesLostToCrashes: lost, devicesNotOpenAtEnd },
      disk,
      errorAnswers: Object.fromEntries([...this.errorAnswers].sort(([a], [b]) => (a < b ? -1 : 1))),
      /** Outbox entries still waiting at the end for cells that left: nothing ever delivers or drops them. */
      outboxEntriesForLeftCells: this.outboxWaiting().gone,
      /** Merchant moves: started, finished, refused or failed by code, and those whose source crashed under them. */
      moves: { ...this.moveOutcomes, unsettled: this.moving.size, agentReroutes: this.agentReroutes },
      /** Sends still neither acknowledged nor refused at the end (the settle phase ran out first). */
      sendsPendingAtEnd: this.history.pendingSendsOutside(this.orphaned),
      /** Sends into conversations that ended when their merchant's cell left, still unanswered (not violations). */
      sendsPendingInEndedConversations: this.history.pendingSends - this.history.pendingSendsOutside(this.orphaned),
    };
    const digest = createHash('sha256').update(JSON.stringify(body)).digest('hex');
    return {
      ...body,
      digest,
      wallSeconds: Math.round(wallSeconds * 1000) / 1000,
      simSpeed: Math.round((virtualSeconds / Math.max(0.001, wallSeconds)) * 100) / 100,
      cpuSeconds: Math.round(cpuSeconds * 1000) / 1000,
    };
  }
}

const LINK_FAULT_KINDS = ['loss', 'duplicate', 'reorder'] as const;
type LinkFaultKind = (typeof LINK_FAULT_KINDS)[number];

export function cellIdOf(index: number): string {
  return `cell-${String(index).padStart(4, '0')}`;
}

function describeCells(cells: readonly string[]): string {
  if (cells.length <= 4) return cells.join(',');
  return `${cells.slice(0, 3).join(',')},… (${cells.length} cells)`;
}

function turn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve)); // real-clock-ok: one macrotask turn; no virtual time passes
}

/** Distinct directories the convergence watch's home check remembers per check. */
const MAX_HOME_VIEWS_COMPARED = 8;

/**
 * True when two directories hold the same records (by signature: each is verified, so the same
 * signature is the same record text) with the same claim-holding liveness, which is all the home
 * rule reads. Stops at the first difference.
 */
function sameHomeInputs(a: DirectoryView, b: DirectoryView): boolean {
  if (a.size !== b.size) return false;
  for (const entry of b.values()) {
    const other = a.get(entry.record.cellId);
    if (other === undefined || other.signed.signature !== entry.signed.signature || holdsClaims(other.liveness) !== holdsClaims(entry.liveness)) return false;
  }
  return true;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function error(reason: unknown): string {
  return reason instanceof Error ? (reason.stack ?? reason.message).split('\n').slice(0, 4).join(' | ') : String(reason);
}

/** Whether `error` is, or was caused by, a failure of the store (a disk fault, in the simulator). */
function causedByStore(error: unknown): boolean {
  for (let cause = error, depth = 0; cause !== undefined && depth < 8; cause = (cause as { cause?: unknown }).cause, depth++) {
    if (cause instanceof StoreError) return true;
    if (typeof cause !== 'object' || cause === null) return false;
  }
  return false;
}
