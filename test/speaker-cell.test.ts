/**
 * A cell on Redis in a mesh, of several processes (docs/operations.md, "A cell of several
 * processes"): one process at a time speaks for the cell, holding the speaker lease in its Redis,
 * and runs it; the others stand by, relaying every device and call to it, and one of them takes
 * the cell over when the speaker leaves or dies.
 */
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { connectNode, type CellmeshClient, type ChatMessage } from '../client/index.js';
import { ADMIN_TOKEN, Cleanup, RawClient, eventually, freePort, httpRequest, killChildCell, tokenFor, type ChildCell } from './harness.js';
import { redisServerMissing, startRedisServer, type RedisServer } from '../testing/redis-server.js';

const skipReason = redisServerMissing();
if (skipReason !== undefined) console.warn(`speaker-cell.test.ts: skipped: ${skipReason}`);

const LEASE = { leaseTtlMs: 1500, renewIntervalMs: 300 };
/** The failure detector of the test cluster: a dead cell is held dead within a few seconds. */
const TIMINGS = { suspectAfterMs: 1000 };

interface MeshProcessOptions {
  cellId: string;
  processId: string;
  url: string;
  directory: string;
  /** The cell's balancer, which its record names (mesh.advertise). */
  balancerPort: number;
  port?: number;
  merchants?: readonly string[];
  bootstrap?: readonly string[];
}

/** Starts one process of a cell on Redis in a mesh: the shared key file, the balancer's address. */
function startMeshProcess(cleanup: Cleanup, options: MeshProcessOptions): Promise<ChildCell> {
  const balancer = `127.0.0.1:${options.balancerPort}`;
  return cleanup.childCell({
    directory: options.directory,
    configDir: options.directory,
    cellId: options.cellId,
    ...(options.port === undefined ? {} : { port: options.port }),
    merchants: options.merchants ?? ['m1'],
    store: { kind: 'redis', redis: { url: options.url } },
    processes: { id: options.processId, ...LEASE },
    mesh: { bootstrap: options.bootstrap ?? [], timings: TIMINGS, keyFile: join(options.directory, `${options.cellId}.key`), advertise: { ws: `ws://${balancer}/v1/ws`, http: `http://${balancer}` } },
  });
}

interface CellView {
  self: string;
  incarnation: number;
  cells: Array<{ cellId: string; liveness: string; incarnation: number; endpoints: { p2p: string[] } }>;
}

async function viewOf(cell: ChildCell): Promise<CellView> {
  const answer = await httpRequest('GET', `${cell.httpUrl}/v1/admin/cluster`, { token: ADMIN_TOKEN });
  if (answer.status !== 200) throw new Error(`/v1/admin/cluster: HTTP ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body as CellView;
}

const speakerIn = async (redis: Redis, cellId: string): Promise<string | undefined> => (await redis.get(`cellmesh:${cellId}:speaker`))?.split(' ')[0];

describe.skipIf(skipReason !== undefined)(`a cell on Redis in a mesh${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`, () => {
  const cleanup = new Cleanup();
  let server: RedisServer;
  let redis: Redis;

  beforeAll(async () => {
    server = await startRedisServer();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    await cleanup.run();
    redis?.disconnect();
    await server?.stop();
  });

  test('refuses in one line, exit 2, a config without mesh.advertise: any process may speak for the cell, so its record names their balancer', async () => {
    const directory = await cleanup.tempDir();
    const refused = await cleanup
      .childCell({ directory, configDir: directory, cellId: 'cell-n', store: { kind: 'redis', redis: { url: server.url } }, mesh: { keyFile: join(directory, 'cell-n.key') } })
      .then(
        () => 'started',
        (error: Error) => error.message,
      );
    expect(refused).toMatch(/exited \(code 2, signal null\) before listening; stderr:\ncellmesh cell: invalid cell config: mesh\.advertise: a cell in a mesh on the redis store needs mesh\.advertise\.ws and \.http[^\n]*$/);
  });

  test('one process speaks for it; a second stands by, relaying devices and calls to it, and takes the cell over at once when the speaker leaves (SIGTERM)', async () => {
    const directory = await cleanup.tempDir();
    const standbyPort = await freePort();
    const first = await startMeshProcess(cleanup, { cellId: 'cell-s', processId: 's-1', url: server.url, directory, balancerPort: standbyPort });
    expect(await speakerIn(redis, 'cell-s')).toBe('s-1');
    const second = await startMeshProcess(cleanup, { cellId: 'cell-s', processId: 's-2', url: server.url, directory, balancerPort: standbyPort, port: standbyPort });
    await eventually(async () => (await httpRequest('GET', `${second.httpUrl}/v1/readyz`)).status === 200, 'the standby to be ready');
    expect((await httpRequest('GET', `${second.httpUrl}/v1/readyz`)).body).toEqual({ status: 'ready', role: 'standby' });
    expect(await speakerIn(redis, 'cell-s')).toBe('s-1');
    // A device and the HTTP API, through the standby, reach the cell the speaker runs.
    const conv = 'm1:alice';
    const agent = await RawClient.connect(second.url, await tokenFor({ user: 'ann', merchant: 'm1', device: 'desk' }));
    const aliceToken = await tokenFor({ user: 'alice', device: 'server' });
    expect(await httpRequest('POST', `${second.httpUrl}/v1/conversations/${conv}/messages`, { token: aliceToken, json: { cmid: 'h1', body: 'over HTTP' } })).toMatchObject({ status: 201, body: { seq: 1 } });
    await agent.until(() => agent.messages(conv).length === 1, { what: 'the message at the relayed agent' });
    expect((await viewOf(second)).self).toBe('cell-s');
    expect((await httpRequest('GET', `${second.httpUrl}/v1/nowhere`)).status).toBe(404);
    // SIGTERM of the speaker: it leaves, releases the lease, and the standby takes the cell over on its port.
    const leftAtMs = Date.now();
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    await agent.until(() => agent.closeCode !== undefined, { what: 'the relayed agent to be closed' });
    expect(agent.closeCode).toBe(1001);
    await eventually(async () => (await speakerIn(redis, 'cell-s')) === 's-2', 'the standby to take the speaker lease', 5_000);
    await eventually(async () => (await httpRequest('GET', `${second.httpUrl}/v1/readyz`).catch(() => ({ status: 0, body: {} }))).status === 200 && (await viewOf(second).catch(() => undefined))?.self === 'cell-s', 'the standby to run the cell');
    expect(Date.now() - leftAtMs).toBeLessThan(LEASE.leaseTtlMs + 3_000);
    expect((await httpRequest('GET', `${second.httpUrl}/v1/readyz`)).body).toEqual({ status: 'ready' });
    const metrics = await httpRequest('GET', `${second.httpUrl}/v1/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain('process_cpu_seconds_total');
    const again = await RawClient.connect(second.url, await tokenFor({ user: 'ann', merchant: 'm1', device: 'desk-2' }));
    expect(await httpRequest('POST', `${second.httpUrl}/v1/conversations/${conv}/messages`, { token: aliceToken, json: { cmid: 'h2', body: 'after the handover' } })).toMatchObject({ status: 201, body: { seq: 2 } });
    await again.until(() => again.messages(conv).length === 2, { what: 'both messages at the agent' });
    expect(again.messages(conv).map((message) => message.body)).toEqual(['over HTTP', 'after the handover']);
    await again.close();
  });

  test('a speaker paused past its lease (SIGSTOP) loses the cell to the standby, and exits 1 when it resumes; a standby stops with 0 on SIGTERM', async () => {
    const directory = await cleanup.tempDir();
    const standbyPort = await freePort();
    const paused = await startMeshProcess(cleanup, { cellId: 'cell-p', processId: 'p-1', url: server.url, directory, balancerPort: standbyPort });
    const second = await startMeshProcess(cleanup, { cellId: 'cell-p', processId: 'p-2', url: server.url, directory, balancerPort: standbyPort, port: standbyPort });
    const third = await startMeshProcess(cleanup, { cellId: 'cell-p', processId: 'p-3', url: server.url, directory, balancerPort: standbyPort });
    paused.kill('SIGSTOP');
    cleanup.add(() => paused.kill('SIGCONT'));
    await eventually(async () => ['p-2', 'p-3'].includes((await speakerIn(redis, 'cell-p')) ?? ''), 'a standby to take the speaker lease', 10_000);
    paused.kill('SIGCONT');
    expect(await paused.exited).toEqual({ code: 1, signal: null });
    expect(paused.stderrTail()).toContain('speaker lease lost');
    const standby = (await speakerIn(redis, 'cell-p')) === 'p-2' ? third : second;
    standby.kill('SIGTERM');
    expect(await standby.exited).toEqual({ code: 0, signal: null });
  });

  test('a two-cell cluster whose cell B is two processes: SIGKILL of B\'s speaker, its standby takes B over in the mesh, and every acknowledged cross-cell message is there in order on both sides', async () => {
    const directory = await cleanup.tempDir();
    const cellA = await cleanup.childCell({ directory: join(directory, 'cell-a'), configDir: directory, cellId: 'cell-a', merchants: ['ma'], mesh: { timings: TIMINGS } });
    const bootstrap = [(await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-a')!.endpoints.p2p[0]!];
    const standbyPort = await freePort();
    const speaker = await startMeshProcess(cleanup, { cellId: 'cell-b', processId: 'b-1', url: server.url, directory, balancerPort: standbyPort, merchants: ['mb'], bootstrap });
    const standby = await startMeshProcess(cleanup, { cellId: 'cell-b', processId: 'b-2', url: server.url, directory, balancerPort: standbyPort, port: standbyPort, merchants: ['mb'], bootstrap });
    await eventually(async () => (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-b')?.liveness === 'alive', 'cell A to see cell B alive', 20_000);
    const incarnationBefore = (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-b')!.incarnation;

    const clients: CellmeshClient[] = [];
    cleanup.add(async () => {
      for (const client of clients) await client.close().catch(() => undefined);
    });
    const conv = 'mb:alice';
    // The customer on cell A; the merchant's agent on cell B through its standby process.
    const alice = await connectNode({ url: `${cellA.url}/v1/ws`, token: await tokenFor({ user: 'alice', device: 'phone' }), backoff: { initialDelayMs: 50, maxDelayMs: 300 } });
    const ann = await connectNode({ url: `${standby.url}/v1/ws`, token: await tokenFor({ user: 'ann', role: 'agent', merchant: 'mb', device: 'desk' }), backoff: { initialDelayMs: 50, maxDelayMs: 300 } });
    clients.push(alice, ann);
    const aliceHeard: ChatMessage[] = [];
    const annHeard: ChatMessage[] = [];
    alice.on('message', (message) => aliceHeard.push(message));
    ann.on('message', (message) => annHeard.push(message));
    const before = await Promise.all(Array.from({ length: 5 }, (_, index) => alice.send(conv, `alice ${index + 1}`, { cmid: `a${index + 1}` })));
    expect(before.map((result) => result.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(await ann.send(conv, 'ann 1', { cmid: 'b1' })).toMatchObject({ seq: 6 });
    await eventually(() => aliceHeard.some((message) => message.cmid === 'b1'), "ann's answer to reach alice on cell A", 15_000);

    // SIGKILL of B's speaker: its lease runs out, the standby takes it and joins the mesh as B.
    await killChildCell(speaker);
    const during = Array.from({ length: 5 }, (_, index) => alice.send(conv, `alice ${index + 6}`, { cmid: `a${index + 6}` }));
    await eventually(async () => (await speakerIn(redis, 'cell-b')) === 'b-2', 'the standby to take the speaker lease', 10_000);
    await eventually(async () => {
      const seen = (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-b');
      return seen?.liveness === 'alive' && seen.incarnation > incarnationBefore;
    }, 'cell A to see cell B alive again, with a new incarnation', 30_000);
    expect((await viewOf(standby)).self).toBe('cell-b');
    const after = await Promise.all(during);
    expect(after.map((result) => result.seq)).toEqual([7, 8, 9, 10, 11]);
    // Ann's client was relayed by b-2, closed with 1001, and reconnected to b-2, which runs B now.
    await eventually(() => ann.session !== undefined && annHeard.filter((message) => message.cmid?.startsWith('a')).length === 10, 'ann to hold every message of alice', 20_000);
    expect(await ann.send(conv, 'ann 2', { cmid: 'b2' })).toMatchObject({ seq: 12 });
    await eventually(() => aliceHeard.some((message) => message.cmid === 'b2'), "ann's new answer to reach alice on cell A", 20_000);

    // Every message once, in order, on both sides.
    const expected = ['a1', 'a2', 'a3', 'a4', 'a5', 'b1', 'a6', 'a7', 'a8', 'a9', 'a10', 'b2'];
    const atHome = await ann.history(conv, { limit: 50 });
    expect(atHome.messages.map((message) => message.cmid)).toEqual(expected);
    expect(atHome.messages.map((message) => message.seq)).toEqual(expected.map((_, index) => index + 1));
    const atAccess = await alice.history(conv, { limit: 50 });
    expect(atAccess.messages.map((message) => message.cmid)).toEqual(expected);
    const heard = (messages: ChatMessage[]): number[] => messages.filter((message) => message.conv === conv).map((message) => message.seq);
    for (const seqs of [heard(aliceHeard), heard(annHeard)]) expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
  });
});
