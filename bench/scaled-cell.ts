/**
 * `npm run bench -- scaled-cell`: the same chat load on one cell process with LevelDB, on one
 * process with Redis, and on two processes of one cell sharing that Redis (half the customers
 * reach the process that does not own their merchant and are relayed), then the failover time
 * of a two-process cell: from the SIGKILL of one process to every device it served answered
 * again by the other (docs/operations.md, "A cell of several processes").
 */
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { connectNode, conversationIdOf, type CellmeshClient } from '../client/index.js';
import { mintToken } from '../cell/access/tokens.js';
import { startRedisServer, type RedisServer } from '../testing/redis-server.js';
import { TcpBalancer } from '../testing/tcp-balancer.js';
import { REPOSITORY_ROOT, freePort, startServer, type ServerProcess } from './servers.js';

export interface ScaledCellOptions {
  customers: number;
  merchants: number;
  /** Sends each customer keeps unanswered at once. */
  window: number;
  warmupSeconds: number;
  durationSeconds: number;
  /** Devices of the killed process in the failover phase. */
  failoverDevices: number;
}

export interface ScaledCellReport {
  cores: number;
  customers: number;
  merchants: number;
  levelMsgsPerSec: number;
  redisOneProcessMsgsPerSec: number;
  redisTwoProcessesMsgsPerSec: number;
  failoverMs: number;
  leaseTtlMs: number;
  renewIntervalMs: number;
}

const SECRET = 'bench-scaled-secret-0123456789abcdef-0123';
const LEASE = { leaseTtlMs: 1500, renewIntervalMs: 300 };

function progress(line: string): void {
  process.stderr.write(`scaled-cell: ${line}\n`);
}

/** One cell process of `cellId` on `store`. */
async function startProcess(directory: string, cellId: string, store: Record<string, unknown>, merchants: number, processId?: string): Promise<ServerProcess> {
  const port = await freePort();
  const config = {
    cell: { id: cellId },
    listen: { host: '127.0.0.1', port },
    store,
    ...(processId === undefined ? {} : { processes: { id: processId, ...LEASE } }),
    tenants: [{ id: 'mall', secret: SECRET, merchants: Array.from({ length: merchants }, (_, index) => ({ id: `m${index}` })) }],
    limits: { ratePerSecond: 100_000, rateBurst: 100_000, ackRatePerSecond: 100_000, ackBurst: 100_000 },
    log: { level: 'warn' },
  };
  const file = join(directory, `${cellId}-${processId ?? 'only'}.json`);
  await writeFile(file, JSON.stringify(config));
  return startServer({
    label: `${cellId} ${processId ?? ''}`.trim(),
    nodeArguments: [join(REPOSITORY_ROOT, 'bin', 'cellmesh.js'), 'cell', '--config', file],
    readiness: { kind: 'http', url: `http://127.0.0.1:${port}/v1/readyz`, port },
    readyTimeoutMs: 30_000,
  });
}

function token(user: string, device: string, merchant?: string): Promise<string> {
  return mintToken({ secret: SECRET, tenant: 'mall', user, role: merchant === undefined ? 'customer' : 'agent', ...(merchant === undefined ? {} : { merchant }), device, ttlSeconds: 3600, nowMs: Date.now() });
}

/** Opens a device's socket; `onFrame` is attached at once (the welcome may come with the upgrade's answer). */
function open(url: string, onFrame: (socket: WebSocket, frame: { t: string; conv?: string; seq?: number }) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, ['cellmesh.v1'], { perMessageDeflate: false });
    socket.on('message', (data) => onFrame(socket, JSON.parse(data.toString()) as { t: string; conv?: string; seq?: number }));
    socket.once('open', () => resolve(socket));
    socket.once('error', reject);
    socket.once('unexpected-response', (_request, response) => reject(new Error(`upgrade refused: ${response.statusCode}`)));
  });
}

/**
 * Agents (one per merchant) ack what they are pushed; each customer keeps `window` sends
 * unanswered. Answers (`sent`) inside the measured window count. Customer i talks to merchant
 * i mod merchants and connects to process i mod processes; agents likewise.
 */
async function measure(ports: readonly number[], options: ScaledCellOptions): Promise<number> {
  const sockets: WebSocket[] = [];
  try {
    for (let merchant = 0; merchant < options.merchants; merchant++) {
      const port = ports[merchant % ports.length]!;
      const agent = await open(`ws://127.0.0.1:${port}/v1/ws?token=${encodeURIComponent(await token(`agent${merchant}`, 'desk', `m${merchant}`))}`, (socket, frame) => {
        if (frame.t === 'msg') socket.send(JSON.stringify({ op: 'ack', conv: frame.conv, seq: frame.seq }));
      });
      sockets.push(agent);
    }
    let counting = false;
    let answered = 0;
    let stopped = false;
    for (let index = 0; index < options.customers; index++) {
      const merchant = `m${index % options.merchants}`;
      const port = ports[Math.floor(index / options.merchants) % ports.length]!;
      const conv = conversationIdOf(merchant, `c${index}`);
      let next = 0;
      const send = (socket: WebSocket): void => {
        if (stopped || socket.readyState !== WebSocket.OPEN) return;
        next++;
        socket.send(JSON.stringify({ op: 'send', id: `s${next}`, conv, cmid: `c${index}-${next}`, body: `message ${next} of customer ${index}` }));
      };
      const customer = await open(`ws://127.0.0.1:${port}/v1/ws?merchant=${merchant}&token=${encodeURIComponent(await token(`c${index}`, 'phone'))}`, (socket, frame) => {
        if (frame.t === 'welcome') for (let slot = 0; slot < options.window; slot++) send(socket);
        if (frame.t !== 'sent') return;
        if (counting) answered++;
        send(socket);
      });
      sockets.push(customer);
    }
    await sleep(options.warmupSeconds * 1000);
    counting = true;
    const startedMs = performance.now();
    await sleep(options.durationSeconds * 1000);
    counting = false;
    stopped = true;
    return Math.round(answered / ((performance.now() - startedMs) / 1000));
  } finally {
    for (const socket of sockets) socket.terminate();
  }
}

/** SIGKILL of the process every device reached first; resolves with the ms until each device's next send was answered. */
async function failover(victim: ServerProcess, survivor: ServerProcess, options: ScaledCellOptions): Promise<number> {
  const balancer = new TcpBalancer([victim.port, survivor.port]);
  await balancer.listen();
  const clients: CellmeshClient[] = [];
  try {
    for (let index = 0; index < options.failoverDevices; index++) {
      const merchant = `m${index % options.merchants}`;
      const client = await connectNode({
        url: `ws://127.0.0.1:${balancer.port}/v1/ws?merchant=${merchant}`,
        token: await token(`f${index}`, 'phone'),
        backoff: { initialDelayMs: 50, maxDelayMs: 300 },
        signal: AbortSignal.timeout(15_000),
      });
      clients.push(client);
      await client.send(conversationIdOf(merchant, `f${index}`), 'before');
    }
    process.kill(victim.pid, 'SIGKILL');
    const killedMs = performance.now();
    await Promise.all(clients.map((client, index) => client.send(conversationIdOf(`m${index % options.merchants}`, `f${index}`), 'after')));
    return Math.round(performance.now() - killedMs);
  } finally {
    for (const client of clients) await client.close().catch(() => undefined);
    await balancer.close();
  }
}

export async function runScaledCell(options: ScaledCellOptions): Promise<ScaledCellReport> {
  const directory = await mkdtemp(join(tmpdir(), 'cellmesh-bench-scaled-'));
  let redis: RedisServer | undefined;
  const processes: ServerProcess[] = [];
  const stopAll = async (): Promise<void> => {
    for (const server of processes.splice(0)) await server.stop();
  };
  try {
    progress('level: one process');
    processes.push(await startProcess(directory, 'bench-level', { kind: 'level', directory: join(directory, 'level'), sync: true }, options.merchants));
    const levelMsgsPerSec = await measure([processes[0]!.port], options);
    await stopAll();
    redis = await startRedisServer();
    const store = { kind: 'redis', redis: { url: redis.url } };
    progress('redis: one process');
    processes.push(await startProcess(directory, 'bench-one', store, options.merchants, 'one'));
    const redisOneProcessMsgsPerSec = await measure([processes[0]!.port], options);
    await stopAll();
    progress('redis: two processes');
    processes.push(await startProcess(directory, 'bench-two', store, options.merchants, 'first'));
    processes.push(await startProcess(directory, 'bench-two', store, options.merchants, 'second'));
    // The second process gets its share after one lease period.
    await sleep(LEASE.leaseTtlMs + 4 * LEASE.renewIntervalMs);
    const redisTwoProcessesMsgsPerSec = await measure(processes.map((server) => server.port), options);
    progress('redis: failover');
    const failoverMs = await failover(processes[0]!, processes[1]!, options);
    return {
      cores: availableParallelism(),
      customers: options.customers,
      merchants: options.merchants,
      levelMsgsPerSec,
      redisOneProcessMsgsPerSec,
      redisTwoProcessesMsgsPerSec,
      failoverMs,
      ...LEASE,
    };
  } finally {
    await stopAll();
    await redis?.stop();
    await rm(directory, { recursive: true, force: true });
  }
}

export function describeScaledCell(report: ScaledCellReport): string {
  return [
    `scaled-cell on ${report.cores} cores: ${report.customers} customers, ${report.merchants} merchants`,
    `  level, one process:   ${report.levelMsgsPerSec} msgs/s`,
    `  redis, one process:   ${report.redisOneProcessMsgsPerSec} msgs/s`,
    `  redis, two processes: ${report.redisTwoProcessesMsgsPerSec} msgs/s (half the customers relayed)`,
    `  failover: ${report.failoverMs} ms from SIGKILL to every device answered again (lease ${report.leaseTtlMs} ms, rounds of ${report.renewIntervalMs} ms)`,
  ].join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
