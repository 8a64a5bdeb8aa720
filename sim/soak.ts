// `npm run sim:soak -- --seeds 1000 [--scenario sim/scenarios/chaos.yaml] [--from 1] [--jobs 2]`:
// runs one scenario for many seeds in worker processes and reports every failing seed with the
// command that replays it. Exit code 1 when any seed failed.
import '../platform/promise-with-resolvers.js';
import { fork } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { loadScenario } from './scenario.js';
import { runSimulation } from './simulator.js';

interface SeedResult {
  readonly seed: number;
  readonly violations: number;
  readonly byKind: Record<string, number>;
  readonly firstViolation: string | undefined;
  readonly messagesAcked: number;
  /** Requests the run's disk faults failed, answered STORE_UNAVAILABLE. */
  readonly storeUnavailable: number;
  readonly wallSeconds: number;
  /** Set when the simulation threw (a crash of the simulator or of the code under test). */
  readonly crash?: string;
}

type WorkerRequest = { readonly scenario: string; readonly seed: number } | { readonly done: true };

async function worker(): Promise<void> {
  process.on('message', (request: WorkerRequest) => {
    if ('done' in request) process.exit(0);
    const { scenario: file, seed } = request;
    runSimulation({ scenario: loadScenario(file), seed, scenarioFile: file }).then(
      (report) => {
        const result: SeedResult = {
          seed,
          violations: report.violations,
          byKind: report.violationsByKind,
          firstViolation: report.violationExamples[0]?.message,
          messagesAcked: report.messagesAcked,
          storeUnavailable: report.errorAnswers['STORE_UNAVAILABLE'] ?? 0,
          wallSeconds: report.wallSeconds,
        };
        process.send?.(result);
      },
      (error: unknown) => {
        const result: SeedResult = { seed, violations: 1, byKind: { crash: 1 }, firstViolation: undefined, messagesAcked: 0, storeUnavailable: 0, wallSeconds: 0, crash: error instanceof Error ? (error.stack ?? error.message) : String(error) };
        process.send?.(result);
      },
    );
  });
  process.send?.({ ready: true });
}

async function main(): Promise<void> {
  const program = new Command()
    .name('sim:soak')
    .option('--seeds <n>', 'how many seeds', '100')
    .option('--from <seed>', 'the first seed', '1')
    .option('--scenario <file>', 'the scenario', 'sim/scenarios/chaos.yaml')
    .option('--jobs <n>', 'worker processes', String(Math.max(1, Math.min(4, availableParallelism()))))
    .parse(process.argv);
  const options = program.opts<{ seeds: string; from: string; scenario: string; jobs: string }>();
  const count = Number(options.seeds);
  const from = Number(options.from);
  const jobs = Number(options.jobs);
  if (![count, from, jobs].every((value) => Number.isInteger(value) && value >= 0) || jobs < 1) {
    process.stderr.write('sim:soak: --seeds, --from and --jobs take non-negative integers (jobs at least 1)\n');
    process.exit(2);
  }
  loadScenario(options.scenario);
  const seeds = Array.from({ length: count }, (_, index) => from + index);
  const failures: SeedResult[] = [];
  let finished = 0;
  let acked = 0;
  let storeUnavailable = 0;
  const startedMs = performance.now(); // real-clock-ok: reports the soak's duration
  const script = fileURLToPath(import.meta.url);
  await Promise.all(
    Array.from({ length: Math.min(jobs, seeds.length) }, () => {
      return new Promise<void>((resolve) => {
        const child = fork(script, [], { execArgv: ['--max-semi-space-size=64', '--import', 'tsx'], env: { ...process.env, CELLMESH_SOAK_WORKER: '1' } });
        const next = (): void => {
          const seed = seeds.shift();
          if (seed === undefined) child.send({ done: true } satisfies WorkerRequest);
          else child.send({ scenario: options.scenario, seed } satisfies WorkerRequest);
        };
        child.on('message', (message: SeedResult | { ready: true }) => {
          if ('ready' in message) {
            next();
            return;
          }
          finished++;
          acked += message.messagesAcked;
          storeUnavailable += message.storeUnavailable;
          if (message.violations > 0) {
            failures.push(message);
            process.stdout.write(`FAIL seed ${message.seed}: ${message.crash === undefined ? `${message.violations} violations ${JSON.stringify(message.byKind)}: ${message.firstViolation ?? ''}` : `the simulation crashed: ${message.crash}`}\n`);
            process.stdout.write(`  replay: npx cellmesh sim --scenario ${options.scenario} --seed ${message.seed}\n`);
          }
          if (finished % 10 === 0 || finished === count) process.stderr.write(`sim:soak ${finished}/${count} seeds, ${failures.length} failed\n`);
          next();
        });
        child.on('exit', () => resolve());
      });
    }),
  );
  const seconds = (performance.now() - startedMs) / 1000; // real-clock-ok
  process.stdout.write(`${count} seeds of ${options.scenario} (from ${from}) in ${seconds.toFixed(0)} s: ${count - failures.length} passed, ${failures.length} failed; ${acked} acknowledged messages checked; ${storeUnavailable} requests answered STORE_UNAVAILABLE under disk faults\n`);
  for (const failure of failures.sort((a, b) => a.seed - b.seed)) process.stdout.write(`  seed ${failure.seed}: npx cellmesh sim --scenario ${options.scenario} --seed ${failure.seed}\n`);
  process.exitCode = failures.length > 0 ? 1 : 0;
}

if (process.env['CELLMESH_SOAK_WORKER'] === '1') await worker();
else await main();
