/**
 * The human-readable report of the mesh benchmark, from the same object `--json` prints.
 */
import type { FormationResult, IdleResult } from './mesh-formation.js';
import type { SampleSummary } from './mesh-stats.js';
import type { ConvergeResult, DeliveryResult, FailureResult, JoinResult, LocateResult, PathResult, StallResult } from './mesh.js';

function ms(value: number | null | undefined): string {
  return value === null || value === undefined ? '-' : `${value.toLocaleString('en-US', { maximumFractionDigits: 1 })} ms`;
}

function text(value: unknown): string {
  return value === null || value === undefined ? '-' : String(value);
}

function verdict(met: boolean | null | undefined): string {
  return met === null || met === undefined ? 'n/a ' : met ? 'MET ' : 'MISS';
}

function spread(summary: SampleSummary): string {
  return `p50 ${ms(summary.p50)}, p99 ${ms(summary.p99)}, max ${ms(summary.max)} (n=${summary.count})`;
}

function pathLine(name: string, path: PathResult): string[] {
  const errors = Object.entries(path.errors)
    .map(([code, count]) => `${code}=${count}`)
    .join(' ');
  return [
    `  ${name}: send -> agent ${spread(path.deliveryMs)}; ${path.delivered}/${path.sent} delivered${path.lost > 0 ? `, ${path.lost} LOST` : ''}${errors === '' ? '' : `, errors ${errors}`}`,
    `    send -> sent ${spread(path.sentAckMs)}${path.queuedAckMs === undefined ? '' : `; send -> queued ${spread(path.queuedAckMs)}`}`,
  ];
}

export function formatMeshReport(json: Record<string, unknown>): string {
  const lines: string[] = [];
  const goals = json['goals'] as Record<string, { met: boolean | null; ratio?: number | null; baselinePercent?: number | null }>;
  const machine = json['machine'] as { cpus: number; cpuModel: string | null; memoryBytes: number; node: string };
  const timings = json['timings'] as Record<string, unknown>;
  lines.push('cellmesh mesh benchmark');
  lines.push(
    `  ${String(json['cells'])} cell processes on 127.0.0.1 (LevelDB, fsync on), LAN membership timings` +
      `${Object.keys(timings['overrides'] as object).length > 0 ? ` with ${JSON.stringify(timings['overrides'])}` : ''}; ` +
      `machine: ${machine.cpus} x ${machine.cpuModel ?? '?'}, ${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB, Node ${machine.node}`,
  );
  const formation = json['formation'] as FormationResult | null;
  if (formation !== null) {
    lines.push(
      `  cluster formed (every cell sees every other alive) ${ms(formation.formMs)} after the last cell listened, ` +
        `${ms(formation.formFromFirstSpawnMs)} after the first spawn; ${formation.startConcurrency} cells started at a time, ` +
        `spawn -> listening p50 ${ms(formation.processStartMs.p50)} (max ${ms(formation.processStartMs.max)}), ` +
        `${text(formation.processStartCpuSeconds.p50)} s of CPU each`,
    );
  }
  const idle = json['idle'] as IdleResult | null;
  if (idle !== null) {
    lines.push(
      `  idle cells (no traffic, nobody polling, ${ms(idle.windowMs)} measured ${ms(idle.settleMs)} after forming): ` +
        `p50 ${text(idle.cpuPercent.p50)}%, mean ${text(idle.cpuPercent.mean)}%, max ${text(idle.cpuPercent.max)}% of a core ` +
        `(others used ${idle.otherCpuPercent}%)`,
    );
    lines.push(`    ${Object.entries(idle.perCellCpuPercent).map(([id, percent]) => `${id} ${text(percent)}`).join(', ')}`);
    lines.push(
      `    bytes per cell per second: read p50 ${text(idle.ioBytesPerSecond.read.p50)} (max ${text(idle.ioBytesPerSecond.read.max)}), ` +
        `written p50 ${text(idle.ioBytesPerSecond.written.p50)} (max ${text(idle.ioBytesPerSecond.written.max)})`,
    );
    const rates = idle.perCellPerSecond;
    lines.push(
      `    per cell per second: ${text(rates.probes)} probes, ${text(rates.antiEntropyRounds)} anti-entropy rounds, ` +
        `${text(rates.recordsReceived)} records received`,
    );
  }
  lines.push('');

  const converge = json['converge'] as ConvergeResult | null;
  if (converge !== null) {
    lines.push('convergence of a record change (POST /v1/admin/capacity, then every other cell polled)');
    lines.push(`  slowest cell per trial: ${spread(converge.trialMaxMs)}${converge.timedOut > 0 ? `; ${converge.timedOut} TIMED OUT` : ''}`);
    lines.push(`  every cell and trial:   ${spread(converge.perCellMs)}; the POST itself: ${spread(converge.postMs)}`);
  }
  const locate = json['locate'] as LocateResult | null;
  if (locate !== null) {
    lines.push(`location (${locate.users} users, ${locate.devices} devices on ${locate.holdingCells.join(', ')})`);
    lines.push(
      `  one query per user from ${locate.sequential.queryingCell}: ${locate.sequential.msgsPerQuery ?? '-'} network messages per query ` +
        `(1 publish + 1 reply per holding cell would be ${locate.sequential.expectedMsgsPerQuery}); ` +
        `${locate.sequential.usersLocatedCorrectly}/${locate.users} located correctly; latency ${spread(locate.sequential.latencyMs)}`,
    );
    for (const wrong of locate.sequential.wrong.slice(0, 5)) {
      lines.push(`    ${wrong.user}: expected [${wrong.expected.join(', ')}], got [${wrong.got.join(', ')}]`);
    }
    lines.push(
      `  all at once from ${locate.batched.queryingCell}: ${locate.batched.queries} quer${locate.batched.queries === 1 ? 'y' : 'ies'}, ` +
        `${locate.batched.messages} messages for ${locate.batched.users} users (${locate.batched.msgsPerUser ?? '-'} per user), ` +
        `${locate.batched.usersLocatedCorrectly}/${locate.batched.users} correct`,
    );
  }
  const delivery = json['delivery'] as DeliveryResult | null;
  if (delivery !== null) {
    lines.push(
      `delivery to the agent of ${delivery.merchant} (home ${delivery.homeCell}), ${delivery.ratePerPathPerSecond}/s per path, ` +
        `after ${delivery.warmupPerPath} warm-up messages per path`,
    );
    lines.push(...pathLine(`in-cell (customer on ${delivery.homeCell})`, delivery.inCell));
    if (delivery.crossCell !== null) lines.push(...pathLine(`cross-cell (customer on ${delivery.accessCell})`, delivery.crossCell));
    else lines.push(`  cross-cell: not measured: ${delivery.crossCellUnavailable ?? ''}`);
    for (const cell of delivery.cells) {
      lines.push(
        `  ${cell.cellId}: CPU ${text(cell.cpuPercent)}%, event-loop delay max ${ms(cell.eventLoopLagMaxMs)} (p99 ${ms(cell.eventLoopLagP99Ms)}), ` +
          `${cell.gcCount} GCs (${ms(cell.gcTotalMs)}, ${cell.gcOver10ms} over 10 ms)`,
      );
    }
    lines.push(`  this benchmark's own event-loop delay: max ${ms(delivery.benchEventLoopLagMaxMs)}, p99 ${ms(delivery.benchEventLoopLagP99Ms)}`);
  }
  const join = json['join'] as JoinResult | null;
  if (join !== null) {
    lines.push(`join of ${join.cellId} (new merchant ${join.merchant}, ${join.bootstrap} bootstrap address(es))`);
    lines.push(
      `  routable from every other cell ${ms(join.joinToRoutableMs)} after spawn; ${ms(join.fromListeningMs)} after its listening line ` +
        `(process start-up ${ms(join.processStartMs)}); graceful leave seen by all in ${ms(join.leaveMs)}`,
    );
  }
  const stall = json['stall'] as StallResult | null;
  if (stall !== null) {
    lines.push(`stalls of ${stall.cellId}: ${stall.stalls} x SIGSTOP ${ms(stall.stallMs)} then SIGCONT, ${ms(stall.spacingMs)} apart, watched ${ms(stall.watchMs)} more`);
    lines.push(
      `  dead declarations: ${stall.falsePositives} (by others ${stall.deadDeclarationsByOthers}, by the stalled cell ${stall.deadDeclarationsByStalledCell}); ` +
        `suspicions ${stall.suspicionsByOthers} (views showing suspect: ${stall.viewsShowingSuspect.join(', ') || 'none'}), refutations ${stall.refutationsByStalledCell}`,
    );
  }
  const failure = json['failure'] as FailureResult | null;
  if (failure !== null) {
    lines.push(`crash detection (SIGKILL, ${failure.trials.length} trial(s), each followed by a restart)`);
    for (const trial of failure.trials) {
      const suspects = Object.values(trial.perCellSuspectMs).filter((value): value is number => value !== null);
      lines.push(
        `  ${trial.cellId}: dead in every view after ${ms(trial.detectMs)}` +
          `${suspects.length > 0 ? ` (first seen suspect after ${ms(Math.min(...suspects))})` : ''}; restarted and alive everywhere after ${ms(trial.rejoinMs)}`,
      );
    }
  }
  lines.push('');
  lines.push('figures');
  lines.push(`  convergeMs ${ms(json['convergeMs'] as number | null)} (${String(json['convergeMsIs'])})`);
  lines.push(`  joinToRoutableMs ${ms(json['joinToRoutableMs'] as number | null)}, from listening ${ms(json['joinFromListeningMs'] as number | null)}`);
  lines.push(`  failureDetectMs ${ms(json['failureDetectMs'] as number | null)} (${text(json['failureDetectMsIs'])}); falsePositives ${text(json['falsePositives'])}`);
  lines.push(
    `  locateMsgsPerQuery ${text(json['locateMsgsPerQuery'])} (expected ${text(json['locateExpectedMsgsPerQuery'])}; ` +
      `${text(json['usersLocatedCorrectly'])}/${text(json['usersLocated'])} users located correctly)`,
  );
  lines.push(`  inCellP99Ms ${ms(json['inCellP99Ms'] as number | null)}, crossCellP99Ms ${ms(json['crossCellP99Ms'] as number | null)}`);
  lines.push('');
  lines.push('goals');
  lines.push(`  ${verdict(goals['convergeMs']?.met)} convergence under 1 s for ${String(json['cells'])} cells: ${ms(json['convergeMs'] as number | null)}`);
  lines.push(
    `  ${verdict(goals['crossCellP99Ms']?.met)} cross-cell p99 within 3x of in-cell p99: ` +
      (json['crossCellP99Ms'] === null
        ? `not measured (${String(json['crossCellUnavailable'])})`
        : `${ms(json['crossCellP99Ms'] as number)} vs ${ms(json['inCellP99Ms'] as number | null)} (${String(goals['crossCellP99Ms']?.ratio)}x)`),
  );
  lines.push(`  ${verdict(goals['failureDetectMs']?.met)} failure detected within 3 s: ${ms(json['failureDetectMs'] as number | null)}`);
  lines.push(`  ${verdict(goals['falsePositives']?.met)} no false positive with a 1 s stall: ${text(json['falsePositives'])}`);
  lines.push(
    `  ${verdict(goals['idleCellCpuPercent']?.met)} every idle cell at most 2% of a core: max ${text(json['idleCellCpuMaxPercent'])}%, ` +
      `p50 ${text(json['idleCellCpuP50Percent'])}% at ${String(json['cells'])} cells`,
  );
  const baseline = goals['idleVsBaseline'];
  lines.push(
    `  ${verdict(baseline?.met)} idle p50 at most 1.2x that of 5 cells: ` +
      (baseline?.baselinePercent === null || baseline?.baselinePercent === undefined
        ? `not judged (give --idle-baseline-percent <p50 of a 5-cell run>; this run's p50 is ${text(json['idleCellCpuP50Percent'])}%)`
        : `${text(json['idleCellCpuP50Percent'])}% vs ${text(baseline.baselinePercent)}% (${text(baseline.ratio)}x)`),
  );
  lines.push(`  ${verdict(goals['formMs']?.met)} cluster formed within 10 s of the last cell listening: ${ms(json['formMs'] as number | null)}`);
  const errors = json['errors'] as Record<string, string>;
  for (const [phase, message] of Object.entries(errors)) lines.push(`  FAILED ${phase}: ${message}`);
  const disturbed = json['disturbedPhases'] as string[];
  if (disturbed.length > 0) lines.push(`  WARNING: the machine was not quiet: ${disturbed.join('; ')}`);
  return lines.join('\n');
}
