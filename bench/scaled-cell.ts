/**
 * `npm run bench -- scaled-cell`: the same load, in the same run, against
 *
 * 1. the embedded LevelDB cell (one process, fsync on);
 * 2. the same cell on a Redis (one process; `appendfsync always`, the durable default);
 * 3. the same cell as two processes on that kind of Redis, the merchants spread over both and
 *    the devices connected half to each process, so that half of them are relayed to their
 *    merchant's owner (docs/operations.md, "A cell of several processes");
 *
 * then SIGKILLs one of the two processes, several times, and times the failover of its devices
 * to the other (scaled-failover.ts). The load is in-cell's: customers in closed loop, agents
 * acknowledging, from the same load workers (load-worker.ts); CPU per process (cells and
 * redis-server) comes from /proc, so the figures say where the time goes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentSpec, CustomerSpec } from './load-protocol.js';
import {
  Progress,
  buildFixture,
  merchantIdOf,
  runPhase,
  waitForQuietMachine,
  type Fixture,
  type ObservedProcess,
} from './in-cell.js';
import type { PhaseSummary } from './report.js';
import {
  RedisCell,
  measureFsyncMs,
  startLevelCell,
  type RedisCounters,
  type ScaledCellSettings,
} from './scaled-cell-processes.js';
import { runFailoverTrial, type FailoverTrial } from './scaled-failover.js';
import type { ServerProcess } from './servers.js';
import { LoadWorker } from './worker-client.js';

export interface ScaledCellOptions {
  customers: number;
  merchants: number;
  agentsPerMerchant: number;
  /** Sends each customer keeps in flight (closed loop). */
  outstandingPerCustomer: number;
  warmupSeconds: number;
  durationSeconds: number;
  bodyBytes: number;
  workers: number;
  failoverTrials: number;
  leaseTtlMs: number;
  renewIntervalMs: number;
  waitQuietSeconds: number;
  maxSeconds: number;
  seed: number;
}

type PhaseName = 'level' | 'redisOneProcess' | 'redisTwoProcesses';

export interface ScaledPhase extends PhaseSummary {
  /** Load devices (customers and agents), and those connected to a process that does not own their merchant. */
  devices: number;
  relayedDevices: number;
  /** On Redis: its commands, script calls and script time per message acknowledged in the phase (warm-up and drain included). */
  redis: { commandsPerAckedMessage: number | null; scriptCallsPerAckedMessage: number | null; scriptMicrosPerAckedMessage: number | null } | null;
}

export interface ScaledCellReport {
  benchmark: 'scaled-cell';
  levelMsgsPerSec: number | null;
  redisOneProcessMsgsPerSec: number | null;
  redisTwoProcessesMsgsPerSec: number | null;
  /** Median over the trials of SIGKILL to every device of the killed process resynced on the other, ms. */
  failoverMs: number | null;
  failoverMaxMs: number | null;
  failoverTrials: FailoverTrial[];
  phases: Partial<Record<PhaseName, ScaledPhase>>;
  durability: Record<PhaseName, string>;
  /** A 256-byte append plus fdatasync on the disk of the stores, p50 and p99 of FSYNC_PROBES, ms: the floor of a durable ack. */
  fsyncMs: { p50: number | null; p99: number | null };
  cores: number;
  /** os.loadavg() (1, 5, 15 minutes) at the start and the end: the machine is shared. */
  loadAverage: { atStart: number[]; atEnd: number[] };
  machine: { model: string; node: string };
  parameters: ScaledCellOptions;
  errors: string[];
  startedAt: string;
  elapsedSeconds: number;
}

type Log = (line: string) => void;

const PROCESS_IDS = ['proc-a', 'proc-b'] as const;
const CONNECT_TIMEOUT_MS = 10_000;
const CONNECT_ALL_BOUND_MS = 120_000;
const READY_TIMEOUT_MS = 60_000;
const FSYNC_PROBES = 50;

const DURABILITY: Record<PhaseName, string> = {
  level: 'LevelDB, sync:true: the `sent` ack follows the fsync of the group-committed batch holding the message',
  redisOneProcess:
    'redis-server with appendonly yes, appendfsync always: every write script is fsynced to the AOF before Redis replies, and the ack waits for that reply',
  redisTwoProcesses: 'the same Redis settings; a relayed device gets its ack from the owner through the relaying process',
};

function round(value: number | null, digits = 1): number | null {
  if (value === null || !Number.isFinite(value)) return null;
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((left, right) => left - right);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Where each load device connects: a process's base URL, per customer and per agent. */
interface Placement {
  customerUrl(customer: CustomerSpec, merchantIndex: number): string;
  agentUrl(merchantIndex: number, agentIndex: number): string;
  isRelayed(url: string, merchantIndex: number): boolean;
}

function onOneProcess(server: ServerProcess): Placement {
  return { customerUrl: () => server.baseUrl, agentUrl: () => server.baseUrl, isRelayed: () => false };
}

/**
 * Half of every merchant's devices on its owner, half on the other process: customers alternate
 * by their round over the merchants, agents by their index (shifted per merchant, so that one
 * agent per merchant still splits the merchants' agents in two).
 */
function halfRelayed(cell: RedisCell, owners: ReadonlyMap<string, string>, merchants: number): Placement {
  const urlOf = (merchantIndex: number, onOwner: boolean): string => {
    const owner = owners.get(merchantIdOf(merchantIndex))!;
    const other = PROCESS_IDS.find((id) => id !== owner)!;
    return cell.process(onOwner ? owner : other).baseUrl;
  };
  return {
    customerUrl: (customer, merchantIndex) => urlOf(merchantIndex, Math.floor(customer.index / merchants) % 2 === 0),
    agentUrl: (merchantIndex, agentIndex) => urlOf(merchantIndex, (merchantIndex + agentIndex) % 2 === 0),
    isRelayed: (url, merchantIndex) => url !== cell.process(owners.get(merchantIdOf(merchantIndex))!).baseUrl,
  };
}

/** Connects the load devices as placed, runs one closed-loop phase, closes them. */
async function loadPhase(
  name: PhaseName,
  fixture: Fixture,
  placement: Placement,
  observed: readonly ObservedProcess[],
  options: ScaledCellOptions,
  progress: Progress,
  log: Log,
  processLogs: () => string,
  redisCounters?: () => Promise<RedisCounters>,
): Promise<ScaledPhase> {
  const workers = Array.from({ length: options.workers }, (_, index) => new LoadWorker(index, options.seed));
  try {
    const customersOf: CustomerSpec[][] = workers.map(() => []);
    const agentsOf: AgentSpec[][] = workers.map(() => []);
    let relayedDevices = 0;
    fixture.customers.forEach((customer, index) => {
      const merchantIndex = index % options.merchants;
      const baseUrl = placement.customerUrl(customer, merchantIndex);
      if (placement.isRelayed(baseUrl, merchantIndex)) relayedDevices++;
      customersOf[index % workers.length]!.push({ ...customer, baseUrl, merchant: merchantIdOf(merchantIndex) });
    });
    fixture.agents.forEach((agent, index) => {
      const merchantIndex = Math.floor(index / options.agentsPerMerchant);
      const baseUrl = placement.agentUrl(merchantIndex, index % options.agentsPerMerchant);
      if (placement.isRelayed(baseUrl, merchantIndex)) relayedDevices++;
      agentsOf[index % workers.length]!.push({ ...agent, baseUrl });
    });
    const connected = await Promise.all(
      workers.map((worker, index) =>
        worker.request(
          {
            type: 'connect',
            target: 'cell',
            baseUrl: '',
            customers: customersOf[index]!,
            agents: agentsOf[index]!,
            concurrency: 50,
            timeoutMs: CONNECT_TIMEOUT_MS,
          },
          'connected',
          CONNECT_ALL_BOUND_MS,
        ),
      ),
    );
    const failed = connected.reduce((total, reply) => total + reply.failed, 0);
    if (failed > 0) throw new Error(`${failed} load sockets failed to connect: ${connected.find((reply) => reply.firstError !== undefined)?.firstError ?? ''}`);
    const devices = fixture.customers.length + fixture.agents.length;
    log(`  ${devices} devices connected, ${relayedDevices} of them relayed`);
    await waitForQuietMachine(observed, options.waitQuietSeconds * 1000, log);
    const countersBefore = await redisCounters?.();
    const summary = await runPhase(
      workers,
      customersOf.map((customers) => customers.length),
      { mode: 'closed', ratePerSecond: 0, warmupMs: options.warmupSeconds * 1000 },
      { ...options, maxPacedOutstandingPerCustomer: 1 },
      observed,
      'cell',
      progress,
      name,
    );
    if (summary.socketsClosedUnexpectedly > 0 || Object.keys(summary.errors).length > 0) {
      log(`  ${summary.socketsClosedUnexpectedly} load sockets closed, errors ${JSON.stringify(summary.errors)}; the cell's log ends with:\n${processLogs()}`);
    }
    const cpu = Object.entries(summary.cpuByProcess).map(([label, figures]) => `${label} ${Math.round(figures.cpuPercent)}%`);
    log(`  ${Math.round(summary.msgsPerSec)} msgs/s, p50 ${round(summary.p50Ms, 2)} ms, p99 ${round(summary.p99Ms, 2)} ms; CPU ${cpu.join(', ')}`);
    if (summary.ackedInWindow === 0) throw new Error('no send was acknowledged in the window');
    const countersAfter = await redisCounters?.();
    const perMessage = (pick: (counters: RedisCounters) => number): number | null =>
      round((pick(countersAfter!) - pick(countersBefore!)) / summary.totalAcked, 2);
    const redis =
      countersBefore === undefined || countersAfter === undefined
        ? null
        : {
            commandsPerAckedMessage: perMessage((counters) => counters.commands),
            scriptCallsPerAckedMessage: perMessage((counters) => counters.scriptCalls),
            scriptMicrosPerAckedMessage: perMessage((counters) => counters.scriptMicros),
          };
    return { ...summary, devices, relayedDevices, redis };
  } finally {
    await Promise.all(workers.map((worker) => worker.close()));
  }
}

/** Runs the whole benchmark; everything it started is stopped before it returns (or on exit, after maxSeconds). */
export async function runScaledCell(options: ScaledCellOptions, logLine: Log = (line) => process.stderr.write(`${line}\n`)): Promise<ScaledCellReport> {
  const startedAt = new Date();
  const startedMs = performance.now();
  const log: Log = (line) => logLine(`[${((performance.now() - startedMs) / 1000).toFixed(1)} s] ${line}`);
  const watchdog = setTimeout(() => {
    // The exit hooks of servers.ts and scaled-cell-processes.ts kill every child and redis-server.
    process.stderr.write(`scaled-cell: the run exceeded --max-seconds ${options.maxSeconds}; stopping everything\n`);
    process.exit(1);
  }, options.maxSeconds * 1000);
  watchdog.unref();
  const report: ScaledCellReport = {
    benchmark: 'scaled-cell',
    levelMsgsPerSec: null,
    redisOneProcessMsgsPerSec: null,
    redisTwoProcessesMsgsPerSec: null,
    failoverMs: null,
    failoverMaxMs: null,
    failoverTrials: [],
    phases: {},
    durability: DURABILITY,
    fsyncMs: { p50: null, p99: null },
    cores: availableParallelism(),
    loadAverage: { atStart: loadavg().map((value) => round(value, 2)!), atEnd: [] },
    machine: { model: cpus()[0]?.model ?? 'unknown', node: process.version },
    parameters: options,
    errors: [],
    startedAt: startedAt.toISOString(),
    elapsedSeconds: 0,
  };
  const settings: ScaledCellSettings = {
    merchants: options.merchants,
    leaseTtlMs: options.leaseTtlMs,
    renewIntervalMs: options.renewIntervalMs,
    readyTimeoutMs: READY_TIMEOUT_MS,
  };
  const fixture = await buildFixture({ ...options, idleConnections: 0 });
  const progress = new Progress(log);
  const directory = mkdtempSync(join(tmpdir(), 'cellmesh-bench-scaled-'));
  const step = async (name: string, run: () => Promise<void>): Promise<void> => {
    log(`${name}...`);
    try {
      await run();
    } catch (error) {
      report.errors.push(`${name}: ${(error as Error).message}`);
      log(`  ${name} failed: ${(error as Error).message}`);
    }
  };
  try {
    const fsyncTimes = measureFsyncMs(directory, FSYNC_PROBES);
    report.fsyncMs = { p50: round(fsyncTimes[Math.floor(FSYNC_PROBES / 2)]!, 2), p99: round(fsyncTimes[Math.ceil(FSYNC_PROBES * 0.99) - 1]!, 2) };
    log(`fdatasync on this disk: p50 ${report.fsyncMs.p50} ms, p99 ${report.fsyncMs.p99} ms`);
    await step('level: the embedded LevelDB cell, one process', async () => {
      const server = await startLevelCell(fixture, settings, directory);
      try {
        const phase = await loadPhase('level', fixture, onOneProcess(server), [{ label: 'level cell', pid: server.pid }], options, progress, log, () => server.stderrTail());
        report.phases.level = phase;
        report.levelMsgsPerSec = round(phase.msgsPerSec);
      } finally {
        await server.stop();
      }
    });
    await step('redisOneProcess: the cell on Redis, one process', async () => {
      const cell = await RedisCell.start(fixture, settings, join(directory, 'one'), [PROCESS_IDS[0]]);
      try {
        await cell.waitForSpread([PROCESS_IDS[0]], READY_TIMEOUT_MS);
        const phase = await loadPhase('redisOneProcess', fixture, onOneProcess(cell.process(PROCESS_IDS[0])), cell.observed(), options, progress, log, () => cell.logTails(), () => cell.counters());
        report.phases.redisOneProcess = phase;
        report.redisOneProcessMsgsPerSec = round(phase.msgsPerSec);
      } finally {
        await cell.stop();
      }
    });
    await step('redisTwoProcesses: the cell on Redis, two processes, half the devices relayed', async () => {
      const cell = await RedisCell.start(fixture, settings, join(directory, 'two'), PROCESS_IDS);
      try {
        const owners = await cell.waitForSpread(PROCESS_IDS, READY_TIMEOUT_MS);
        const placement = halfRelayed(cell, owners, options.merchants);
        const phase = await loadPhase('redisTwoProcesses', fixture, placement, cell.observed(), options, progress, log, () => cell.logTails(), () => cell.counters());
        report.phases.redisTwoProcesses = phase;
        report.redisTwoProcessesMsgsPerSec = round(phase.msgsPerSec);
        const boundMs = Math.max(30_000, options.leaseTtlMs * 5);
        for (let trial = 0; trial < options.failoverTrials; trial++) {
          const killed = PROCESS_IDS[trial % 2]!;
          const survivor = PROCESS_IDS[(trial + 1) % 2]!;
          const result = await runFailoverTrial(cell, fixture, options.merchants, killed, survivor, trial, boundMs);
          log(`  failover ${trial + 1}: SIGKILL of ${killed}; its ${result.devicesOnKilled} devices resynced on ${survivor} after ${Math.round(result.failoverMs)} ms`);
          report.failoverTrials.push({ ...result, failoverMs: round(result.failoverMs)!, firstResyncedMs: round(result.firstResyncedMs)!, relayedOnSurvivorResyncedMs: round(result.relayedOnSurvivorResyncedMs) });
        }
        report.failoverMs = round(median(report.failoverTrials.map((trial) => trial.failoverMs)));
        report.failoverMaxMs = report.failoverTrials.length === 0 ? null : Math.max(...report.failoverTrials.map((trial) => trial.failoverMs));
      } finally {
        await cell.stop();
      }
    });
  } finally {
    clearTimeout(watchdog);
    rmSync(directory, { recursive: true, force: true });
  }
  report.loadAverage.atEnd = loadavg().map((value) => round(value, 2)!);
  report.elapsedSeconds = round((performance.now() - startedMs) / 1000)!;
  return report;
}

function describePhase(title: string, phase: ScaledPhase | undefined): string[] {
  if (phase === undefined) return [`${title}: did not run`];
  const cpu = Object.entries(phase.cpuByProcess)
    .map(([label, figures]) => `${label} ${Math.round(figures.cpuPercent)}% (${Math.round(figures.systemCpuPercent)}% kernel)`)
    .join(', ');
  return [
    `${title}: ${Math.round(phase.msgsPerSec).toLocaleString('en-US')} msgs/s, p50 ${round(phase.p50Ms, 2)} ms, p99 ${round(phase.p99Ms, 2)} ms (${phase.relayedDevices} of ${phase.devices} devices relayed)`,
    ...(phase.redis === null
      ? []
      : [`  Redis per acked message: ${phase.redis.commandsPerAckedMessage} commands, ${phase.redis.scriptCallsPerAckedMessage} write scripts, ${phase.redis.scriptMicrosPerAckedMessage} µs in scripts`]),
    `  CPU: ${cpu}; generator ${Math.round(phase.generatorCpuPercent)}%, kernel threads ${Math.round(phase.kernelThreadsCpuPercent)}%, interrupts ${Math.round(phase.interruptCpuPercent)}%, others ${Math.round(phase.otherCpuPercent)}%`,
  ];
}

export function describeScaledCell(report: ScaledCellReport): string {
  const trials = report.failoverTrials.map((trial) => `${Math.round(trial.failoverMs)}`).join(', ');
  return [
    `scaled-cell on ${report.cores} cores (load average ${report.loadAverage.atStart.join(' ')} at the start), ${report.parameters.customers} customers, ${report.parameters.merchants} merchants x ${report.parameters.agentsPerMerchant} agents`,
    `fdatasync of a small append on this disk: p50 ${report.fsyncMs.p50 ?? '-'} ms, p99 ${report.fsyncMs.p99 ?? '-'} ms`,
    ...describePhase('level, one process', report.phases.level),
    ...describePhase('redis, one process', report.phases.redisOneProcess),
    ...describePhase('redis, two processes', report.phases.redisTwoProcesses),
    `failover: median ${report.failoverMs ?? '-'} ms, max ${report.failoverMaxMs ?? '-'} ms (trials: ${trials || '-'}; lease ${report.parameters.leaseTtlMs} ms, rounds ${report.parameters.renewIntervalMs} ms)`,
    ...report.errors.map((error) => `error: ${error}`),
  ].join('\n');
}
