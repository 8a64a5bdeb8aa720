/**
 * The in-cell benchmark's results: their shapes, the one JSON object printed with `--json`, and
 * the human-readable report.
 */
import { cpus, totalmem } from 'node:os';
import type { RunResultReply, TargetKind } from './load-protocol.js';

/** A phase as the load workers counted it (summed over workers), plus latency and CPU. */
export interface PhaseSummary
  extends Pick<
    RunResultReply,
    | 'mode'
    | 'sentInWindow'
    | 'ackedInWindow'
    | 'totalSent'
    | 'totalAcked'
    | 'unackedAfterDrain'
    | 'skipped'
    | 'errors'
    | 'delivered'
    | 'deliveryAcksSent'
    | 'ackFramesSent'
    | 'socketsClosedUnexpectedly'
  > {
  /** Paced phases: the rate asked for (all workers together); null in closed loop. */
  targetRatePerSecond: number | null;
  /** Acks received per second during the measurement window. */
  msgsPerSec: number;
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
  p999Ms: number | null;
  maxMs: number | null;
  meanMs: number | null;
  windowSeconds: number;
  /** What full fan-out would have delivered (pushes received are in `delivered`). */
  expectedDeliveries: number | null;
  /** CPU of the server process during the window, percent of one core (threads add up). */
  serverCpuPercent: number;
  /** The kernel's share of it (syscalls: socket writes, fsync), percent of one core. */
  serverSystemCpuPercent: number;
  /**
   * The same two figures per observed process, by label, when a phase watches several (the
   * processes of a scaled cell and its redis-server); their sums are the two above.
   */
  cpuByProcess: Record<string, { cpuPercent: number; systemCpuPercent: number }>;
  /** CPU of the benchmark process (load workers and main thread), percent of one core. */
  generatorCpuPercent: number;
  /**
   * CPU used by processes other than the server and the benchmark, percent of one core: well
   * above a few percent means the machine was not quiet and the figures are understated.
   */
  otherCpuPercent: number;
  /** Interrupt and softirq time of the machine (loopback networking, mostly), percent of one core. */
  interruptCpuPercent: number;
  /** Kernel threads (block I/O, journal commits of the fsyncs, ksoftirqd), percent of one core. */
  kernelThreadsCpuPercent: number;
  /** CPU the hypervisor gave to other guests while this one wanted it, percent of one core. */
  stealCpuPercent: number;
  /** Highest event-loop utilisation among the load workers during the window (1 = saturated). */
  generatorEventLoopUtilization: number;
  /** Paced phases: the 99th percentile gap between the generator's 1 ms ticks. */
  tickLagP99Ms: number | null;
  /** The load workers' own garbage-collection pauses during the window (largest worker), ms. */
  generatorGcPauseTotalMs: number;
  generatorGcPauseMaxMs: number;
}

export interface IdleSummary {
  connections: number;
  opened: number;
  failed: number;
  firstError?: string;
  /** Connections opened (and kept) before the first reading, so one-time costs are excluded. */
  warmConnections: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  bytesPerConnection: number | null;
  openSeconds: number;
  /** From the GC hook inside the server: the V8 heap's and the external (C++) share, per connection. */
  heapUsedBytesPerConnection: number | null;
  externalBytesPerConnection: number | null;
  /** V8's young generation before and after: its growth is a one-time cost, not per connection. */
  newSpaceBytesBefore: number | null;
  newSpaceBytesAfter: number | null;
}

export interface TargetResult {
  target: TargetKind;
  label: string;
  ok: boolean;
  error?: string;
  /** What a durable ack means on this target. */
  durability: string;
  idle?: IdleSummary;
  peak?: PhaseSummary;
  halfLoad?: PhaseSummary;
  /** Baselines only: paced at the rate of the cell's half-load phase (like-for-like latency). */
  atCellHalfLoad?: PhaseSummary;
  serverRssAfterLoadBytes?: number;
}

export interface InCellParameters {
  customers: number;
  merchants: number;
  agentsPerMerchant: number;
  outstandingPerCustomer: number;
  maxPacedOutstandingPerCustomer: number;
  workers: number;
  /** Rate of the paced phase when fixed by --paced-rate; null means half of each target's peak. */
  pacedRatePerSecond: number | null;
  bodyBytes: number;
  warmupSeconds: number;
  durationSeconds: number;
  idleConnections: number;
  storeSync: boolean;
  /** Servers pinned to CPU 0 and the load generator to CPU 1 (taskset). */
  pin: boolean;
  seed: number;
  targets: TargetKind[];
  idleTargets: TargetKind[];
}

/** Above this share of a core used by other processes, a window is flagged as disturbed. */
export const QUIET_OTHER_CPU_PERCENT = 10;

const GOALS = {
  vsSocketioMin: 2,
  vsUwsEchoMin: 0.4,
  p99MsAtHalfLoadMax: 5,
  idleConnBytesMax: 8 * 1024,
};

function ratio(numerator: number | null | undefined, denominator: number | null | undefined): number | null {
  if (numerator === null || numerator === undefined || !denominator) return null;
  return numerator / denominator;
}

function round(value: number | null | undefined, digits = 3): number | null {
  if (value === null || value === undefined || !Number.isFinite(value)) return null;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

function resultOf(results: readonly TargetResult[], target: TargetKind): TargetResult | undefined {
  return results.find((result) => result.target === target);
}

/** Windows during which other processes took a noticeable share of the machine. */
export function disturbedWindowsOf(results: readonly TargetResult[]): string[] {
  const disturbed: string[] = [];
  for (const result of results) {
    for (const [name, phase] of [
      ['peak', result.peak],
      ['half load', result.halfLoad],
      ['at the cell\'s half load', result.atCellHalfLoad],
    ] as const) {
      if (phase !== undefined && phase.otherCpuPercent > QUIET_OTHER_CPU_PERCENT) {
        disturbed.push(`${result.target} ${name}: other processes used ${Math.round(phase.otherCpuPercent)}% of a core`);
      }
    }
  }
  return disturbed;
}

/** The one JSON object of `--json`: headline figures first, then everything measured. */
export function buildJsonReport(
  parameters: InCellParameters,
  results: readonly TargetResult[],
  startedAt: Date,
  elapsedSeconds: number,
): Record<string, unknown> {
  const cell = resultOf(results, 'cell');
  const socketio = resultOf(results, 'socketio');
  const echo = resultOf(results, 'uws-echo');
  const msgsPerSec = cell?.peak?.msgsPerSec ?? null;
  const socketioMsgsPerSec = socketio?.peak?.msgsPerSec ?? null;
  const uwsEchoMsgsPerSec = echo?.peak?.msgsPerSec ?? null;
  const vsSocketio = ratio(msgsPerSec, socketioMsgsPerSec);
  const vsUwsEcho = ratio(msgsPerSec, uwsEchoMsgsPerSec);
  const p99MsAtHalfLoad = cell?.halfLoad?.p99Ms ?? null;
  const idleConnBytes = cell?.idle?.bytesPerConnection ?? null;
  const goal = (value: number | null, met: (value: number) => boolean): boolean | null =>
    value === null ? null : met(value);
  return {
    benchmark: 'in-cell',
    msgsPerSec: round(msgsPerSec, 1),
    p50Ms: round(cell?.peak?.p50Ms),
    p99Ms: round(cell?.peak?.p99Ms),
    p99MsAtHalfLoad: round(p99MsAtHalfLoad),
    p50MsAtHalfLoad: round(cell?.halfLoad?.p50Ms),
    halfLoadRatePerSec: round(cell?.halfLoad?.targetRatePerSecond, 1),
    socketioMsgsPerSec: round(socketioMsgsPerSec, 1),
    socketioP99Ms: round(socketio?.peak?.p99Ms),
    socketioP99MsAtHalfLoad: round(socketio?.halfLoad?.p99Ms),
    socketioP99MsAtCellHalfLoad: round(socketio?.atCellHalfLoad?.p99Ms),
    uwsEchoMsgsPerSec: round(uwsEchoMsgsPerSec, 1),
    uwsEchoP99Ms: round(echo?.peak?.p99Ms),
    uwsEchoP99MsAtHalfLoad: round(echo?.halfLoad?.p99Ms),
    uwsEchoP99MsAtCellHalfLoad: round(echo?.atCellHalfLoad?.p99Ms),
    vsSocketio: round(vsSocketio),
    vsUwsEcho: round(vsUwsEcho),
    idleConnBytes: round(idleConnBytes, 0),
    socketioIdleConnBytes: round(socketio?.idle?.bytesPerConnection, 0),
    uwsEchoIdleConnBytes: round(echo?.idle?.bytesPerConnection, 0),
    goals: {
      vsSocketio: { min: GOALS.vsSocketioMin, met: goal(vsSocketio, (value) => value >= GOALS.vsSocketioMin) },
      vsUwsEcho: { min: GOALS.vsUwsEchoMin, met: goal(vsUwsEcho, (value) => value >= GOALS.vsUwsEchoMin) },
      p99MsAtHalfLoad: {
        max: GOALS.p99MsAtHalfLoadMax,
        met: goal(p99MsAtHalfLoad, (value) => value < GOALS.p99MsAtHalfLoadMax),
      },
      idleConnBytes: { max: GOALS.idleConnBytesMax, met: goal(idleConnBytes, (value) => value < GOALS.idleConnBytesMax) },
    },
    cellError: cell === undefined ? 'not run (--targets)' : (cell.error ?? null),
    disturbedWindows: disturbedWindowsOf(results),
    parameters,
    durability: Object.fromEntries(results.map((result) => [result.target, result.durability])),
    targets: Object.fromEntries(results.map((result) => [result.target, result])),
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

function formatNumber(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function formatMs(value: number | null | undefined): string {
  return value === null || value === undefined ? '-' : `${value.toFixed(2)} ms`;
}

function formatBytes(value: number | null | undefined): string {
  if (value === null || value === undefined) return '-';
  return value >= 1024 ? `${(value / 1024).toFixed(2)} KiB` : `${value.toFixed(0)} B`;
}

function verdict(met: boolean | null): string {
  return met === null ? 'n/a ' : met ? 'MET ' : 'MISS';
}

function phaseLines(name: string, phase: PhaseSummary | undefined): string[] {
  if (phase === undefined) return [];
  const rate =
    phase.targetRatePerSecond === null
      ? ''
      : ` (asked ${formatNumber(phase.targetRatePerSecond)}/s, skipped ${formatNumber(phase.skipped)})`;
  const errors = Object.entries(phase.errors)
    .map(([code, count]) => `${code}=${count}`)
    .join(' ');
  const delivery =
    phase.expectedDeliveries === null
      ? ''
      : `, delivered ${formatNumber(phase.delivered)}/${formatNumber(phase.expectedDeliveries)} to agents`;
  return [
    `  ${name}: ${formatNumber(phase.msgsPerSec)} msgs/s${rate}`,
    `    latency p50 ${formatMs(phase.p50Ms)}  p90 ${formatMs(phase.p90Ms)}  p99 ${formatMs(phase.p99Ms)}  p99.9 ${formatMs(phase.p999Ms)}  max ${formatMs(phase.maxMs)}`,
    `    cpu: server ${formatNumber(phase.serverCpuPercent)}% (${formatNumber(phase.serverSystemCpuPercent)}% in the kernel), generator ${formatNumber(phase.generatorCpuPercent)}% (worker loop ${formatNumber(phase.generatorEventLoopUtilization * 100)}% busy), kernel ${formatNumber(phase.interruptCpuPercent + phase.kernelThreadsCpuPercent)}%, other processes ${formatNumber(phase.otherCpuPercent)}%${delivery}`,
    ...(phase.otherCpuPercent > QUIET_OTHER_CPU_PERCENT
      ? [`    WARNING: other processes used ${formatNumber(phase.otherCpuPercent)}% of a core during this window: the machine was not quiet`]
      : []),
    ...(errors === '' && phase.unackedAfterDrain === 0 && phase.socketsClosedUnexpectedly === 0
      ? []
      : [
          `    errors: ${errors || 'none'}; unacked after drain ${phase.unackedAfterDrain}; sockets closed ${phase.socketsClosedUnexpectedly}`,
        ]),
  ];
}

export function formatHumanReport(
  parameters: InCellParameters,
  results: readonly TargetResult[],
  json: Record<string, unknown>,
): string {
  const lines: string[] = [];
  lines.push('cellmesh in-cell benchmark');
  lines.push(
    `  ${parameters.customers} customers chatting with ${parameters.merchants} merchants x ${parameters.agentsPerMerchant} agents, ` +
      `${parameters.outstandingPerCustomer} send(s) in flight per customer at peak, ${parameters.bodyBytes}-char bodies, ` +
      `${parameters.workers} load worker(s), ${parameters.durationSeconds} s windows after ${parameters.warmupSeconds} s warm-up, ` +
      `store sync ${parameters.storeSync ? 'on' : 'off'}`,
  );
  lines.push('');
  for (const result of results) {
    lines.push(`${result.label} [${result.target}]`);
    lines.push(`  durable ack: ${result.durability}`);
    if (result.idle !== undefined) {
      const idle = result.idle;
      lines.push(
        `  idle: ${formatBytes(idle.bytesPerConnection)} per connection over ${formatNumber(idle.opened)} connections ` +
          `(RSS ${formatNumber(idle.rssBeforeBytes / 1048576, 1)} -> ${formatNumber(idle.rssAfterBytes / 1048576, 1)} MiB, opened in ${idle.openSeconds.toFixed(1)} s` +
          `${idle.failed > 0 ? `, ${idle.failed} failed: ${idle.firstError ?? ''}` : ''})`,
      );
    }
    lines.push(...phaseLines('peak (closed loop)', result.peak));
    lines.push(...phaseLines('half of peak (paced, open loop)', result.halfLoad));
    lines.push(...phaseLines('at the cell\'s half-load rate (paced, open loop)', result.atCellHalfLoad));
    if (result.error !== undefined) lines.push(`  FAILED: ${result.error}`);
    lines.push('');
  }
  const goals = json['goals'] as Record<string, { met: boolean | null }>;
  lines.push('goals');
  lines.push(
    `  ${verdict(goals['vsSocketio']!.met)} throughput >= 2x Socket.IO relay: ${formatNumber(json['vsSocketio'] as number | null, 2)}x`,
  );
  lines.push(
    `  ${verdict(goals['vsUwsEcho']!.met)} throughput >= 40% of raw uWS echo: ${formatNumber(((json['vsUwsEcho'] as number | null) ?? NaN) * 100, 1)}%`,
  );
  lines.push(
    `  ${verdict(goals['p99MsAtHalfLoad']!.met)} p99 < 5 ms at half of peak: ${formatMs(json['p99MsAtHalfLoad'] as number | null)}` +
      ` (same rate: Socket.IO relay ${formatMs(json['socketioP99MsAtCellHalfLoad'] as number | null)},` +
      ` uWS echo ${formatMs(json['uwsEchoP99MsAtCellHalfLoad'] as number | null)}, the floor of this machine and generator)`,
  );
  lines.push(
    `  ${verdict(goals['idleConnBytes']!.met)} < 8 KiB per idle connection: ${formatBytes(json['idleConnBytes'] as number | null)}`,
  );
  const disturbed = json['disturbedWindows'] as string[];
  if (disturbed.length > 0) {
    lines.push(`  WARNING: the machine was not quiet; throughput and latency are understated in: ${disturbed.join('; ')}`);
  }
  if (parameters.idleConnections < 5000) {
    lines.push(`  note: idle memory measured over ${parameters.idleConnections} connections (< 5,000: not a valid figure)`);
  }
  return lines.join('\n');
}
