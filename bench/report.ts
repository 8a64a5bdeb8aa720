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
  /** Closed loop over `window1Customers` conversations, one send in flight each: latency at low concurrency. */
  window1?: PhaseSummary;
  serverRssAfterLoadBytes?: number;
}

export interface InCellParameters {
  customers: number;
  merchants: number;
  agentsPerMerchant: number;
  outstandingPerCustomer: number;
  /** Conversations of the window-1 phase (the first customers of the run); 0 skips the phase. */
  window1Customers: number;
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

/** The bounds the figures are judged against (issue 21; the idle one from the first cell issue). */
export const GOALS = {
  /** Peak throughput, cell over the Socket.IO relay. */
  vsSocketioMin: 2,
  /** Peak throughput, cell over the uWS echo. */
  vsUwsEchoMin: 0.6,
  /** p99 at the cell's half-load rate, cell over the uWS echo (at most). */
  halfLoadP99VsUwsEchoMax: 5,
  /** The cell's CPU at half of its peak over its CPU at the peak (at most). */
  halfLoadCpuVsPeakMax: 0.6,
  /** Window-1 throughput, cell over the Socket.IO relay. */
  window1VsSocketioMin: 2,
  /** Window-1 p50, cell over the uWS echo (under). */
  window1P50VsUwsEchoMax: 2,
  /** RSS per idle authenticated connection (under). */
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
      ['window 1', result.window1],
    ] as const) {
      if (phase !== undefined && phase.otherCpuPercent > QUIET_OTHER_CPU_PERCENT) {
        disturbed.push(`${result.target} ${name}: other processes used ${Math.round(phase.otherCpuPercent)}% of a core`);
      }
    }
  }
  return disturbed;
}

/**
 * The headline figures, one name each: the cell's, then each baseline's beside it, then the
 * ratios the goals judge. Null when a target or phase did not run.
 */
export function headlineFigures(results: readonly TargetResult[]): Record<string, number | null> {
  const cell = resultOf(results, 'cell');
  const socketio = resultOf(results, 'socketio');
  const echo = resultOf(results, 'uws-echo');
  const msgsPerSec = cell?.peak?.msgsPerSec ?? null;
  const socketioMsgsPerSec = socketio?.peak?.msgsPerSec ?? null;
  const uwsEchoMsgsPerSec = echo?.peak?.msgsPerSec ?? null;
  const halfLoadP99Ms = cell?.halfLoad?.p99Ms ?? null;
  // The baselines at the cell's half-load rate (the same offered load, like for like).
  const socketioHalfLoadP99Ms = socketio?.atCellHalfLoad?.p99Ms ?? null;
  const uwsEchoHalfLoadP99Ms = echo?.atCellHalfLoad?.p99Ms ?? null;
  const halfLoadCpuPercent = cell?.halfLoad?.serverCpuPercent ?? null;
  const peakCpuPercent = cell?.peak?.serverCpuPercent ?? null;
  const window1MsgsPerSec = cell?.window1?.msgsPerSec ?? null;
  const window1P50Ms = cell?.window1?.p50Ms ?? null;
  const socketioWindow1MsgsPerSec = socketio?.window1?.msgsPerSec ?? null;
  const uwsEchoWindow1P50Ms = echo?.window1?.p50Ms ?? null;
  return {
    msgsPerSec: round(msgsPerSec, 1),
    p50Ms: round(cell?.peak?.p50Ms),
    p99Ms: round(cell?.peak?.p99Ms),
    peakCpuPercent: round(peakCpuPercent, 1),
    halfLoadRatePerSec: round(cell?.halfLoad?.targetRatePerSecond, 1),
    halfLoadP50Ms: round(cell?.halfLoad?.p50Ms),
    halfLoadP99Ms: round(halfLoadP99Ms),
    halfLoadCpuPercent: round(halfLoadCpuPercent, 1),
    window1MsgsPerSec: round(window1MsgsPerSec, 1),
    window1P50Ms: round(window1P50Ms),
    window1P99Ms: round(cell?.window1?.p99Ms),
    socketioMsgsPerSec: round(socketioMsgsPerSec, 1),
    socketioP99Ms: round(socketio?.peak?.p99Ms),
    socketioOwnHalfLoadP99Ms: round(socketio?.halfLoad?.p99Ms),
    socketioHalfLoadP99Ms: round(socketioHalfLoadP99Ms),
    socketioWindow1MsgsPerSec: round(socketioWindow1MsgsPerSec, 1),
    socketioWindow1P50Ms: round(socketio?.window1?.p50Ms),
    socketioWindow1P99Ms: round(socketio?.window1?.p99Ms),
    uwsEchoMsgsPerSec: round(uwsEchoMsgsPerSec, 1),
    uwsEchoP99Ms: round(echo?.peak?.p99Ms),
    uwsEchoOwnHalfLoadP99Ms: round(echo?.halfLoad?.p99Ms),
    uwsEchoHalfLoadP99Ms: round(uwsEchoHalfLoadP99Ms),
    uwsEchoWindow1MsgsPerSec: round(echo?.window1?.msgsPerSec, 1),
    uwsEchoWindow1P50Ms: round(uwsEchoWindow1P50Ms),
    uwsEchoWindow1P99Ms: round(echo?.window1?.p99Ms),
    vsSocketio: round(ratio(msgsPerSec, socketioMsgsPerSec)),
    vsUwsEcho: round(ratio(msgsPerSec, uwsEchoMsgsPerSec)),
    halfLoadP99VsUwsEcho: round(ratio(halfLoadP99Ms, uwsEchoHalfLoadP99Ms)),
    halfLoadCpuVsPeak: round(ratio(halfLoadCpuPercent, peakCpuPercent)),
    window1VsSocketio: round(ratio(window1MsgsPerSec, socketioWindow1MsgsPerSec)),
    window1P50VsUwsEcho: round(ratio(window1P50Ms, uwsEchoWindow1P50Ms)),
    idleConnBytes: round(cell?.idle?.bytesPerConnection, 0),
    socketioIdleConnBytes: round(socketio?.idle?.bytesPerConnection, 0),
    uwsEchoIdleConnBytes: round(echo?.idle?.bytesPerConnection, 0),
  };
}

export type GoalVerdict = ({ min: number } | { max: number }) & { met: boolean | null };

/** Each goal with its bound and whether the figure met it (null when the figure is missing). */
export function goalsOf(figures: Record<string, number | null>): Record<string, GoalVerdict> {
  const atLeast = (name: string, min: number): GoalVerdict => {
    const value = figures[name] ?? null;
    return { min, met: value === null ? null : value >= min };
  };
  const atMost = (name: string, max: number, strictly: boolean): GoalVerdict => {
    const value = figures[name] ?? null;
    return { max, met: value === null ? null : strictly ? value < max : value <= max };
  };
  return {
    vsSocketio: atLeast('vsSocketio', GOALS.vsSocketioMin),
    vsUwsEcho: atLeast('vsUwsEcho', GOALS.vsUwsEchoMin),
    halfLoadP99VsUwsEcho: atMost('halfLoadP99VsUwsEcho', GOALS.halfLoadP99VsUwsEchoMax, false),
    halfLoadCpuVsPeak: atMost('halfLoadCpuVsPeak', GOALS.halfLoadCpuVsPeakMax, false),
    window1VsSocketio: atLeast('window1VsSocketio', GOALS.window1VsSocketioMin),
    window1P50VsUwsEcho: atMost('window1P50VsUwsEcho', GOALS.window1P50VsUwsEchoMax, true),
    idleConnBytes: atMost('idleConnBytes', GOALS.idleConnBytesMax, true),
  };
}

/** The one JSON object of `--json`: headline figures first, then everything measured. */
export function buildJsonReport(
  parameters: InCellParameters,
  results: readonly TargetResult[],
  startedAt: Date,
  elapsedSeconds: number,
): Record<string, unknown> {
  const cell = resultOf(results, 'cell');
  const figures = headlineFigures(results);
  return {
    benchmark: 'in-cell',
    ...figures,
    goals: goalsOf(figures),
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
    lines.push(
      ...phaseLines(
        `window 1 (${parameters.window1Customers} conversations, one send in flight each, closed loop)`,
        result.window1,
      ),
    );
    if (result.error !== undefined) lines.push(`  FAILED: ${result.error}`);
    lines.push('');
  }
  const goals = json['goals'] as Record<string, GoalVerdict>;
  const figure = (name: string): number | null => (json[name] as number | null | undefined) ?? null;
  const times = (name: string): string => `${formatNumber(figure(name), 2)}x`;
  const percent = (name: string): string => `${formatNumber(figure(name), 0)}%`;
  const msgsPerSec = (name: string): string => `${formatNumber(figure(name))} msgs/s`;
  lines.push('goals');
  lines.push(
    `  ${verdict(goals['vsSocketio']!.met)} peak >= ${GOALS.vsSocketioMin}x the Socket.IO relay's: ${times('vsSocketio')}` +
      ` (${msgsPerSec('msgsPerSec')} against ${msgsPerSec('socketioMsgsPerSec')})`,
  );
  lines.push(
    `  ${verdict(goals['vsUwsEcho']!.met)} peak >= ${GOALS.vsUwsEchoMin}x the raw uWS echo's: ${times('vsUwsEcho')}` +
      ` (against ${msgsPerSec('uwsEchoMsgsPerSec')})`,
  );
  lines.push(
    `  ${verdict(goals['halfLoadP99VsUwsEcho']!.met)} p99 at half of peak <= ${GOALS.halfLoadP99VsUwsEchoMax}x the uWS echo's at the same rate: ` +
      `${times('halfLoadP99VsUwsEcho')} (${formatMs(figure('halfLoadP99Ms'))} against ${formatMs(figure('uwsEchoHalfLoadP99Ms'))}` +
      ` at ${msgsPerSec('halfLoadRatePerSec')}; Socket.IO relay ${formatMs(figure('socketioHalfLoadP99Ms'))})`,
  );
  lines.push(
    `  ${verdict(goals['halfLoadCpuVsPeak']!.met)} CPU at half of peak <= ${formatNumber(GOALS.halfLoadCpuVsPeakMax * 100)}% of CPU at peak: ` +
      `${formatNumber((figure('halfLoadCpuVsPeak') ?? NaN) * 100, 0)}% (${percent('halfLoadCpuPercent')} against ${percent('peakCpuPercent')} of a core)`,
  );
  lines.push(
    `  ${verdict(goals['window1VsSocketio']!.met)} window 1: >= ${GOALS.window1VsSocketioMin}x the Socket.IO relay's msgs/s: ` +
      `${times('window1VsSocketio')} (${msgsPerSec('window1MsgsPerSec')} against ${msgsPerSec('socketioWindow1MsgsPerSec')})`,
  );
  lines.push(
    `  ${verdict(goals['window1P50VsUwsEcho']!.met)} window 1: p50 < ${GOALS.window1P50VsUwsEchoMax}x the uWS echo's: ` +
      `${times('window1P50VsUwsEcho')} (${formatMs(figure('window1P50Ms'))} against ${formatMs(figure('uwsEchoWindow1P50Ms'))})`,
  );
  lines.push(
    `  ${verdict(goals['idleConnBytes']!.met)} < 8 KiB per idle connection: ${formatBytes(figure('idleConnBytes'))}`,
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
