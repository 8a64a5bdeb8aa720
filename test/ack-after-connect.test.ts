/**
 * A legal ack is never refused because it came early (issue 15, item 3). A device that resends
 * a message right after reconnecting gets `sent` at once (the cmid is known) and acks that seq
 * at once, possibly before the cell has loaded the device's cursors; the ack waits for them.
 * Over real sockets and a real LevelDB store whose reads of delivery cursors the test can hold,
 * so the ack surely arrives before the cursors are loaded.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { MAX_ACKS_WAITING_FOR_CURSORS } from '../cell/messaging/delivery.js';
import { LevelStore, type RangeQuery, type Store, type StoreOp } from '../cell/store/index.js';
import { Cleanup, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:alice';

/** A LevelDB store whose range reads of delivery cursors (`d/...`) wait while held. */
class CursorGatedStore implements Store {
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;
  /** Cursor reads waiting at the gate. */
  waiting = 0;

  constructor(private readonly inner: LevelStore) {}

  hold(): void {
    this.gate ??= new Promise((resolve) => (this.openGate = resolve));
  }

  release(): void {
    this.openGate?.();
    this.gate = undefined;
  }

  open(): Promise<void> {
    return this.inner.open();
  }

  close(): Promise<void> {
    this.release();
    return this.inner.close();
  }

  get(key: string): Promise<string | undefined> {
    return this.inner.get(key);
  }

  getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    return this.inner.getMany(keys);
  }

  getManySync(keys: readonly string[]): Array<string | undefined> {
    return this.inner.getManySync(keys);
  }

  write(ops: readonly StoreOp[]): Promise<void> {
    return this.inner.write(ops);
  }

  async range(query: RangeQuery): Promise<Array<[key: string, value: string]>> {
    const gate = this.gate;
    if (gate !== undefined && query.gte.startsWith('d/')) {
      this.waiting++;
      await gate;
      this.waiting--;
    }
    return this.inner.range(query);
  }
}

describe('an ack right after connecting', () => {
  test('reconnect, resend, get `sent`, ack that seq at once: the ack is applied, never refused', async () => {
    const store = new CursorGatedStore(new LevelStore({ directory: await cleanup.tempDir() }));
    const cell = await cleanup.cell({ storeInstance: store });
    const token = await tokenFor({ user: 'alice', device: 'phone' });
    const phone = await cleanup.client(cell.url, token);
    await sendMessage(phone, CONV, 'c-1', 'first');
    const second = await sendMessage(phone, CONV, 'c-2', 'second; the connection drops before its ack');
    await phone.close();

    // The cell loads the reconnecting device's cursors only once the test lets it.
    store.hold();
    const again = await cleanup.client(cell.url, token);
    await again.until(() => store.waiting > 0, { what: 'the cursor read under way' });
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
    const store = new CursorGatedStore(new LevelStore({ directory: await cleanup.tempDir() }));
    // An ack budget above the bound, so that the bound is what refuses.
    const cell = await cleanup.cell({ storeInstance: store, limits: { ackRatePerSecond: 100_000, ackBurst: 2 * MAX_ACKS_WAITING_FOR_CURSORS } });
    const token = await tokenFor({ user: 'alice', device: 'phone' });
    const phone = await cleanup.client(cell.url, token);
    await sendMessage(phone, CONV, 'c-1', 'first');
    await phone.close();

    store.hold();
    const again = await cleanup.client(cell.url, token);
    await again.until(() => store.waiting > 0, { what: 'the cursor read under way' });
    for (let index = 0; index <= MAX_ACKS_WAITING_FOR_CURSORS; index++) again.send({ op: 'ack', conv: CONV, seq: 1 });
    const refused = await again.next('error');
    expect(refused).toMatchObject({ t: 'error', code: 'RATE_LIMITED' });
    store.release();
    await again.until(() => again.all('synced').length > 0, { what: 'synced' });
    expect(await again.request({ op: 'ping', id: 'p' })).toMatchObject({ t: 'pong' });
    expect(again.all('error')).toHaveLength(1);
  });

  test('an ack beyond the conversation that waited for the cursors is still refused', async () => {
    const store = new CursorGatedStore(new LevelStore({ directory: await cleanup.tempDir() }));
    const cell = await cleanup.cell({ storeInstance: store });
    const token = await tokenFor({ user: 'alice', device: 'phone' });
    const phone = await cleanup.client(cell.url, token);
    await sendMessage(phone, CONV, 'c-1', 'first');
    await phone.close();

    store.hold();
    const again = await cleanup.client(cell.url, token);
    await again.until(() => store.waiting > 0, { what: 'the cursor read under way' });
    again.send({ op: 'ack', conv: CONV, seq: 2 });
    store.release();
    const refused = await again.next('error');
    expect(refused).toMatchObject({ t: 'error', code: 'SEQ_OUT_OF_RANGE' });
  });
});
