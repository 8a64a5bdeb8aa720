/**
 * A cell on Redis in a mesh, of several processes (docs/operations.md, "In a mesh: owners spread,
 * one speaker"): every process owns its share of the merchants, one process at a time speaks for
 * the cell in the mesh (the speaker lease), and another takes the mesh over, without restarting
 * its core, when the speaker leaves or dies.
 */
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, test } from 'vitest';
import { connectNode, type CellmeshClient, type ChatMessage } from '../client/index.js';
import { ADMIN_TOKEN, Cleanup, RawClient, eventually, freePort, httpRequest, killChildCell, tokenFor, type ChildCell } from './harness.js';
import { redisServerMissing } from '../testing/redis-server.js';
import { useRedisServer } from './redis-suite.js';

const skipReason = redisServerMissing();
if (skipReason !== undefined) console.warn(`speaker-cell.test.ts: skipped: ${skipReason}`);

const LEASE = { leaseTtlMs: 1500, renewIntervalMs: 300 };
/** The failure detector of the test cluster: a dead cell is held dead within a few seconds. */
const TIMINGS = { suspectAfterMs: 1000 };
const SHOP_SECRET = 'shop-secret-0123456789abcdef-0123456789';
const SHOP_SECRET_2 = 'shop-secret-2-0123456789abcdef-01234567';

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
  const server = useRedisServer(() => cleanup.run());
  let redis: Redis;
  beforeAll(() => {
    redis = server.client();
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

  test('every process owns a share of the merchants and one speaks; on SIGTERM of the speaker the other takes the speaker lease and the mesh without restarting its core', async () => {
    const directory = await cleanup.tempDir();
    const balancerPort = await freePort();
    const merchants = ['m1', 'm2', 'm3', 'm4'];
    const first = await startMeshProcess(cleanup, { cellId: 'cell-s', processId: 's-1', url: server.url, directory, balancerPort, merchants });
    // It bids for the speaker lease once it serves: a round after it listens, at most.
    await eventually(async () => (await speakerIn(redis, 'cell-s')) === 's-1', 'the first process to speak');
    const second = await startMeshProcess(cleanup, { cellId: 'cell-s', processId: 's-2', url: server.url, directory, balancerPort, port: balancerPort, merchants });
    await eventually(async () => (await httpRequest('GET', `${second.httpUrl}/v1/readyz`)).status === 200, 'the second process to be ready');
    const owners = await spreadOver(redis, 'cell-s', ['s-1', 's-2']);
    const ownedBySecond = merchants.find((merchant) => owners.get(merchant) === 's-2')!;
    const ownedByFirst = merchants.find((merchant) => owners.get(merchant) === 's-1')!;
    // The mesh's own API is the speaker's: the other process sends such calls on to it.
    expect((await viewOf(first)).self).toBe('cell-s');
    expect((await viewOf(second)).self).toBe('cell-s');
    expect(await httpRequest('GET', `${second.httpUrl}/v1/admin/drain`, { token: ADMIN_TOKEN })).toMatchObject({ status: 200 });
    const agent = await RawClient.connect(second.url, await tokenFor({ user: 'ann', merchant: ownedBySecond, device: 'desk' }));
    const aliceToken = await tokenFor({ user: 'alice', device: 'server' });
    for (const merchant of [ownedBySecond, ownedByFirst]) {
      expect(await httpRequest('POST', `${second.httpUrl}/v1/conversations/${merchant}:alice/messages`, { token: aliceToken, json: { cmid: `h-${merchant}`, body: 'over HTTP' } })).toMatchObject({ status: 201, body: { seq: 1 } });
    }
    await agent.until(() => agent.messages(`${ownedBySecond}:alice`).length === 1, { what: 'the message at the agent' });
    // SIGTERM of the speaker: it leaves the mesh, releases its leases, and the second process speaks.
    const leftAtMs = Date.now();
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    await eventually(async () => (await speakerIn(redis, 'cell-s')) === 's-2', 'the second process to take the speaker lease', 5_000);
    const speakerTakenMs = Date.now() - leftAtMs;
    await eventually(async () => (await viewOf(second).catch(() => undefined))?.self === 'cell-s', 'the second process to run the mesh');
    console.log(JSON.stringify({ afterSigterm: { speakerTakenMs, meshRunningMs: Date.now() - leftAtMs } }));
    expect(Date.now() - leftAtMs).toBeLessThan(LEASE.leaseTtlMs + 3_000);
    // Its core went on: the agent of its own merchant was never disconnected.
    expect(agent.closeCode).toBeUndefined();
    expect(await httpRequest('POST', `${second.httpUrl}/v1/conversations/${ownedBySecond}:alice/messages`, { token: aliceToken, json: { cmid: 'h2', body: 'after the handover' } })).toMatchObject({ status: 201, body: { seq: 2 } });
    await agent.until(() => agent.messages(`${ownedBySecond}:alice`).length === 2, { what: 'both messages at the agent' });
    // The first one's merchants are claimed at the second's next round: until then a call is refused for a retry (OWNER_UNAVAILABLE), as the SDK does.
    const claimed = (): ReturnType<typeof httpRequest> => httpRequest('POST', `${second.httpUrl}/v1/conversations/${ownedByFirst}:alice/messages`, { token: aliceToken, json: { cmid: 'h3', body: 'the first one is claimed' } });
    let answer = await claimed();
    await eventually(async () => (answer = await claimed()).status !== 503, "the first one's merchant to be claimed");
    expect(answer).toMatchObject({ body: { seq: 2 } });
    const metrics = await httpRequest('GET', `${second.httpUrl}/v1/metrics`);
    expect(metrics.text).toContain('process_cpu_seconds_total');
    await agent.close();
  });

  test("the internal channel between the processes refuses a call without the cell's secret, and one whose process does not hold its lease with the token it names", async () => {
    const directory = await cleanup.tempDir();
    const only = await startMeshProcess(cleanup, { cellId: 'cell-i', processId: 'i-1', url: server.url, directory, balancerPort: await freePort() });
    // It joins the mesh right after it listens: the speaker's side of the channel answers from then on.
    await eventually(async () => (await viewOf(only).catch(() => undefined))?.self === 'cell-i', 'the process to run the mesh');
    const secret = (await redis.get('cellmesh:cell-i:internal-secret'))!;
    const token = Number(await redis.get('cellmesh:cell-i:proc/i-1'));
    expect(secret.length).toBeGreaterThanOrEqual(32);
    const locate = (headers: Record<string, string>): ReturnType<typeof httpRequest> => httpRequest('POST', `${only.httpUrl}/v1/internal/speaker/locate`, { headers, json: { tenant: 'mall', user: 'alice' } });
    expect(await locate({ 'x-cellmesh-process': `i-1 ${token}` })).toMatchObject({ status: 401, body: { error: { code: 'UNAUTHENTICATED' } } });
    expect(await locate({ 'x-cellmesh-cell-secret': `${secret}x`, 'x-cellmesh-process': `i-1 ${token}` })).toMatchObject({ status: 401 });
    // A stale token of the same process (an earlier lease), or a process the cell does not have.
    expect(await locate({ 'x-cellmesh-cell-secret': secret, 'x-cellmesh-process': `i-1 ${token - 1}` })).toMatchObject({ status: 409, body: { error: { code: 'PROCESS_FENCED' } } });
    expect(await locate({ 'x-cellmesh-cell-secret': secret, 'x-cellmesh-process': `ghost ${token}` })).toMatchObject({ status: 409, body: { error: { code: 'PROCESS_FENCED' } } });
    expect(await locate({ 'x-cellmesh-cell-secret': secret, 'x-cellmesh-process': `i-1 ${token}` })).toMatchObject({ status: 200, body: { cells: [] } });
  });

  test('a speaker paused past its lease (SIGSTOP) loses the speaker lease to another process, and exits 1 when it resumes; a process that does not speak stops with 0 on SIGTERM', async () => {
    const directory = await cleanup.tempDir();
    const balancerPort = await freePort();
    const paused = await startMeshProcess(cleanup, { cellId: 'cell-p', processId: 'p-1', url: server.url, directory, balancerPort });
    await eventually(async () => (await speakerIn(redis, 'cell-p')) === 'p-1', 'the first process to speak');
    const second = await startMeshProcess(cleanup, { cellId: 'cell-p', processId: 'p-2', url: server.url, directory, balancerPort, port: balancerPort });
    const third = await startMeshProcess(cleanup, { cellId: 'cell-p', processId: 'p-3', url: server.url, directory, balancerPort });
    paused.kill('SIGSTOP');
    cleanup.add(() => paused.kill('SIGCONT'));
    await eventually(async () => ['p-2', 'p-3'].includes((await speakerIn(redis, 'cell-p')) ?? ''), 'another process to take the speaker lease', 10_000);
    paused.kill('SIGCONT');
    expect(await paused.exited).toEqual({ code: 1, signal: null });
    expect(paused.stderrTail()).toContain('speaker lease lost');
    const silent = (await speakerIn(redis, 'cell-p')) === 'p-2' ? third : second;
    silent.kill('SIGTERM');
    expect(await silent.exited).toEqual({ code: 0, signal: null });
  });

  test("a two-cell cluster whose cell B is two processes with the owners spread: cross-cell chat both ways; SIGKILL of B's owner that does not speak, then of its speaker, under traffic: nothing acknowledged lost, no seq gap", async () => {
    const directory = await cleanup.tempDir();
    const cellA = await cleanup.childCell({ directory: join(directory, 'cell-a'), configDir: directory, cellId: 'cell-a', merchants: ['ma'], mesh: { timings: TIMINGS } });
    const bootstrap = [(await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-a')!.endpoints.p2p[0]!];
    const balancerPort = await freePort();
    const merchantsOfB = ['mb1', 'mb2', 'mb3', 'mb4'];
    const processOfB = (processId: string, port?: number): Promise<ChildCell> =>
      startMeshProcess(cleanup, { cellId: 'cell-b', processId, url: server.url, directory, balancerPort, merchants: merchantsOfB, bootstrap, ...(port === undefined ? {} : { port }) });
    const b1 = await processOfB('b-1');
    await eventually(async () => (await speakerIn(redis, 'cell-b')) === 'b-1', 'b-1 to speak');
    const b2 = await processOfB('b-2', balancerPort);
    expect(await speakerIn(redis, 'cell-b')).toBe('b-1');
    await eventually(async () => (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-b')?.liveness === 'alive', 'cell A to see cell B alive', 20_000);
    const owners = await spreadOver(redis, 'cell-b', ['b-1', 'b-2']);
    const atB2 = merchantsOfB.find((merchant) => owners.get(merchant) === 'b-2')!;
    const atB1 = merchantsOfB.find((merchant) => owners.get(merchant) === 'b-1')!;

    const clients: CellmeshClient[] = [];
    cleanup.add(async () => {
      for (const client of clients) await client.close().catch(() => undefined);
    });
    const backoff = { initialDelayMs: 50, maxDelayMs: 300 };
    const heard = new Map<string, ChatMessage[]>();
    const connect = async (url: string, token: string): Promise<CellmeshClient> => {
      const client = await connectNode({ url, token, backoff });
      clients.push(client);
      const mine: ChatMessage[] = [];
      heard.set(token, mine);
      client.on('message', (message) => mine.push(message));
      return client;
    };
    // Alice, a customer on A, with B's merchants (one owned by each process of B); Bob, a customer
    // on B (not routed for a merchant: relayed to the speaker, which holds his mirror), with A's merchant.
    const aliceToken = await tokenFor({ user: 'alice', device: 'phone' });
    const alice = await connect(`${cellA.url}/v1/ws`, aliceToken);
    const agentOf = async (merchant: string, url: string): Promise<CellmeshClient> => connect(`${url}/v1/ws`, await tokenFor({ user: `agent-${merchant}`, role: 'agent', merchant, device: 'desk' }));
    const annAtB2 = await agentOf(atB2, b2.url);
    // Connected at b-2, whose merchant it is not: relayed to b-1.
    const annAtB1 = await agentOf(atB1, b2.url);
    const bobToken = await tokenFor({ user: 'bob', device: 'phone' });
    const bob = await connect(`${b2.url}/v1/ws`, bobToken);
    const amy = await agentOf('ma', cellA.url);
    const convs = { b2: `${atB2}:alice`, b1: `${atB1}:alice`, a: 'ma:bob' };
    const sent = new Map<string, string[]>(Object.values(convs).map((conv) => [conv, []]));
    let counter = 0;
    const send = async (client: CellmeshClient, conv: string): Promise<number> => {
      const cmid = `c${++counter}`;
      const result = await client.send(conv, `body ${cmid}`, { cmid });
      sent.get(conv)!.push(cmid);
      return result.seq;
    };
    const roundOfTraffic = (): Array<Promise<number>> => [send(alice, convs.b2), send(alice, convs.b1), send(bob, convs.a)];
    for (let index = 0; index < 3; index++) await Promise.all(roundOfTraffic());
    await send(annAtB2, convs.b2);
    await send(annAtB1, convs.b1);
    await send(amy, convs.a);
    await eventually(() => (heard.get(aliceToken) ?? []).filter((message) => message.conv === convs.b2 || message.conv === convs.b1).length >= 8, 'the agents of B to reach alice on A', 15_000);
    await eventually(() => (heard.get(bobToken) ?? []).filter((message) => message.conv === convs.a).length >= 4, "A's agent to reach bob on B", 15_000);

    // SIGKILL of b-2, an owner that does not speak, under traffic: b-1 claims its merchants once its lease ran out.
    let killedAtMs = Date.now();
    await killChildCell(b2);
    const duringOwnerKill = [0, 1, 2].map(() => send(alice, convs.b2));
    await eventually(async () => (await ownersIn(redis, 'cell-b')).get(atB2) === 'b-1', "b-1 to own b-2's merchants", 10_000);
    const ownerClaimedMs = Date.now() - killedAtMs;
    await Promise.all(duringOwnerKill);

    // A new process joins (where b-2 listened: bob's device reconnects there) and takes its share.
    const b3 = await processOfB('b-3', balancerPort);
    await spreadOver(redis, 'cell-b', ['b-1', 'b-3']);
    const incarnationBefore = (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-b')!.incarnation;

    // SIGKILL of the speaker under traffic: b-3 takes the speaker lease and the mesh, as B with a new incarnation.
    killedAtMs = Date.now();
    await killChildCell(b1);
    const duringSpeakerKill = [0, 1, 2].flatMap(() => roundOfTraffic());
    await eventually(async () => (await speakerIn(redis, 'cell-b')) === 'b-3', 'b-3 to take the speaker lease', 10_000);
    const speakerTakenMs = Date.now() - killedAtMs;
    await eventually(async () => {
      const seen = (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-b');
      return seen?.liveness === 'alive' && seen.incarnation > incarnationBefore;
    }, 'cell A to see cell B alive again, with a new incarnation', 30_000);
    const aliveAgainMs = Date.now() - killedAtMs;
    expect((await viewOf(b3)).self).toBe('cell-b');
    await Promise.all(duringSpeakerKill);
    const settledMs = Date.now() - killedAtMs;
    console.log(JSON.stringify({ ownerClaimedMs, speakerTakenMs, aliveAgainMs, settledMs }));

    // Every acknowledged message once, in order, without a gap, at the home and at the mirror.
    const reader = { [convs.b2]: annAtB2, [convs.b1]: annAtB1, [convs.a]: amy };
    const mirror = { [convs.b2]: alice, [convs.b1]: alice, [convs.a]: bob };
    for (const conv of Object.values(convs)) {
      const expected = sent.get(conv)!;
      for (const client of [reader[conv]!, mirror[conv]!]) {
        await eventually(async () => (await client.history(conv, { limit: 100 }).catch(() => ({ messages: [] as ChatMessage[] }))).messages.length === expected.length, `the whole of ${conv}`, 20_000);
        const history = await client.history(conv, { limit: 100 });
        expect(history.messages.map((message) => message.seq)).toEqual(expected.map((_, index) => index + 1));
        expect(new Set(history.messages.map((message) => message.cmid))).toEqual(new Set(expected));
      }
    }
    for (const messages of heard.values()) {
      for (const conv of Object.values(convs)) {
        const seqs = messages.filter((message) => message.conv === conv).map((message) => message.seq);
        expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
      }
    }
  }, 120_000);

  test("a two-cell cluster whose cell B is two processes: a merchant created, changed and removed through B's process that does not speak is claimed, served and withdrawn in the mesh; a customer erased through it, or asked by cell A, is erased in both processes of B", async () => {
    const directory = await cleanup.tempDir();
    const cellA = await cleanup.childCell({ directory: join(directory, 'cell-a'), configDir: directory, cellId: 'cell-ca', merchants: ['ma'], mesh: { timings: TIMINGS } });
    const bootstrap = [(await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-ca')!.endpoints.p2p[0]!];
    const balancerPort = await freePort();
    const merchants = ['mb1', 'mb2', 'mb3', 'mb4'];
    const first = await startMeshProcess(cleanup, { cellId: 'cell-cb', processId: 'cb-1', url: server.url, directory, balancerPort, merchants, bootstrap });
    const second = await startMeshProcess(cleanup, { cellId: 'cell-cb', processId: 'cb-2', url: server.url, directory, balancerPort, port: balancerPort, merchants, bootstrap });
    // b1 speaks, b2 does not (whichever process took the speaker lease first).
    await eventually(async () => (await speakerIn(redis, 'cell-cb')) !== undefined, 'a process of B to speak');
    const speakerId = (await speakerIn(redis, 'cell-cb'))!;
    const [b1, b2] = speakerId === 'cb-1' ? [first, second] : [second, first];
    const claimsAtA = async (): Promise<Array<{ tenant: string; merchant: string }>> => ((await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-cb') as { merchants?: Array<{ tenant: string; merchant: string }> } | undefined)?.merchants ?? [];
    await eventually(async () => (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-cb')?.liveness === 'alive', 'cell A to see cell B alive', 20_000);
    const owners = await spreadOver(redis, 'cell-cb', ['cb-1', 'cb-2']);
    const admin = { token: ADMIN_TOKEN };
    const shop = (options: { user: string; merchant?: string; device: string; role?: 'agent'; secret?: string; kid?: string }): Promise<string> => tokenFor({ tenant: 'shop', secret: SHOP_SECRET, ...options });
    /** A send over HTTP, retried while the merchant is being claimed or changes owner (as a client retries). */
    const post = async (http: string, token: string, conv: string, cmid: string): Promise<{ status: number; body: unknown }> => {
      let answer = await httpRequest('POST', `${http}/v1/conversations/${encodeURIComponent(conv)}/messages`, { token, json: { cmid, body: `body ${cmid}` } });
      if (answer.status >= 500) await eventually(async () => (answer = await httpRequest('POST', `${http}/v1/conversations/${encodeURIComponent(conv)}/messages`, { token, json: { cmid, body: `body ${cmid}` } })).status < 500, `${cmid} sent through ${http}`, 10_000);
      return answer;
    };
    const historyOf = async (http: string, token: string, conv: string): Promise<Array<[number, string]>> => {
      const page = await httpRequest('GET', `${http}/v1/conversations/${encodeURIComponent(conv)}/messages?limit=50`, { token });
      expect(page.status, JSON.stringify(page.body)).toBe(200);
      return (page.body as { messages: ChatMessage[] }).messages.map((message) => [message.seq, message.cmid]);
    };

    // Tenant shop in both cells (each cell has its own catalogue); its merchant created through B's process that does not speak.
    for (const http of [cellA.httpUrl, b2.httpUrl]) expect(await httpRequest('POST', `${http}/v1/admin/tenants`, { ...admin, json: { id: 'shop', secret: SHOP_SECRET } })).toMatchObject({ status: 201 });
    const created = await httpRequest('POST', `${b2.httpUrl}/v1/admin/tenants/shop/merchants`, { ...admin, json: { id: 'mnew', name: 'New shop' } });
    expect(created, JSON.stringify(created.body)).toMatchObject({ status: 201 });
    await eventually(async () => (await claimsAtA()).some((claim) => claim.tenant === 'shop' && claim.merchant === 'mnew'), 'cell A to see B claim the new merchant', 15_000);
    await eventually(async () => ['cb-1', 'cb-2'].includes((await ownersIn(redis, 'cell-cb', 'shop')).get('mnew') ?? ''), 'a process of B to own the new merchant', 10_000);

    // Its agent, registered and logged in through the process that does not speak, hears a customer of each process of B and one of cell A.
    expect(await httpRequest('POST', `${b2.httpUrl}/v1/admin/tenants/shop/merchants/mnew/agents`, { ...admin, json: { id: 'zoe' } })).toMatchObject({ status: 201 });
    expect(await httpRequest('PUT', `${b2.httpUrl}/v1/admin/tenants/shop/merchants/mnew/agents/zoe/password`, { ...admin, json: { password: 'zoe-password-123' } })).toMatchObject({ status: 200 });
    const login = await httpRequest('POST', `${b2.httpUrl}/v1/login`, { json: { tenant: 'shop', merchant: 'mnew', agent: 'zoe', password: 'zoe-password-123', device: 'desk' } });
    expect(login, JSON.stringify(login.body)).toMatchObject({ status: 200 });
    const zoe = await RawClient.connect(b2.url, (login.body as { token: string }).token);
    cleanup.add(() => zoe.close());
    const customers = [
      { http: b1.httpUrl, user: 'carl' },
      { http: b2.httpUrl, user: 'cleo' },
      { http: cellA.httpUrl, user: 'cora' },
    ];
    for (const { http, user } of customers) {
      expect((await post(http, await shop({ user, device: 'server' }), `mnew:${user}`, `${user}-1`)).status, `${user} through ${http}`).toBeLessThan(300);
    }
    await zoe.until(() => customers.every(({ user }) => zoe.messages(`mnew:${user}`).some((message) => message.cmid === `${user}-1`)), { what: 'every customer at the agent', timeoutMs: 15_000 });

    // The tenant changed through the process that does not speak: the new secret is taken by the speaker too.
    expect(await httpRequest('PATCH', `${b2.httpUrl}/v1/admin/tenants/shop`, { ...admin, json: { addSecret: { kid: 'k2', secret: SHOP_SECRET_2 } } })).toMatchObject({ status: 200 });
    const viaK2 = await shop({ user: 'dina', device: 'server', secret: SHOP_SECRET_2, kid: 'k2' });
    await eventually(async () => (await httpRequest('POST', `${b1.httpUrl}/v1/conversations/mnew:dina/messages`, { token: viaK2, json: { cmid: 'k2', body: 'new secret' } })).status === 201, 'the new secret taken by the speaker', 10_000);

    // Removed through the process that does not speak: its agent is closed (4403), and its claim withdrawn in the mesh.
    const removed = await httpRequest('DELETE', `${b2.httpUrl}/v1/admin/tenants/shop/merchants/mnew`, admin);
    expect(removed, JSON.stringify(removed.body)).toMatchObject({ status: 200 });
    await zoe.until(() => zoe.closeCode !== undefined, { what: 'the agent of the removed merchant to be closed' });
    expect(zoe.closeCode).toBe(4403);
    await eventually(async () => !(await claimsAtA()).some((claim) => claim.merchant === 'mnew'), "the removed merchant's claim withdrawn at A", 15_000);
    await eventually(async () => !(await ownersIn(redis, 'cell-cb', 'shop')).has('mnew'), "the removed merchant's owner record to go", 5_000);

    // A customer of B with conversations at both owners of B and with A's merchant, erased through B's process that does not speak.
    const atB1 = merchants.find((merchant) => owners.get(merchant) === 'cb-1')!;
    const atB2 = merchants.find((merchant) => owners.get(merchant) === 'cb-2')!;
    expect(await speakerIn(redis, 'cell-cb'), 'the speaker all along').toBe(speakerId);
    const erin = await tokenFor({ user: 'erin', device: 'server' });
    for (const merchant of [atB1, atB2, 'ma']) for (const index of [1, 2]) expect((await post(b2.httpUrl, erin, `${merchant}:erin`, `${merchant}-${index}`)).status).toBeLessThan(300);
    await eventually(async () => (await historyOf(cellA.httpUrl, erin, 'ma:erin')).length === 2, "erin's conversation with A's merchant at A", 15_000);
    const erased = await httpRequest('DELETE', `${b2.httpUrl}/v1/admin/tenants/mall/customers/erin`, admin);
    expect(erased, JSON.stringify(erased.body)).toMatchObject({ status: 200, body: { cellsAsked: ['cell-ca'], cellsFailed: [] } });
    expect((erased.body as { deleted: { conversations: number } }).deleted.conversations).toBeGreaterThanOrEqual(2);
    for (const merchant of [atB1, atB2]) for (const process of [b1, b2]) expect(await historyOf(process.httpUrl, erin, `${merchant}:erin`), `${merchant}:erin through ${process.httpUrl}`).toEqual([]);
    await eventually(async () => (await historyOf(cellA.httpUrl, erin, 'ma:erin')).length === 0, 'cell A to erase it too', 15_000);

    // A customer of A with conversations at both owners of B, erased at A: B's speaker applies it in every process, in memory too.
    const fay = await tokenFor({ user: 'fay', device: 'server' });
    for (const merchant of [atB1, atB2]) for (const index of [1, 2]) expect((await post(cellA.httpUrl, fay, `${merchant}:fay`, `${merchant}-${index}`)).status).toBeLessThan(300);
    for (const merchant of [atB1, atB2]) await eventually(async () => (await historyOf(b2.httpUrl, fay, `${merchant}:fay`)).length === 2, `${merchant}:fay at B`, 15_000);
    const erasedAtA = await httpRequest('DELETE', `${cellA.httpUrl}/v1/admin/tenants/mall/customers/fay`, admin);
    expect(erasedAtA, JSON.stringify(erasedAtA.body)).toMatchObject({ status: 200, body: { cellsAsked: ['cell-cb'] } });
    for (const merchant of [atB1, atB2]) {
      await eventually(async () => (await historyOf(b1.httpUrl, fay, `${merchant}:fay`)).length === 0, `${merchant}:fay erased at B`, 15_000);
      expect(await historyOf(b2.httpUrl, fay, `${merchant}:fay`)).toEqual([]);
      // Its owner forgot the conversation in memory too: it starts again at seq 1.
      expect(await post(b2.httpUrl, fay, `${merchant}:fay`, `${merchant}-after`), `${merchant}:fay after the erasure`).toMatchObject({ status: 201, body: { seq: 1 } });
    }
  }, 120_000);

  test('moves a merchant owned by the process that does not speak out of the cell and back: the speaker takes it over first, and after the move back it is owned and spread again', async () => {
    const directory = await cleanup.tempDir();
    const cellA = await cleanup.childCell({ directory: join(directory, 'cell-a'), configDir: directory, cellId: 'cell-ma', merchants: ['ma'], mesh: { timings: TIMINGS } });
    const bootstrap = [(await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-ma')!.endpoints.p2p[0]!];
    const balancerPort = await freePort();
    const merchants = ['mb1', 'mb2', 'mb3', 'mb4'];
    const b1 = await startMeshProcess(cleanup, { cellId: 'cell-mb', processId: 'mb-1', url: server.url, directory, balancerPort, merchants, bootstrap });
    await eventually(async () => (await speakerIn(redis, 'cell-mb')) === 'mb-1', 'mb-1 to speak');
    const b2 = await startMeshProcess(cleanup, { cellId: 'cell-mb', processId: 'mb-2', url: server.url, directory, balancerPort, port: balancerPort, merchants, bootstrap });
    await eventually(async () => (await viewOf(cellA)).cells.find((cell) => cell.cellId === 'cell-mb')?.liveness === 'alive', 'cell A to see cell B alive', 20_000);
    const spread = await spreadOver(redis, 'cell-mb', ['mb-1', 'mb-2']).catch((error: Error) => {
      throw new Error(`${error.message}\n--- mb-1:\n${b1.stderrTail()}\n--- mb-2:\n${b2.stderrTail()}`);
    });
    const moving = [...spread.entries()].find(([, owner]) => owner === 'mb-2')![0];
    const conv = `${moving}:alice`;
    const aliceToken = await tokenFor({ user: 'alice', device: 'server' });
    expect(await httpRequest('POST', `${b2.httpUrl}/v1/conversations/${conv}/messages`, { token: aliceToken, json: { cmid: 'before', body: 'before the move' } })).toMatchObject({ status: 201, body: { seq: 1 } });

    const out = await httpRequest('POST', `${b1.httpUrl}/v1/admin/merchants/move`, { token: ADMIN_TOKEN, json: { tenant: 'mall', merchant: moving, to: 'cell-ma' } });
    expect(out).toMatchObject({ status: 200, body: { from: 'cell-mb', to: 'cell-ma' } });
    await eventually(async () => !(await ownersIn(redis, 'cell-mb')).has(moving), 'the owner record of the merchant to go', 5_000);
    expect(await httpRequest('POST', `${cellA.httpUrl}/v1/conversations/${conv}/messages`, { token: aliceToken, json: { cmid: 'at-a', body: 'at its new home' } })).toMatchObject({ status: 201, body: { seq: 2 } });

    const back = await httpRequest('POST', `${cellA.httpUrl}/v1/admin/merchants/move`, { token: ADMIN_TOKEN, json: { tenant: 'mall', merchant: moving, to: 'cell-mb' } });
    expect(back).toMatchObject({ status: 200, body: { from: 'cell-ma', to: 'cell-mb' } });
    // The speaker owned it first; owner assignment may hand it on to its rightful owner from its next round.
    await eventually(async () => ['mb-1', 'mb-2'].includes((await ownersIn(redis, 'cell-mb')).get(moving) ?? ''), 'a process of B to own the merchant again', 10_000);
    await eventually(async () => (await httpRequest('POST', `${b2.httpUrl}/v1/conversations/${conv}/messages`, { token: aliceToken, json: { cmid: 'back', body: 'home again' } })).status === 201, 'a send at B to be answered', 15_000);
    // The speaker may be handing the merchant back to its rightful owner right now: a read retries then.
    let history = await httpRequest('GET', `${b2.httpUrl}/v1/conversations/${conv}/messages?limit=10`, { token: aliceToken });
    await eventually(async () => (history = await httpRequest('GET', `${b2.httpUrl}/v1/conversations/${conv}/messages?limit=10`, { token: aliceToken })).status === 200, 'the history at B', 10_000);
    expect((history.body as { messages: ChatMessage[] }).messages.map((message) => [message.seq, message.cmid])).toEqual([
      [1, 'before'],
      [2, 'at-a'],
      [3, 'back'],
    ]);
  }, 120_000);
});

/** The owner process of each merchant of the cell, from its Redis. */
async function ownersIn(redis: Redis, cellId: string, tenant = 'mall'): Promise<Map<string, string>> {
  const prefix = `cellmesh:${cellId}:owner/${tenant}/`;
  const keys = await redis.keys(`${prefix}*`);
  const values = keys.length === 0 ? [] : await redis.mget(...keys);
  return new Map(keys.map((key, index) => [key.slice(prefix.length), (values[index] ?? '').split(' ')[0]!]));
}

/** Waits until each of `processIds` owns some merchant of the cell; answers the owners. */
async function spreadOver(redis: Redis, cellId: string, processIds: readonly string[]): Promise<Map<string, string>> {
  await eventually(async () => {
    const owners = new Set((await ownersIn(redis, cellId)).values());
    return processIds.every((id) => owners.has(id));
  }, `the merchants of ${cellId} spread over ${processIds.join(', ')}`, 15_000);
  return ownersIn(redis, cellId);
}
