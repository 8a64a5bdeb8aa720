/**
 * `npm run bench -- mesh`: the mesh of real cell processes on loopback, timed from outside.
 *
 * Phases, in this order (each bounded, each with its own try/catch so one failure still leaves
 * the others' figures):
 * 1. converge   5 cells; a cell's record changes (POST /v1/admin/capacity); every other cell's
 *               /v1/admin/cluster is polled until it shows the new version.
 * 2. locate     devices of N users on some cells; GET /v1/admin/locate from a cell holding none;
 *               network messages per query from the cell's `cellmesh_locate_messages_per_query`.
 * 3. delivery   customer -> agent of a merchant homed on cell B: customer on B (in-cell) and
 *               on cell A (cross-cell, through A's outbox), interleaved at a paced rate.
 * 4. join       a 6th cell with a new merchant; spawn -> every other cell's /v1/route names it.
 *               It then leaves gracefully (SIGTERM), so the later phases run with 5 cells.
 * 5. stall      SIGSTOP a cell for 1 s, SIGCONT, a few times; count dead declarations.
 * 6. failure    SIGKILL a cell; time until every other cell's view says dead; restart it.
 *
 * Progress goes to stderr; the report to stdout (with `--json`, exactly one JSON object).
 */
import { cpus, totalmem } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { LAN_MEMBERSHIP_OPTIONS, membershipOptions, type MembershipOptions } from '../mesh/membership-config.js';
import { BenchDevice, mintDeviceToken, type BenchFrame } from './mesh-client.js';
import { BENCH_TENANT, BenchCluster, cpuSecondsOf, LISTENING_TIMEOUT_MS, OtherCpu, pollUntil, sleep, waitAllAlive, type BenchCell } from './mesh-cluster.js';
import { cellIdOf, Cells, formCluster, measureIdle, merchantOf, type FormationResult, type IdleResult } from './mesh-formation.js';
import { formatMeshReport } from './mesh-report.js';
import { metricValue } from '../platform/prometheus-text.js';
import { gcCounts, histogramSumCount, judgeGoals, metricTotal, round, roundSummary, summarize, type SampleSummary } from './mesh-stats.js';

export const MESH_PHASES = ['converge', 'locate', 'delivery', 'join', 'stall', 'failure'] as const;
export type MeshPhase = (typeof MESH_PHASES)[number];

export interface MeshOptions {
  cells: number;
  convergeTrials: number;
  /** Record changes made (and timed, but not counted) before the measured trials. */
  convergeWarmup: number;
  /** Before each phase, wait at most this long for other processes to leave the CPUs alone. */
  waitQuietSeconds: number;
  /** Pause between two polls of one cell (after each answer), ms. */
  pollIntervalMs: number;
  locateUsers: number;
  deliveryMessages: number;
  deliveryWarmup: number;
  /** Messages per second on each path (in-cell and cross-cell), interleaved. */
  deliveryRate: number;
  bodyBytes: number;
  stalls: number;
  stallMs: number;
  stallSpacingMs: number;
  stallWatchSeconds: number;
  failureTrials: number;
  /** Overrides of the LAN membership timings, passed to every cell as `mesh.timings`. */
  timings: Record<string, number>;
  phases: MeshPhase[];
  /** Cells started at once after the first two (one per core by default). */
  startConcurrency: number;
  /** Quiet time after the formation before the idle window, and the window itself, s. */
  idleSettleSeconds: number;
  idleSeconds: number;
  /** The p50 idle CPU per cell of another run (at 5 cells), to judge flatness against; null: not judged. */
  idleBaselinePercent: number | null;
  maxSeconds: number;
  json: boolean;
}

const ALIVE_AGAIN_TIMEOUT_MS = 30_000;
const CONVERGE_TRIAL_TIMEOUT_MS = 10_000;
const CONVERGE_TRIAL_GAP_MS = 250;
const JOIN_TIMEOUT_MS = 30_000;
const LEAVE_TIMEOUT_MS = 15_000;
const DETECT_TIMEOUT_MS = 20_000;
const DETECT_POLL_MS = 10;
const STALL_MONITOR_MS = 50;
const REJOIN_TIMEOUT_MS = 30_000;
const FRAME_TIMEOUT_MS = 10_000;
const CROSS_PROBE_TIMEOUT_MS = 15_000;
const DRAIN_TIMEOUT_MS = 10_000;
const CONNECT_CONCURRENCY = 16;
const SLOWEST_REPORTED = 10;
/** Above this share of a core used by other processes during a phase, its figures are flagged. */
const QUIET_OTHER_CPU_PERCENT = 10;

type Log = (line: string) => void;

const JOIN_MERCHANT = 'm-joined';

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Waits (at most `boundMs`) for a second in which processes other than this one and the cells
 * use under QUIET_OTHER_CPU_PERCENT of a core: on a shared 2-core machine, someone else's test
 * run takes the cores from the cells and every latency here grows with it.
 */
async function waitForQuietMachine(cluster: BenchCluster, boundMs: number, log: Log): Promise<void> {
  if (boundMs <= 0) return;
  const deadlineMs = performance.now() + boundMs;
  let warned = false;
  for (;;) {
    const probe = new OtherCpu(cluster);
    await sleep(1000);
    const percent = probe.percent();
    if (percent <= QUIET_OTHER_CPU_PERCENT) return;
    if (performance.now() >= deadlineMs) {
      log(`  the machine is still busy (others use ${Math.round(percent)}% of a core); going on anyway`);
      return;
    }
    if (!warned) {
      log(`  waiting up to ${Math.round(boundMs / 1000)} s for a quiet machine (others use ${Math.round(percent)}% of a core)`);
      warned = true;
    }
  }
}

/** What a cell did during a phase, from /proc and its own process metrics. */
export interface CellActivity {
  cellId: string;
  /** CPU of the cell process (all threads), percent of one core. */
  cpuPercent: number | null;
  /** Its event loop's largest and p99 delay (prom-client's monitor, 10 ms resolution), ms. */
  eventLoopLagMaxMs: number | null;
  eventLoopLagP99Ms: number | null;
  gcCount: number;
  gcTotalMs: number;
  gcOver10ms: number;
  gcOver100ms: number;
}

/**
 * Watches cells over a phase. The event-loop figures of prom-client restart at every scrape,
 * so the scrape at the start resets them and the one at the end covers the phase.
 */
class CellWatch {
  private startedMs = 0;
  private readonly before = new Map<string, { cpuSeconds: number | null; gc: ReturnType<typeof gcCounts> }>();

  constructor(
    private readonly cluster: BenchCluster,
    private readonly cells: readonly BenchCell[],
  ) {}

  async start(): Promise<void> {
    for (const cell of this.cells) {
      const text = await this.cluster.metrics(cell);
      this.before.set(cell.spec.cellId, { cpuSeconds: cpuSecondsOf(cell), gc: gcCounts(text) });
    }
    this.startedMs = performance.now();
  }

  async stop(): Promise<CellActivity[]> {
    const wallSeconds = Math.max(0.001, (performance.now() - this.startedMs) / 1000);
    const activity: CellActivity[] = [];
    for (const cell of this.cells) {
      const before = this.before.get(cell.spec.cellId);
      const cpuSeconds = cpuSecondsOf(cell);
      let text = '';
      try {
        text = await this.cluster.metrics(cell);
      } catch {
        // A cell that does not answer shows no process figures.
      }
      const gc = gcCounts(text);
      const lagMax = metricValue(text, 'nodejs_eventloop_lag_max_seconds');
      const lagP99 = metricValue(text, 'nodejs_eventloop_lag_p99_seconds');
      activity.push({
        cellId: cell.spec.cellId,
        cpuPercent: cpuSeconds === null || before?.cpuSeconds == null ? null : round(((cpuSeconds - before.cpuSeconds) / wallSeconds) * 100, 1),
        eventLoopLagMaxMs: lagMax === undefined ? null : round(lagMax * 1000, 1),
        eventLoopLagP99Ms: lagP99 === undefined ? null : round(lagP99 * 1000, 1),
        gcCount: gc.count - (before?.gc.count ?? 0),
        gcTotalMs: round((gc.totalSeconds - (before?.gc.totalSeconds ?? 0)) * 1000, 1)!,
        gcOver10ms: gc.over10ms - (before?.gc.over10ms ?? 0),
        gcOver100ms: gc.over100ms - (before?.gc.over100ms ?? 0),
      });
    }
    return activity;
  }
}

// ---------------------------------------------------------------------------------------------
// Phases

export interface ConvergeResult {
  /** The slowest cell of each warm-up trial (first use of these code paths in fresh processes), not counted. */
  warmupTrialMaxMs: Array<number | null>;
  trials: Array<{ changer: string; version: number; postMs: number; perCellMs: Record<string, number | null>; maxMs: number | null }>;
  /** Per trial, the slowest cell: what `convergeMs` (their p99) is made of. */
  trialMaxMs: SampleSummary;
  /** Every (trial, cell) pair. */
  perCellMs: SampleSummary;
  /** The POST's own round trip (the record is signed, stored and published before it answers). */
  postMs: SampleSummary;
  timedOut: number;
  cells: CellActivity[];
  otherCpuPercent: number;
}

async function runConverge(cluster: BenchCluster, cells: Cells, options: MeshOptions, log: Log): Promise<ConvergeResult> {
  const otherCpu = new OtherCpu(cluster);
  const trials: ConvergeResult['trials'] = [];
  const list = cells.list;
  const warmupTrialMaxMs: Array<number | null> = [];
  let watch: CellWatch | undefined;
  for (let trial = -options.convergeWarmup; trial < options.convergeTrials; trial++) {
    if (trial === 0) {
      watch = new CellWatch(cluster, list);
      await watch.start();
    }
    const changer = list[(trial + options.convergeWarmup) % list.length]!;
    const changerId = changer.spec.cellId;
    const startedMs = performance.now();
    const answer = await cluster.adminPost<{ cellId: string; version: number }>(changer, '/v1/admin/capacity', {
      maxDevices: 100_000 + options.convergeWarmup + trial + 1,
    });
    const postMs = performance.now() - startedMs;
    const perCell: Record<string, number | null> = {};
    await Promise.all(
      cells.others(changer).map(async (observer) => {
        const seenAt = await pollUntil(
          async () => {
            const view = await cluster.view(observer, 1000);
            return (view.cells.find((seen) => seen.cellId === changerId)?.version ?? -1) >= answer.version;
          },
          { intervalMs: options.pollIntervalMs, timeoutMs: CONVERGE_TRIAL_TIMEOUT_MS },
        );
        perCell[observer.spec.cellId] = seenAt === null ? null : seenAt - startedMs;
      }),
    );
    const values = Object.values(perCell);
    const maxMs = values.some((value) => value === null) ? null : Math.max(...(values as number[]));
    if (trial < 0) warmupTrialMaxMs.push(round(maxMs, 1));
    else trials.push({ changer: changerId, version: answer.version, postMs, perCellMs: perCell, maxMs });
    await sleep(CONVERGE_TRIAL_GAP_MS);
  }
  const completed = trials.filter((trial) => trial.maxMs !== null).map((trial) => trial.maxMs!);
  const result: ConvergeResult = {
    warmupTrialMaxMs,
    trials: trials.map((trial) => ({
      ...trial,
      postMs: round(trial.postMs, 2)!,
      perCellMs: Object.fromEntries(Object.entries(trial.perCellMs).map(([id, value]) => [id, round(value, 2)])),
      maxMs: round(trial.maxMs, 2),
    })),
    trialMaxMs: roundSummary(summarize(completed), 2),
    perCellMs: roundSummary(
      summarize(trials.flatMap((trial) => Object.values(trial.perCellMs).filter((value): value is number => value !== null))),
      2,
    ),
    postMs: roundSummary(summarize(trials.map((trial) => trial.postMs)), 2),
    timedOut: trials.length - completed.length,
    cells: watch === undefined ? [] : await watch.stop(),
    otherCpuPercent: round(otherCpu.percent(), 1)!,
  };
  log(
    `  ${trials.length} trials: slowest cell per trial p50 ${result.trialMaxMs.p50 ?? '-'} ms, p99 ${result.trialMaxMs.p99 ?? '-'} ms, max ${result.trialMaxMs.max ?? '-'} ms` +
      (result.timedOut > 0 ? `; ${result.timedOut} trial(s) timed out` : ''),
  );
  return result;
}

export interface LocateResult {
  users: number;
  devices: number;
  holdingCells: string[];
  sequential: {
    queryingCell: string;
    queries: number;
    messages: number;
    msgsPerQuery: number | null;
    expectedMsgsPerQuery: number;
    usersLocatedCorrectly: number;
    wrong: Array<{ user: string; expected: string[]; got: string[] }>;
    latencyMs: SampleSummary;
  };
  batched: {
    queryingCell: string;
    users: number;
    queries: number;
    messages: number;
    msgsPerUser: number | null;
    usersLocatedCorrectly: number;
    latencyMs: SampleSummary;
  };
  otherCpuPercent: number;
}

async function connectAll<T>(items: readonly T[], connect: (item: T) => Promise<BenchDevice>): Promise<BenchDevice[]> {
  const devices: BenchDevice[] = [];
  for (let index = 0; index < items.length; index += CONNECT_CONCURRENCY) {
    devices.push(...(await Promise.all(items.slice(index, index + CONNECT_CONCURRENCY).map(connect))));
  }
  return devices;
}

async function runLocate(cluster: BenchCluster, cells: Cells, options: MeshOptions, log: Log): Promise<LocateResult> {
  const otherCpu = new OtherCpu(cluster);
  const list = cells.list;
  // Cells 1 and 2 ask and hold nothing, so every answer comes over the network; the rest hold.
  const holders = list.slice(2);
  if (holders.length === 0) throw new Error('locate needs at least 3 cells');
  const expected = new Map<string, string[]>();
  const placements: Array<{ user: string; cell: BenchCell }> = [];
  for (let index = 0; index < options.locateUsers; index++) {
    const user = `lu${index}`;
    const count = index % (holders.length + 1);
    const holding = Array.from({ length: count }, (_, offset) => holders[(index + offset) % holders.length]!);
    expected.set(user, holding.map((cell) => cell.spec.cellId).sort());
    for (const cell of holding) placements.push({ user, cell });
  }
  const devices = await connectAll(placements, async ({ user, cell }) =>
    BenchDevice.connect(
      `${user}@${cell.spec.cellId}`,
      cell.wsUrl,
      await mintDeviceToken(cluster.secrets.tenantSecret, { user, device: `d-${cell.spec.cellId}`, role: 'customer' }),
    ),
  );
  try {
    const locate = async (asker: BenchCell, user: string): Promise<{ cells: string[]; ms: number }> => {
      const startedMs = performance.now();
      const answer = await cluster.adminGet<{ cells: string[] }>(asker, `/v1/admin/locate?tenant=${BENCH_TENANT}&user=${user}`, 5000);
      return { cells: [...answer.cells].sort(), ms: performance.now() - startedMs };
    };
    const same = (left: readonly string[], right: readonly string[]): boolean => left.join(',') === right.join(',');
    const users = [...expected.keys()];

    const sequentialAsker = list[0]!;
    const before = await cluster.metrics(sequentialAsker);
    const wrong: LocateResult['sequential']['wrong'] = [];
    const sequentialMs: number[] = [];
    for (const user of users) {
      const answer = await locate(sequentialAsker, user);
      sequentialMs.push(answer.ms);
      if (!same(answer.cells, expected.get(user)!)) wrong.push({ user, expected: expected.get(user)!, got: answer.cells });
    }
    const after = await cluster.metrics(sequentialAsker);
    const sumCountBefore = histogramSumCount(before, 'cellmesh_locate_messages_per_query');
    const sumCountAfter = histogramSumCount(after, 'cellmesh_locate_messages_per_query');
    const queries = sumCountAfter.count - sumCountBefore.count;
    const messages = sumCountAfter.sum - sumCountBefore.sum;
    const expectedMessages = users.reduce((total, user) => total + 1 + expected.get(user)!.length, 0);

    const batchAsker = list[1]!;
    const batchBefore = await cluster.metrics(batchAsker);
    const batchAnswers = await Promise.all(users.map(async (user) => ({ user, answer: await locate(batchAsker, user) })));
    const batchMs = batchAnswers.map(({ answer }) => answer.ms);
    const batchAfter = await cluster.metrics(batchAsker);
    const batchCounts = {
      before: histogramSumCount(batchBefore, 'cellmesh_locate_messages_per_query'),
      after: histogramSumCount(batchAfter, 'cellmesh_locate_messages_per_query'),
    };
    const batchQueries = batchCounts.after.count - batchCounts.before.count;
    const batchMessages = batchCounts.after.sum - batchCounts.before.sum;

    const result: LocateResult = {
      users: users.length,
      devices: devices.length,
      holdingCells: holders.map((cell) => cell.spec.cellId),
      sequential: {
        queryingCell: sequentialAsker.spec.cellId,
        queries,
        messages,
        msgsPerQuery: queries > 0 ? round(messages / queries, 3) : null,
        expectedMsgsPerQuery: round(expectedMessages / users.length, 3)!,
        usersLocatedCorrectly: users.length - wrong.length,
        wrong,
        latencyMs: roundSummary(summarize(sequentialMs), 1),
      },
      batched: {
        queryingCell: batchAsker.spec.cellId,
        users: users.length,
        queries: batchQueries,
        messages: batchMessages,
        msgsPerUser: users.length > 0 && batchQueries > 0 ? round(batchMessages / users.length, 3) : null,
        usersLocatedCorrectly: batchAnswers.filter(({ user, answer }) => same(answer.cells, expected.get(user)!)).length,
        latencyMs: roundSummary(summarize(batchMs), 1),
      },
      otherCpuPercent: round(otherCpu.percent(), 1)!,
    };
    log(
      `  one at a time from ${result.sequential.queryingCell}: ${result.sequential.msgsPerQuery ?? '-'} messages per query ` +
        `(expected ${result.sequential.expectedMsgsPerQuery}), ${result.sequential.usersLocatedCorrectly}/${users.length} located correctly; ` +
        `all at once from ${result.batched.queryingCell}: ${batchQueries} quer${batchQueries === 1 ? 'y' : 'ies'}, ${batchMessages} messages for ${users.length} users`,
    );
    return result;
  } finally {
    await Promise.all(devices.map((device) => device.close()));
  }
}

export interface PathResult {
  sent: number;
  delivered: number;
  lost: number;
  errors: Record<string, number>;
  /** send -> the merchant's agent receives the `msg`. */
  deliveryMs: SampleSummary;
  /** send -> `sent` (durable in the home cell, seq known) on the sending device. */
  sentAckMs: SampleSummary;
  /** Cross-cell only: send -> `queued` (durable in the access cell). */
  queuedAckMs?: SampleSummary;
}

export interface DeliveryResult {
  merchant: string;
  homeCell: string;
  accessCell: string;
  ratePerPathPerSecond: number;
  warmupPerPath: number;
  inCell: PathResult;
  crossCell: PathResult | null;
  /** Why cross-cell delivery was not measured (null when it was). */
  crossCellUnavailable: string | null;
  /** The slowest measured deliveries of both paths, with when they were sent (ms after the first send). */
  slowest: Array<{ path: 'in' | 'cross'; index: number; sentAtMs: number; deliveryMs: number | null; sentAckMs: number | null }>;
  /** The access and the home cell during the measured sends. */
  cells: CellActivity[];
  /** This process's own event-loop delay meanwhile (its clock stamps sends and receipts), ms. */
  benchEventLoopLagMaxMs: number | null;
  benchEventLoopLagP99Ms: number | null;
  otherCpuPercent: number;
}

interface Pending {
  path: 'in' | 'cross';
  warm: boolean;
  sentAtMs: number;
  deliveredAtMs?: number;
  sentAckAtMs?: number;
  queuedAtMs?: number;
}

async function runDelivery(cluster: BenchCluster, cells: Cells, options: MeshOptions, log: Log): Promise<DeliveryResult> {
  const otherCpu = new OtherCpu(cluster);
  const access = cells.at(0);
  const home = cells.at(1);
  const merchant = merchantOf(home.spec.cellId);
  const secret = cluster.secrets.tenantSecret;
  const agent = await BenchDevice.connect(
    'agent',
    home.wsUrl,
    await mintDeviceToken(secret, { user: 'agent-1', device: 'd0', role: 'agent', merchant }),
  );
  const inCustomer = await BenchDevice.connect('cust-in', home.wsUrl, await mintDeviceToken(secret, { user: 'cust-in', device: 'd0', role: 'customer' }));
  const crossCustomer = await BenchDevice.connect('cust-x', access.wsUrl, await mintDeviceToken(secret, { user: 'cust-x', device: 'd0', role: 'customer' }));
  const convOf = { in: `${merchant}:cust-in`, cross: `${merchant}:cust-x` } as const;
  const body = 'x'.repeat(options.bodyBytes);
  try {
    /**
     * One send, answered by id (`sent` or `error`, maybe after `queued`); then the agent must
     * receive it. Returns the final answer (or the `queued` one when nothing followed it).
     */
    const probe = async (device: BenchDevice, conv: string, cmid: string, timeoutMs: number): Promise<{ answer: BenchFrame | null; delivered: boolean }> => {
      const delivered = agent.next((frame) => frame.t === 'msg' && frame.cmid === cmid, timeoutMs);
      let queued: BenchFrame | null = null;
      const stopWatching = device.onFrame((frame) => {
        if (frame.id === cmid && frame.t === 'queued') queued = frame;
      });
      const final = device.next((frame) => frame.id === cmid && (frame.t === 'sent' || frame.t === 'error'), timeoutMs);
      device.send({ op: 'send', id: cmid, conv, cmid, body: 'probe' });
      const answer = (await final)?.frame ?? null;
      stopWatching();
      if (answer?.t === 'error') return { answer, delivered: false };
      return { answer: answer ?? queued, delivered: (await delivered) !== null };
    };

    const inProbe = await probe(inCustomer, convOf.in, 'probe-in', FRAME_TIMEOUT_MS);
    if (inProbe.answer?.t !== 'sent' || !inProbe.delivered) {
      throw new Error(`an in-cell send on ${home.spec.cellId} did not reach the agent: answer ${JSON.stringify(inProbe.answer)}`);
    }
    let crossCellUnavailable: string | null = null;
    const crossProbe = await probe(crossCustomer, convOf.cross, 'probe-x', CROSS_PROBE_TIMEOUT_MS);
    if (crossProbe.answer === null) {
      crossCellUnavailable = `${access.spec.cellId} did not answer a send for merchant ${merchant} (homed on ${home.spec.cellId}) within ${CROSS_PROBE_TIMEOUT_MS} ms`;
    } else if (crossProbe.answer.t === 'error') {
      crossCellUnavailable =
        `${access.spec.cellId} answered ${crossProbe.answer.code ?? 'an error'} ("${crossProbe.answer.message ?? ''}") to a send for merchant ${merchant} ` +
        `homed on ${home.spec.cellId}: this build does not forward cross-cell conversations`;
    } else if (!crossProbe.delivered) {
      crossCellUnavailable = `${access.spec.cellId} answered '${crossProbe.answer.t}' to a cross-cell send, but the agent on ${home.spec.cellId} did not receive it within ${CROSS_PROBE_TIMEOUT_MS} ms`;
    }
    const crossEnabled = crossCellUnavailable === null;
    log(crossEnabled ? `  cross-cell sends are forwarded (${access.spec.cellId} -> ${home.spec.cellId})` : `  cross-cell not measured: ${crossCellUnavailable}`);

    const pending = new Map<string, Pending>();
    const errors = { in: {} as Record<string, number>, cross: {} as Record<string, number> };
    agent.onFrame((frame, atMs) => {
      if (frame.t !== 'msg' || frame.cmid === undefined) return;
      const entry = pending.get(frame.cmid);
      if (entry !== undefined && entry.deliveredAtMs === undefined) entry.deliveredAtMs = atMs;
    });
    for (const [device, path] of [
      [inCustomer, 'in'],
      [crossCustomer, 'cross'],
    ] as const) {
      device.onFrame((frame, atMs) => {
        const entry = frame.id === undefined ? undefined : pending.get(frame.id);
        if (entry === undefined) return;
        if (frame.t === 'sent') entry.sentAckAtMs ??= atMs;
        else if (frame.t === 'queued') entry.queuedAtMs ??= atMs;
        else if (frame.t === 'error') errors[path][frame.code ?? 'unknown'] = (errors[path][frame.code ?? 'unknown'] ?? 0) + 1;
      });
    }

    const perPath = options.deliveryWarmup + options.deliveryMessages;
    const periodMs = 1000 / options.deliveryRate;
    const schedule: Array<{ atMs: number; path: 'in' | 'cross'; index: number }> = [];
    for (let index = 0; index < perPath; index++) {
      schedule.push({ atMs: index * periodMs, path: 'in', index });
      if (crossEnabled) schedule.push({ atMs: index * periodMs + periodMs / 2, path: 'cross', index });
    }
    const watch = new CellWatch(cluster, [access, home]);
    await watch.start();
    const ownLoop = monitorEventLoopDelay({ resolution: 10 });
    ownLoop.enable();
    const startMs = performance.now();
    for (const item of schedule) {
      const waitMs = startMs + item.atMs - performance.now();
      if (waitMs > 0) await sleep(waitMs);
      const cmid = `${item.path}-${item.index}`;
      const entry: Pending = { path: item.path, warm: item.index < options.deliveryWarmup, sentAtMs: performance.now() };
      pending.set(cmid, entry);
      (item.path === 'in' ? inCustomer : crossCustomer).send({ op: 'send', id: cmid, conv: convOf[item.path], cmid, body });
    }
    await pollUntil(async () => [...pending.values()].every((entry) => entry.deliveredAtMs !== undefined && (entry.sentAckAtMs !== undefined || entry.path === 'cross')), {
      intervalMs: 20,
      timeoutMs: DRAIN_TIMEOUT_MS,
    });
    // A cross-cell `sent` may trail the delivery (the seq travels back to the access cell).
    if (crossEnabled) {
      await pollUntil(async () => [...pending.values()].every((entry) => entry.path !== 'cross' || entry.sentAckAtMs !== undefined), {
        intervalMs: 20,
        timeoutMs: 2000,
      });
    }
    ownLoop.disable();
    const activity = await watch.stop();

    const pathResult = (path: 'in' | 'cross'): PathResult => {
      const measured = [...pending.values()].filter((entry) => entry.path === path && !entry.warm);
      const delivered = measured.filter((entry) => entry.deliveredAtMs !== undefined);
      const result: PathResult = {
        sent: measured.length,
        delivered: delivered.length,
        lost: measured.length - delivered.length,
        errors: errors[path],
        deliveryMs: roundSummary(summarize(delivered.map((entry) => entry.deliveredAtMs! - entry.sentAtMs)), 2),
        sentAckMs: roundSummary(
          summarize(measured.filter((entry) => entry.sentAckAtMs !== undefined).map((entry) => entry.sentAckAtMs! - entry.sentAtMs)),
          2,
        ),
      };
      if (path === 'cross') {
        result.queuedAckMs = roundSummary(
          summarize(measured.filter((entry) => entry.queuedAtMs !== undefined).map((entry) => entry.queuedAtMs! - entry.sentAtMs)),
          2,
        );
      }
      return result;
    };
    const result: DeliveryResult = {
      merchant,
      homeCell: home.spec.cellId,
      accessCell: access.spec.cellId,
      ratePerPathPerSecond: options.deliveryRate,
      warmupPerPath: options.deliveryWarmup,
      inCell: pathResult('in'),
      crossCell: crossEnabled ? pathResult('cross') : null,
      crossCellUnavailable,
      slowest: [...pending.entries()]
        .filter(([, entry]) => !entry.warm)
        .sort(([, left], [, right]) => (right.deliveredAtMs ?? Infinity) - right.sentAtMs - ((left.deliveredAtMs ?? Infinity) - left.sentAtMs))
        .slice(0, SLOWEST_REPORTED)
        .map(([cmid, entry]) => ({
          path: entry.path,
          index: Number(cmid.slice(cmid.indexOf('-') + 1)),
          sentAtMs: round(entry.sentAtMs - startMs, 1)!,
          deliveryMs: round(entry.deliveredAtMs === undefined ? null : entry.deliveredAtMs - entry.sentAtMs, 2),
          sentAckMs: round(entry.sentAckAtMs === undefined ? null : entry.sentAckAtMs - entry.sentAtMs, 2),
        })),
      cells: activity,
      benchEventLoopLagMaxMs: ownLoop.count === 0 ? null : round(ownLoop.max / 1e6, 1),
      benchEventLoopLagP99Ms: ownLoop.count === 0 ? null : round(ownLoop.percentile(99) / 1e6, 1),
      otherCpuPercent: round(otherCpu.percent(), 1)!,
    };
    log(
      `  in-cell p50 ${result.inCell.deliveryMs.p50 ?? '-'} ms, p99 ${result.inCell.deliveryMs.p99 ?? '-'} ms (${result.inCell.delivered}/${result.inCell.sent})` +
        (result.crossCell === null
          ? ''
          : `; cross-cell p50 ${result.crossCell.deliveryMs.p50 ?? '-'} ms, p99 ${result.crossCell.deliveryMs.p99 ?? '-'} ms (${result.crossCell.delivered}/${result.crossCell.sent})`),
    );
    return result;
  } finally {
    await Promise.all([agent, inCustomer, crossCustomer].map((device) => device.close()));
  }
}

export interface JoinResult {
  cellId: string;
  merchant: string;
  bootstrap: number;
  /** Spawn -> every other cell's /v1/route names the new cell for the new merchant (the slowest). */
  joinToRoutableMs: number | null;
  /** The same, from the new cell's `listening` line (mesh join without process start-up). */
  fromListeningMs: number | null;
  /** Spawn -> `listening` (Node, tsx, LevelDB, libp2p start-up). */
  processStartMs: number;
  perCellFromSpawnMs: Record<string, number | null>;
  /**
   * How each cell got records while the new cell joined (accepted records by source, from its
   * `cellmesh_mesh_records_received_total`): the bootstrap cell from the join exchange
   * (anti-entropy), the others from gossip or their own anti-entropy with the new cell.
   */
  perCellRecordsBySource: Record<string, { gossip: number; antiEntropy: number }>;
  /** SIGTERM -> every other cell's view says 'left'. */
  leaveMs: number | null;
  otherCpuPercent: number;
}

async function runJoin(cluster: BenchCluster, cells: Cells, options: MeshOptions, log: Log): Promise<JoinResult> {
  const otherCpu = new OtherCpu(cluster);
  const observers = cells.list;
  const cellId = cellIdOf(observers.length);
  const bootstrap = cells.bootstrapList();
  const routableAt = new Map<string, number | null>();
  const accepted = async (cell: BenchCell): Promise<{ gossip: number; antiEntropy: number }> => {
    const text = await cluster.metrics(cell);
    const name = 'cellmesh_mesh_records_received_total';
    return {
      gossip: metricValue(text, name, { source: 'gossip', outcome: 'accepted' }) ?? 0,
      antiEntropy: metricValue(text, name, { source: 'anti-entropy', outcome: 'accepted' }) ?? 0,
    };
  };
  const acceptedBefore = new Map(await Promise.all(observers.map(async (cell) => [cell.spec.cellId, await accepted(cell)] as const)));
  // The pollers start with the spawn: the mesh starts before the `listening` line is printed.
  let stopPolling = false;
  const pollers = observers.map(async (observer) => {
    const seenAt = await pollUntil(
      async () => stopPolling || (await cluster.routeOf(observer, JOIN_MERCHANT, 1000)) === cellId,
      // The bound covers the process start-up (its own time-out) and then the join.
      { intervalMs: Math.max(options.pollIntervalMs, 5), timeoutMs: LISTENING_TIMEOUT_MS + JOIN_TIMEOUT_MS },
    );
    routableAt.set(observer.spec.cellId, stopPolling ? null : seenAt);
  });
  let joined: BenchCell;
  try {
    joined = await cluster.start({ cellId, merchants: [JOIN_MERCHANT], bootstrap });
  } catch (error) {
    stopPolling = true;
    await Promise.all(pollers);
    throw error;
  }
  await Promise.all(pollers);
  const perCellRecordsBySource: JoinResult['perCellRecordsBySource'] = {};
  for (const observer of observers) {
    const after = await accepted(observer);
    const before = acceptedBefore.get(observer.spec.cellId)!;
    perCellRecordsBySource[observer.spec.cellId] = { gossip: after.gossip - before.gossip, antiEntropy: after.antiEntropy - before.antiEntropy };
  }
  const perCell: Record<string, number | null> = {};
  for (const observer of observers) {
    const at = routableAt.get(observer.spec.cellId) ?? null;
    perCell[observer.spec.cellId] = at === null ? null : round(at - joined.spawnedAtMs, 1);
  }
  const times = [...routableAt.values()];
  const slowest = times.some((value) => value === null) ? null : Math.max(...(times as number[]));

  // Leave gracefully, so that the later phases run with the same cells as the first ones.
  const leaveStartedMs = performance.now();
  const leftSeen = Promise.all(
    observers.map((observer) =>
      pollUntil(async () => (await cluster.view(observer, 1000)).cells.find((seen) => seen.cellId === cellId)?.liveness === 'left', {
        intervalMs: Math.max(options.pollIntervalMs, 5),
        timeoutMs: LEAVE_TIMEOUT_MS,
      }),
    ),
  );
  const stopped = await cluster.stop(joined, LEAVE_TIMEOUT_MS);
  const leftAt = await leftSeen;
  const leaveMs = leftAt.some((value) => value === null) ? null : Math.max(...(leftAt as number[])) - leaveStartedMs;
  if (!stopped.graceful || leaveMs === null) {
    // A cell that did not leave cleanly will be declared dead: let that settle before going on.
    await pollUntil(
      async () => {
        for (const observer of observers) {
          const liveness = (await cluster.view(observer, 1000)).cells.find((seen) => seen.cellId === cellId)?.liveness;
          if (liveness !== 'left' && liveness !== 'dead') return false;
        }
        return true;
      },
      { intervalMs: 100, timeoutMs: DETECT_TIMEOUT_MS },
    );
  }
  const result: JoinResult = {
    cellId,
    merchant: JOIN_MERCHANT,
    bootstrap: bootstrap.length,
    joinToRoutableMs: round(slowest === null ? null : slowest - joined.spawnedAtMs, 1),
    fromListeningMs: round(slowest === null ? null : slowest - joined.listeningAtMs, 1),
    processStartMs: round(joined.listeningAtMs - joined.spawnedAtMs, 1)!,
    perCellFromSpawnMs: perCell,
    perCellRecordsBySource,
    leaveMs: round(leaveMs, 1),
    otherCpuPercent: round(otherCpu.percent(), 1)!,
  };
  log(
    `  ${cellId} routable everywhere ${result.joinToRoutableMs ?? '-'} ms after spawn (${result.fromListeningMs ?? '-'} ms after its listening line; ` +
      `start-up ${result.processStartMs} ms); left, seen by all in ${result.leaveMs ?? '-'} ms`,
  );
  return result;
}

export interface StallResult {
  cellId: string;
  stalls: number;
  stallMs: number;
  spacingMs: number;
  watchMs: number;
  /** Dead declarations by any cell during the window (nobody failed: every one is false). */
  falsePositives: number;
  deadDeclarationsByOthers: number;
  deadDeclarationsByStalledCell: number;
  /** Cells whose view showed the stalled cell dead at some poll (every 50 ms). */
  viewsShowingDead: string[];
  /** Cells whose view showed it suspect at some poll. */
  viewsShowingSuspect: string[];
  suspicionsByOthers: number;
  refutationsByStalledCell: number;
  /** The stalled cell's Lifeguard health multiplier right after the window. */
  stalledCellLocalHealth: number | null;
  otherCpuPercent: number;
}

async function runStall(cluster: BenchCluster, cells: Cells, options: MeshOptions, log: Log): Promise<StallResult> {
  await waitAllAlive(cluster, cells.list, ALIVE_AGAIN_TIMEOUT_MS, 'before the stall check');
  const otherCpu = new OtherCpu(cluster);
  const victim = cells.at(cells.list.length - 1);
  const victimId = victim.spec.cellId;
  const others = cells.others(victim);
  const counters = async (cell: BenchCell): Promise<{ dead: number; suspect: number; refuted: number }> => {
    const text = await cluster.metrics(cell);
    return {
      dead: metricTotal(text, 'cellmesh_mesh_dead_declarations_total'),
      suspect: metricTotal(text, 'cellmesh_mesh_suspect_declarations_total'),
      refuted: metricTotal(text, 'cellmesh_mesh_refutations_total'),
    };
  };
  const before = new Map(await Promise.all(cells.list.map(async (cell) => [cell.spec.cellId, await counters(cell)] as const)));
  const showedDead = new Set<string>();
  const showedSuspect = new Set<string>();
  let monitoring = true;
  const monitor = Promise.all(
    others.map(async (observer) => {
      while (monitoring) {
        try {
          const liveness = (await cluster.view(observer, 1000)).cells.find((seen) => seen.cellId === victimId)?.liveness;
          if (liveness === 'dead') showedDead.add(observer.spec.cellId);
          if (liveness === 'suspect') showedSuspect.add(observer.spec.cellId);
        } catch {
          // A slow answer is not a finding.
        }
        await sleep(STALL_MONITOR_MS);
      }
    }),
  );
  try {
    for (let stall = 0; stall < options.stalls; stall++) {
      victim.kill('SIGSTOP');
      try {
        await sleep(options.stallMs);
      } finally {
        victim.kill('SIGCONT');
      }
      if (stall < options.stalls - 1) await sleep(options.stallSpacingMs);
    }
    await sleep(options.stallWatchSeconds * 1000);
  } finally {
    victim.kill('SIGCONT');
    monitoring = false;
    await monitor;
  }
  const after = new Map(await Promise.all(cells.list.map(async (cell) => [cell.spec.cellId, await counters(cell)] as const)));
  const delta = (id: string, key: 'dead' | 'suspect' | 'refuted'): number => (after.get(id)?.[key] ?? 0) - (before.get(id)?.[key] ?? 0);
  const byOthers = others.reduce((total, cell) => total + delta(cell.spec.cellId, 'dead'), 0);
  const byVictim = delta(victimId, 'dead');
  let localHealth: number | null = null;
  try {
    localHealth = (await cluster.view(victim)).localHealth;
  } catch {
    localHealth = null;
  }
  const result: StallResult = {
    cellId: victimId,
    stalls: options.stalls,
    stallMs: options.stallMs,
    spacingMs: options.stallSpacingMs,
    watchMs: options.stallWatchSeconds * 1000,
    falsePositives: Math.max(byOthers + byVictim, showedDead.size),
    deadDeclarationsByOthers: byOthers,
    deadDeclarationsByStalledCell: byVictim,
    viewsShowingDead: [...showedDead].sort(),
    viewsShowingSuspect: [...showedSuspect].sort(),
    suspicionsByOthers: others.reduce((total, cell) => total + delta(cell.spec.cellId, 'suspect'), 0),
    refutationsByStalledCell: delta(victimId, 'refuted'),
    stalledCellLocalHealth: localHealth,
    otherCpuPercent: round(otherCpu.percent(), 1)!,
  };
  log(
    `  ${options.stalls} x ${options.stallMs} ms stalls of ${victimId}: ${result.falsePositives} false dead declaration(s), ` +
      `${result.suspicionsByOthers} suspicion(s), ${result.refutationsByStalledCell} refutation(s)`,
  );
  return result;
}

export interface FailureTrial {
  cellId: string;
  /** SIGKILL -> every other cell's view says 'dead' (the slowest). */
  detectMs: number | null;
  perCellDeadMs: Record<string, number | null>;
  /** SIGKILL -> the first time each cell's view said 'suspect' (null if it went straight to dead between polls). */
  perCellSuspectMs: Record<string, number | null>;
  /** Restart (same store, key and ports) -> every cell sees every cell alive again. */
  rejoinMs: number | null;
}

export interface FailureResult {
  trials: FailureTrial[];
  detectMs: SampleSummary;
  otherCpuPercent: number;
}

async function runFailure(cluster: BenchCluster, cells: Cells, options: MeshOptions, log: Log): Promise<FailureResult> {
  const otherCpu = new OtherCpu(cluster);
  const trials: FailureTrial[] = [];
  const count = cells.list.length;
  for (let trial = 0; trial < options.failureTrials; trial++) {
    await waitAllAlive(cluster, cells.list, REJOIN_TIMEOUT_MS, `before failure trial ${trial + 1}`);
    // The last cells, in turn; never the first two (the bootstrap list of restarts).
    const victim = cells.at(count - 1 - (trial % Math.max(1, count - 2)));
    const victimId = victim.spec.cellId;
    const observers = cells.others(victim);
    const killedAtMs = performance.now();
    victim.kill('SIGKILL');
    const perCellDead: Record<string, number | null> = {};
    const perCellSuspect: Record<string, number | null> = {};
    await Promise.all(
      observers.map(async (observer) => {
        let suspectAt: number | null = null;
        const deadAt = await pollUntil(
          async () => {
            const liveness = (await cluster.view(observer, 1000)).cells.find((seen) => seen.cellId === victimId)?.liveness;
            if (liveness === 'suspect' && suspectAt === null) suspectAt = performance.now();
            return liveness === 'dead';
          },
          { intervalMs: DETECT_POLL_MS, timeoutMs: DETECT_TIMEOUT_MS },
        );
        perCellDead[observer.spec.cellId] = round(deadAt === null ? null : deadAt - killedAtMs, 1);
        perCellSuspect[observer.spec.cellId] = round(suspectAt === null ? null : suspectAt - killedAtMs, 1);
      }),
    );
    await victim.exited;
    const deadTimes = Object.values(perCellDead);
    const detectMs = deadTimes.some((value) => value === null) ? null : Math.max(...(deadTimes as number[]));

    // Back with the same store (so the same key and peer id), ports and a bootstrap list of live cells.
    const restartStartedMs = performance.now();
    let rejoinMs: number | null = null;
    try {
      await cells.add({ ...victim.spec, bootstrap: cells.bootstrapList(victimId) }, { port: victim.port, meshPort: victim.meshPort });
      await waitAllAlive(cluster, cells.list, REJOIN_TIMEOUT_MS, `after restarting ${victimId}`);
      rejoinMs = round(performance.now() - restartStartedMs, 1);
    } catch (error) {
      trials.push({ cellId: victimId, detectMs: round(detectMs, 1), perCellDeadMs: perCellDead, perCellSuspectMs: perCellSuspect, rejoinMs });
      throw error;
    }
    trials.push({ cellId: victimId, detectMs: round(detectMs, 1), perCellDeadMs: perCellDead, perCellSuspectMs: perCellSuspect, rejoinMs });
    log(`  trial ${trial + 1}/${options.failureTrials}: ${victimId} declared dead by all in ${detectMs === null ? '-' : Math.round(detectMs)} ms; back in ${rejoinMs ?? '-'} ms`);
  }
  return {
    trials,
    detectMs: roundSummary(summarize(trials.filter((trial) => trial.detectMs !== null).map((trial) => trial.detectMs!)), 1),
    otherCpuPercent: round(otherCpu.percent(), 1)!,
  };
}

// ---------------------------------------------------------------------------------------------
// The run

export interface MeshResults {
  formation?: FormationResult;
  idle?: IdleResult;
  converge?: ConvergeResult;
  locate?: LocateResult;
  delivery?: DeliveryResult;
  join?: JoinResult;
  stall?: StallResult;
  failure?: FailureResult;
  errors: Partial<Record<MeshPhase | 'cluster' | 'run', string>>;
}

function effectiveTimings(overrides: Record<string, number>): MembershipOptions {
  return membershipOptions(overrides as Partial<MembershipOptions>);
}

/** The one JSON object of `--json`: headline figures first, then everything measured. */
export function buildMeshJson(options: MeshOptions, results: MeshResults, startedAt: Date, elapsedSeconds: number): Record<string, unknown> {
  const converge = results.converge;
  const convergeMs = converge === undefined || converge.timedOut > 0 ? null : converge.trialMaxMs.p99;
  const failureTrials = results.failure?.trials ?? [];
  const failureDetectMs =
    failureTrials.length === 0 || failureTrials.some((trial) => trial.detectMs === null) ? null : results.failure!.detectMs.max;
  const crossCellP99Ms = results.delivery?.crossCell?.deliveryMs.p99 ?? null;
  const inCellP99Ms = results.delivery?.inCell.deliveryMs.p99 ?? null;
  const falsePositives = results.stall?.falsePositives ?? null;
  const idle = results.idle;
  const effective = effectiveTimings(options.timings);
  const disturbed = (
    [
      ['idle', idle?.otherCpuPercent],
      ['converge', converge?.otherCpuPercent],
      ['locate', results.locate?.otherCpuPercent],
      ['delivery', results.delivery?.otherCpuPercent],
      ['join', results.join?.otherCpuPercent],
      ['stall', results.stall?.otherCpuPercent],
      ['failure', results.failure?.otherCpuPercent],
    ] as const
  )
    .filter(([, percent]) => percent !== undefined && percent > QUIET_OTHER_CPU_PERCENT)
    .map(([phase, percent]) => `${phase}: other processes used ${Math.round(percent!)}% of a core`);
  return {
    benchmark: 'mesh',
    cells: options.cells,
    formMs: results.formation?.formMs ?? null,
    formMsIs: "the last cell's listening line -> every cell's view shows every cell alive",
    formFromFirstSpawnMs: results.formation?.formFromFirstSpawnMs ?? null,
    idleCellCpuP50Percent: idle?.cpuPercent.p50 ?? null,
    idleCellCpuMaxPercent: idle?.cpuPercent.max ?? null,
    idleCellCpuPercent: idle?.perCellCpuPercent ?? null,
    idleCellCpuPercentIs:
      idle === undefined ? null : `each cell's CPU (percent of one core) over ${idle.windowMs} ms with nobody polling, ${idle.settleMs} ms after the cluster formed`,
    convergeMs,
    convergeMsIs: `p99 over ${options.convergeTrials} trials of the slowest cell's time to show a changed record version (nearest rank: with 20 trials, the largest)`,
    convergeP50Ms: converge?.trialMaxMs.p50 ?? null,
    convergeMaxMs: converge?.trialMaxMs.max ?? null,
    joinToRoutableMs: results.join?.joinToRoutableMs ?? null,
    joinFromListeningMs: results.join?.fromListeningMs ?? null,
    failureDetectMs,
    failureDetectMsIs: `the largest of ${failureTrials.length} SIGKILL trial(s), each the time until every other cell's view says dead`,
    falsePositives,
    locateMsgsPerQuery: results.locate?.sequential.msgsPerQuery ?? null,
    locateExpectedMsgsPerQuery: results.locate?.sequential.expectedMsgsPerQuery ?? null,
    usersLocatedCorrectly: results.locate?.sequential.usersLocatedCorrectly ?? null,
    usersLocated: results.locate?.users ?? null,
    crossCellP99Ms,
    inCellP99Ms,
    crossCellP50Ms: results.delivery?.crossCell?.deliveryMs.p50 ?? null,
    inCellP50Ms: results.delivery?.inCell.deliveryMs.p50 ?? null,
    crossCellUnavailable: results.delivery === undefined ? 'delivery phase not run' : results.delivery.crossCellUnavailable,
    goals: judgeGoals({
      convergeMs,
      crossCellP99Ms,
      inCellP99Ms,
      failureDetectMs,
      falsePositives,
      idleCellCpuMaxPercent: idle?.cpuPercent.max ?? null,
      idleCellCpuP50Percent: idle?.cpuPercent.p50 ?? null,
      idleBaselinePercent: options.idleBaselinePercent,
      formMs: results.formation?.formMs ?? null,
    }),
    errors: results.errors,
    disturbedPhases: disturbed,
    timings: {
      preset: 'lan',
      overrides: options.timings,
      heartbeatIntervalMs: effective.heartbeatIntervalMs,
      probeIntervalMs: effective.probeIntervalMs,
      probeTimeoutMs: effective.probeTimeoutMs,
      suspectAfterMs: effective.suspectAfterMs,
      suspicionMinMs: effective.suspicionMinMs,
      suspicionMaxMs: effective.suspicionMaxMs,
      suspicionConfirmations: effective.suspicionConfirmations,
      antiEntropyIntervalMs: effective.antiEntropyIntervalMs,
    },
    parameters: {
      cells: options.cells,
      convergeTrials: options.convergeTrials,
      convergeWarmup: options.convergeWarmup,
      waitQuietSeconds: options.waitQuietSeconds,
      pollIntervalMs: options.pollIntervalMs,
      locateUsers: options.locateUsers,
      deliveryMessages: options.deliveryMessages,
      deliveryWarmup: options.deliveryWarmup,
      deliveryRatePerPath: options.deliveryRate,
      bodyBytes: options.bodyBytes,
      stalls: options.stalls,
      stallMs: options.stallMs,
      stallSpacingMs: options.stallSpacingMs,
      stallWatchSeconds: options.stallWatchSeconds,
      failureTrials: options.failureTrials,
      phases: options.phases,
      startConcurrency: options.startConcurrency,
      idleSettleSeconds: options.idleSettleSeconds,
      idleSeconds: options.idleSeconds,
      idleBaselinePercent: options.idleBaselinePercent,
      storeSync: true,
    },
    formation: results.formation ?? null,
    idle: idle ?? null,
    converge: converge ?? null,
    locate: results.locate ?? null,
    delivery: results.delivery ?? null,
    join: results.join ?? null,
    stall: results.stall ?? null,
    failure: results.failure ?? null,
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? null,
      memoryBytes: totalmem(),
      node: process.version,
    },
    startedAt: startedAt.toISOString(),
    elapsedSeconds: round(elapsedSeconds, 1),
  };
}

/** Runs the mesh benchmark and prints its report; returns the process exit code. */
export async function runMesh(options: MeshOptions): Promise<number> {
  const startedAt = new Date();
  const startedMs = performance.now();
  const log: Log = (line) => process.stderr.write(`${line}\n`);
  const unknownTimings = Object.keys(options.timings).filter((name) => !(name in LAN_MEMBERSHIP_OPTIONS));
  if (unknownTimings.length > 0) throw new Error(`unknown timing(s) ${unknownTimings.join(', ')}; known: ${Object.keys(LAN_MEMBERSHIP_OPTIONS).join(', ')}`);
  effectiveTimings(options.timings); // Throws on a nonsensical combination before anything starts.

  const cluster = new BenchCluster(options.timings);
  const results: MeshResults = { errors: {} };
  // A bound on the whole run: whatever hangs, the cells are killed and their data removed.
  const report = (): void => {
    const json = buildMeshJson(options, results, startedAt, (performance.now() - startedMs) / 1000);
    if (options.json) process.stdout.write(`${JSON.stringify(json)}\n`);
    else process.stdout.write(`\n${formatMeshReport(json)}\n`);
  };
  const watchdog = setTimeout(() => {
    log(`mesh: the run exceeded ${options.maxSeconds} s; stopping the cells`);
    cluster.destroySync();
    // What was measured so far is still reported, with the reason it stopped.
    results.errors.run = `the run exceeded --max-seconds ${options.maxSeconds}; the phases after the last reported one did not finish`;
    report();
    process.exit(1);
  }, options.maxSeconds * 1000);
  try {
    log(`mesh: starting ${options.cells} cells (LAN timings${Object.keys(options.timings).length > 0 ? ` with ${JSON.stringify(options.timings)}` : ''}) in ${cluster.root}`);
    const cells = new Cells(cluster);
    try {
      results.formation = await formCluster(cells, options.cells, options.startConcurrency, log);
      const formation = results.formation;
      log(
        `  all ${options.cells} cells see each other alive ${formation.formMs} ms after the last one listened ` +
          `(${formation.formFromFirstSpawnMs} ms after the first spawn; ${options.startConcurrency} started at a time, ` +
          `spawn -> listening p50 ${formation.processStartMs.p50} ms, ${formation.processStartCpuSeconds.p50} s of CPU each)`,
      );
      log(`  idle: ${options.idleSettleSeconds} s to settle, then ${options.idleSeconds} s measured with nobody polling`);
      results.idle = await measureIdle(cluster, cells.list, options.idleSettleSeconds * 1000, options.idleSeconds * 1000);
      const idle = results.idle;
      log(
        `  idle cells used p50 ${idle.cpuPercent.p50}%, max ${idle.cpuPercent.max}% of a core ` +
          `(${Object.values(idle.perCellCpuPercent).join(', ')}); others ${idle.otherCpuPercent}%; ` +
          `bytes read/written per cell per second p50 ${idle.ioBytesPerSecond.read.p50}/${idle.ioBytesPerSecond.written.p50}`,
      );
    } catch (error) {
      results.errors.cluster = errorText(error);
      log(`  failed: ${results.errors.cluster}`);
    }
    if (results.errors.cluster === undefined) {
      const phases: Record<MeshPhase, { title: string; run: () => Promise<unknown>; store: (value: never) => void }> = {
        converge: {
          title: `converge: ${options.convergeTrials} record changes (POST /v1/admin/capacity), polling every other cell's view`,
          run: () => runConverge(cluster, cells, options, log),
          store: (value: ConvergeResult) => (results.converge = value),
        },
        locate: {
          title: `locate: ${options.locateUsers} users with devices on 0-${Math.max(0, options.cells - 2)} cells, located from cells that hold none`,
          run: () => runLocate(cluster, cells, options, log),
          store: (value: LocateResult) => (results.locate = value),
        },
        delivery: {
          title: `delivery: ${options.deliveryMessages} messages per path at ${options.deliveryRate}/s each, in-cell and cross-cell`,
          run: () => runDelivery(cluster, cells, options, log),
          store: (value: DeliveryResult) => (results.delivery = value),
        },
        join: {
          title: `join: cell ${cellIdOf(options.cells)} with merchant ${JOIN_MERCHANT}, then a graceful leave`,
          run: () => runJoin(cluster, cells, options, log),
          store: (value: JoinResult) => (results.join = value),
        },
        stall: {
          title: `stall: SIGSTOP ${cellIdOf(options.cells - 1)} for ${options.stallMs} ms, ${options.stalls} times ${options.stallSpacingMs} ms apart, then ${options.stallWatchSeconds} s of watching`,
          run: () => runStall(cluster, cells, options, log),
          store: (value: StallResult) => (results.stall = value),
        },
        failure: {
          title: `failure: SIGKILL a cell, ${options.failureTrials} trial(s) with restarts`,
          run: () => runFailure(cluster, cells, options, log),
          store: (value: FailureResult) => (results.failure = value),
        },
      };
      for (const phase of MESH_PHASES) {
        if (!options.phases.includes(phase)) continue;
        const step = phases[phase];
        log(step.title);
        try {
          await waitForQuietMachine(cluster, options.waitQuietSeconds * 1000, log);
          step.store((await step.run()) as never);
        } catch (error) {
          results.errors[phase] = errorText(error);
          log(`  failed: ${results.errors[phase]}`);
          const dead = cells.list.filter((cell) => cell.hasExited());
          for (const cell of dead) log(`  ${cell.spec.cellId} exited; its log ends with:\n${cell.stderrTail()}`);
        }
      }
    }
  } finally {
    clearTimeout(watchdog);
    log('mesh: stopping the cells');
    await cluster.destroy();
  }
  report();
  return Object.keys(results.errors).length === 0 ? 0 : 1;
}
