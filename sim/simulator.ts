// One simulation run: builds the simulated world (sim/sim-world.ts) and its parts, the cluster,
// the workload, the fault planner, the convergence checks and the report, schedules the phases
// (warmup, traffic and faults, final heal, settle) and drives the virtual clock to the end.
import { Cluster } from './cluster.js';
import { Convergence } from './convergence.js';
import { FaultPlanner } from './fault-planner.js';
import { faultTimeline } from './fault-schedule.js';
import { MerchantMoves } from './merchant-moves.js';
import { Partitions } from './partitions.js';
import type { Scenario } from './scenario.js';
import { assembleReport, SeriesSampler, type SimReport } from './sim-report.js';
import { SimWorld, START_MS, type SimPhase } from './sim-world.js';
import { Workload } from './workload.js';

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

export interface SimProgress {
  readonly phase: SimPhase;
  readonly virtualMs: number;
  /** Virtual ms the run will take at most (warmup + duration + settle). */
  readonly plannedMs: number;
  readonly messagesSent: number;
  readonly violations: number;
  readonly cellsUp: number;
}

/** Runs one simulation to the end and returns its report. Throws only on a bug of the simulator or a crash of the code under test. */
export async function runSimulation(options: SimulationOptions): Promise<SimReport> {
  const simulation = new Simulation(options);
  return simulation.run();
}

class Simulation {
  private readonly world: SimWorld;
  private readonly cluster: Cluster;
  private readonly partitions: Partitions;
  private readonly moves: MerchantMoves;
  private readonly workload: Workload;
  private readonly convergence: Convergence;
  private readonly planner: FaultPlanner;
  private readonly sampler: SeriesSampler;
  private loopSteps = 0;
  private progressAtMs = 0;

  constructor(private readonly options: SimulationOptions) {
    const world = new SimWorld(options.scenario, options.seed, options.durationMs);
    this.world = world;
    // The cluster and the partitions tell the convergence watch about heals (built after them: it reads both).
    this.cluster = new Cluster(world, { restarted: (slot) => this.restarted(slot.id) }, options.brokenDurability === true);
    this.partitions = new Partitions(world, this.cluster, { ended: (what) => this.convergence.watch(what) });
    this.moves = new MerchantMoves(world, this.cluster);
    this.workload = new Workload(world, this.cluster, this.moves, this.partitions);
    this.convergence = new Convergence(world, this.cluster, this.moves, this.workload, this.partitions);
    this.planner = new FaultPlanner(world, this.cluster, this.partitions, this.moves, this.workload, this.convergence);
    this.sampler = new SeriesSampler(world, this.cluster);
  }

  async run(): Promise<SimReport> {
    const wallStartMs = performance.now(); // real-clock-ok: the run's wall time is reported, never fed to the simulation
    const cpuStart = process.cpuUsage();
    // A rejection nobody handles would crash a production process: it is a violation here.
    const onUnhandled = (reason: unknown): void => {
      this.world.history.violation('unhandled-rejection', error(reason), this.world.clock.now());
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      return await this.runPhases(wallStartMs, cpuStart);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  }

  private async runPhases(wallStartMs: number, cpuStart: NodeJS.CpuUsage): Promise<SimReport> {
    const { world } = this;
    const { scenario, clock } = world;
    const trafficStartMs = START_MS + scenario.warmup;
    const trafficEndMs = trafficStartMs + world.durationMs;
    const settleEndMs = trafficEndMs + scenario.settle;
    const plannedMs = settleEndMs - START_MS;
    this.setUp();
    this.sampler.start();
    clock.setTimer(scenario.warmup, () => {
      world.phase = 'traffic';
    });
    for (const event of faultTimeline(scenario, world.seed, world.durationMs)) {
      clock.setTimer(scenario.warmup + event.atMs, () => this.planner.apply(event));
    }
    clock.setTimer(scenario.warmup + world.durationMs, () => this.planner.finalHeal());

    await this.runUntil(trafficEndMs, plannedMs);
    // The settle phase: everything must arrive and the directory converge; it ends early once they did.
    await this.runUntilSettled(settleEndMs, plannedMs);
    // A little more time for the last acks and receipts to travel, the same for every run.
    await this.runUntil(clock.now() + 2_000, plannedMs);
    // The desks go on after the traffic (agents close and come back, the desk's own timers close and
    // release), so that time may have made a system message the customer's cell has not delivered
    // yet: it gets the rest of the settle phase to arrive, as the settle phase gave everything else.
    if (clock.now() < settleEndMs && !this.settled()) await this.runUntilSettled(settleEndMs, plannedMs);
    world.phase = 'done';
    this.sampler.sample();

    this.convergence.finalChecks();
    this.workload.checkDesks();
    const virtualSeconds = (clock.now() - START_MS) / 1000;
    const wallSeconds = (performance.now() - wallStartMs) / 1000; // real-clock-ok: reported only
    const cpu = process.cpuUsage(cpuStart);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    this.options.onProgress?.(this.progress(plannedMs));
    return assembleReport(
      {
        world,
        cluster: this.cluster,
        workload: this.workload,
        moves: this.moves,
        convergence: this.convergence,
        series: this.sampler.series,
        loopSteps: this.loopSteps,
        scenarioFile: this.options.scenarioFile,
        durationOverrideMs: this.options.durationMs,
      },
      { virtualSeconds, wallSeconds, cpuSeconds },
    );
  }

  /**
   * Cells start over the first 30 % of the warmup; devices connect once their cells run: agents
   * first, then customers, spread over the warmup.
   */
  private setUp(): void {
    const { scenario, clock, population } = this.world;
    const startWindowMs = Math.floor(scenario.warmup * 0.3);
    for (let index = 0; index < scenario.cells; index++) {
      const slot = this.cluster.addSlot(index, scenario.merchantsPerCell);
      const startAtMs = scenario.cells <= 1 ? 0 : Math.floor((index * startWindowMs) / scenario.cells);
      clock.setTimer(startAtMs, () => this.cluster.startCell(slot));
    }
    const customers = population.addCustomers(scenario.customers);
    const agentsAtMs = Math.floor(scenario.warmup * 0.35);
    const customersFromMs = Math.floor(scenario.warmup * 0.4);
    const customersWindowMs = Math.max(1, Math.floor(scenario.warmup * 0.4));
    for (const merchant of population.merchants) clock.setTimer(agentsAtMs, () => this.workload.addAgents(merchant));
    customers.forEach((customer, index) => {
      const atMs = customersFromMs + Math.floor((index * customersWindowMs) / Math.max(1, customers.length));
      clock.setTimer(atMs, () => this.workload.addCustomer(customer));
    });
  }

  /** Runs until the directory converged and everything acknowledged or seen arrived (checked every checkIntervalMs), or until `endMs`. */
  private async runUntilSettled(endMs: number, plannedMs: number): Promise<void> {
    const { clock } = this.world;
    let done = false;
    const check = (): void => {
      if (this.settled()) {
        done = true;
        return;
      }
      clock.setTimer(this.convergence.checkIntervalMs(), check);
    };
    clock.setTimer(0, check);
    await this.runUntil(endMs, plannedMs, () => done);
  }

  private settled(): boolean {
    return this.convergence.convergedAtMs !== undefined && this.convergence.quiescent();
  }

  /** A restart during the traffic phase is a heal: the convergence watch measures it. */
  private restarted(cellId: string): void {
    if (this.world.phase === 'traffic') this.convergence.watch(`restart of ${cellId}`);
  }

  /**
   * Fires the timers of each virtual ms in turn and lets every promise chain they started run
   * before the next: a macrotask turn (setImmediate) drains the microtask queue, and nothing
   * in the simulated world waits on anything else (no I/O, no real timers), so each step
   * finishes all work of its ms, and the order of everything is fixed by the seed.
   */
  private async runUntil(endMs: number, plannedMs: number, stop?: () => boolean): Promise<void> {
    const { clock } = this.world;
    for (;;) {
      if (stop?.() === true) return;
      const next = clock.nextDueMs();
      if (next === undefined || next > endMs) {
        clock.advanceTo(endMs);
        await turn();
        return;
      }
      clock.advanceTo(next);
      await turn();
      if (++this.loopSteps % PROGRESS_EVERY_STEPS === 0 || next - this.progressAtMs >= PROGRESS_EVERY_VIRTUAL_MS) {
        this.progressAtMs = next;
        this.options.onProgress?.(this.progress(plannedMs));
      }
    }
  }

  private progress(plannedMs: number): SimProgress {
    const { world } = this;
    return {
      phase: world.phase,
      virtualMs: world.clock.now() - START_MS,
      plannedMs,
      messagesSent: world.history.messagesSent,
      violations: world.history.violationTotal,
      cellsUp: this.cluster.upSlots().length,
    };
  }
}

function turn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve)); // real-clock-ok: one macrotask turn; no virtual time passes
}

function error(reason: unknown): string {
  return reason instanceof Error ? (reason.stack ?? reason.message).split('\n').slice(0, 4).join(' | ') : String(reason);
}
