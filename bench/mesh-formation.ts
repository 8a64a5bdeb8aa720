/**
 * The mesh benchmark's cluster: starting its cells (how many processes start at once, and what
 * their start costs), timing the formation of the mesh, and what an idle cell costs once the
 * start-up has settled.
 *
 * Why cells start a few at a time: a cell process spends about a second of CPU before its
 * `listening` line (Node, the bundle, LevelDB, libp2p's keys), so 15 spawned at once on a 2-core
 * machine take 20-40 s to all listen and the last ones miss the listening time-out, while the
 * first ones already gossip with the others and slow them further. Starting as many at once as
 * there are cores keeps each start about as fast as a lone one, and the mesh's own formation
 * (from the last `listening` line until every view shows every cell alive) is timed apart from
 * the start-up of the processes.
 */
import { availableParallelism } from 'node:os';
import { cpuSecondsOf, ioBytesOf, OtherCpu, sleep, waitAllAlive, type BenchCell, type BenchCluster, type CellSpec } from './mesh-cluster.js';
import { metricTotal, round, roundSummary, summarize, type SampleSummary } from './mesh-stats.js';

/** After the last cell listens, the mesh has this long to show every cell alive everywhere. */
const CLUSTER_FORM_TIMEOUT_MS = 30_000;

/** Cells start this many at a time unless the run says otherwise: one per core. */
export const DEFAULT_START_CONCURRENCY = availableParallelism();

export function cellIdOf(index: number): string {
  return `c${index + 1}`;
}

export function merchantOf(cellId: string): string {
  return `m-${cellId}`;
}

/** The running cells of the run, by id, in start order; restarts replace entries. */
export class Cells {
  readonly byId = new Map<string, BenchCell>();
  readonly addresses = new Map<string, string>();

  constructor(readonly cluster: BenchCluster) {}

  /** In id order (c1, c2, ...), whatever order they started or restarted in. */
  get list(): BenchCell[] {
    const number = (cell: BenchCell): number => Number(cell.spec.cellId.slice(1));
    return [...this.byId.values()].sort((left, right) => number(left) - number(right));
  }

  at(index: number): BenchCell {
    const cell = this.list[index];
    if (cell === undefined) throw new Error(`no cell #${index + 1}`);
    return cell;
  }

  others(cell: BenchCell): BenchCell[] {
    return this.list.filter((other) => other.spec.cellId !== cell.spec.cellId);
  }

  /** What a cell started later bootstraps through: the first two cells (or one). */
  bootstrapList(excluding?: string): string[] {
    return [...this.addresses.entries()]
      .filter(([cellId]) => cellId !== excluding)
      .slice(0, 2)
      .map(([, address]) => address);
  }

  async add(spec: CellSpec, ports?: { port: number; meshPort: number }): Promise<BenchCell> {
    const cell = await this.cluster.start(spec, ports);
    this.byId.set(spec.cellId, cell);
    this.addresses.set(spec.cellId, await this.cluster.meshAddressOf(cell));
    return cell;
  }
}

export interface FormationResult {
  cells: number;
  startConcurrency: number;
  /** First spawn -> the last cell's `listening` line: starting the processes. */
  startupMs: number;
  /** The last cell's `listening` line -> every cell's view shows every cell alive: the mesh's part. */
  formMs: number;
  /** First spawn -> every cell sees every other alive. */
  formFromFirstSpawnMs: number;
  /** Spawn -> `listening`, over the cells. */
  processStartMs: SampleSummary;
  /** CPU each process used before its `listening` line, over the cells, seconds. */
  processStartCpuSeconds: SampleSummary;
}

/**
 * Starts `count` cells: c1 with no bootstrap, c2 through c1, the rest through both,
 * `startConcurrency` at a time; then waits until every view shows every cell alive.
 */
export async function formCluster(cells: Cells, count: number, startConcurrency: number, log: (line: string) => void): Promise<FormationResult> {
  const firstSpawnMs = performance.now();
  const start = async (cellId: string): Promise<void> => {
    const cell = await cells.add({ cellId, merchants: [merchantOf(cellId)], bootstrap: cells.bootstrapList() });
    log(
      `  ${cellId} listening ${Math.round(cell.listeningAtMs - firstSpawnMs)} ms after the first spawn ` +
        `(its own start ${Math.round(cell.listeningAtMs - cell.spawnedAtMs)} ms, ${round(cell.cpuSecondsAtListening, 2) ?? '-'} s of CPU)`,
    );
  };
  await start(cellIdOf(0));
  if (count > 1) await start(cellIdOf(1));
  const rest = Array.from({ length: Math.max(0, count - 2) }, (_, offset) => cellIdOf(offset + 2));
  const starters = Array.from({ length: Math.min(startConcurrency, rest.length) }, async () => {
    for (let cellId = rest.shift(); cellId !== undefined; cellId = rest.shift()) await start(cellId);
  });
  await Promise.all(starters);
  const list = cells.list;
  const lastListeningMs = Math.max(...list.map((cell) => cell.listeningAtMs));
  await waitAllAlive(cells.cluster, list, CLUSTER_FORM_TIMEOUT_MS, 'forming the cluster');
  const formedMs = performance.now();
  return {
    cells: count,
    startConcurrency,
    startupMs: round(lastListeningMs - firstSpawnMs, 0)!,
    formMs: round(formedMs - lastListeningMs, 0)!,
    formFromFirstSpawnMs: round(formedMs - firstSpawnMs, 0)!,
    processStartMs: roundSummary(summarize(list.map((cell) => cell.listeningAtMs - cell.spawnedAtMs)), 0),
    processStartCpuSeconds: roundSummary(
      summarize(list.map((cell) => cell.cpuSecondsAtListening).filter((seconds): seconds is number => seconds !== null)),
      2,
    ),
  };
}

export interface IdleResult {
  /** Quiet time between the formation and the window (start-up work, JIT, first anti-entropy rounds). */
  settleMs: number;
  windowMs: number;
  /** Each cell's CPU over the window (all threads), percent of one core. */
  perCellCpuPercent: Record<string, number | null>;
  /** Over the cells: what "an idle cell costs" is judged by (max) and compared across runs (p50). */
  cpuPercent: SampleSummary;
  /** Bytes each cell read and wrote per second over the window (its mesh traffic: see `ioBytesOf`), p50 and max over the cells. */
  ioBytesPerSecond: { read: SampleSummary; written: SampleSummary };
  /** Membership work per cell per second over the window (from each cell's metrics), mean over the cells. */
  perCellPerSecond: { probes: number | null; antiEntropyRounds: number | null; recordsReceived: number | null };
  /** CPU of processes other than the benchmark and its cells over the window, percent of one core. */
  otherCpuPercent: number;
}

interface IdleCounters {
  probes: number;
  antiEntropyRounds: number;
  recordsReceived: number;
}

function idleCounters(text: string): IdleCounters {
  return {
    probes: metricTotal(text, 'cellmesh_mesh_probes_total'),
    antiEntropyRounds: metricTotal(text, 'cellmesh_mesh_anti_entropy_rounds_total'),
    recordsReceived: metricTotal(text, 'cellmesh_mesh_records_received_total'),
  };
}

/**
 * Leaves the cells alone for `settleMs`, then measures each one's CPU over `windowMs` with
 * nobody polling them: the only requests are one metrics scrape per cell just before the first
 * CPU reading and one just after the last, outside the window.
 */
export async function measureIdle(cluster: BenchCluster, cells: readonly BenchCell[], settleMs: number, windowMs: number): Promise<IdleResult> {
  await sleep(settleMs);
  const scrape = async (): Promise<Array<IdleCounters | null>> =>
    Promise.all(cells.map(async (cell) => cluster.metrics(cell).then(idleCounters, () => null)));
  const countersBefore = await scrape();
  const otherCpu = new OtherCpu(cluster);
  const cpuBefore = cells.map((cell) => cpuSecondsOf(cell));
  const ioBefore = cells.map((cell) => ioBytesOf(cell));
  const startedMs = performance.now();
  await sleep(windowMs);
  const cpuAfter = cells.map((cell) => cpuSecondsOf(cell));
  const ioAfter = cells.map((cell) => ioBytesOf(cell));
  const seconds = (performance.now() - startedMs) / 1000;
  const otherCpuPercent = round(otherCpu.percent(), 1)!;
  const countersAfter = await scrape();

  const perCellCpuPercent: Record<string, number | null> = {};
  const percents: number[] = [];
  cells.forEach((cell, index) => {
    const before = cpuBefore[index];
    const after = cpuAfter[index];
    const percent = before == null || after == null ? null : ((after - before) / seconds) * 100;
    perCellCpuPercent[cell.spec.cellId] = round(percent, 2);
    if (percent !== null) percents.push(percent);
  });
  const ioRates = (direction: 'read' | 'written'): SampleSummary =>
    roundSummary(
      summarize(
        cells.flatMap((_, index) => {
          const before = ioBefore[index];
          const after = ioAfter[index];
          return before == null || after == null ? [] : [(after[direction] - before[direction]) / seconds];
        }),
      ),
      0,
    );
  const rate = (name: keyof IdleCounters): number | null => {
    const deltas = cells
      .map((_, index) => {
        const before = countersBefore[index];
        const after = countersAfter[index];
        return before == null || after == null ? null : after[name] - before[name];
      })
      .filter((delta): delta is number => delta !== null);
    return deltas.length === 0 ? null : round(deltas.reduce((sum, delta) => sum + delta, 0) / deltas.length / seconds, 2);
  };
  return {
    settleMs,
    windowMs: round(seconds * 1000, 0)!,
    perCellCpuPercent,
    cpuPercent: roundSummary(summarize(percents), 2),
    ioBytesPerSecond: { read: ioRates('read'), written: ioRates('written') },
    perCellPerSecond: { probes: rate('probes'), antiEntropyRounds: rate('antiEntropyRounds'), recordsReceived: rate('recordsReceived') },
    otherCpuPercent,
  };
}

