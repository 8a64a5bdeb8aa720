// The report of a run (SimReport): its shape, the time series sampled while it runs, and its
// assembly from the finished run with the digest that makes two runs of one seed comparable.
// sim/report.ts renders it (JSON, summary, HTML).
import { createHash } from 'node:crypto';
import type { Cluster } from './cluster.js';
import type { Convergence, HealRecord } from './convergence.js';
import type { DeskFigures } from './desk-agents.js';
import type { InCellStats, LatencySummary, Violation } from './history.js';
import type { MerchantMoves } from './merchant-moves.js';
import type { OutageFigures } from './outage-checks.js';
import type { FaultSpan, SimWorld } from './sim-world.js';
import { ViewDigests } from './view-digests.js';
import type { Workload } from './workload.js';

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
  /**
   * Merchant moves; `agentReroutes` and `customerReroutes` count sessions that opened on another
   * cell than the device's last one (its SDK followed a move or a redirect by itself).
   */
  readonly moves: { readonly started: number; readonly moved: number; readonly failed: Record<string, number>; readonly unsettled: number; readonly agentReroutes: number; readonly customerReroutes: number };
  /** Route requests the devices' SDKs made over the simulated network (sim/sim-http.ts). */
  readonly routeRequests: number;
  /** Customers' sends made while their merchant's home cell was down, and what became of them (sim/outage-checks.ts). */
  readonly outageSends: OutageFigures & { readonly acceptWithinMs: number | null };
  /** The desks, when the scenario has them: system messages seen by type, and what the agents did. */
  readonly desk?: DeskFigures;
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

/** Samples the run's time series (sent, acked, delivered, outboxes, agreement, cells up) at a fixed virtual interval. */
export class SeriesSampler {
  readonly series: SeriesPoint[] = [];
  private readonly viewDigests = new ViewDigests();

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: Cluster,
  ) {}

  /** Samples every `sampleInterval` of the scenario (by default about 300 points over the run) until the run is done. */
  start(): void {
    const { scenario } = this.world;
    const total = scenario.warmup + this.world.durationMs + scenario.settle;
    this.scheduleSampling(scenario.sampleInterval ?? Math.max(1_000, Math.round(total / 300 / 1_000) * 1_000));
  }

  sample(): void {
    const { history } = this.world;
    const waiting = this.cluster.outboxWaiting();
    const outboxWaiting = waiting.live + waiting.gone;
    this.series.push({
      t: this.world.seconds(),
      sent: history.messagesSent,
      acked: history.messagesAcked,
      delivered: history.deliveries,
      outboxWaiting,
      agreement: Math.round(this.agreement() * 1000) / 1000,
      cellsUp: this.cluster.upSlots().length,
    });
  }

  private scheduleSampling(intervalMs: number): void {
    this.world.clock.setTimer(intervalMs, () => {
      if (this.world.phase === 'done') return;
      this.sample();
      this.scheduleSampling(intervalMs);
    });
  }

  /** Share of running cells whose membership view (cell, incarnation, liveness) is the most common one. */
  private agreement(): number {
    const digests = new Map<number, number>();
    let running = 0;
    for (const slot of this.cluster.upSlots()) {
      const mesh = slot.incarnation?.mesh;
      if (mesh === undefined || mesh.state !== 'running') continue;
      running++;
      const digest = this.viewDigests.of(mesh);
      digests.set(digest, (digests.get(digest) ?? 0) + 1);
    }
    if (running === 0) return 0;
    return Math.max(...digests.values()) / running;
  }
}

/** What the report is assembled from: the parts of the finished run. */
export interface ReportSources {
  readonly world: SimWorld;
  readonly cluster: Cluster;
  readonly workload: Workload;
  readonly moves: MerchantMoves;
  readonly convergence: Convergence;
  readonly series: readonly SeriesPoint[];
  readonly loopSteps: number;
  /** The scenario file, for the replay command. */
  readonly scenarioFile: string | undefined;
  /** The run's override of the scenario's duration, for the replay command. */
  readonly durationOverrideMs: number | undefined;
}

export function assembleReport(sources: ReportSources, times: { readonly virtualSeconds: number; readonly wallSeconds: number; readonly cpuSeconds: number }): SimReport {
  const { world, cluster, workload, moves, convergence } = sources;
  const { scenario, history, population, seed } = world;
  const { virtualSeconds, wallSeconds, cpuSeconds } = times;
  const inCell = convergence.inCellStats();
  let storeWrites = 0;
  let lost = 0;
  const disk = { readErrors: 0, writeErrors: 0, latencySpikes: 0, failedStarts: cluster.failedStarts };
  for (const slot of cluster.slots.values()) {
    const stats = slot.disk.stats();
    storeWrites += stats.writes;
    lost += stats.droppedByCrash;
    disk.readErrors += stats.readErrors;
    disk.writeErrors += stats.writeErrors;
    disk.latencySpikes += stats.latencySpikes;
  }
  const devicesNotOpenAtEnd = workload.devices.filter((device) => !device.isOpen && device.client?.state !== 'closed').length;
  const file = sources.scenarioFile ?? '<scenario file>';
  const durationFlag = sources.durationOverrideMs === undefined ? '' : ` --duration ${sources.durationOverrideMs / 1000}s`;
  const { convergedAtMs, healAtMs } = convergence;
  const body = {
    scenario: scenario.name,
    seed,
    replay: `npx cellmesh sim --scenario ${file} --seed ${seed}${durationFlag}`,
    cells: scenario.cells,
    cellsAtEnd: cluster.upSlots().length,
    merchants: population.merchants.length,
    customers: population.customers.length,
    agents: population.merchants.reduce((sum, merchant) => sum + merchant.agents.length, 0),
    devices: workload.devices.length,
    messagesSent: history.messagesSent,
    messagesAcked: history.messagesAcked,
    deliveries: history.deliveries,
    receipts: history.receipts,
    sendFailures: history.failuresByCode(),
    sendFailuresDuringPartitions: history.failuresDuringPartitionsByCode(),
    clientErrors: sortedCounts(workload.clientErrors),
    virtualSeconds,
    violations: history.violationTotal,
    violationsByKind: history.violationSummary(),
    violationExamples: history.violationExamples(),
    convergeMsAfterHeal: convergedAtMs === undefined || healAtMs === undefined ? null : Math.round(convergedAtMs - healAtMs),
    heals: convergence.heals,
    inCellDeliveryDuringPartition: { ...inCell, ratio: Math.round(inCell.ratio * 10_000) / 10_000, boundMs: scenario.invariants.inCellAckWithin, required: scenario.invariants.inCellDeliveryRatioMin },
    ackLatency: history.ackLatency(),
    bounds: {
      convergeWithinMs: scenario.invariants.convergeWithin,
      inCellAckWithinMs: scenario.invariants.inCellAckWithin,
      inCellDeliveryRatioMin: scenario.invariants.inCellDeliveryRatioMin,
      settleMaxMs: scenario.settle,
    },
    faults: world.faultSpans,
    series: sources.series,
    work: { timersFired: world.clock.fired, loopSteps: sources.loopSteps, storeWrites, storeWritesLostToCrashes: lost, devicesNotOpenAtEnd },
    disk,
    errorAnswers: sortedCounts(workload.errorAnswers),
    /** Outbox entries still waiting at the end for cells that left: nothing ever delivers or drops them. */
    outboxEntriesForLeftCells: cluster.outboxWaiting().gone,
    /** Merchant moves: started, finished, refused or failed by code, and those whose source crashed under them. */
    moves: { ...moves.outcomes, unsettled: moves.moving.size, agentReroutes: workload.agentReroutes, customerReroutes: workload.customerReroutes },
    routeRequests: workload.http.routeRequests,
    outageSends: { ...convergence.outage, acceptWithinMs: scenario.invariants.outageAcceptWithin ?? null },
    ...(workload.desk === undefined ? {} : { desk: workload.desk.figures() }),
    /** Sends still neither acknowledged nor refused at the end (the settle phase ran out first). */
    sendsPendingAtEnd: history.pendingSendsOutside(workload.orphaned),
    /** Sends into conversations that ended when their merchant's cell left, still unanswered (not violations). */
    sendsPendingInEndedConversations: history.pendingSends - history.pendingSendsOutside(workload.orphaned),
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

function sortedCounts(counts: ReadonlyMap<string, number>): Record<string, number> {
  return Object.fromEntries([...counts].sort(([a], [b]) => (a < b ? -1 : 1)));
}
