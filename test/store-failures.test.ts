/**
 * A store that fails (issue 15, item 7) over real sockets, on a real LevelDB whose reads and
 * writes fail on demand: every path that meets the failure answers STORE_UNAVAILABLE (503 over
 * HTTP), never INTERNAL; the connection stays usable; and a read cursor moves in memory only once
 * its write is durable, so a retry after a failed write writes it and sends the receipt.
 */
import { afterEach, describe, expect, test } from 'vitest';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { keys } from '../cell/messaging/keys.js';
import { Cleanup, FailingStore, TENANT, type RawClient, errorCodeOf, eventually, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:c1';
/** A conversation whose head no request loaded yet: a request about it must read the store. */
const COLD_CONV = 'm2:c1';

async function cellOnFailingStore(directory?: string): Promise<{ store: FailingStore; url: string; httpUrl: string; stop: () => Promise<void> }> {
  const store = new FailingStore(directory ?? (await cleanup.tempDir()));
  const cell = await cleanup.cell({ storeInstance: store });
  return { store, url: cell.url, httpUrl: cell.httpUrl, stop: () => cell.stop() };
}

function expectStoreUnavailable(answer: ServerFrame, id: string): void {
  expect(answer).toMatchObject({ t: 'error', id, code: 'STORE_UNAVAILABLE' });
}

async function pingAnswered(client: RawClient, id: string): Promise<void> {
  expect((await client.request({ op: 'ping', id })).t).toBe('pong');
}

describe('a store that fails, off the send path', () => {
  test('history, inbox and read answer STORE_UNAVAILABLE over WebSocket and 503 over HTTP; the device stays connected', async () => {
    const { store, url, httpUrl } = await cellOnFailingStore();
    const customerToken = await tokenFor({ user: 'c1' });
    const customer = await cleanup.client(url, customerToken);
    await sendMessage(customer, CONV, 'first', 'hello');

    store.failReads = true;
    expectStoreUnavailable(await customer.request({ id: 'h', op: 'history', conv: COLD_CONV }), 'h');
    expectStoreUnavailable(await customer.request({ id: 'i', op: 'inbox' }), 'i');
    expectStoreUnavailable(await customer.request({ id: 'r', op: 'read', conv: COLD_CONV, seq: 0 }), 'r');

    const historyAnswer = await httpRequest('GET', `${httpUrl}/v1/conversations/${encodeURIComponent(COLD_CONV)}/messages`, { token: customerToken });
    expect([historyAnswer.status, errorCodeOf(historyAnswer)]).toEqual([503, 'STORE_UNAVAILABLE']);
    const inboxAnswer = await httpRequest('GET', `${httpUrl}/v1/inbox`, { token: customerToken });
    expect([inboxAnswer.status, errorCodeOf(inboxAnswer)]).toEqual([503, 'STORE_UNAVAILABLE']);
    const readAnswer = await httpRequest('POST', `${httpUrl}/v1/conversations/${encodeURIComponent(COLD_CONV)}/read`, { token: customerToken, json: { seq: 0 } });
    expect([readAnswer.status, errorCodeOf(readAnswer)]).toEqual([503, 'STORE_UNAVAILABLE']);
    // The store's own message (it names the data directory) is not the client's business.
    expect(inboxAnswer.text).not.toContain('LevelDB');
    expect(store.failures).toBeGreaterThanOrEqual(6);

    // The cell's failures do not count against the device, and it is served again once the store is.
    await pingAnswered(customer, 'still-there');
    store.failReads = false;
    const inbox = await customer.request({ id: 'i2', op: 'inbox' });
    expect(inbox).toMatchObject({ t: 'inbox', conversations: [{ conv: CONV, lastSeq: 1 }] });
    expect(customer.closeCode).toBeUndefined();
  });

  test('a device that connects while the store cannot be read hears STORE_UNAVAILABLE, then "going away" (1001)', async () => {
    const { store, url } = await cellOnFailingStore();
    store.failReads = true;
    const phone = await cleanup.client(url, await tokenFor({ user: 'c1', device: 'phone' }));
    await phone.whenClosed();
    expect(phone.all('error').map((frame) => frame.code)).toEqual(['STORE_UNAVAILABLE']);
    expect(phone.closeCode).toBe(1001);
  });

  test('a read whose write failed is written by its retry: `ok`, the receipt, and the cursor survives a restart', async () => {
    const directory = await cleanup.tempDir();
    const first = await cellOnFailingStore(directory);
    const customer = await cleanup.client(first.url, await tokenFor({ user: 'c1' }));
    await sendMessage(customer, CONV, 'question', 'is it in stock?');
    const agentToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' });
    const agent = await cleanup.client(first.url, agentToken);
    await agent.next((frame) => frame.t === 'msg' && frame.seq === 1, { fromStart: true });

    first.store.failWrites = true;
    expectStoreUnavailable(await agent.request({ id: 'read-1', op: 'read', conv: CONV, seq: 1 }), 'read-1');
    expect(customer.all('receipt')).toEqual([]);

    first.store.failWrites = false;
    expect(await agent.request({ id: 'read-2', op: 'read', conv: CONV, seq: 1 })).toEqual({ t: 'ok', id: 'read-2' });
    // The retry moved the cursor: both parties hear the receipt.
    expect(await customer.next('receipt', { fromStart: true })).toEqual({ t: 'receipt', conv: CONV, user: 'a1', role: 'agent', seq: 1 });
    expect(await agent.next('receipt', { fromStart: true })).toEqual({ t: 'receipt', conv: CONV, user: 'a1', role: 'agent', seq: 1 });

    // ...and it is durable: a restarted cell on the same LevelDB still has it.
    await customer.close();
    await agent.close();
    await first.stop();
    const second = await cellOnFailingStore(directory);
    const inbox = await httpRequest('GET', `${second.httpUrl}/v1/inbox`, { token: agentToken });
    expect(inbox.status).toBe(200);
    expect(inbox.body).toMatchObject({ conversations: [{ conv: CONV, lastSeq: 1, readSeq: 1, unread: 0 }] });
  });

  test('delivery cursors whose write failed are written once the store works again: no redelivery after a restart', async () => {
    const directory = await cleanup.tempDir();
    const first = await cellOnFailingStore(directory);
    const customer = await cleanup.client(first.url, await tokenFor({ user: 'c1' }));
    for (let index = 1; index <= 3; index++) await sendMessage(customer, CONV, `m${index}`, `message ${index}`);
    const deskToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' });
    const desk = await cleanup.client(first.url, deskToken);
    await desk.until(() => desk.messages(CONV).length === 3, { what: 'three messages at the desk' });

    first.store.failWrites = true;
    const failuresBefore = first.store.failures;
    desk.send({ op: 'ack', conv: CONV, seq: 3 });
    // The cursor writer tries within cursorWriteIntervalMs (500 ms) and fails.
    await eventually(() => first.store.failures > failuresBefore, 'a failed cursor write');
    first.store.failWrites = false;
    // The next interval writes it (the desk stays connected: nothing else would bring the cursor
    // back). Seen in the store before the stop, whose own flush would write it too.
    const cursorKey = keys.deliveryCursor(TENANT, 'a:m1:a1', 'desk', CONV);
    await eventually(async () => (await first.store.level.get(cursorKey)) === '3', 'the cursor written at the next interval');
    await desk.close();
    await customer.close();
    await first.stop();

    const second = await cellOnFailingStore(directory);
    const deskAgain = await cleanup.client(second.url, deskToken);
    await deskAgain.until(() => deskAgain.all('synced').length > 0, { what: 'synced after the restart' });
    expect(deskAgain.messages(CONV)).toEqual([]);
  });

  test('HTTP: a read whose write failed answers 503, and its retry writes the cursor', async () => {
    const { store, httpUrl, url } = await cellOnFailingStore();
    const customer = await cleanup.client(url, await tokenFor({ user: 'c1' }));
    await sendMessage(customer, CONV, 'question', 'is it in stock?');
    const agentToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' });
    const readPath = `${httpUrl}/v1/conversations/${encodeURIComponent(CONV)}/read`;

    store.failWrites = true;
    const failed = await httpRequest('POST', readPath, { token: agentToken, json: { seq: 1 } });
    expect([failed.status, errorCodeOf(failed)]).toEqual([503, 'STORE_UNAVAILABLE']);
    store.failWrites = false;
    expect((await httpRequest('POST', readPath, { token: agentToken, json: { seq: 1 } })).status).toBe(200);
    expect(await customer.next('receipt', { fromStart: true })).toEqual({ t: 'receipt', conv: CONV, user: 'a1', role: 'agent', seq: 1 });
    const inbox = await httpRequest('GET', `${httpUrl}/v1/inbox`, { token: agentToken });
    expect(inbox.body).toMatchObject({ conversations: [{ conv: CONV, readSeq: 1, unread: 0 }] });
  });
});
