/**
 * A cell opening a data directory written before users were keyed by their whole identity
 * (key layout 1: read cursors, delivery cursors and idempotency records named by user id alone)
 * rewrites those keys once and serves them as before: no message is delivered again past a
 * device's cursor, read cursors stay, and a resend of an old cmid answers its original seq.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { keys } from '../cell/messaging/keys.js';
import { KEY_LAYOUT_VERSION, KeyLayoutError, upgradeKeyLayout } from '../cell/messaging/key-layout.js';
import type { ChatMessage } from '../cell/protocol/frames.js';
import { LevelStore, MemoryStore, type StoreOp } from '../platform/store/index.js';
import { Cleanup, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:alice';

/** What a cell of layout 1 stored for conversation m1:alice: two messages of alice, one of agent bob. */
function layoutOneData(): StoreOp[] {
  const message = (seq: number, from: string, role: ChatMessage['role'], cmid: string): ChatMessage => ({
    conv: CONV,
    seq,
    from,
    role,
    device: role === 'customer' ? 'phone' : 'desk',
    cmid,
    body: `message ${seq}`,
    ts: 1_000 + seq,
  });
  const messages = [message(1, 'alice', 'customer', 'c-1'), message(2, 'alice', 'customer', 'c-2'), message(3, 'bob', 'agent', 'b-1')];
  const ops: StoreOp[] = messages.flatMap((stored): StoreOp[] => [
    { type: 'put', key: `m/mall/${CONV}/${String(stored.seq).padStart(16, '0')}`, value: JSON.stringify(stored) },
    { type: 'put', key: `i/mall/${CONV}/${stored.from}/${stored.cmid}`, value: String(stored.seq) },
  ]);
  ops.push(
    { type: 'put', key: `r/mall/${CONV}/alice`, value: '2' },
    { type: 'put', key: `r/mall/${CONV}/bob`, value: '3' },
    { type: 'put', key: `d/mall/alice/phone/${CONV}`, value: '3' },
    { type: 'put', key: `d/mall/bob/desk/${CONV}`, value: '1' },
    { type: 'put', key: `uc/mall/alice/${CONV}`, value: '' },
    { type: 'put', key: `mc/mall/m1/${CONV}`, value: '' },
  );
  return ops;
}

describe('key layout upgrade', () => {
  test('a cell started on a layout-1 LevelDB directory keeps cursors, reads and idempotency', async () => {
    const directory = await cleanup.tempDir();
    const seed = new LevelStore({ directory });
    await seed.open();
    await seed.write(layoutOneData());
    await seed.close();

    const cell = await cleanup.cell({ storeInstance: new LevelStore({ directory }) });
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'phone' }));
    await phone.until(() => phone.all('synced').length > 0, { what: 'synced' });
    expect(phone.messages(CONV)).toEqual([]);
    const inbox = await phone.request({ op: 'inbox', id: 'i' });
    expect(inbox).toMatchObject({ t: 'inbox', conversations: [{ conv: CONV, lastSeq: 3, deliveredSeq: 3, readSeq: 2, reads: [{ user: 'bob', role: 'agent', seq: 3 }] }] });
    expect((await sendMessage(phone, CONV, 'c-2', 'message 2')).seq).toBe(2);

    const desk = await cleanup.client(cell.url, await tokenFor({ user: 'bob', merchant: 'm1', device: 'desk' }));
    await desk.until(() => desk.messages(CONV).length === 2, { what: "the messages after the agent's cursor" });
    expect(desk.messages(CONV).map((message) => message.seq)).toEqual([2, 3]);
    expect((await sendMessage(desk, CONV, 'b-1', 'message 3')).seq).toBe(3);
  });

  test('rewrites once, merges with cursors already moved, and refuses a layout it does not know', async () => {
    const store = new MemoryStore();
    await store.open();
    await store.write(layoutOneData());
    // A cursor of the new layout that moved further (another process of the same store upgraded first).
    await store.write([{ type: 'put', key: keys.deliveryCursor('mall', 'a:m1:bob', 'desk', CONV), value: '2' }]);
    expect(await upgradeKeyLayout(store)).toBe(7);
    expect(await store.get(keys.layoutVersion())).toBe(String(KEY_LAYOUT_VERSION));
    expect(await store.get(keys.deliveryCursor('mall', 'a:m1:bob', 'desk', CONV))).toBe('2');
    expect(await store.get(keys.deliveryCursor('mall', 'c:alice', 'phone', CONV))).toBe('3');
    expect(await store.get(keys.readCursor('mall', CONV, 'c:alice'))).toBe('2');
    expect(await store.get(keys.clientMessageId('mall', CONV, 'a:m1:bob', 'b-1'))).toBe('3');
    expect(await store.range({ gte: 'd/', lt: 'd/\x7f', limit: 10 })).toHaveLength(2);
    expect(await upgradeKeyLayout(store)).toBe(0);

    await store.write([{ type: 'put', key: keys.layoutVersion(), value: String(KEY_LAYOUT_VERSION + 1) }]);
    await expect(upgradeKeyLayout(store)).rejects.toBeInstanceOf(KeyLayoutError);
  });

  test('takes a layout-2 store as it is: its read cursors already hold what layout 3 implies', async () => {
    const store = new MemoryStore();
    await store.open();
    const stored: StoreOp[] = [
      { type: 'put', key: keys.layoutVersion(), value: '2' },
      { type: 'put', key: keys.readCursor('mall', CONV, 'c:alice'), value: '2' },
    ];
    await store.write(stored);
    expect(await upgradeKeyLayout(store)).toBe(0);
    expect(await store.get(keys.layoutVersion())).toBe('3');
    expect(await store.get(keys.readCursor('mall', CONV, 'c:alice'))).toBe('2');
  });
});
