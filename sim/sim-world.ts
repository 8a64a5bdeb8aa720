// The shared state of one simulation run: the virtual clock, the seed and the scenario, the
// history the checkers judge, who is in the world, the mesh network the cells talk over, the
// phase of the run and the faults of the report. The cluster, the workload, the fault planner,
// the convergence checks and the report each read it; simulator.ts builds it and moves the phase
// (the fault planner's final heal begins the settle).
import { DeskConfig } from '../cell/settings.js';
import type { Random } from '../platform/random.js';
import { History } from './history.js';
import { latencySampler, type LatencySampler } from './latency.js';
import { Population } from './population.js';
import { stream } from './rng.js';
import type { Scenario } from './scenario.js';
import { SimClock } from './sim-clock.js';
import { SimNetwork } from './sim-network.js';

export const TENANT = 'mall';
export const TENANT_SECRET = 'cellmesh-simulator-tenant-secret-0123456789';
/** The virtual time the run starts at. */
export const START_MS = 1_700_000_000_000;

export type SimPhase = 'warmup' | 'traffic' | 'settle' | 'done';

export interface FaultSpan {
  readonly kind: string;
  readonly startS: number;
  /** Undefined while it lasted to the final heal. */
  endS: number | undefined;
  /** What it did; a move's outcome is added when it ends. */
  detail: string;
}

export class SimWorld {
  readonly clock = new SimClock(START_MS);
  /** Agents of a merchant with a desk get their own consultations only: the lost set asks less of them. */
  readonly history = new History(START_MS, (merchant) => this.population.merchant(merchant)?.desk !== undefined);
  readonly seed: number;
  /** The traffic phase's length: the scenario's, or the run's override. */
  readonly durationMs: number;
  readonly population: Population;
  /** The desk's settings of every cell (the scenario's `desk`, or the defaults). */
  readonly deskConfig: DeskConfig;
  readonly network: SimNetwork;
  /** Draws of the set-up: merchants' popularity ranks, the bootstrap cells of new cells. */
  readonly setupRandom: Random;
  /** Draws of the faults: their targets, the devices a flap drops, the cells a restart bootstraps through. */
  readonly faultRandom: Random;
  /** One-way latencies in force; a `latency` fault swaps them for a while. */
  meshLatency: LatencySampler;
  deviceLatency: LatencySampler;
  phase: SimPhase = 'warmup';
  /** Every fault of the run, for the report, in the order they started. */
  readonly faultSpans: FaultSpan[] = [];

  constructor(
    readonly scenario: Scenario,
    seed: number,
    durationMs: number | undefined,
  ) {
    this.seed = seed >>> 0;
    this.durationMs = durationMs ?? scenario.duration;
    this.setupRandom = stream(this.seed, 'setup');
    this.faultRandom = stream(this.seed, 'faults');
    this.meshLatency = latencySampler(scenario.network.mesh.latency);
    this.deviceLatency = latencySampler(scenario.network.devices.latency);
    this.network = new SimNetwork({ clock: this.clock, random: stream(this.seed, 'mesh-network'), latencyMs: (_from, _to, random) => this.meshLatency(random) });
    this.population = new Population(
      {
        agentsPerMerchant: scenario.agentsPerMerchant,
        zipfExponent: scenario.merchantPopularity.zipf,
        secondDeviceShare: scenario.secondDeviceShare,
        crossCellShare: scenario.crossCellShare,
        desk: scenario.desk,
      },
      this.setupRandom,
      stream(this.seed, 'desk-population'),
    );
    const desk = scenario.desk;
    this.deskConfig = DeskConfig.parse(desk === undefined ? {} : { graceMs: desk.grace, stickyWindowMs: desk.stickyWindow, inactivityCloseMs: desk.inactivityClose });
  }

  /** Devices send, answer and read only in the traffic phase. */
  get trafficOn(): boolean {
    return this.phase === 'traffic';
  }

  /** Virtual seconds since the start, to the ms. */
  seconds(): number {
    return Math.round(this.clock.now() - START_MS) / 1000;
  }
}
