/**
 * `npm run bench -- <benchmark> [options]`: the benchmarks of cellmesh.
 *
 *   in-cell   one cell under chat load, against a Socket.IO + LevelDB relay and a raw uWS echo
 *   mesh      a cluster of cell processes: convergence, join, failure detection, location, cross-cell delivery
 *   hot-path  CPU and GC time per message through the cell core and LevelDB in one process (no sockets)
 *   assign    the decisions of one merchant's service desk in memory (cell/desk)
 *   route     smart routing on real cell processes: the decision, HTTP routes, in-cell closure, following a move, an outage
 *   scaled-cell  the same load on the LevelDB cell and on Redis as one process and as two (half the devices relayed); SIGKILL failovers
 *
 * Progress goes to stderr; the report to stdout (with `--json`, exactly one JSON object).
 */
import '../platform/promise-with-resolvers.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import type { TargetKind } from './load-protocol.js';
import { MESH_PHASES, type MeshPhase } from './mesh.js';

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
  .option(
    '--window1-customers <n>',
    'conversations of the window-1 phase, one send in flight each (at most --customers; 0 skips the phase)',
    integer(0, 10_000),
    100,
  )
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
      window1Customers: Math.min(customers, raw['window1Customers'] as number),
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

/** `--phases none` runs only the formation and the idle window. */
function phaseList(value: string): MeshPhase[] {
  if (value.trim() === 'none') return [];
  const phases = value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  for (const phase of phases) {
    if (!MESH_PHASES.includes(phase as MeshPhase)) {
      throw new InvalidArgumentError(`unknown phase '${phase}' (known: ${MESH_PHASES.join(', ')})`);
    }
  }
  return phases as MeshPhase[];
}

function percentOfCore(value: string): number {
  const percent = Number(value);
  if (!Number.isFinite(percent) || percent <= 0 || percent > 100) throw new InvalidArgumentError('must be a percent of a core, above 0 and at most 100');
  return percent;
}

/** `--timing name=value`, repeatable: overrides of the LAN membership timings (mesh/membership-config.ts). */
function timingOverride(value: string, previous: Record<string, number>): Record<string, number> {
  const match = /^([A-Za-z]+)=(\d+)$/.exec(value.trim());
  if (match === null) throw new InvalidArgumentError('must be name=milliseconds, e.g. suspicionMinMs=1000');
  return { ...previous, [match[1]!]: Number(match[2]) };
}

program
  .command('mesh')
  .description(
    'a cluster of real cell processes on loopback: record convergence, join to routable, crash detection and stalls, location messages per query, in-cell vs cross-cell delivery',
  )
  .option('--cells <n>', 'cells of the cluster (a further one joins and leaves in the join phase)', integer(3, 32), 5)
  .option('--converge-trials <n>', 'record changes timed (the changing cell rotates)', integer(1, 1000), 20)
  .option('--converge-warmup <n>', 'record changes made first and not counted (fresh processes compile these paths on first use)', integer(0, 1000), 5)
  .option('--poll-interval-ms <n>', 'pause between two polls of one cell\'s admin view', integer(0, 1000), 2)
  .option('--locate-users <n>', 'users located (devices on 0 to cells-2 cells each)', integer(1, 1000), 24)
  .option('--delivery-messages <n>', 'measured messages per path (in-cell and cross-cell)', integer(1, 100_000), 300)
  .option('--delivery-warmup <n>', 'messages per path sent first and not measured', integer(0, 10_000), 20)
  .option('--delivery-rate <n>', 'messages per second on each path', integer(1, 5000), 25)
  .option('--body-bytes <n>', 'characters per message body', integer(1, 16_384), 64)
  .option('--stalls <n>', 'SIGSTOP/SIGCONT stalls of one cell', integer(0, 100), 3)
  .option('--stall-ms <n>', 'length of each stall', integer(1, 60_000), 1000)
  .option('--stall-spacing-ms <n>', 'pause between two stalls', integer(0, 60_000), 3000)
  .option('--stall-watch-seconds <n>', 'watching after the last stall', integer(0, 600), 5)
  .option('--failure-trials <n>', 'SIGKILL trials, each followed by a restart of the killed cell', integer(1, 100), 3)
  .option('--timing <name=ms>', 'override a LAN membership timing on every cell (repeatable), e.g. suspicionMinMs=1000', timingOverride, {})
  .option('--phases <list>', `comma-separated, from ${MESH_PHASES.join(',')}; none: only the formation and the idle window`, phaseList, [...MESH_PHASES])
  .option('--start-concurrency <n>', 'cells started at once after the first two (default: one per core)', integer(1, 32))
  .option('--idle-settle-seconds <n>', 'quiet time after the cluster formed, before the idle window', integer(0, 600), 10)
  .option('--idle-seconds <n>', 'the idle window: every cell\'s CPU with nobody polling', integer(20, 600), 30)
  .option('--idle-baseline-percent <p>', 'the idle p50 per cell of a 5-cell run, to judge this run\'s flatness against (1.2x)', percentOfCore)
  .option('--wait-quiet-seconds <n>', 'before each phase, wait up to n s for other processes to go quiet', integer(0, 600), 15)
  .option('--max-seconds <n>', 'bound on the whole run; everything is stopped after it', integer(30, 3600), 600)
  .option('--json', 'print exactly one JSON object on stdout')
  .action(async (raw: Record<string, unknown>) => {
    const { runMesh } = await import('./mesh.js');
    const { DEFAULT_START_CONCURRENCY } = await import('./mesh-formation.js');
    process.exitCode = await runMesh({
      cells: raw['cells'] as number,
      convergeTrials: raw['convergeTrials'] as number,
      convergeWarmup: raw['convergeWarmup'] as number,
      waitQuietSeconds: raw['waitQuietSeconds'] as number,
      pollIntervalMs: raw['pollIntervalMs'] as number,
      locateUsers: raw['locateUsers'] as number,
      deliveryMessages: raw['deliveryMessages'] as number,
      deliveryWarmup: raw['deliveryWarmup'] as number,
      deliveryRate: raw['deliveryRate'] as number,
      bodyBytes: raw['bodyBytes'] as number,
      stalls: raw['stalls'] as number,
      stallMs: raw['stallMs'] as number,
      stallSpacingMs: raw['stallSpacingMs'] as number,
      stallWatchSeconds: raw['stallWatchSeconds'] as number,
      failureTrials: raw['failureTrials'] as number,
      timings: raw['timing'] as Record<string, number>,
      phases: raw['phases'] as MeshPhase[],
      startConcurrency: (raw['startConcurrency'] as number | undefined) ?? DEFAULT_START_CONCURRENCY,
      idleSettleSeconds: raw['idleSettleSeconds'] as number,
      idleSeconds: raw['idleSeconds'] as number,
      idleBaselinePercent: (raw['idleBaselinePercent'] as number | undefined) ?? null,
      maxSeconds: raw['maxSeconds'] as number,
      json: raw['json'] === true,
    });
  });

program
  .command('hot-path')
  .description('CPU and GC time per message through the cell core and LevelDB in one process, no sockets (compares commits)')
  .option('--customers <n>', 'customer devices (customer i talks to merchant i mod merchants)', integer(1, 100_000), 1000)
  .option('--merchants <n>', 'merchants', integer(1, 1000), 10)
  .option('--agents-per-merchant <n>', 'agent devices per merchant; each receives and acks its merchant\'s messages', integer(1, 100), 2)
  .option('--per-tick <n>', 'messages sent together, then awaited (the next customers in turn)', integer(1, 10_000), 50)
  .option('--ack-every <n>', 'agents acknowledge every n ticks', integer(1, 1000), 4)
  .option('--messages <n>', 'measured messages', integer(1, 10_000_000), 100_000)
  .option('--warmup-messages <n>', 'messages sent first and not measured', integer(0, 10_000_000), 20_000)
  .option('--floor-messages <n>', "messages (after the warmup) whose store writes are replayed alone for the store's floor; 0 skips it", integer(0, 10_000_000), 20_000)
  .option('--body-bytes <n>', 'characters per message body', integer(1, 16_384), 64)
  .option('--no-sync', 'store without fsync')
  .option('--seed <n>', 'seed of the tenant secret', integer(0, 2 ** 31 - 1), 1)
  .option('--json', 'print exactly one JSON object on stdout')
  .action(async (raw: Record<string, unknown>) => {
    const { runHotPath, describeHotPath } = await import('./hot-path.js');
    const report = await runHotPath({
      customers: raw['customers'] as number,
      merchants: raw['merchants'] as number,
      agentsPerMerchant: raw['agentsPerMerchant'] as number,
      perTick: raw['perTick'] as number,
      ackEvery: raw['ackEvery'] as number,
      messages: raw['messages'] as number,
      warmupMessages: raw['warmupMessages'] as number,
      floorMessages: raw['floorMessages'] as number,
      bodyBytes: raw['bodyBytes'] as number,
      storeSync: raw['sync'] as boolean,
      seed: raw['seed'] as number,
      json: raw['json'] === true,
    });
    process.stdout.write(raw['json'] === true ? `${JSON.stringify(report)}\n` : `${describeHotPath(report)}\n`);
  });

program
  .command('assign')
  .description("decisions per second, their latency and the spread of load of one merchant's desk in memory")
  .option('--agents <n>', 'agents, of capacities 1-8', integer(1, 1_000_000), 10_000)
  .option('--groups <n>', 'groups the agents are spread over', integer(1, 10_000), 100)
  .option('--churn-ops <n>', 'opens, closes and status changes at the steady state', integer(0, 100_000_000), 500_000)
  .option('--seed <n>', 'seed of the workload', integer(0, 2 ** 31 - 1), 1)
  .option('--consultations <n>', 'consultations assigned end to end through a real cell (the durable figure)', integer(1, 1_000_000), 5_000)
  .option('--no-durable', 'skip the durable figure (in memory only)')
  .option('--json', 'print exactly one JSON object on stdout')
  .action(async (raw: Record<string, unknown>) => {
    const { runAssign, describeAssign } = await import('./assign.js');
    const report = runAssign({
      agents: raw['agents'] as number,
      groups: raw['groups'] as number,
      churnOps: raw['churnOps'] as number,
      seed: raw['seed'] as number,
      json: raw['json'] === true,
    });
    if (raw['durable'] !== false) {
      const { runDurableAssign } = await import('./assign-durable.js');
      report.durable = await runDurableAssign({ consultations: raw['consultations'] as number, agents: 500, seed: raw['seed'] as number });
      report.durableAssignPerSec = report.durable.durableAssignPerSec;
    }
    process.stdout.write(raw['json'] === true ? `${JSON.stringify(report)}\n` : `${describeAssign(report)}\n`);
  });

function share(value: string): number {
  const parsed = Number(value);
  if (!(parsed >= 0 && parsed <= 1)) throw new InvalidArgumentError('must be a number from 0 to 1');
  return parsed;
}

program
  .command('route')
  .description('smart routing on a cluster of real cell processes: route decisions, route requests over HTTP, in-cell closure of a Zipf workload, following a move, messages sent during an outage of the home')
  .option('--cells <n>', 'cell processes', integer(3, 8), 3)
  .option('--customers <n>', 'customers, each with one client in route mode per merchant it talks to', integer(1, 100_000), 10_000)
  .option('--merchants <n>', 'merchants, spread over the cells, chosen by Zipf popularity (s = 1)', integer(3, 10_000), 300)
  .option('--two-cell-share <x>', 'share of customers who also talk to a merchant on another cell', share, 0.05)
  .option('--messages-per-conversation <n>', 'messages each customer sends to each of its merchants', integer(1, 100), 1)
  .option('--concurrency <n>', 'customers connected at once', integer(1, 2000), 300)
  .option('--linger-ms <n>', 'each customer stays connected this long after its messages were confirmed', integer(0, 60_000), 1000)
  .option('--route-decisions <n>', 'route decisions timed one by one', integer(1, 10_000_000), 200_000)
  .option('--route-http-requests <n>', 'route requests over HTTP, one at a time', integer(1, 100_000), 2_000)
  .option('--follow-customers <n>', 'customers of the moved merchant connected during the move', integer(0, 10_000), 200)
  .option('--outage-customers <n>', 'customers writing to the merchant whose home is killed', integer(1, 1000), 10)
  .option('--outage-messages <n>', 'messages they send while it is dead', integer(1, 10_000), 50)
  .option('--seed <n>', 'seed of the workload', integer(0, 2 ** 31 - 1), 1)
  .option('--max-seconds <n>', 'bound on the whole run; everything is stopped after it', integer(30, 3600), 300)
  .option('--json', 'print exactly one JSON object on stdout')
  .action(async (raw: Record<string, unknown>) => {
    ensureDescriptors((raw['concurrency'] as number) * 2 + (raw['merchants'] as number) + (raw['followCustomers'] as number) + FD_SLACK);
    const { runRoute, describeRoute } = await import('./route.js');
    const report = await runRoute({
      cells: raw['cells'] as number,
      customers: raw['customers'] as number,
      merchants: raw['merchants'] as number,
      twoCellShare: raw['twoCellShare'] as number,
      messagesPerConversation: raw['messagesPerConversation'] as number,
      concurrency: raw['concurrency'] as number,
      lingerMs: raw['lingerMs'] as number,
      routeDecisions: raw['routeDecisions'] as number,
      routeHttpRequests: raw['routeHttpRequests'] as number,
      followCustomers: raw['followCustomers'] as number,
      outageCustomers: raw['outageCustomers'] as number,
      outageMessages: raw['outageMessages'] as number,
      seed: raw['seed'] as number,
      maxSeconds: raw['maxSeconds'] as number,
    });
    process.stdout.write(raw['json'] === true ? `${JSON.stringify(report)}\n` : `${describeRoute(report)}\n`);
    process.exitCode = report.errors.length === 0 ? 0 : 1;
  });

program
  .command('scaled-cell')
  .description('the same load on the embedded LevelDB cell, the cell on Redis as one process and as two (half the devices relayed), then SIGKILL failovers of one of the two')
  .option('--customers <n>', 'customers in closed loop (customer i talks to merchant i mod merchants)', integer(1, 100_000), 1000)
  .option('--merchants <n>', 'merchants, spread over the processes', integer(2, 1000), 10)
  .option('--agents-per-merchant <n>', "agent devices per merchant; each receives and acks its merchant's messages", integer(1, 100), 2)
  .option('--outstanding <n>', 'sends each customer keeps in flight', integer(1, 1000), 1)
  .option('--warmup-seconds <n>', 'warm-up before each window', integer(0, 600), 2)
  .option('--duration-seconds <n>', 'measurement window per phase', integer(1, 600), 10)
  .option('--body-bytes <n>', 'characters per message body', integer(1, 16_384), 64)
  .option('--workers <n>', 'load-generator worker threads', integer(1, 64), 1)
  .option('--failover-trials <n>', 'SIGKILLs of one of the two processes (alternating), each followed by its restart', integer(1, 20), 3)
  .option('--lease-ttl-ms <n>', "the processes' processes.leaseTtlMs", integer(300, 60_000), 3000)
  .option('--renew-interval-ms <n>', "the processes' processes.renewIntervalMs (at most a third of the lease)", integer(50, 20_000), 1000)
  .option('--wait-quiet-seconds <n>', 'before each window, wait up to n s for other processes to go quiet', integer(0, 600), 15)
  .option('--max-seconds <n>', 'bound on the whole run; everything is stopped after it', integer(30, 3600), 420)
  .option('--seed <n>', 'seed of the fixture (secret, bodies)', integer(0, 2 ** 31 - 1), 1)
  .option('--json', 'print exactly one JSON object on stdout')
  .action(async (raw: Record<string, unknown>) => {
    const customers = raw['customers'] as number;
    const merchants = raw['merchants'] as number;
    const agentsPerMerchant = raw['agentsPerMerchant'] as number;
    // A relayed device holds a second socket on its merchant's owner.
    ensureDescriptors(2 * (customers + merchants * agentsPerMerchant) + FD_SLACK);
    const { runScaledCell, describeScaledCell } = await import('./scaled-cell.js');
    const report = await runScaledCell({
      customers,
      merchants,
      agentsPerMerchant,
      outstandingPerCustomer: raw['outstanding'] as number,
      warmupSeconds: raw['warmupSeconds'] as number,
      durationSeconds: raw['durationSeconds'] as number,
      bodyBytes: raw['bodyBytes'] as number,
      workers: raw['workers'] as number,
      failoverTrials: raw['failoverTrials'] as number,
      leaseTtlMs: raw['leaseTtlMs'] as number,
      renewIntervalMs: raw['renewIntervalMs'] as number,
      waitQuietSeconds: raw['waitQuietSeconds'] as number,
      maxSeconds: raw['maxSeconds'] as number,
      seed: raw['seed'] as number,
    });
    process.stdout.write(raw['json'] === true ? `${JSON.stringify(report)}\n` : `${describeScaledCell(report)}\n`);
    process.exitCode = report.errors.length === 0 ? 0 : 1;
  });

await program.parseAsync(process.argv);
