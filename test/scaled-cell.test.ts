/**
 * A cell of two processes sharing one Redis (issue 19, docs/operations.md "A cell of several
 * processes"), through the real CLI: the merchants are spread over the processes, and a device
 * that reaches the process that does not own its merchant is relayed to the one that does.
 */
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, test } from 'vitest';
import { connectNode, conversationIdOf, type CellmeshClient, type ChatMessage } from '../client/index.js';
import { ADMIN_TOKEN, Cleanup, InBandRejected, RawClient, UpgradeRejected, eventually, httpRequest, killChildCell, tokenFor, type ChildCell } from './harness.js';
import { redisServerMissing } from '../testing/redis-server.js';
import { useRedisServer } from './redis-suite.js';
import { TcpBalancer } from '../testing/tcp-balancer.js';

const skipReason = redisServerMissing();
if (skipReason !== undefined) console.warn(`scaled-cell.test.ts: skipped: ${skipReason}`);

const CELL = 'scaled';
export const LEASE = { leaseTtlMs: 1500, renewIntervalMs: 300 };

/** The owner of each merchant, as recorded in the cell's Redis (`<prefix>owner/<tenant>/<merchant>`). */
export async function ownersIn(redis: Redis, cellId: string, merchants: readonly string[]): Promise<Record<string, string | undefined>> {
  const values = await redis.mget(...merchants.map((merchant) => `cellmesh:${cellId}:owner/mall/${merchant}`));
  return Object.fromEntries(merchants.map((merchant, index) => [merchant, values[index]?.split(' ')[0]]));
}

/** Starts one access process of the cell. */
export function startProcess(cleanup: Cleanup, directory: string, url: string, id: string, cellId = CELL, admin?: string): Promise<ChildCell> {
  return cleanup.childCell({ directory, configDir: directory, cellId, store: { kind: 'redis', redis: { url } }, processes: { id, ...LEASE }, ...(admin === undefined ? {} : { admin: { token: admin } }) });
}

/** Connects like a client that follows OWNER_UNAVAILABLE: a process learns of a claim at its next round. */
async function connectRetrying(url: string, token: string, options: { merchant?: string; origin?: string } = {}): Promise<RawClient> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await RawClient.connect(url, token, options);
    } catch (error) {
      if (!(error instanceof UpgradeRejected && error.code === 'OWNER_UNAVAILABLE') || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** Waits until each merchant has a live owner and both processes own one. */
export async function spread(redis: Redis, cellId: string, timeoutMs = 15_000): Promise<Record<string, string | undefined>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const owners = await ownersIn(redis, cellId, ['m1', 'm2']);
    if (owners['m1'] !== undefined && owners['m2'] !== undefined && owners['m1'] !== owners['m2']) {
      // Each process learns the other's claim at its next round.
      await new Promise((resolve) => setTimeout(resolve, LEASE.renewIntervalMs * 3));
      return owners;
    }
    if (Date.now() > deadline) throw new Error(`the merchants were not spread over the processes: ${JSON.stringify(owners)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const SHOP_SECRET = 'shop-secret-0123456789abcdef-0123456789';
const SHOP_SECRET_2 = 'shop-secret-2-0123456789abcdef-012345678';

/** The owner of each merchant of `tenant`, as recorded in the cell's Redis. */
async function ownersOf(redis: Redis, cellId: string, tenant: string, merchants: readonly string[]): Promise<Record<string, string | undefined>> {
  const values = await redis.mget(...merchants.map((merchant) => `cellmesh:${cellId}:owner/${tenant}/${merchant}`));
  return Object.fromEntries(merchants.map((merchant, index) => [merchant, values[index]?.split(' ')[0]]));
}

/** Connects once the process followed the catalogue: until then the tenant or merchant is unknown there. */
async function connectEventually(url: string, token: string, options: { merchant?: string } = {}): Promise<RawClient> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await RawClient.connect(url, token, options);
    } catch (error) {
      if (!(error instanceof UpgradeRejected || error instanceof InBandRejected) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** How a connection is refused; undefined when it is accepted (and closed again). */
async function refusal(url: string, token: string, options: { merchant?: string } = {}): Promise<unknown> {
  try {
    const client = await RawClient.connect(url, token, options);
    await client.close();
    return undefined;
  } catch (error) {
    return error;
  }
}

/** `promise`, or an error saying what did not happen within `timeoutMs`. */
async function within<T>(promise: Promise<T>, timeoutMs: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what()}`)), timeoutMs)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe.skipIf(skipReason !== undefined)(`a cell of two processes on one Redis${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`, () => {
  const cleanup = new Cleanup();
  const server = useRedisServer(() => cleanup.run());
  let redis: Redis;
  beforeAll(() => {
    redis = server.client();
  });

  test('spreads its merchants, and a customer and an agent connected to the other process chat through the relay: order, acks and read receipts', async () => {
    const directory = await cleanup.tempDir();
    const a = await startProcess(cleanup, directory, server.url, 'proc-a');
    const b = await startProcess(cleanup, directory, server.url, 'proc-b');
    const owners = await spread(redis, CELL);
    const processes: Record<string, ChildCell> = { 'proc-a': a, 'proc-b': b };
    // The merchant B owns, reached through A.
    const merchant = owners['m1'] === 'proc-b' ? 'm1' : 'm2';
    const other = merchant === 'm1' ? 'm2' : 'm1';
    expect(owners[other]).toBe('proc-a');
    const conv = `${merchant}:alice`;
    const agent = await connectRetrying(a.url, await tokenFor({ user: 'ann', merchant, device: 'desk' }));
    const phone = await connectRetrying(a.url, await tokenFor({ user: 'alice', device: 'phone' }), { merchant });
    // Its laptop reaches the owner directly: the same conversation, the same seqs.
    const laptop = await connectRetrying(processes[owners[merchant]!]!.url, await tokenFor({ user: 'alice', device: 'laptop' }), { merchant });
    agent.autoAck(conv);
    laptop.autoAck(conv);
    for (let index = 1; index <= 30; index++) phone.send({ op: 'send', id: `s${index}`, conv, cmid: `c${index}`, body: `hello ${index}` });
    await phone.until(() => phone.all('sent').length === 30, { what: '30 sent' });
    expect(phone.all('sent').map((sent) => sent.seq)).toEqual(Array.from({ length: 30 }, (_, index) => index + 1));
    await agent.until(() => agent.messages(conv).length === 30, { what: 'the agent holding 30 messages' });
    expect(agent.messages(conv).map((message) => message.body)).toEqual(Array.from({ length: 30 }, (_, index) => `hello ${index + 1}`));
    await laptop.until(() => laptop.messages(conv).length === 30, { what: 'the laptop holding 30 messages' });
    // The agent answers through the relay; the customer reads it, and the agent gets the receipt.
    const reply = await agent.request({ id: 'r1', op: 'send', conv, cmid: 'reply-1', body: 'how can I help?' });
    expect(reply).toMatchObject({ t: 'sent', seq: 31 });
    await phone.until(() => phone.messages(conv).some((message) => message.seq === 31), { what: 'the reply' });
    expect(await phone.request({ id: 'read', op: 'read', conv, seq: 31 })).toMatchObject({ t: 'ok' });
    await agent.until(() => agent.all('receipt').some((receipt) => receipt.seq === 31), { what: 'the read receipt' });
    // The acks went through the relay too: a new device of the agent starts where the desk device acked.
    await agent.close();
    const again = await connectRetrying(a.url, await tokenFor({ user: 'ann', merchant, device: 'desk' }));
    await again.until(() => again.all('synced').length > 0, { what: 'synced' });
    expect(again.messages(conv).filter((message) => message.seq <= 30)).toEqual([]);
    // The HTTP API on the same conversation, asked of A, is answered by B.
    const aliceToken = await tokenFor({ user: 'alice', device: 'server' });
    const posted = await httpRequest('POST', `${a.httpUrl}/v1/conversations/${encodeURIComponent(conv)}/messages`, { token: aliceToken, json: { cmid: 'http-1', body: 'over HTTP' } });
    expect(posted).toMatchObject({ status: 201, body: { seq: 32 } });
    const page = await httpRequest('GET', `${a.httpUrl}/v1/conversations/${encodeURIComponent(conv)}/messages?limit=5`, { token: aliceToken });
    expect(page.status).toBe(200);
    expect((page.body as { messages: Array<{ seq: number }> }).messages.map((message) => message.seq)).toEqual([28, 29, 30, 31, 32]);
    const guest = await httpRequest('POST', `${a.httpUrl}/v1/guest`, { json: { tenant: 'mall', merchant } });
    expect(guest.status).toBe(200);
    // The owner's refusals pass through the relay as they are: a browser of a foreign origin is
    // refused in band by B (an error frame, then 4403), through A.
    const refused = await connectRetrying(a.url, await tokenFor({ user: 'mallory', device: 'web' }), { merchant, origin: 'http://evil.example' }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(InBandRejected);
    expect(refused).toMatchObject({ closeCode: 4403, code: 'ORIGIN_FORBIDDEN' });
    // A merchant A owns is served by A itself.
    const otherAgent = await connectRetrying(a.url, await tokenFor({ user: 'bob', merchant: other, device: 'desk' }));
    expect(otherAgent.all('welcome')).toHaveLength(1);
    for (const client of [again, phone, laptop, otherAgent]) await client.close();
  });

  test('SIGKILL of one process under traffic: its devices reconnect to the other, which took its merchants over; every acknowledged message is there, in order, without a gap', async () => {
    const cellId = 'failover';
    const directory = await cleanup.tempDir();
    const victim = await startProcess(cleanup, directory, server.url, 'proc-a', cellId);
    const survivor = await startProcess(cleanup, directory, server.url, 'proc-b', cellId);
    await spread(redis, cellId);
    // Every device reaches the victim first: it owns one merchant and relays the other's devices.
    const balancer = new TcpBalancer([victim.port, survivor.port]);
    await balancer.listen();
    cleanup.add(() => balancer.close());
    const clients: CellmeshClient[] = [];
    const journal: string[] = [];
    cleanup.add(async () => {
      for (const client of clients) await client.close().catch(() => undefined);
    });
    const connect = async (user: string, device: string, merchant: string, role: 'agent' | 'customer'): Promise<CellmeshClient> => {
      const token = await tokenFor({ user, device, ...(role === 'agent' ? { merchant } : {}) });
      const url = `ws://127.0.0.1:${balancer.port}/v1/ws${role === 'customer' ? `?merchant=${merchant}` : ''}`;
      const client = await connectNode({ url, token, backoff: { initialDelayMs: 50, maxDelayMs: 300 }, signal: AbortSignal.timeout(15_000) });
      clients.push(client);
      client.on('state', (change) => journal.push(`${Date.now() % 100_000} ${user}: ${change.previous} -> ${change.state} ${change.closeCode ?? ''} ${change.error?.code ?? ''} ${change.error?.message ?? ''}`));
      client.on('error', (error) => journal.push(`${Date.now() % 100_000} ${user}: error ${error.code} ${error.message}`));
      return client;
    };
    const total = 150;
    const conversations = [
      { merchant: 'm1', customer: 'alice', agent: 'ann' },
      { merchant: 'm2', customer: 'carol', agent: 'bob' },
    ];
    const runs = await Promise.all(
      conversations.map(async ({ merchant, customer, agent }) => {
        const conv = conversationIdOf(merchant, customer);
        const phone = await connect(customer, 'phone', merchant, 'customer');
        const desk = await connect(agent, 'desk', merchant, 'agent');
        const seen: ChatMessage[] = [];
        desk.on('message', (message) => seen.push(message));
        let acked = 0;
        const sends = Array.from({ length: total }, (_, index) => phone.send(conv, `${customer} ${index}`).then((result) => (acked++, result)));
        return { conv, phone, desk, seen, sends, acked: () => acked };
      }),
    );
    await eventually(() => runs.every((run) => run.acked() >= 40), 'the first acks of both conversations', 30_000);
    await killChildCell(victim);
    const killedAtMs = Date.now();
    for (const run of runs) {
      const results = await within(Promise.all(run.sends), 30_000, () => `every send of ${run.conv} answered (${run.acked()} of ${total}), killed at ${killedAtMs % 100_000}; the clients:\n${journal.join('\n')}\nthe survivor's log:\n${survivor.stderrTail()}`);
      // Sends resent with their cmids after the reconnect: each stored once, seqs in call order.
      expect(results.map((result) => result.seq)).toEqual(Array.from({ length: total }, (_, index) => index + 1));
      await eventually(() => run.seen.length >= total, `the agent of ${run.conv} to see every message`, 30_000);
      expect(run.seen.map((message) => message.seq)).toEqual(Array.from({ length: total }, (_, index) => index + 1));
      const history = await run.phone.history(run.conv, { limit: 200 });
      expect(history.messages.map((message) => message.seq)).toEqual(Array.from({ length: total }, (_, index) => index + 1));
      expect(new Set(history.messages.map((message) => message.cmid)).size).toBe(total);
    }
    // The survivor owns both merchants now, and the conversations go on from the seqs they reached.
    expect(await ownersIn(redis, cellId, ['m1', 'm2'])).toEqual({ m1: 'proc-b', m2: 'proc-b' });
    for (const run of runs) expect((await run.phone.send(run.conv, 'after the failover')).seq).toBe(total + 1);
    console.info(`scaled-cell: every device of the killed process resynced and every send answered ${Date.now() - killedAtMs} ms after the SIGKILL`);
  }, 120_000);

  test('a process stopped (SIGSTOP) past its lease cannot write when it resumes: its writes are refused, its devices closed, and it registers again with a higher token; seqs stay gap-free and unique', async () => {
    const cellId = 'fencing';
    const directory = await cleanup.tempDir();
    const first = await startProcess(cleanup, directory, server.url, 'proc-a', cellId);
    const second = await startProcess(cleanup, directory, server.url, 'proc-b', cellId);
    const owners = await spread(redis, cellId);
    const processes: Record<string, ChildCell> = { 'proc-a': first, 'proc-b': second };
    const merchant = 'm1';
    const stale = processes[owners[merchant]!]!;
    const taker = stale === first ? second : first;
    const takerId = stale === first ? 'proc-b' : 'proc-a';
    const staleId = stale === first ? 'proc-a' : 'proc-b';
    const conv = `${merchant}:alice`;
    const phone = await connectRetrying(stale.url, await tokenFor({ user: 'alice', device: 'phone' }), { merchant });
    for (let index = 1; index <= 10; index++) expect(await phone.request({ id: `s${index}`, op: 'send', conv, cmid: `before-${index}`, body: `before ${index}` })).toMatchObject({ t: 'sent', seq: index });
    const tokenBefore = Number(await redis.get(`cellmesh:${cellId}:proc/${staleId}`));
    stale.kill('SIGSTOP');
    cleanup.add(() => stale.kill('SIGCONT'));
    try {
      // Sent while the owner is stopped: they wait in its socket.
      for (let index = 1; index <= 3; index++) phone.send({ op: 'send', id: `late${index}`, conv, cmid: `late-${index}`, body: `late ${index}` });
      await eventually(async () => (await ownersIn(redis, cellId, [merchant]))[merchant] === takerId, 'the other process to take the merchant over', 15_000);
      await new Promise((resolve) => setTimeout(resolve, LEASE.renewIntervalMs * 2));
      const laptop = await connectRetrying(taker.url, await tokenFor({ user: 'alice', device: 'laptop' }), { merchant });
      await laptop.until(() => laptop.all('synced').length > 0 && laptop.messages(conv).length === 10, { what: 'the laptop synced with the 10 messages' });
      for (let index = 11; index <= 15; index++) expect(await laptop.request({ id: `t${index}`, op: 'send', conv, cmid: `taken-${index}`, body: `taken ${index}` })).toMatchObject({ t: 'sent', seq: index });
      stale.kill('SIGCONT');
      // The stale owner resumes: its late sends are refused (its lease is gone), its devices closed with 1001.
      await phone.until(() => phone.closeCode !== undefined, { what: 'the phone on the stale process to be closed', timeoutMs: 15_000 });
      expect(phone.closeCode).toBe(1001);
      expect(phone.all('sent').filter((sent) => sent.cmid.startsWith('late-'))).toEqual([]);
      await eventually(async () => Number(await redis.get(`cellmesh:${cellId}:proc/${staleId}`)) > tokenBefore, 'the stale process to register again with a higher token', 15_000);
      // What the store holds: 15 messages, once each, and none of the late sends.
      const history = await laptop.request({ id: 'h', op: 'history', conv, limit: 100 });
      expect(history).toMatchObject({ t: 'history' });
      const stored = (history as unknown as { messages: Array<{ seq: number; cmid: string }> }).messages;
      expect(stored.map((message) => message.seq)).toEqual(Array.from({ length: 15 }, (_, index) => index + 1));
      expect(stored.some((message) => message.cmid.startsWith('late-'))).toBe(false);
      // Back as a new process it gets its share again after a lease period, and writes under its new token.
      await spread(redis, cellId);
      const again = await connectRetrying(stale.url, await tokenFor({ user: 'alice', device: 'phone' }), { merchant });
      expect(await again.request({ id: 'after', op: 'send', conv, cmid: 'after-1', body: 'after' })).toMatchObject({ t: 'sent', seq: 16 });
      for (const client of [laptop, again]) await client.close();
    } finally {
      stale.kill('SIGCONT');
    }
  }, 120_000);
  test("runs the admin calls on a merchant's agents at its owner", async () => {
    const directory = await cleanup.tempDir();
    const a = await startProcess(cleanup, directory, server.url, 'adm-a', 'admin-scaled', ADMIN_TOKEN);
    await startProcess(cleanup, directory, server.url, 'adm-b', 'admin-scaled', ADMIN_TOKEN);
    const owners = await spread(redis, 'admin-scaled');
    const merchant = owners['m1'] === 'adm-b' ? 'm1' : 'm2';
    const admin = { token: ADMIN_TOKEN };
    // Registered through A, the agent is known to B's desk: the merchant's desk is no longer open
    // to every agent token, so one it does not have is refused (through A's relay, by B).
    const created = await httpRequest('POST', `${a.httpUrl}/v1/admin/tenants/mall/merchants/${merchant}/agents`, { ...admin, json: { id: 'zed' } });
    expect(created, JSON.stringify(created.body)).toMatchObject({ status: 201 });
    const stranger = await connectRetrying(a.url, await tokenFor({ user: 'yan', merchant, device: 'desk' })).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(stranger).toMatchObject({ code: 'AGENT_UNKNOWN' });
    const zed = await connectRetrying(a.url, await tokenFor({ user: 'zed', merchant, device: 'desk' }));
    expect(zed.all('welcome')).toHaveLength(1);
    await zed.close();
  });

  test('creates, changes and removes tenants and merchants through any process: every process follows within a round, changes made at once through both are serialised, a removed merchant\'s devices are closed with 4403 at its owner', async () => {
    const cellId = 'catalogue-scaled';
    const directory = await cleanup.tempDir();
    const a = await startProcess(cleanup, directory, server.url, 'proc-a', cellId, ADMIN_TOKEN);
    const b = await startProcess(cleanup, directory, server.url, 'proc-b', cellId, ADMIN_TOKEN);
    await spread(redis, cellId);
    const admin = { token: ADMIN_TOKEN };
    const shop = (options: { user: string; merchant?: string; device: string; secret?: string; kid?: string }): Promise<string> => tokenFor({ tenant: 'shop', secret: SHOP_SECRET, ...options });
    // Created through A; served, and the merchant owned, by both within a round or two.
    expect(await httpRequest('POST', `${a.httpUrl}/v1/admin/tenants`, { ...admin, json: { id: 'shop', secret: SHOP_SECRET } })).toMatchObject({ status: 201 });
    expect(await httpRequest('POST', `${a.httpUrl}/v1/admin/tenants/shop/merchants`, { ...admin, json: { id: 's1', name: 'Shop one' } })).toMatchObject({ status: 201 });
    const createdAtMs = Date.now();
    const agentAtB = await connectEventually(b.url, await shop({ user: 'sam', merchant: 's1', device: 'desk' }));
    const followedMs = Date.now() - createdAtMs;
    expect(followedMs).toBeLessThan(LEASE.renewIntervalMs * 4 + 1_000);
    const phoneAtA = await connectEventually(a.url, await shop({ user: 'carl', device: 'phone' }), { merchant: 's1' });
    const phoneAtB = await connectEventually(b.url, await shop({ user: 'carl', device: 'laptop' }), { merchant: 's1' });
    const agentAtA = await connectEventually(a.url, await shop({ user: 'sue', merchant: 's1', device: 'desk' }));
    const conv = 's1:carl';
    agentAtB.autoAck(conv);
    expect(await phoneAtA.request({ id: 'c1', op: 'send', conv, cmid: 'c1', body: 'hello shop' })).toMatchObject({ t: 'sent', seq: 1 });
    expect(await phoneAtB.request({ id: 'c2', op: 'send', conv, cmid: 'c2', body: 'anyone?' })).toMatchObject({ t: 'sent', seq: 2 });
    await agentAtB.until(() => agentAtB.messages(conv).length === 2, { what: 'the agent at B holding both messages' });
    expect(await agentAtA.request({ id: 'r1', op: 'send', conv, cmid: 'r1', body: 'here' })).toMatchObject({ t: 'sent', seq: 3 });
    await phoneAtA.until(() => phoneAtA.messages(conv).some((message) => message.seq === 3), { what: 'the reply at A' });
    // Both processes list the new merchant, whichever owns it.
    for (const process of [a, b]) {
      await eventually(async () => {
        const listed = await httpRequest('GET', `${process.httpUrl}/v1/admin/tenants/shop/merchants`, admin);
        return JSON.stringify((listed.body as { merchants?: Array<{ id: string }> }).merchants?.map((merchant) => merchant.id)) === '["s1"]';
      }, `s1 listed at ${process.httpUrl}`);
    }

    // A second secret added through B is taken at A; the first one removed through B is refused at A.
    expect(await httpRequest('PATCH', `${b.httpUrl}/v1/admin/tenants/shop`, { ...admin, json: { addSecret: { kid: 'k2', secret: SHOP_SECRET_2 } } })).toMatchObject({ status: 200 });
    const viaK2 = await connectEventually(a.url, await shop({ user: 'dana', device: 'phone', secret: SHOP_SECRET_2, kid: 'k2' }), { merchant: 's1' });
    await viaK2.close();
    expect(await httpRequest('PATCH', `${b.httpUrl}/v1/admin/tenants/shop`, { ...admin, json: { removeSecret: 'k1' } })).toMatchObject({ status: 200 });
    await eventually(async () => (await refusal(a.url, await shop({ user: 'eve', device: 'phone', kid: 'k1' }), { merchant: 's1' })) !== undefined, 'the removed secret refused at A');
    expect(await refusal(a.url, await shop({ user: 'eve', device: 'phone', kid: 'k1' }), { merchant: 's1' })).toMatchObject({ code: 'TOKEN_INVALID' });

    // Two merchants created at once, one through each process: both land, and both processes list both.
    const [s2, s3] = await Promise.all([
      httpRequest('POST', `${a.httpUrl}/v1/admin/tenants/shop/merchants`, { ...admin, json: { id: 's2' } }),
      httpRequest('POST', `${b.httpUrl}/v1/admin/tenants/shop/merchants`, { ...admin, json: { id: 's3' } }),
    ]);
    expect([s2.status, s3.status]).toEqual([201, 201]);
    for (const process of [a, b]) {
      await eventually(async () => {
        const listed = await httpRequest('GET', `${process.httpUrl}/v1/admin/tenants/shop`, admin);
        return JSON.stringify((listed.body as { merchants?: Array<{ id: string }> }).merchants?.map((merchant) => merchant.id)) === '["s1","s2","s3"]';
      }, `s1, s2 and s3 listed at ${process.httpUrl}`);
    }
    await eventually(async () => Object.values(await ownersOf(redis, cellId, 'shop', ['s1', 's2', 's3'])).every((owner) => owner !== undefined), 'an owner for every merchant of shop');

    // Removed through B: its agents are closed with 4403 at its owner, through either process, and nobody owns it any more.
    const removed = await httpRequest('DELETE', `${b.httpUrl}/v1/admin/tenants/shop/merchants/s1`, admin);
    expect(removed, JSON.stringify(removed.body)).toMatchObject({ status: 200, body: { removed: { id: 's1' } } });
    for (const agent of [agentAtA, agentAtB]) {
      await agent.until(() => agent.closeCode !== undefined, { what: 'the agent of the removed merchant to be closed' });
      expect(agent.closeCode).toBe(4403);
    }
    expect((await ownersOf(redis, cellId, 'shop', ['s1']))['s1']).toBeUndefined();
    for (const process of [a, b]) {
      await eventually(async () => (await refusal(process.url, await shop({ user: 'sam', merchant: 's1', device: 'desk' }))) !== undefined, `the removed merchant refused at ${process.url}`);
    }
    // The tenant goes once its merchants are gone; its tokens are refused by both processes.
    for (const merchant of ['s2', 's3']) expect(await httpRequest('DELETE', `${a.httpUrl}/v1/admin/tenants/shop/merchants/${merchant}`, admin)).toMatchObject({ status: 200 });
    expect(await httpRequest('DELETE', `${a.httpUrl}/v1/admin/tenants/shop`, admin)).toMatchObject({ status: 200 });
    for (const process of [a, b]) {
      await eventually(async () => (await refusal(process.url, await shop({ user: 'dana', device: 'phone', secret: SHOP_SECRET_2, kid: 'k2' }))) !== undefined, `the removed tenant refused at ${process.url}`);
    }
    for (const client of [phoneAtA, phoneAtB]) await client.close();
  }, 120_000);

  test('erases a customer through one process in the conversations every process owns, in memory too, and records it once', async () => {
    const cellId = 'erasure-scaled';
    const directory = await cleanup.tempDir();
    const a = await startProcess(cleanup, directory, server.url, 'proc-a', cellId, ADMIN_TOKEN);
    const b = await startProcess(cleanup, directory, server.url, 'proc-b', cellId, ADMIN_TOKEN);
    await spread(redis, cellId);
    const processes = [a, b];
    const phones: RawClient[] = [];
    for (const merchant of ['m1', 'm2']) {
      const conv = `${merchant}:alice`;
      const phone = await connectRetrying(a.url, await tokenFor({ user: 'alice', device: `phone-${merchant}` }), { merchant });
      phones.push(phone);
      for (let index = 1; index <= 5; index++) expect(await phone.request({ id: `s${index}`, op: 'send', conv, cmid: `${merchant}-${index}`, body: `to ${merchant} ${index}` })).toMatchObject({ t: 'sent', seq: index });
    }
    const aliceToken = await tokenFor({ user: 'alice', device: 'server' });
    const erased = await httpRequest('DELETE', `${a.httpUrl}/v1/admin/tenants/mall/customers/alice`, { token: ADMIN_TOKEN });
    expect(erased, JSON.stringify(erased.body)).toMatchObject({ status: 200, body: { tenant: 'mall', customer: 'alice', deleted: { conversations: 2 } } });
    expect((erased.body as { deleted: { messages: number } }).deleted.messages).toBeGreaterThanOrEqual(10);
    // Its devices were closed by the owners (the relayed one through A's relay).
    for (const phone of phones) {
      await phone.until(() => phone.closeCode !== undefined, { what: "the customer's device to be closed" });
      expect(phone.closeCode).toBe(4403);
    }
    for (const merchant of ['m1', 'm2']) {
      const conv = `${merchant}:alice`;
      for (const process of processes) {
        const page = await httpRequest('GET', `${process.httpUrl}/v1/conversations/${encodeURIComponent(conv)}/messages?limit=50`, { token: aliceToken });
        expect(page.status, JSON.stringify(page.body)).toBe(200);
        expect((page.body as { messages: unknown[] }).messages, `${conv} read through ${process.httpUrl}`).toEqual([]);
      }
      // The owner forgot the conversation in memory too: it starts again at seq 1.
      const again = await httpRequest('POST', `${b.httpUrl}/v1/conversations/${encodeURIComponent(conv)}/messages`, { token: aliceToken, json: { cmid: `${merchant}-after`, body: 'new start' } });
      expect(again, JSON.stringify(again.body)).toMatchObject({ status: 201, body: { seq: 1 } });
    }
    const audit = await httpRequest('GET', `${b.httpUrl}/v1/admin/audit?action=customer.erase`, { token: ADMIN_TOKEN });
    expect((audit.body as { entries: Array<{ target: string; error?: unknown }> }).entries.filter((entry) => entry.target === 'alice')).toHaveLength(1);
  }, 120_000);
});
