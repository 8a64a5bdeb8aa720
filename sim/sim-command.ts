import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import cliProgress from 'cli-progress';
import { SimExitCode } from './add-sim-command.js';
import { reportHtml, reportJson, summaryText } from './report.js';
import { Duration, loadScenario, ScenarioError } from './scenario.js';
import type { SimReport } from './sim-report.js';
import { runSimulation, type SimProgress } from './simulator.js';

export interface SimCommandOptions {
  scenario: string;
  seed?: string | number;
  /** Print the JSON report on stdout instead of the summary. */
  json?: boolean;
  /** Write `<scenario>-<seed>.json` and `.html` there. */
  reportDir?: string;
  /** Override the scenario's duration (a duration string such as 90s or 5m). */
  duration?: string;
  /** Draw the progress bar (default: when stderr is a terminal). */
  progress?: boolean;
}

export interface SimCommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly stderrIsTty: boolean;
}

const processIo: SimCommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  stderrIsTty: process.stderr.isTTY === true,
};

/**
 * `cellmesh sim --scenario <file> --seed <n> [--json] [--report-dir <dir>] [--duration <d>]`:
 * runs one simulation, prints a summary (or the JSON report), writes the reports, and says how
 * to replay a failing run. Resolves with the exit code (also set on process.exitCode).
 */
export async function runSimCommand(options: SimCommandOptions, io: SimCommandIo = processIo): Promise<number> {
  const code = await runSimCommandInner(options, io);
  process.exitCode = code;
  return code;
}

async function runSimCommandInner(options: SimCommandOptions, io: SimCommandIo): Promise<number> {
  let seed: number;
  let durationMs: number | undefined;
  let scenario;
  try {
    seed = parseSeed(options.seed);
    if (options.duration !== undefined) {
      const parsed = Duration.safeParse(/^\d+(\.\d+)?$/.test(options.duration) ? Number(options.duration) : options.duration);
      if (!parsed.success) throw new ScenarioError(`--duration: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
      durationMs = parsed.data;
    }
    scenario = loadScenario(options.scenario);
  } catch (error) {
    io.stderr(`cellmesh sim: ${error instanceof Error ? error.message : String(error)}\n`);
    return SimExitCode.Usage;
  }
  const replay = `npx cellmesh sim --scenario ${options.scenario} --seed ${seed}${options.duration === undefined ? '' : ` --duration ${options.duration}`}`;
  const showProgress = options.progress ?? io.stderrIsTty;
  const bar = showProgress && io.stderrIsTty
    ? new cliProgress.SingleBar(
        {
          format: 'sim {bar} {percentage}% | {phase} | virtual {virtualS}/{plannedS} s | sent {sent} | violations {violations} | cells {cells}',
          hideCursor: true,
          stream: process.stderr,
          barsize: 24,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  bar?.start(100, 0, { phase: 'warmup', virtualS: 0, plannedS: 0, sent: 0, violations: 0, cells: 0 });
  // Without a terminal, --progress prints a line every 15 s of wall time instead of the bar.
  let lastLineMs = 0;
  const onProgress = (progress: SimProgress): void => {
    if (showProgress && bar === undefined) {
      const nowMs = performance.now(); // real-clock-ok: paces the progress output only
      if (nowMs - lastLineMs >= 15_000) {
        lastLineMs = nowMs;
        io.stderr(`sim ${progress.phase} virtual ${Math.round(progress.virtualMs / 1000)}/${Math.round(progress.plannedMs / 1000)} s, sent ${progress.messagesSent}, violations ${progress.violations}, cells ${progress.cellsUp}\n`);
      }
    }
    bar?.update(Math.min(100, Math.floor((100 * progress.virtualMs) / Math.max(1, progress.plannedMs))), {
      phase: progress.phase,
      virtualS: Math.round(progress.virtualMs / 1000),
      plannedS: Math.round(progress.plannedMs / 1000),
      sent: progress.messagesSent,
      violations: progress.violations,
      cells: progress.cellsUp,
    });
  };
  let report: SimReport;
  try {
    report = await runSimulation({ scenario, seed, scenarioFile: options.scenario, ...(durationMs === undefined ? {} : { durationMs }), onProgress });
  } catch (error) {
    bar?.stop();
    io.stderr(`cellmesh sim: the simulation failed (seed ${seed}): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    io.stderr(`replay: ${replay}\n`);
    return SimExitCode.Crashed;
  }
  bar?.update(100, { phase: 'done' });
  bar?.stop();
  if (options.reportDir !== undefined) {
    mkdirSync(options.reportDir, { recursive: true });
    const stem = join(options.reportDir, `${basename(options.scenario).replace(/\.(ya?ml|json)$/i, '')}-${seed}`);
    writeFileSync(`${stem}.json`, reportJson(report));
    writeFileSync(`${stem}.html`, reportHtml(report));
    io.stderr(`reports: ${stem}.json, ${stem}.html\n`);
  }
  if (options.json === true) io.stdout(reportJson(report));
  else io.stdout(`${summaryText(report)}\n`);
  if (report.violations > 0) {
    io.stderr(`FAILED: ${report.violations} invariant violations with seed ${seed}\nreplay: ${replay}\n`);
    return SimExitCode.Violations;
  }
  return SimExitCode.Ok;
}

/** A seed: a non-negative integer below 2^32; none draws one (printed in the report and on failure). */
export function parseSeed(value: string | number | undefined): number {
  if (value === undefined) return Math.floor(Math.random() * 2 ** 31); // real-randomness-ok: picks a seed, which is printed
  const seed = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new ScenarioError(`--seed must be an integer from 0 to ${2 ** 32 - 1}, got ${String(value)}`);
  return seed;
}
