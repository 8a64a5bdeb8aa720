/**
 * `npm run bench -- in-cell`: customers chatting with merchants' agents in ONE cell process over
 * real WebSockets, and the same load against two baselines on the same machine:
 *
 * - cell: `node bin/cellmesh.js cell --config <file>` with a LevelDB store;
 * - socketio: a Socket.IO relay that awaits one LevelDB put per message before acking
 *   (baselines/socketio-relay.ts), what a Node team would build instead;
 * - uws-echo: a raw uWebSockets.js echo server (baselines/uws-echo.ts), the ceiling of this
 *   machine with this load generator.
 *
 * For each target: start it as a child process; measure RSS per idle authenticated connection;
 * connect the customers and agents from the load worker(s); run a closed loop (each customer
 * keeps `outstanding` sends in flight) to find peak throughput and its latency; then an open
 * loop paced at half that peak for the latency at a sustainable load; the baselines also at the
 * cell's half-load rate; last, a window-1 phase (a few conversations, one send in flight each) for
 * the latency at low concurrency. Every phase is bounded by time and by count; servers are
 * stopped and their data removed at the end.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { mintToken } from '../cell/access/tokens.js';
import { SeededRandom, randomId } from '../platform/random.js';
import { LatencyHistogram } from './histogram.js';
import { measureIdleConnections } from './idle-connections.js';
import {
  TARGET_LABELS,
  type AgentSpec,
  type CustomerSpec,
  type RunCommand,
  type RunResultReply,
  type TargetKind,
} from './load-protocol.js';
import {
  buildJsonReport,
  formatHumanReport,
  type InCellParameters,
  type PhaseSummary,
  type TargetResult,
  QUIET_OTHER_CPU_PERCENT,
} from './report.js';
import {
  REPOSITORY_ROOT,
  type SystemCpuSample,
  freePort,
  otherProcessesSecondsBetween,
  readCpuSplit,
  readSystemCpu,
  startServer,
  type ServerProcess,
} from './servers.js';
import { LoadWorker } from './worker-client.js';

export interface InCellOptions extends InCellParameters {
  json: boolean;
  /** When set, the load-phase servers run with `--cpu-prof` and write their profiles here. */
  cpuProfileDirectory: string | null;
  /** Before each load phase, wait at most this long for other processes to leave the CPUs alone. */
  waitQuietSeconds: number;
  cellReadyTimeoutSeconds: number;
  connectConcurrency: number;
}

/** The one tenant of the bench's cells. */
export const TENANT = 'bench';
const TOKEN_TTL_SECONDS = 6 * 3600;
const WARM_IDLE_CONNECTIONS = 100;
const CONNECT_TIMEOUT_MS = 10_000;
const CONNECT_ALL_BOUND_MS = 180_000;
const DRAIN_MS = 5_000;
const PACED_WARMUP_MS = 1_000;
/** Bound on sends per worker and phase: far above what a loopback server can ack per second. */
const MAX_SENDS_PER_SECOND_BOUND = 500_000;
const BASELINE_READY_TIMEOUT_MS = 30_000;
const PROGRESS_REFRESH_MS = 250;
const QUIET_PROBE_MS = 1000;
/** Semispaces of 16 MiB are Node 20's default maximum on 64-bit; pinning only stops resizing. */
const IDLE_PROCESS_NODE_FLAGS = ['--min-semi-space-size=16', '--max-semi-space-size=16'];

export interface Fixture {
  secret: string;
  customers: CustomerSpec[];
  agents: AgentSpec[];
  idleTokens: string[];
}

export function merchantIdOf(index: number): string {
  return `m${index}`;
}

export async function buildFixture(
  options: Pick<InCellOptions, 'seed' | 'customers' | 'merchants' | 'agentsPerMerchant' | 'idleConnections'>,
): Promise<Fixture> {
  const random = new SeededRandom(options.seed);
  const secret = randomId(random, 48);
  const nowMs = Date.now();
  const mint = (user: string, role: 'customer' | 'agent', merchant?: string): Promise<string> =>
    mintToken({
      secret,
      tenant: TENANT,
      user,
      role,
      ...(merchant === undefined ? {} : { merchant }),
      device: 'd0',
      ttlSeconds: TOKEN_TTL_SECONDS,
      nowMs,
    });
  const customers: CustomerSpec[] = [];
  for (let index = 0; index < options.customers; index++) {
    const user = `c${index}`;
    customers.push({ index, token: await mint(user, 'customer'), conv: `${merchantIdOf(index % options.merchants)}:${user}` });
  }
  const agents: AgentSpec[] = [];
  for (let merchant = 0; merchant < options.merchants; merchant++) {
    for (let agent = 0; agent < options.agentsPerMerchant; agent++) {
      agents.push({ token: await mint(`a${merchant}-${agent}`, 'agent', merchantIdOf(merchant)) });
    }
  }
  const idleTokens: string[] = [];
  const idleCount = options.idleConnections > 0 ? options.idleConnections + WARM_IDLE_CONNECTIONS : 0;
  for (let index = 0; index < idleCount; index++) idleTokens.push(await mint(`idle${index}`, 'customer'));
  return { secret, customers, agents, idleTokens };
}

function durabilityOf(target: TargetKind, sync: boolean): string {
  switch (target) {
    case 'cell':
      return sync
        ? 'cell LevelDB store with sync:true: the `sent` ack follows the fsync of the group-committed batch holding the message'
        : 'cell LevelDB store with sync:false: acked once written to the OS (survives kill -9, not power loss)';
    case 'socketio':
      return (
        `await db.put(key, value, { sync: ${sync} }) per message before the Socket.IO ack ` +
        (sync
          ? '(an fsync per write; concurrent puts may share one in LevelDB\'s writer queue)'
          : '(written to the OS, no fsync)')
      );
    case 'uws-echo':
      return 'none: the frame is echoed back, nothing is stored';
  }
}

/**
 * The config of a cell under load: the fixture's tenant and merchants, limits out of the way of
 * the load, quiet logs. `extra` adds sections (a scaled cell's `processes`).
 */
export function benchCellConfig(
  fixture: Fixture,
  merchants: number,
  port: number,
  store: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    cell: { id: 'bench' },
    listen: { host: '127.0.0.1', port },
    store,
    tenants: [
      {
        id: TENANT,
        secret: fixture.secret,
        merchants: Array.from({ length: merchants }, (_, index) => ({ id: merchantIdOf(index) })),
      },
    ],
    limits: { ratePerSecond: 100_000, rateBurst: 100_000, maxDevicesPerUser: 10 },
    log: { level: 'warn' },
    ...extra,
  };
}

/** With --pin, servers run on CPU 0 and the benchmark process (its load workers) on CPU 1. */
const SERVER_CPU = '0';
const GENERATOR_CPU = '1';

function pinning(options: InCellOptions): { cpuList?: string } {
  return options.pin ? { cpuList: SERVER_CPU } : {};
}

async function startTarget(
  target: TargetKind,
  options: InCellOptions,
  fixture: Fixture,
  directory: string,
  nodeFlags: readonly string[],
): Promise<ServerProcess> {
  mkdirSync(directory, { recursive: true });
  switch (target) {
    case 'cell': {
      const binPath = join(REPOSITORY_ROOT, 'bin', 'cellmesh.js');
      if (!existsSync(binPath)) throw new Error('bin/cellmesh.js does not exist (yet): the cell cannot be started');
      const port = await freePort();
      const configPath = join(directory, 'cell.json');
      const store = { kind: 'level', directory: join(directory, 'store'), sync: options.storeSync };
      writeFileSync(configPath, JSON.stringify(benchCellConfig(fixture, options.merchants, port, store), null, 2));
      return startServer({
        label: TARGET_LABELS.cell,
        nodeArguments: [...nodeFlags, binPath, 'cell', '--config', configPath],
        readiness: { kind: 'http', url: `http://127.0.0.1:${port}/v1/readyz`, port },
        readyTimeoutMs: options.cellReadyTimeoutSeconds * 1000,
        ...pinning(options),
      });
    }
    case 'socketio': {
      const configPath = join(directory, 'socketio.json');
      writeFileSync(
        configPath,
        JSON.stringify({
          port: 0,
          directory: join(directory, 'store'),
          sync: options.storeSync,
          tenants: [{ id: TENANT, secret: fixture.secret }],
        }),
      );
      return startServer({
        label: TARGET_LABELS.socketio,
        nodeArguments: [
          ...nodeFlags,
          '--import',
          'tsx',
          join(REPOSITORY_ROOT, 'bench', 'baselines', 'socketio-relay.ts'),
          '--config',
          configPath,
        ],
        readiness: { kind: 'stdout' },
        readyTimeoutMs: BASELINE_READY_TIMEOUT_MS,
        ...pinning(options),
      });
    }
    case 'uws-echo':
      return startServer({
        label: TARGET_LABELS['uws-echo'],
        nodeArguments: [...nodeFlags, '--import', 'tsx', join(REPOSITORY_ROOT, 'bench', 'baselines', 'uws-echo.ts'), '--port', '0'],
        readiness: { kind: 'stdout' },
        readyTimeoutMs: BASELINE_READY_TIMEOUT_MS,
        ...pinning(options),
      });
  }
}

export class Progress {
  private readonly enabled = process.stderr.isTTY === true;
  constructor(private readonly log: (line: string) => void) {}

  /** Shows a bar for a timed phase; returns a function that feeds it acked totals and one that ends it. */
  start(title: string, totalMs: number): { update: (acked: number) => void; stop: () => void } {
    const startedMs = performance.now();
    if (!this.enabled) {
      this.log(`  ${title} (${(totalMs / 1000).toFixed(0)} s)`);
      return { update: () => undefined, stop: () => undefined };
    }
    const bar = new cliProgress.SingleBar(
      {
        format: `  ${title} [{bar}] {percentage}% | {rate} msgs/s | {elapsedSeconds}/{totalSeconds} s`,
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: true,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(totalMs, 0, { rate: '0', elapsedSeconds: '0', totalSeconds: (totalMs / 1000).toFixed(0) });
    let lastAcked = 0;
    let lastMs = startedMs;
    let rate = 0;
    let latestAcked = 0;
    const timer = setInterval(() => {
      const nowMs = performance.now();
      if (nowMs - lastMs >= 500) {
        rate = ((latestAcked - lastAcked) * 1000) / (nowMs - lastMs);
        lastAcked = latestAcked;
        lastMs = nowMs;
      }
      bar.update(Math.min(totalMs, nowMs - startedMs), {
        rate: Math.max(0, Math.round(rate)).toLocaleString('en-US'),
        elapsedSeconds: ((nowMs - startedMs) / 1000).toFixed(0),
      });
    }, PROGRESS_REFRESH_MS);
    return {
      update: (acked) => {
        latestAcked = acked;
      },
      stop: () => {
        clearInterval(timer);
        bar.stop();
      },
    };
  }
}

export interface PhaseRequest {
  mode: 'closed' | 'paced';
  /** All workers together; split by each worker's share of the customers. */
  ratePerSecond: number;
  warmupMs: number;
  /** Closed loop: sends in flight per customer, instead of the options' `outstandingPerCustomer`. */
  outstandingPerCustomer?: number | undefined;
  /** Only the first this many customers of the run send (the window-1 phase); all when absent. */
  senders?: number | undefined;
}

/** A process whose CPU a phase charges to the server under test. */
export interface ObservedProcess {
  label: string;
  pid: number;
}

/** What a phase reads of the options. */
export type PhaseOptions = Pick<
  InCellOptions,
  'durationSeconds' | 'customers' | 'outstandingPerCustomer' | 'maxPacedOutstandingPerCustomer' | 'bodyBytes' | 'agentsPerMerchant'
>;

/**
 * Runs one bounded load phase on every worker and sums what they measured. `observed` is the
 * server under test: one process, or several (a cell's processes and its Redis), whose CPU is
 * reported together and one by one.
 */
export async function runPhase(
  workers: readonly LoadWorker[],
  customerShares: readonly number[],
  request: PhaseRequest,
  options: PhaseOptions,
  observed: readonly ObservedProcess[],
  target: TargetKind,
  progress: Progress,
  title: string,
): Promise<PhaseSummary> {
  const durationMs = options.durationSeconds * 1000;
  const totalSeconds = (request.warmupMs + durationMs) / 1000;
  const ackedByWorker = workers.map(() => 0);
  interface Sample {
    wallMs: number;
    /** Per observed process, in the order of `observed`. */
    cpu: Array<{ userSeconds: number; systemSeconds: number }>;
    generatorCpu: NodeJS.CpuUsage;
    system: SystemCpuSample;
  }
  let windowStart: Sample | undefined;
  let windowEnd: Sample | undefined;
  const observedPids = observed.map((entry) => entry.pid);
  const sample = (): Sample => ({
    wallMs: performance.now(),
    // A process that died during the phase (a failover) counts no further time.
    cpu: observed.map((entry) => {
      try {
        return readCpuSplit(entry.pid);
      } catch {
        return { userSeconds: 0, systemSeconds: 0 };
      }
    }),
    generatorCpu: process.cpuUsage(),
    system: readSystemCpu([...observedPids, process.pid]),
  });
  const bar = progress.start(title, request.warmupMs + durationMs);
  let results: RunResultReply[];
  try {
    results = await Promise.all(
      workers.map((worker, index) => {
        const share = customerShares[index]! / options.customers;
        const command: RunCommand = {
          type: 'run',
          mode: request.mode,
          warmupMs: request.warmupMs,
          durationMs,
          drainMs: DRAIN_MS,
          outstanding: request.outstandingPerCustomer ?? options.outstandingPerCustomer,
          sendersBelowIndex: request.senders ?? null,
          ratePerSecond: request.ratePerSecond * share,
          maxPacedOutstanding: options.maxPacedOutstandingPerCustomer,
          maxSends: Math.ceil(
            request.mode === 'closed'
              ? totalSeconds * MAX_SENDS_PER_SECOND_BOUND
              : totalSeconds * request.ratePerSecond * share * 1.1 + 100,
          ),
          bodyBytes: options.bodyBytes,
        };
        return worker.request(command, 'result', request.warmupMs + durationMs + DRAIN_MS + 30_000, {
          onProgress: (acked) => {
            ackedByWorker[index] = acked;
            bar.update(ackedByWorker.reduce((sum, value) => sum + value, 0));
          },
          onWindowStart: () => {
            windowStart ??= sample();
          },
          onWindowEnd: () => {
            windowEnd ??= sample();
          },
        });
      }),
    );
  } finally {
    bar.stop();
  }
  const histogram = new LatencyHistogram();
  for (const result of results) histogram.merge(new LatencyHistogram(result.histogram));
  const sum = (pick: (result: RunResultReply) => number): number => results.reduce((total, result) => total + pick(result), 0);
  const windowMs = Math.max(...results.map((result) => result.windowMs));
  const errors: Record<string, number> = {};
  for (const result of results) {
    for (const [code, count] of Object.entries(result.errors)) errors[code] = (errors[code] ?? 0) + count;
  }
  const start = windowStart ?? sample();
  const end = windowEnd ?? sample();
  const wallSeconds = Math.max(0.001, (end.wallMs - start.wallMs) / 1000);
  const generatorMicros =
    end.generatorCpu.user + end.generatorCpu.system - start.generatorCpu.user - start.generatorCpu.system;
  const totalAcked = sum((result) => result.totalAcked);
  const cpuByProcess: PhaseSummary['cpuByProcess'] = {};
  let serverCpuSeconds = 0;
  let serverSystemSeconds = 0;
  observed.forEach((entry, index) => {
    const userSeconds = end.cpu[index]!.userSeconds - start.cpu[index]!.userSeconds;
    const systemSeconds = end.cpu[index]!.systemSeconds - start.cpu[index]!.systemSeconds;
    serverCpuSeconds += userSeconds + systemSeconds;
    serverSystemSeconds += systemSeconds;
    cpuByProcess[entry.label] = {
      cpuPercent: ((userSeconds + systemSeconds) / wallSeconds) * 100,
      systemCpuPercent: (systemSeconds / wallSeconds) * 100,
    };
  });
  const otherCpuSeconds = otherProcessesSecondsBetween(start.system, end.system);
  return {
    mode: request.mode,
    targetRatePerSecond: request.mode === 'paced' ? request.ratePerSecond : null,
    msgsPerSec: (sum((result) => result.ackedInWindow) * 1000) / windowMs,
    p50Ms: histogram.quantileMs(0.5),
    p90Ms: histogram.quantileMs(0.9),
    p99Ms: histogram.quantileMs(0.99),
    p999Ms: histogram.quantileMs(0.999),
    maxMs: histogram.maxMs(),
    meanMs: histogram.meanMs(),
    windowSeconds: windowMs / 1000,
    sentInWindow: sum((result) => result.sentInWindow),
    ackedInWindow: sum((result) => result.ackedInWindow),
    totalSent: sum((result) => result.totalSent),
    totalAcked,
    unackedAfterDrain: sum((result) => result.unackedAfterDrain),
    skipped: sum((result) => result.skipped),
    errors,
    delivered: sum((result) => result.delivered),
    expectedDeliveries: target === 'uws-echo' ? null : totalAcked * options.agentsPerMerchant,
    deliveryAcksSent: sum((result) => result.deliveryAcksSent),
    ackFramesSent: sum((result) => result.ackFramesSent),
    socketsClosedUnexpectedly: sum((result) => result.socketsClosedUnexpectedly),
    serverCpuPercent: (serverCpuSeconds / wallSeconds) * 100,
    serverSystemCpuPercent: (serverSystemSeconds / wallSeconds) * 100,
    cpuByProcess,
    otherCpuPercent: Math.max(0, (otherCpuSeconds / wallSeconds) * 100),
    interruptCpuPercent: ((end.system.interruptSeconds - start.system.interruptSeconds) / wallSeconds) * 100,
    kernelThreadsCpuPercent: ((end.system.kernelThreadsSeconds - start.system.kernelThreadsSeconds) / wallSeconds) * 100,
    stealCpuPercent: ((end.system.stealSeconds - start.system.stealSeconds) / wallSeconds) * 100,
    generatorCpuPercent: (generatorMicros / 1e6 / wallSeconds) * 100,
    generatorEventLoopUtilization: Math.max(...results.map((result) => result.eventLoopUtilization)),
    tickLagP99Ms: results.reduce<number | null>(
      (highest, result) =>
        result.tickLagP99Ms === null ? highest : Math.max(highest ?? 0, result.tickLagP99Ms),
      null,
    ),
    generatorGcPauseTotalMs: Math.max(...results.map((result) => result.gcPauseTotalMs)),
    generatorGcPauseMaxMs: Math.max(...results.map((result) => result.gcPauseMaxMs)),
  };
}

/**
 * Waits (at most `boundMs`) for a second in which the machine is quiet: processes other than the
 * server under test and this one use under QUIET_OTHER_CPU_PERCENT of a core. Other work on a
 * shared machine takes cores from the server and the generator and skews every figure.
 */
export async function waitForQuietMachine(
  observed: readonly ObservedProcess[],
  boundMs: number,
  log: (line: string) => void,
): Promise<void> {
  if (boundMs <= 0) return;
  const deadlineMs = performance.now() + boundMs;
  let warned = false;
  for (;;) {
    const excluded = [...observed.map((entry) => entry.pid), process.pid];
    const before = readSystemCpu(excluded);
    await new Promise((resolve) => setTimeout(resolve, QUIET_PROBE_MS));
    const otherSeconds = otherProcessesSecondsBetween(before, readSystemCpu(excluded));
    const otherPercent = (otherSeconds / (QUIET_PROBE_MS / 1000)) * 100;
    if (otherPercent <= QUIET_OTHER_CPU_PERCENT) return;
    if (performance.now() >= deadlineMs) {
      log(`  the machine is still busy (others use ${Math.round(otherPercent)}% of a core); going on anyway`);
      return;
    }
    if (!warned) {
      log(`  waiting up to ${Math.round(boundMs / 1000)} s for a quiet machine (others use ${Math.round(otherPercent)}% of a core)`);
      warned = true;
    }
  }
}

function describePhase(phase: PhaseSummary): string {
  const ms = (value: number | null): string => (value === null ? '-' : value.toFixed(2));
  return (
    `${Math.round(phase.msgsPerSec).toLocaleString('en-US')} msgs/s, p50 ${ms(phase.p50Ms)} ms, ` +
    `p99 ${ms(phase.p99Ms)} ms, server CPU ${Math.round(phase.serverCpuPercent)}%`
  );
}

async function runTarget(
  target: TargetKind,
  options: InCellOptions,
  fixture: Fixture,
  log: (line: string) => void,
  progress: Progress,
  cellHalfLoadRate: number | null,
): Promise<TargetResult> {
  const result: TargetResult = {
    target,
    label: TARGET_LABELS[target],
    ok: false,
    durability: durabilityOf(target, options.storeSync),
  };
  const directory = mkdtempSync(join(tmpdir(), `cellmesh-bench-${target}-`));
  let server: ServerProcess | undefined;
  const workers: LoadWorker[] = [];
  try {
    if (options.idleTargets.includes(target) && options.idleConnections > 0) {
      // A process of its own, with V8's young generation pinned at Node's default maximum, so
      // that its one-time growth (or shrinking) is not charged to the connections.
      log(`${TARGET_LABELS[target]}: starting for the idle-connection measurement`);
      server = await startTarget(target, options, fixture, join(directory, 'idle'), IDLE_PROCESS_NODE_FLAGS);
      result.idle = await measureIdleConnections({
        server,
        target,
        tokens: fixture.idleTokens,
        warmConnections: WARM_IDLE_CONNECTIONS,
        concurrency: options.connectConcurrency,
        seed: options.seed,
        log,
      });
      await server.stop();
      server = undefined;
      const perConnection = result.idle.bytesPerConnection;
      log(
        `  idle: ${perConnection === null ? '-' : Math.round(perConnection)} bytes per connection over ${result.idle.opened} connections`,
      );
    }

    log(`${TARGET_LABELS[target]}: starting for the load phases`);
    const profileFlags =
      options.cpuProfileDirectory === null
        ? []
        : ['--cpu-prof', `--cpu-prof-dir=${join(options.cpuProfileDirectory, target)}`];
    server = await startTarget(target, options, fixture, join(directory, 'load'), profileFlags);
    log(`  ready on port ${server.port} (pid ${server.pid}, RSS ${(server.rssBytes() / 1048576).toFixed(1)} MiB)`);

    const customerShares = Array.from({ length: options.workers }, () => 0);
    const customersOf: CustomerSpec[][] = Array.from({ length: options.workers }, () => []);
    const agentsOf: AgentSpec[][] = Array.from({ length: options.workers }, () => []);
    fixture.customers.forEach((customer, index) => {
      customersOf[index % options.workers]!.push(customer);
      customerShares[index % options.workers]!++;
    });
    // The echo server relays nothing, so it has no agents to connect.
    if (target !== 'uws-echo') {
      fixture.agents.forEach((agent, index) => agentsOf[index % options.workers]!.push(agent));
    }
    for (let index = 0; index < options.workers; index++) workers.push(new LoadWorker(index, options.seed));
    const connectStartedMs = performance.now();
    const connected = await Promise.all(
      workers.map((worker, index) =>
        worker.request(
          {
            type: 'connect',
            target,
            baseUrl: server!.baseUrl,
            customers: customersOf[index]!,
            agents: agentsOf[index]!,
            concurrency: Math.max(1, Math.floor(options.connectConcurrency / options.workers)),
            timeoutMs: CONNECT_TIMEOUT_MS,
          },
          'connected',
          CONNECT_ALL_BOUND_MS,
        ),
      ),
    );
    const failed = connected.reduce((total, reply) => total + reply.failed, 0);
    if (failed > 0) {
      const firstError = connected.find((reply) => reply.firstError !== undefined)?.firstError ?? '';
      throw new Error(`${failed} load sockets failed to connect: ${firstError}`);
    }
    const opened = connected.reduce((total, reply) => total + reply.opened, 0);
    log(`  connected ${opened} sockets in ${((performance.now() - connectStartedMs) / 1000).toFixed(1)} s`);

    const loadedServer: ObservedProcess[] = [{ label: target, pid: server.pid }];
    /** Each load phase starts on a machine as quiet as it gets, and says how it went. */
    const phase = async (request: PhaseRequest, name: string): Promise<PhaseSummary> => {
      await waitForQuietMachine(loadedServer, options.waitQuietSeconds * 1000, log);
      const summary = await runPhase(workers, customerShares, request, options, loadedServer, target, progress, `${target} ${name}`);
      log(`  ${name}: ${describePhase(summary)}`);
      return summary;
    };
    result.peak = await phase({ mode: 'closed', ratePerSecond: 0, warmupMs: options.warmupSeconds * 1000 }, 'peak');
    if (result.peak.ackedInWindow === 0) throw new Error('no send was acknowledged during the peak window');
    const halfRate = options.pacedRatePerSecond ?? result.peak.msgsPerSec / 2;
    result.halfLoad = await phase({ mode: 'paced', ratePerSecond: halfRate, warmupMs: PACED_WARMUP_MS }, 'half load');
    if (target !== 'cell' && cellHalfLoadRate !== null && options.pacedRatePerSecond === null) {
      // The same absolute rate as the cell's half-load phase: for the relay a like-for-like
      // latency, for the echo server the floor that this machine and generator put under it.
      result.atCellHalfLoad = await phase(
        { mode: 'paced', ratePerSecond: cellHalfLoadRate, warmupMs: PACED_WARMUP_MS },
        "at the cell's half load",
      );
    }
    if (options.window1Customers > 0) {
      // Latency at low concurrency: a few conversations, each sending its next message only
      // once the previous one is acknowledged (the closed loop with one send in flight).
      result.window1 = await phase(
        {
          mode: 'closed',
          ratePerSecond: 0,
          warmupMs: options.warmupSeconds * 1000,
          outstandingPerCustomer: 1,
          senders: options.window1Customers,
        },
        `window 1 (${options.window1Customers} conversations)`,
      );
    }
    result.serverRssAfterLoadBytes = server.rssBytes();
    result.ok = true;
  } catch (error) {
    result.error = (error as Error).message;
    // The server's own words (its log tail) usually say why, whether or not it exited.
    const tail = server?.stderrTail().trim();
    if (tail) result.error += `\n${server?.hasExited() ? 'server exited; ' : ''}its log ends with:\n${tail}`;
    log(`  failed: ${result.error}`);
  } finally {
    await Promise.all(workers.map((worker) => worker.close()));
    await server?.stop();
    rmSync(directory, { recursive: true, force: true });
  }
  return result;
}

/** Runs the whole in-cell benchmark and prints its report; returns the process exit code. */
export async function runInCell(options: InCellOptions): Promise<number> {
  const startedAt = new Date();
  const startedMs = performance.now();
  const log = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };
  const progress = new Progress(log);
  if (options.pin) {
    // Every thread of this process, and the worker threads it starts later, on the other CPU.
    execFileSync('taskset', ['-a', '-p', '-c', GENERATOR_CPU, String(process.pid)], { stdio: 'ignore' });
  }
  log(
    `in-cell: ${options.customers} customers, ${options.merchants} merchants x ${options.agentsPerMerchant} agents, ` +
      `${options.workers} load worker(s), targets ${options.targets.join(', ')}`,
  );
  const fixture = await buildFixture(options);
  const results: TargetResult[] = [];
  // The cell runs first, so that the baselines can also be measured at the cell's half-load rate.
  const ordered = [...options.targets].sort((left, right) => (left === 'cell' ? -1 : right === 'cell' ? 1 : 0));
  let cellHalfLoadRate: number | null = null;
  for (const target of ordered) {
    const result = await runTarget(target, options, fixture, log, progress, cellHalfLoadRate);
    if (target === 'cell' && result.halfLoad !== undefined) cellHalfLoadRate = result.halfLoad.targetRatePerSecond;
    results.push(result);
  }
  const parameters: InCellParameters = {
    customers: options.customers,
    merchants: options.merchants,
    agentsPerMerchant: options.agentsPerMerchant,
    outstandingPerCustomer: options.outstandingPerCustomer,
    window1Customers: options.window1Customers,
    maxPacedOutstandingPerCustomer: options.maxPacedOutstandingPerCustomer,
    workers: options.workers,
    pacedRatePerSecond: options.pacedRatePerSecond,
    bodyBytes: options.bodyBytes,
    warmupSeconds: options.warmupSeconds,
    durationSeconds: options.durationSeconds,
    idleConnections: options.idleConnections,
    storeSync: options.storeSync,
    pin: options.pin,
    seed: options.seed,
    targets: options.targets,
    idleTargets: options.idleTargets,
  };
  const json = buildJsonReport(parameters, results, startedAt, (performance.now() - startedMs) / 1000);
  if (options.json) process.stdout.write(`${JSON.stringify(json)}\n`);
  else process.stdout.write(`\n${formatHumanReport(parameters, results, json)}\n`);
  return results.every((result) => result.ok) ? 0 : 1;
}
