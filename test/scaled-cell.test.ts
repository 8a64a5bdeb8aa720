/**
 * A cell of two processes sharing one Redis (issue 19, docs/operations.md "A cell of several
 * processes"), through the real CLI: the merchants are spread over the processes, and a device
 * that reaches the process that does not own its merchant is relayed to the one that does.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Cleanup, RawClient, tokenFor, type ChildCell } from './harness.js';
import { redisServerMissing, startRedisServer, type RedisServer } from '../testing/redis-server.js';

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
export function startProcess(cleanup: Cleanup, directory: string, url: string, id: string, cellId = CELL): Promise<ChildCell> {
  return cleanup.childCell({ directory, configDir: directory, cellId, store: { kind: 'redis', redis: { url } }, processes: { id, ...LEASE } });
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

describe.skipIf(skipReason !== undefined)(`a cell of two processes on one Redis${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`, () => {
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
    const agent = await RawClient.connect(a.url, await tokenFor({ user: 'ann', merchant, device: 'desk' }));
    const phone = await RawClient.connect(a.url, await tokenFor({ user: 'alice', device: 'phone' }), { merchant });
    // Its laptop reaches the owner directly: the same conversation, the same seqs.
    const laptop = await RawClient.connect(processes[owners[merchant]!]!.url, await tokenFor({ user: 'alice', device: 'laptop' }), { merchant });
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
    const again = await RawClient.connect(a.url, await tokenFor({ user: 'ann', merchant, device: 'desk' }));
    await again.until(() => again.all('synced').length > 0, { what: 'synced' });
    expect(again.messages(conv).filter((message) => message.seq <= 30)).toEqual([]);
    // A merchant A owns is served by A itself.
    const otherAgent = await RawClient.connect(a.url, await tokenFor({ user: 'bob', merchant: other, device: 'desk' }));
    expect(otherAgent.all('welcome')).toHaveLength(1);
    for (const client of [again, phone, laptop, otherAgent]) await client.close();
  });
});
