import { describe, expect, it } from 'vitest';
import { ManualClock } from '../platform/manual-clock.js';
import { silentLogger } from '../platform/logger.js';
import { MemoryStore } from '../platform/store/memory-store.js';
import type { StoreOp } from '../platform/store/store.js';
import { ConversationLog } from './messaging/conversation-log.js';
import { keys } from './messaging/keys.js';
import { storedReadCursors } from './messaging/read-cursors.js';
import type { ChatMessage } from './protocol/frames.js';
import { RetentionSweeper } from './retention-sweeper.js';
import { TenantConfig } from './settings.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const SECRET = 'retention-sweeper-test-secret-0123456789';

/** `count` messages of `conv` by its customer, one a day from `startMs`, with their index and idempotency keys. */
function conversationOps(conv: string, count: number, startMs: number): StoreOp[] {
  const customer = conv.split(':')[1]!;
  const ops: StoreOp[] = [{ type: 'put', key: keys.customerConversation('mall', customer, conv), value: '' }];
  for (let seq = 1; seq <= count; seq++) {
    const message: ChatMessage = { conv, seq, from: customer, role: 'customer', device: 'd1', cmid: `c${seq}`, body: `day ${seq}`, ts: startMs + (seq - 1) * DAY_MS };
    ops.push({ type: 'put', key: keys.message('mall', conv, seq), value: JSON.stringify(message) });
    ops.push({ type: 'put', key: keys.clientMessageId('mall', conv, `c:${customer}`, `c${seq}`), value: String(seq) });
  }
  return ops;
}

async function seqsOf(store: MemoryStore, conv: string): Promise<number[]> {
  return (await store.range({ ...keys.allMessages('mall', conv), limit: 100 })).map(([, value]) => (JSON.parse(value) as ChatMessage).seq);
}

describe('RetentionSweeper', () => {
  it('deletes messages past the retention with their idempotency records, never the newest, a bounded slice per run', async () => {
    const clock = new ManualClock(100 * DAY_MS);
    const store = new MemoryStore();
    await store.open();
    // Ten messages a day apart in each of three conversations, the last one 41 days ago.
    const startMs = clock.now() - 50 * DAY_MS;
    await store.write(['m1:ann', 'm1:bob', 'm2:cid'].flatMap((conv) => conversationOps(conv, 10, startMs)));
    const forgotten: string[] = [];
    const sweeper = new RetentionSweeper({
      store,
      clock,
      logger: silentLogger,
      tenants: [TenantConfig.parse({ id: 'mall', secret: SECRET, retention: { conversationDays: 45 } }), TenantConfig.parse({ id: 'other', secret: SECRET })],
      attachments: { forget: async () => false },
      forgetConversations: (tenant, merchant) => forgotten.push(`${tenant}/${merchant}`),
      settleReadCursors: async () => undefined,
      settings: { maxConversationsPerRun: 2, maxDeletesPerRun: 100 },
    });

    // Messages 1-5 are 45 days old or more; 6-10 younger.
    expect(await sweeper.runOnce()).toEqual({ conversationsVisited: 2, messagesDeleted: 10, passCompleted: false });
    expect(await seqsOf(store, 'm1:ann')).toEqual([6, 7, 8, 9, 10]);
    expect(await seqsOf(store, 'm1:bob')).toEqual([6, 7, 8, 9, 10]);
    expect(await seqsOf(store, 'm2:cid')).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(await store.get(keys.clientMessageId('mall', 'm1:ann', 'c:ann', 'c5'))).toBeUndefined();
    expect(await store.get(keys.clientMessageId('mall', 'm1:ann', 'c:ann', 'c6'))).toBe('6');
    expect(forgotten).toEqual(['mall/m1']);

    expect(await sweeper.runOnce()).toEqual({ conversationsVisited: 1, messagesDeleted: 5, passCompleted: true });
    expect(await seqsOf(store, 'm2:cid')).toEqual([6, 7, 8, 9, 10]);

    // Much later everything is old: all but each conversation's newest message go.
    clock.advance(100 * DAY_MS);
    expect(await sweeper.runOnce()).toMatchObject({ conversationsVisited: 2, messagesDeleted: 8 });
    expect(await sweeper.runOnce()).toMatchObject({ conversationsVisited: 1, messagesDeleted: 4, passCompleted: true });
    for (const conv of ['m1:ann', 'm1:bob', 'm2:cid']) expect(await seqsOf(store, conv)).toEqual([10]);
  });

  it('stops a run at its budget of deletions and goes on in the same conversation next time', async () => {
    const clock = new ManualClock(100 * DAY_MS);
    const store = new MemoryStore();
    await store.open();
    await store.write(conversationOps('m1:ann', 10, clock.now() - 60 * DAY_MS));
    const sweeper = new RetentionSweeper({
      store,
      clock,
      logger: silentLogger,
      tenants: [TenantConfig.parse({ id: 'mall', secret: SECRET, retention: { conversationDays: 1 } })],
      attachments: { forget: async () => false },
      forgetConversations: () => undefined,
      settleReadCursors: async () => undefined,
      settings: { maxDeletesPerRun: 4 },
    });
    expect(await sweeper.runOnce()).toMatchObject({ conversationsVisited: 1, messagesDeleted: 4 });
    expect(await seqsOf(store, 'm1:ann')).toEqual([5, 6, 7, 8, 9, 10]);
    await sweeper.runOnce();
    await sweeper.runOnce();
    await sweeper.runOnce();
    expect(await seqsOf(store, 'm1:ann')).toEqual([10]);
  });

  it('runs on its timer until stopped, and not at all without a retention', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore();
    await store.open();
    const runs: string[] = [];
    const logger = { ...silentLogger, info: (_fields: object, message?: string) => void runs.push(message ?? '') };
    const idle = new RetentionSweeper({ store, clock, logger, tenants: [TenantConfig.parse({ id: 'mall', secret: SECRET })], attachments: { forget: async () => false }, forgetConversations: () => undefined, settleReadCursors: async () => undefined });
    idle.start();
    expect(clock.pendingTimers()).toBe(0);
    const sweeper = new RetentionSweeper({
      store,
      clock,
      logger,
      tenants: [TenantConfig.parse({ id: 'mall', secret: SECRET, retention: { conversationDays: 1 } })],
      attachments: { forget: async () => false },
      forgetConversations: () => undefined,
      settleReadCursors: async () => undefined,
      settings: { intervalMs: 1_000 },
    });
    sweeper.start();
    clock.advance(1_000);
    await new Promise((resolve) => setImmediate(resolve));
    clock.advance(1_000);
    await new Promise((resolve) => setImmediate(resolve));
    await sweeper.stop();
    clock.advance(5_000);
    await new Promise((resolve) => setImmediate(resolve));
    expect(runs).toEqual(['retention sweep', 'retention sweep']);
  });

  it("has the log write the read cursors that the messages it deletes imply, so a reload keeps them", async () => {
    const clock = new ManualClock(100 * DAY_MS);
    const store = new MemoryStore();
    await store.open();
    const log = new ConversationLog({ store, clock, onDurable: () => undefined });
    // Ann writes 3 messages, then the agent 10: her cursor is not stored, her message 3 says it.
    const conv = 'm1:ann';
    const send = (from: string, role: 'customer' | 'agent', cmid: string) => log.append({ tenant: 'mall', conv, from, role, device: 'd', cmid, body: cmid });
    for (let index = 1; index <= 3; index++) await send('ann', 'customer', `ann${index}`);
    for (let index = 1; index <= 10; index++) await send('bob', 'agent', `bob${index}`);
    expect(await store.get(keys.readCursor('mall', conv, 'c:ann'))).toBeUndefined();
    clock.advance(60 * DAY_MS);
    await send('bob', 'agent', 'late');
    const settled: string[] = [];
    const sweeper = new RetentionSweeper({
      store,
      clock,
      logger: silentLogger,
      tenants: [TenantConfig.parse({ id: 'mall', secret: SECRET, retention: { conversationDays: 30 } })],
      attachments: { forget: async () => false },
      forgetConversations: (tenant, merchant) => log.forgetMerchant(tenant, merchant),
      settleReadCursors: async (tenant, settledConv) => {
        settled.push(settledConv);
        await log.settleReads(tenant, settledConv);
      },
    });
    await store.write([{ type: 'put', key: keys.customerConversation('mall', 'ann', conv), value: '' }]);
    expect(await sweeper.runOnce()).toMatchObject({ messagesDeleted: 13 });
    expect(settled).toEqual([conv]);
    expect(await seqsOf(store, conv)).toEqual([14]);
    expect(await store.get(keys.readCursor('mall', conv, 'c:ann'))).toBe('3');
    const cursors = await storedReadCursors(store, 'mall', conv);
    expect(Object.fromEntries(cursors)).toEqual({ 'c:ann': 3, 'a:m1:bob': 14 });
    expect((await new ConversationLog({ store, clock, onDurable: () => undefined }).conversation('mall', conv)).reads).toEqual(cursors);
  });
});
