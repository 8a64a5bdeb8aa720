/**
 * `npm run bench -- <benchmark> [options]`: the benchmarks of cellmesh.
 *
 *   in-cell   one cell under chat load, against a Socket.IO + LevelDB relay and a raw uWS echo
 *
 * Progress goes to stderr; the report to stdout (with `--json`, exactly one JSON object).
 */
import '../platform/promise-with-resolvers.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import type { TargetKind } from './load-protocol.js';

const ALL_TARGETS: TargetKind[] = ['cell', 'socketio', 'uws-echo'];
const REEXEC_MARKER = 'CELLMESH_BENCH_FD_RAISED';
/** Sockets of the benchmark process besides the load and idle connections (workers, pipes, HTTP). */
const FD_SLACK = 200;

function integer(minimum: number, maximum: number): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < minimum || parsed > maximum) {
      throw new InvalidArgumentError(`must be an integer from ${minimum} to ${maximum}`);
    }
    return parsed;
  };
}

function targetList(value: string): TargetKind[] {
  const targets = value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  for (const target of targets) {
    if (!ALL_TARGETS.includes(target as TargetKind)) {
      throw new InvalidArgumentError(`unknown target '${target}' (known: ${ALL_TARGETS.join(', ')})`);
    }
  }
  return targets as TargetKind[];
}

/**
 * The load worker holds every client socket, so this process needs as many descriptors as there
 * are connections. Node cannot raise its own limit; when the soft limit is too low, run again
 * under a shell that raised it to the hard limit (once: the marker stops a loop).
 */
function ensureDescriptors(needed: number): void {
  const soft = Number(execFileSync('bash', ['-c', 'ulimit -Sn'], { encoding: 'utf8' }).trim());
  if (!Number.isFinite(soft) || soft >= needed || process.env[REEXEC_MARKER] === '1') {
    if (Number.isFinite(soft) && soft < needed) {
      process.stderr.write(`warning: file descriptor limit ${soft} is below the ${needed} this run needs\n`);
    }
    return;
  }
  const result = spawnSync(
    'bash',
    ['-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'bench', process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    { stdio: 'inherit', env: { ...process.env, [REEXEC_MARKER]: '1' } },
  );
  process.exit(result.status ?? 1);
}

const program = new Command();
program.name('npm run bench --').description('cellmesh benchmarks').showHelpAfterError();

program
  .command('in-cell')
  .description(
    'customers chatting with merchants\' agents in one cell process over WebSockets, against a Socket.IO + LevelDB relay and a raw uWS echo server',
  )
  .option('--customers <n>', 'customer connections sending messages', integer(1, 10_000), 1000)
  .option('--merchants <n>', 'merchants (customer i talks to merchant i mod n)', integer(1, 1000), 10)
  .option('--agents-per-merchant <n>', 'agent connections per merchant; each receives and acks its merchant\'s messages', integer(1, 100), 2)
  .option('--duration-seconds <n>', 'measurement window of each phase', integer(1, 600), 10)
  .option('--warmup-seconds <n>', 'warm-up before the peak window', integer(0, 120), 2)
  .option('--idle-connections <n>', 'idle authenticated connections for the memory figure (0 skips it)', integer(0, 15_000), 5000)
  .option('--outstanding <n>', 'sends in flight per customer in the closed-loop peak phase', integer(1, 64), 1)
  .option('--max-paced-outstanding <n>', 'paced phase: skip a customer with this many sends in flight', integer(1, 1024), 16)
  .option('--paced-rate <n>', 'rate of the paced phase, msgs/s (default: half of the measured peak)', integer(1, 10_000_000))
  .option('--workers <n>', 'load-generator worker threads', integer(1, 16), 1)
  .option('--body-bytes <n>', 'characters per message body', integer(1, 16_384), 64)
  .option('--targets <list>', `comma-separated, from ${ALL_TARGETS.join(',')}`, targetList, ALL_TARGETS)
  .option('--idle-targets <list>', 'targets whose idle-connection memory is measured', targetList, ALL_TARGETS)
  .option('--no-sync', 'store without fsync on both the cell and the Socket.IO relay (default: sync on both)')
  .option('--wait-quiet-seconds <n>', 'before each load phase, wait up to n s for other processes to go quiet', integer(0, 600), 15)
  .option('--pin', 'pin each server to CPU 0 and the load generator to CPU 1 (taskset)')
  .option('--connect-concurrency <n>', 'connections opening at once', integer(1, 1000), 100)
  .option('--cell-ready-timeout-seconds <n>', 'how long to wait for the cell\'s /v1/readyz', integer(1, 600), 60)
  .option('--seed <n>', 'seed of the fixture (secret, bodies)', integer(0, 2 ** 31 - 1), 1)
  .option('--cpu-profile-dir <dir>', 'write a V8 CPU profile of each server\'s load phases into this directory')
  .option('--json', 'print exactly one JSON object on stdout')
  .action(async (raw: Record<string, unknown>) => {
    const customers = raw['customers'] as number;
    const idleConnections = raw['idleConnections'] as number;
    const merchants = raw['merchants'] as number;
    const agentsPerMerchant = raw['agentsPerMerchant'] as number;
    ensureDescriptors(customers + merchants * agentsPerMerchant + idleConnections + 100 + FD_SLACK);
    const { runInCell } = await import('./in-cell.js');
    process.exitCode = await runInCell({
      customers,
      merchants,
      agentsPerMerchant,
      durationSeconds: raw['durationSeconds'] as number,
      warmupSeconds: raw['warmupSeconds'] as number,
      idleConnections,
      outstandingPerCustomer: raw['outstanding'] as number,
      maxPacedOutstandingPerCustomer: raw['maxPacedOutstanding'] as number,
      workers: raw['workers'] as number,
      pacedRatePerSecond: (raw['pacedRate'] as number | undefined) ?? null,
      bodyBytes: raw['bodyBytes'] as number,
      targets: raw['targets'] as TargetKind[],
      idleTargets: raw['idleTargets'] as TargetKind[],
      storeSync: raw['sync'] as boolean,
      pin: raw['pin'] === true,
      waitQuietSeconds: raw['waitQuietSeconds'] as number,
      connectConcurrency: raw['connectConcurrency'] as number,
      cellReadyTimeoutSeconds: raw['cellReadyTimeoutSeconds'] as number,
      seed: raw['seed'] as number,
      json: raw['json'] === true,
      cpuProfileDirectory:
        typeof raw['cpuProfileDir'] === 'string' ? resolve(raw['cpuProfileDir']) : null,
    });
  });

await program.parseAsync(process.argv);
