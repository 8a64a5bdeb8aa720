/**
 * `npm run bench -- route`: smart routing on a cluster of real cell processes (docs/routing.md).
 *
 * Phases, in this order (each bounded; a failing one is reported under `errors` and the next
 * still runs):
 * 1. decide     `routeToMerchant` on the gossiped directory of a router joined to the mesh in
 *               this process, timed one decision at a time (`routeP99Us`).
 * 2. http       `GET /v1/route` on the cells, one request at a time (`routeHttpP99Ms`).
 * 3. closure    customers (SDK in route mode) send to merchants drawn by Zipf popularity, a
 *               share of them to merchants on two cells; the cells' closure counters say how
 *               many messages never crossed a cell boundary (`inCellClosure`).
 * 4. move       the most popular merchant moves; time from the move's answer until every
 *               connected device of it is open on the new home (`followMoveMs`).
 * 5. outage     a merchant's home is SIGKILLed; its customers send while it is dead; it is
 *               restarted with its disk; share of those messages its agent received once and in
 *               order (`outageDelivered`).
 */
import { cpus, totalmem } from 'node:os';
import { startRouter, type RunningRouter } from '../assembly/process-router.js';
import { parseRouterConfig } from '../assembly/router-config.js';
import { sumClosures, type ClosureSnapshot } from '../cell/messaging/closure-counts.js';
import type { CellmeshClient } from '../client/index.js';
import { silentLogger } from '../platform/logger.js';
import { SeededRandom } from '../platform/random.js';
import { routeRequest } from '../router/route.js';
import { BENCH_TENANT, BenchCluster, pollUntil, sleep, type BenchCell, type CellSpec } from './mesh-cluster.js';
import { round, summarize, type SampleSummary } from './mesh-stats.js';
import { readCpuSeconds } from './servers.js';
import { BenchAgents, SessionWatch, eachLimited, openRoutedClient } from './route-devices.js';
import { routeWorkload, type BenchCustomer, type RouteWorkload } from './route-workload.js';

export interface RouteBenchOptions {
  cells: number;
  customers: number;
  merchants: number;
  twoCellShare: number;
  messagesPerConversation: number;
  /** Customers connecting and sending at once. */
  concurrency: number;
  /** How long each customer stays connected after its messages were confirmed. */
  lingerMs: number;
  routeDecisions: number;
  routeHttpRequests: number;
  /** Customers of the moved merchant connected during the move (its agent too). */
  followCustomers: number;
  outageCustomers: number;
  outageMessages: number;
  seed: number;
  maxSeconds: number;
}

export const ROUTE_GOALS = { routeP99UsMax: 20, inCellClosureMin: 0.95, followMoveMsMax: 2_000, outageDelivered: 1 } as const;

const ROUTE_LIMITS = { requestsPerSecondPerAddress: 1_000_000, burstPerAddress: 1_000_000 };
const FORM_TIMEOUT_MS = 30_000;
const DELIVERY_TIMEOUT_MS = 30_000;
const FOLLOW_TIMEOUT_MS = 15_000;
const DEAD_TIMEOUT_MS = 20_000;
/** How long the home stays dead after the customers sent (their clients keep retrying meanwhile). */
const OUTAGE_DOWN_MS = 2_000;
const OUTAGE_DELIVERY_TIMEOUT_MS = 30_000;
const DECISION_WARMUP = 10_000;

type Log = (line: string) => void;

export interface RouteReport {
  benchmark: 'route';
  routeP99Us: number | null;
  routeHttpP99Ms: number | null;
  inCellClosure: number | null;
  followMoveMs: number | null;
  outageDelivered: number | null;
  goals: Record<string, { bound: number; met: boolean | null }>;
  decide: { decisions: number; unrouted: number; us: SampleSummary; directoryMembers: number } | null;
  http: { requests: number; failed: number; ms: SampleSummary } | null;
  closure: {
    customers: number;
    twoCellCustomers: number;
    messagesSent: number;
    sendFailures: number;
    connectionsOnHome: number;
    connections: number;
    agentsReceived: number;
    messages: ClosureSnapshot['messages'];
    conversations: ClosureSnapshot['conversations'];
    /** Of the messages, those whose send did not cross (in_cell + copied): what routing alone decides. */
    sendsInCell: number | null;
    seconds: number;
    messagesPerSecond: number;
    /** CPU used during the phase by this process (the SDK clients) and by the cells. */
    cpuSeconds: { bench: number; cells: number };
  } | null;
  move: { merchant: string; from: string; to: string; devices: number; moveMs: number; followMs: SampleSummary; notFollowed: number } | null;
  outage: {
    merchant: string;
    cell: string;
    customers: number;
    sent: number;
    sendsRejected: number;
    /** Sends answered `queued` (durable at a fallback cell) before the home was restarted. */
    queuedAtFallback: number;
    deliveredOnceInOrder: number;
    received: number;
    duplicates: number;
    outOfOrder: number;
    deadAfterMs: number | null;
    downMs: number;
    deliveryWaitMs: number;
  } | null;
  errors: string[];
  parameters: RouteBenchOptions;
  machine: { cpus: number; model: string; memoryGiB: number; node: string };
  startedAt: string;
  elapsedSeconds: number;
}

function cellIdOf(index: number): string {
  return `c${index + 1}`;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The closure counters of every running cell, summed (each message is counted by its home only). */
async function clusterClosure(cluster: BenchCluster, cells: readonly BenchCell[]): Promise<ClosureSnapshot> {
  return sumClosures(await Promise.all(cells.map((cell) => cluster.adminGet<ClosureSnapshot>(cell, '/v1/admin/closure'))));
}

/** `after - before`, with the ratios of the difference. */
function closureBetween(before: ClosureSnapshot, after: ClosureSnapshot): ClosureSnapshot {
  const inCell = after.messages.inCell - before.messages.inCell;
  const total = after.messages.total - before.messages.total;
  const seen = after.conversations.total - before.conversations.total;
  const crossed = after.conversations.crossed - before.conversations.crossed;
  return {
    messages: { inCell, relayed: after.messages.relayed - before.messages.relayed, copied: after.messages.copied - before.messages.copied, total, inCellRatio: total === 0 ? null : inCell / total },
    conversations: { total: seen, crossed, inCell: seen - crossed, inCellRatio: seen === 0 ? null : (seen - crossed) / seen },
  };
}

/** CPU seconds of this process and of the cells from its creation on. */
class PhaseCpu {
  private readonly bench = process.cpuUsage();
  private readonly cells: number;

  constructor(private readonly cluster: BenchCluster) {
    this.cells = this.cellSeconds();
  }

  seconds(): { bench: number; cells: number } {
    const bench = process.cpuUsage(this.bench);
    return { bench: round((bench.user + bench.system) / 1e6, 1) ?? 0, cells: round(this.cellSeconds() - this.cells, 1) ?? 0 };
  }

  private cellSeconds(): number {
    let total = 0;
    for (const pid of this.cluster.allPids) {
      try {
        total += readCpuSeconds(pid);
      } catch {
        // A cell that exited (killed in an earlier phase) has no /proc entry any more.
      }
    }
    return total;
  }
}

/** The running cluster of one benchmark run. */
class RouteCluster {
  readonly cells: BenchCell[] = [];
  readonly specs: CellSpec[] = [];
  readonly addresses: string[] = [];

  constructor(
    readonly cluster: BenchCluster,
    readonly workload: RouteWorkload,
  ) {}

  async start(count: number): Promise<void> {
    for (let index = 0; index < count; index++) {
      const spec: CellSpec = { cellId: cellIdOf(index), merchants: this.workload.merchantsOfCell[index]!, bootstrap: this.addresses.slice(0, 2) };
      const cell = await this.cluster.start(spec);
      this.specs.push(spec);
      this.cells.push(cell);
      this.addresses.push(await this.cluster.meshAddressOf(cell));
    }
    const merchants = this.workload.merchants.length;
    const formed = await pollUntil(
      async () => {
        for (const cell of this.cells) {
          const view = await this.cluster.view(cell, 1000);
          const alive = view.cells.filter((seen) => seen.liveness === 'alive');
          if (alive.length < count || alive.reduce((sum, seen) => sum + seen.merchants.length, 0) < merchants) return false;
        }
        return true;
      },
      { intervalMs: 100, timeoutMs: FORM_TIMEOUT_MS },
    );
    if (formed === null) throw new Error(`the cluster did not form within ${FORM_TIMEOUT_MS} ms`);
  }

  byId(cellId: string): BenchCell {
    const cell = this.cells.find((candidate) => candidate.spec.cellId === cellId);
    if (cell === undefined) throw new Error(`no cell ${cellId}`);
    return cell;
  }

  /** Restarts a cell that exited, with its store and ports; the others stay its bootstrap. */
  async restart(cellId: string): Promise<void> {
    const index = this.cells.findIndex((candidate) => candidate.spec.cellId === cellId);
    const old = this.cells[index]!;
    const bootstrap = this.addresses.filter((_address, other) => other !== index).slice(0, 2);
    this.cells[index] = await this.cluster.start({ ...old.spec, bootstrap }, { port: old.port, meshPort: old.meshPort });
  }

  anyUrl(random: SeededRandom): string {
    return this.cells[Math.floor(random.next() * this.cells.length)]!.httpUrl;
  }
}

async function joinRouter(cluster: BenchCluster, routeCluster: RouteCluster): Promise<RunningRouter> {
  const config = parseRouterConfig({
    router: { id: 'bench-router' },
    listen: { host: '127.0.0.1', port: 0 },
    mesh: { listen: { host: '127.0.0.1', port: 0 }, clusterSecret: cluster.secrets.clusterSecret, bootstrap: routeCluster.addresses.slice(0, 2), timings: { ...cluster.timings } },
    routing: ROUTE_LIMITS,
    log: { level: 'silent' },
  });
  const router = await startRouter({ config, logger: silentLogger });
  const merchants = routeCluster.workload.merchants;
  const heard = await pollUntil(async () => merchants.every((merchant) => routeRequest(router.mesh.directory, { tenant: BENCH_TENANT, merchant }) !== undefined), {
    intervalMs: 50,
    timeoutMs: FORM_TIMEOUT_MS,
  });
  if (heard === null) {
    await router.stop();
    throw new Error(`the in-process router did not learn every merchant's home within ${FORM_TIMEOUT_MS} ms`);
  }
  return router;
}

/** Phase 1: the decision alone, on the router's copy of the gossiped directory. */
function decide(router: RunningRouter, workload: RouteWorkload, count: number): NonNullable<RouteReport['decide']> {
  const requests = Array.from({ length: count }, () => ({ tenant: BENCH_TENANT, merchant: workload.drawMerchant() }));
  const directory = router.mesh.directory;
  for (let index = 0; index < Math.min(DECISION_WARMUP, count); index++) routeRequest(directory, requests[index]!);
  const samples: number[] = new Array<number>(count);
  let unrouted = 0;
  for (let index = 0; index < count; index++) {
    const started = process.hrtime.bigint();
    const route = routeRequest(directory, requests[index]!);
    samples[index] = Number(process.hrtime.bigint() - started) / 1000;
    if (route === undefined) unrouted++;
  }
  return { decisions: count, unrouted, us: summarize(samples), directoryMembers: directory.size };
}

/** Phase 2: route requests over HTTP on loopback, one at a time, rotating over the cells. */
async function routeOverHttp(routeCluster: RouteCluster, count: number): Promise<NonNullable<RouteReport['http']>> {
  const samples: number[] = [];
  let failed = 0;
  const { cells, workload } = routeCluster;
  for (let index = -Math.min(100, count); index < count; index++) {
    const cell = cells[(index + cells.length * 100) % cells.length]!;
    const started = performance.now();
    try {
      const response = await fetch(`${cell.httpUrl}/v1/route?tenant=${BENCH_TENANT}&merchant=${workload.drawMerchant()}`, { signal: AbortSignal.timeout(5_000) });
      await response.text();
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
      if (index >= 0) samples.push(performance.now() - started);
    } catch {
      if (index >= 0) failed++;
    }
  }
  return { requests: count, failed, ms: summarize(samples) };
}

/** Phase 3: the customers of the workload, `concurrency` at a time, each with one client per merchant. */
async function closurePhase(
  routeCluster: RouteCluster,
  agents: BenchAgents,
  options: RouteBenchOptions,
  random: SeededRandom,
  log: Log,
): Promise<NonNullable<RouteReport['closure']>> {
  const { cluster, workload } = routeCluster;
  const secret = cluster.secrets.tenantSecret;
  const before = await clusterClosure(cluster, routeCluster.cells);
  const receivedBefore = agents.received;
  let messagesSent = 0;
  let sendFailures = 0;
  let connections = 0;
  let connectionsOnHome = 0;
  const startedMs = performance.now();
  const cpu = new PhaseCpu(cluster);
  const runCustomer = async (customer: BenchCustomer): Promise<void> => {
    // Indexed like the customer's merchants (clients[i] is routed for merchants[i]).
    const clients: Array<CellmeshClient | undefined> = [];
    try {
      await Promise.all(
        customer.merchants.map(async (merchant, index) => {
          const client = await openRoutedClient({ secret, routeUrl: routeCluster.anyUrl(random), merchant, user: customer.id, device: `app-${index}`, role: 'customer' });
          clients[index] = client;
          connections++;
          if (client.session?.cell === cellIdOf(workload.homeIndexOf.get(merchant)!)) connectionsOnHome++;
        }),
      );
      // Both of a two-cell customer's clients are open while she writes, as in an app showing both chats.
      const sends = customer.merchants.flatMap((merchant, index) => {
        const client = clients[index]!;
        const conv = `${merchant}:${customer.id}`;
        return Array.from({ length: options.messagesPerConversation }, (_, message) => client.send(conv, `hello ${message}`));
      });
      for (const outcome of await Promise.allSettled(sends)) {
        if (outcome.status === 'fulfilled') messagesSent++;
        else sendFailures++;
      }
      // A customer reads the answer for a while: closing at once would hide her from the fan-out
      // that follows each durable message, and overstate the closure.
      await sleep(options.lingerMs);
    } catch {
      sendFailures += customer.merchants.length * options.messagesPerConversation;
    } finally {
      await Promise.all(clients.map((client) => client?.close().catch(() => undefined)));
    }
  };
  let done = 0;
  await eachLimited(workload.customers, options.concurrency, async (customer) => {
    await runCustomer(customer);
    done++;
    if (done % 2000 === 0) log(`  ${done} customers done`);
  });
  const seconds = (performance.now() - startedMs) / 1000;
  const cpuSeconds = cpu.seconds();
  await pollUntil(async () => agents.received - receivedBefore >= messagesSent, { intervalMs: 100, timeoutMs: DELIVERY_TIMEOUT_MS });
  // A message is counted once its copies to other cells were enqueued: wait for the last ones.
  let closure = closureBetween(before, await clusterClosure(cluster, routeCluster.cells));
  await pollUntil(
    async () => {
      closure = closureBetween(before, await clusterClosure(cluster, routeCluster.cells));
      return closure.messages.total >= messagesSent;
    },
    { intervalMs: 100, timeoutMs: DELIVERY_TIMEOUT_MS },
  );
  const { messages, conversations } = closure;
  return {
    customers: workload.customers.length,
    twoCellCustomers: workload.customers.filter((customer) => customer.merchants.length > 1).length,
    messagesSent,
    sendFailures,
    connectionsOnHome,
    connections,
    agentsReceived: agents.received - receivedBefore,
    messages,
    conversations,
    sendsInCell: messages.total === 0 ? null : (messages.inCell + messages.copied) / messages.total,
    seconds: round(seconds, 1) ?? 0,
    messagesPerSecond: Math.round(messagesSent / Math.max(0.001, seconds)),
    cpuSeconds,
  };
}

/** Phase 4: the most popular merchant moves with its agent and `followCustomers` customers connected. */
async function movePhase(routeCluster: RouteCluster, agents: BenchAgents, options: RouteBenchOptions, random: SeededRandom): Promise<NonNullable<RouteReport['move']>> {
  const { cluster, workload } = routeCluster;
  const merchant = workload.merchants[0]!;
  const fromIndex = workload.homeIndexOf.get(merchant)!;
  const from = cellIdOf(fromIndex);
  const to = cellIdOf((fromIndex + 1) % routeCluster.cells.length);
  const watch = new SessionWatch();
  const agent = agents.clients.get(merchant);
  if (agent !== undefined) watch.watch(agent);
  const customers: CellmeshClient[] = [];
  try {
    await eachLimited(Array.from({ length: options.followCustomers }, (_, index) => index), 50, async (index) => {
      const client = await openRoutedClient({ secret: cluster.secrets.tenantSecret, routeUrl: routeCluster.anyUrl(random), merchant, user: `mover-${index}`, device: 'app', role: 'customer' });
      customers.push(client);
      await client.send(`${merchant}:mover-${index}`, 'before the move');
    });
    for (const client of customers) watch.watch(client);
    const startedMs = performance.now();
    await cluster.adminPost(routeCluster.byId(from), '/v1/admin/merchants/move', { tenant: BENCH_TENANT, merchant, to }, 60_000);
    const movedMs = performance.now();
    await pollUntil(async () => watch.allOn(to), { intervalMs: 10, timeoutMs: FOLLOW_TIMEOUT_MS });
    const devices = customers.length + (agent === undefined ? 0 : 1);
    // From the move's answer to each device's session on the new home (one there before the answer counts 0).
    const followMs = summarize(watch.arrivalsOn(to).map((arrivedMs) => Math.max(0, arrivedMs - movedMs)));
    return { merchant, from, to, devices, moveMs: Math.round(movedMs - startedMs), followMs, notFollowed: devices - watch.countOn(to) };
  } finally {
    watch.stop();
    await Promise.all(customers.map((client) => client.close().catch(() => undefined)));
  }
}

/** Phase 5: a merchant's home is SIGKILLed, its customers send while it is dead, it comes back with its disk. */
async function outagePhase(routeCluster: RouteCluster, agents: BenchAgents, options: RouteBenchOptions, log: Log): Promise<NonNullable<RouteReport['outage']>> {
  const { cluster, workload } = routeCluster;
  const victimIndex = routeCluster.cells.length - 1;
  const victim = routeCluster.cells[victimIndex]!;
  const merchant = workload.merchantsOfCell[victimIndex]![0]!;
  const survivor = routeCluster.cells[0]!;
  const customers: Array<{ client: CellmeshClient; conv: string }> = [];
  const perCustomer = Math.ceil(options.outageMessages / options.outageCustomers);
  try {
    for (let index = 0; index < options.outageCustomers; index++) {
      const user = `outage-${index}`;
      const conv = `${merchant}:${user}`;
      agents.record(conv);
      // Route requests go to a cell that stays up: a client must find the merchant wherever it is served.
      const client = await openRoutedClient({ secret: cluster.secrets.tenantSecret, routeUrl: survivor.httpUrl, merchant, user, device: 'app', role: 'customer' });
      await client.send(conv, 'before the outage');
      customers.push({ client, conv });
    }
    // A send answered `queued` is durable at a fallback cell (leave-a-message mode) while the home is down.
    let queuedWhileDown = 0;
    for (const { client } of customers) client.on('queued', () => queuedWhileDown++);
    const killedMs = performance.now();
    victim.kill('SIGKILL');
    await victim.exited;
    const dead = await pollUntil(async () => (await cluster.view(survivor, 1000)).cells.find((seen) => seen.cellId === victim.spec.cellId)?.liveness === 'dead', {
      intervalMs: 50,
      timeoutMs: DEAD_TIMEOUT_MS,
    });
    log(`  ${victim.spec.cellId} killed; ${dead === null ? 'not declared dead' : `dead after ${Math.round(dead - killedMs)} ms`}; customers send`);
    let sent = 0;
    let sendsRejected = 0;
    const sentTo = new Map<string, number>();
    const settled: Array<Promise<unknown>> = [];
    for (let message = 0; message < perCustomer; message++) {
      for (const { client, conv } of customers) {
        if (sent >= options.outageMessages) break;
        sent++;
        sentTo.set(conv, message + 1);
        settled.push(client.send(conv, `outage ${message}`).catch(() => sendsRejected++));
      }
    }
    await sleep(OUTAGE_DOWN_MS);
    const queuedBeforeRestart = queuedWhileDown;
    const downMs = Math.round(performance.now() - killedMs);
    await routeCluster.restart(victim.spec.cellId);
    log(`  ${victim.spec.cellId} restarted after ${downMs} ms down; waiting for the messages`);
    const restartedMs = performance.now();
    const outageBodies = (conv: string): string[] => agents.recordedOf(conv).map((message) => message.body).filter((body) => body.startsWith('outage '));
    await pollUntil(async () => customers.every(({ conv }) => new Set(outageBodies(conv)).size >= (sentTo.get(conv) ?? 0)), { intervalMs: 100, timeoutMs: OUTAGE_DELIVERY_TIMEOUT_MS });
    const deliveryWaitMs = Math.round(performance.now() - restartedMs);
    let deliveredOnceInOrder = 0;
    let received = 0;
    let duplicates = 0;
    let outOfOrder = 0;
    for (const { conv } of customers) {
      const seen = new Set<string>();
      let highest = -1;
      for (const body of outageBodies(conv)) {
        received++;
        const index = Number(body.slice('outage '.length));
        if (seen.has(body)) {
          duplicates++;
          continue;
        }
        seen.add(body);
        if (index < highest) {
          outOfOrder++;
          continue;
        }
        highest = index;
        deliveredOnceInOrder++;
      }
    }
    // Sends still unconfirmed are abandoned with the clients below; their rejections are expected.
    void Promise.allSettled(settled);
    return {
      merchant,
      cell: victim.spec.cellId,
      customers: customers.length,
      sent,
      sendsRejected,
      queuedAtFallback: queuedBeforeRestart,
      deliveredOnceInOrder,
      received,
      duplicates,
      outOfOrder,
      deadAfterMs: dead === null ? null : Math.round(dead - killedMs),
      downMs,
      deliveryWaitMs,
    };
  } finally {
    await Promise.all(customers.map(({ client }) => client.close().catch(() => undefined)));
  }
}

function goalsOf(report: Pick<RouteReport, 'routeP99Us' | 'inCellClosure' | 'followMoveMs' | 'outageDelivered'>): RouteReport['goals'] {
  const judge = (value: number | null, met: (value: number) => boolean): boolean | null => (value === null ? null : met(value));
  return {
    routeP99Us: { bound: ROUTE_GOALS.routeP99UsMax, met: judge(report.routeP99Us, (value) => value < ROUTE_GOALS.routeP99UsMax) },
    inCellClosure: { bound: ROUTE_GOALS.inCellClosureMin, met: judge(report.inCellClosure, (value) => value >= ROUTE_GOALS.inCellClosureMin) },
    followMoveMs: { bound: ROUTE_GOALS.followMoveMsMax, met: judge(report.followMoveMs, (value) => value < ROUTE_GOALS.followMoveMsMax) },
    outageDelivered: { bound: ROUTE_GOALS.outageDelivered, met: judge(report.outageDelivered, (value) => value === ROUTE_GOALS.outageDelivered) },
  };
}

export async function runRoute(options: RouteBenchOptions, logLine: Log = (line) => process.stderr.write(`${line}\n`)): Promise<RouteReport> {
  const startedAt = new Date();
  const startedMs = performance.now();
  const log: Log = (line) => logLine(`[${((performance.now() - startedMs) / 1000).toFixed(1)} s] ${line}`);
  const errors: string[] = [];
  const workload = routeWorkload({ cells: options.cells, merchants: options.merchants, customers: options.customers, twoCellShare: options.twoCellShare, zipfExponent: 1, seed: options.seed });
  const random = new SeededRandom(options.seed + 1);
  const cluster = new BenchCluster({}, { routing: ROUTE_LIMITS });
  const routeCluster = new RouteCluster(cluster, workload);
  const agents = new BenchAgents();
  let router: RunningRouter | undefined;
  // Everything is stopped after maxSeconds, whatever phase runs.
  const watchdog = setTimeout(() => {
    process.stderr.write(`route: the run exceeded --max-seconds ${options.maxSeconds}; stopping the cells\n`);
    cluster.destroySync();
    process.exit(1);
  }, options.maxSeconds * 1000);
  watchdog.unref();
  const report: RouteReport = {
    benchmark: 'route',
    routeP99Us: null,
    routeHttpP99Ms: null,
    inCellClosure: null,
    followMoveMs: null,
    outageDelivered: null,
    goals: {},
    decide: null,
    http: null,
    closure: null,
    move: null,
    outage: null,
    errors,
    parameters: options,
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', memoryGiB: round(totalmem() / 2 ** 30, 1) ?? 0, node: process.version },
    startedAt: startedAt.toISOString(),
    elapsedSeconds: 0,
  };
  const phase = async (name: string, run: () => Promise<void>): Promise<void> => {
    log(`${name}...`);
    try {
      await run();
    } catch (error) {
      errors.push(`${name}: ${errorText(error)}`);
      log(`  ${name} failed: ${errorText(error)}`);
    }
  };
  try {
    log(`starting ${options.cells} cells with ${options.merchants} merchants`);
    await routeCluster.start(options.cells);
    router = await joinRouter(cluster, routeCluster);
    log(`cluster formed; the router joined; connecting ${workload.merchants.length} agents`);
    await eachLimited(workload.merchants, 50, (merchant) => agents.open(cluster.secrets.tenantSecret, merchant, routeCluster.anyUrl(random)));
    await phase('decide', async () => {
      report.decide = decide(router!, workload, options.routeDecisions);
      report.routeP99Us = round(report.decide.us.p99, 2);
    });
    await phase('http', async () => {
      report.http = await routeOverHttp(routeCluster, options.routeHttpRequests);
      report.routeHttpP99Ms = round(report.http.ms.p99, 2);
    });
    await phase('closure', async () => {
      report.closure = await closurePhase(routeCluster, agents, options, random, log);
      report.inCellClosure = round(report.closure.messages.inCellRatio, 4);
    });
    await phase('move', async () => {
      report.move = await movePhase(routeCluster, agents, options, random);
      report.followMoveMs = report.move.notFollowed === 0 ? round(report.move.followMs.max, 0) : null;
      if (report.move.notFollowed > 0) errors.push(`move: ${report.move.notFollowed} of ${report.move.devices} devices were not on ${report.move.to} within ${FOLLOW_TIMEOUT_MS} ms`);
    });
    await phase('outage', async () => {
      report.outage = await outagePhase(routeCluster, agents, options, log);
      report.outageDelivered = report.outage.sent === 0 ? null : round(report.outage.deliveredOnceInOrder / report.outage.sent, 4);
    });
  } catch (error) {
    errors.push(`setup: ${errorText(error)}`);
  } finally {
    clearTimeout(watchdog);
    await agents.closeAll();
    await router?.stop().catch(() => undefined);
    await cluster.destroy();
  }
  report.goals = goalsOf(report);
  report.elapsedSeconds = round((performance.now() - startedMs) / 1000, 1) ?? 0;
  return report;
}

export function describeRoute(report: RouteReport): string {
  const verdict = (name: string): string => {
    const goal = report.goals[name];
    return goal === undefined || goal.met === null ? '' : goal.met ? ' (goal met)' : ' (goal NOT met)';
  };
  const lines = [
    `route benchmark: ${report.parameters.cells} cells, ${report.parameters.customers} customers, ${report.parameters.merchants} merchants (Zipf s=1), ${report.elapsedSeconds} s`,
    `  routeP99Us       ${report.routeP99Us ?? 'n/a'}${verdict('routeP99Us')}   (p50 ${report.decide?.us.p50 ?? 'n/a'} µs over ${report.decide?.decisions ?? 0} decisions)`,
    `  routeHttpP99Ms   ${report.routeHttpP99Ms ?? 'n/a'}   (p50 ${round(report.http?.ms.p50, 2) ?? 'n/a'} ms, ${report.http?.failed ?? 0} failed)`,
    `  inCellClosure    ${report.inCellClosure ?? 'n/a'}${verdict('inCellClosure')}   (messages: ${report.closure?.messages.inCell ?? 0} in cell, ${report.closure?.messages.relayed ?? 0} relayed, ${report.closure?.messages.copied ?? 0} copied; conversations in cell: ${round(report.closure?.conversations.inCellRatio, 4) ?? 'n/a'})`,
    `  followMoveMs     ${report.followMoveMs ?? 'n/a'}${verdict('followMoveMs')}   (${report.move?.devices ?? 0} devices, move took ${report.move?.moveMs ?? 'n/a'} ms)`,
    `  outageDelivered  ${report.outageDelivered ?? 'n/a'}${verdict('outageDelivered')}   (${report.outage?.deliveredOnceInOrder ?? 0} of ${report.outage?.sent ?? 0} once and in order, ${report.outage?.duplicates ?? 0} duplicates, ${report.outage?.queuedAtFallback ?? 0} queued at a fallback while the home was down)`,
  ];
  if (report.errors.length > 0) lines.push('errors:', ...report.errors.map((error) => `  ${error}`));
  return lines.join('\n');
}
