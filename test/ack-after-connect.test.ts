/**
 * A legal ack is never refused because it came early (issue 15, item 3). A device that resends
 * a message right after reconnecting gets `sent` at once (the cmid is known) and acks that seq
 * at once, possibly before the cell has loaded the device's cursors; the ack waits for them.
 * Over real sockets and a real LevelDB store whose reads of delivery cursors the test can hold,
 * so the ack surely arrives before the cursors are loaded.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { MAX_ACKS_WAITING_FOR_CURSORS } from '../cell/messaging/delivery.js';
import { LevelStore } from '../platform/store/index.js';
import { Cleanup, GatedStore, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:alice';

/**
 * A cell over a LevelDB store whose cursor reads the test can hold, and alice's phone, which
 * sent `messages` (bodies, cmids c-1, c-2, ...) and disconnected. `reconnect` connects the phone
 * again with its cursor read held, so whatever the test sends next arrives before the cursors.
 */
async function phoneThatSent(messages: readonly string[], limits?: Record<string, unknown>) {
  const store = new GatedStore(new LevelStore({ directory: await cleanup.tempDir() }), 'cursor-reads');
  const cell = await cleanup.cell({ storeInstance: store, ...(limits === undefined ? {} : { limits }) });
  const token = await tokenFor({ user: 'alice', device: 'phone' });
  const phone = await cleanup.client(cell.url, token);
  const sent = [];
  for (const [index, body] of messages.entries()) sent.push(await sendMessage(phone, CONV, `c-${index + 1}`, body));
  await phone.close();
  const reconnect = async () => {
    store.hold();
    const again = await cleanup.client(cell.url, token);
    await again.until(() => store.waiting > 0, { what: 'the cursor read under way' });
    return again;
  };
  return { store, sent, reconnect };
}

describe('an ack right after connecting', () => {
  test('reconnect, resend, get `sent`, ack that seq at once: the ack is applied, never refused', async () => {
    const { store, sent, reconnect } = await phoneThatSent(['first', 'second; the connection drops before its ack']);
    const second = sent[1]!;
    // The cell loads the reconnecting device's cursors only once the test lets it.
    const again = await reconnect();
    const resent = await sendMessage(again, CONV, 'c-2', 'second; the connection drops before its ack');
    expect(resent.seq).toBe(second.seq);
    again.send({ op: 'ack', conv: CONV, seq: resent.seq });
    again.send({ op: 'ack', acks: { [CONV]: resent.seq } });
    store.release();

    await again.until(() => again.all('synced').length > 0, { what: 'synced' });
    expect(await again.request({ op: 'ping', id: 'p' })).toMatchObject({ t: 'pong' });
    expect(again.all('error')).toEqual([]);
    // The (cumulative) ack moved the device's cursor before catch-up: nothing up to it is pushed.
    expect(again.messages(CONV)).toEqual([]);
    const inbox = await again.request({ op: 'inbox', id: 'i' });
    expect(inbox).toMatchObject({ t: 'inbox', conversations: [{ conv: CONV, deliveredSeq: second.seq }] });
  });

  test('acks waiting for the cursors are bounded: beyond MAX_ACKS_WAITING_FOR_CURSORS, RATE_LIMITED', async () => {
    // An ack budget above the bound, so that the bound is what refuses.
    const { store, reconnect } = await phoneThatSent(['first'], { ackRatePerSecond: 100_000, ackBurst: 2 * MAX_ACKS_WAITING_FOR_CURSORS });
    const again = await reconnect();
    for (let index = 0; index <= MAX_ACKS_WAITING_FOR_CURSORS; index++) again.send({ op: 'ack', conv: CONV, seq: 1 });
    const refused = await again.next('error');
    expect(refused).toMatchObject({ t: 'error', code: 'RATE_LIMITED' });
    store.release();
    await again.until(() => again.all('synced').length > 0, { what: 'synced' });
    expect(await again.request({ op: 'ping', id: 'p' })).toMatchObject({ t: 'pong' });
    expect(again.all('error')).toHaveLength(1);
  });

  test('an ack beyond the conversation that waited for the cursors is still refused', async () => {
    const { store, reconnect } = await phoneThatSent(['first']);
    const again = await reconnect();
    again.send({ op: 'ack', conv: CONV, seq: 2 });
    store.release();
    const refused = await again.next('error');
    expect(refused).toMatchObject({ t: 'error', code: 'SEQ_OUT_OF_RANGE' });
  });
});
