import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../platform/manual-clock.js';
import { InvariantError } from '../../platform/invariant.js';
import { SeededRandom } from '../../platform/random.js';
import { MemoryStore } from '../../platform/store/memory-store.js';
import { StoreError, type StoreOp } from '../../platform/store/store.js';
import { CellError } from '../protocol/errors.js';
import type { ChatMessage } from '../protocol/frames.js';
import { ConversationLog, type AppendResult } from './conversation-log.js';
import { keys } from './keys.js';
import { SENT_READ_WINDOW } from './read-cursors.js';
import { REFUSAL_HOLD_MS } from './refused-senders.js';

const TENANT = 'mall';
const CONV = 'm1:alice';

function message(seq: number, conv = CONV): ChatMessage {
  return { conv, seq, from: 'alice', role: 'customer', device: 'phone', cmid: `c${seq}`, body: `m${seq}`, ts: 0 };
}

/** A store preloaded with `ops`, as another (buggy) writer or a damaged disk would leave it. */
async function storeWith(ops: StoreOp[]): Promise<MemoryStore> {
  const store = new MemoryStore();
  await store.open();
  if (ops.length > 0) await store.write(ops);
  return store;
}

const messageOps = (...seqs: number[]): StoreOp[] =>
  seqs.map((seq) => ({ type: 'put', key: keys.message(TENANT, CONV, seq), value: JSON.stringify(message(seq)) }));

function logOn(store: MemoryStore, onDurable: ConstructorParameters<typeof ConversationLog>[0]['onDurable'] = () => {}): ConversationLog {
  return new ConversationLog({ store, clock: new ManualClock(), onDurable });
}

/** A store whose writes fail while `failing`, and can be held back until released. */
class FlakyStore extends MemoryStore {
  failing = false;
  /** Writes land, and are reported failed all the same (a reply lost with its connection). */
  failingAfterWrite = false;
  private held: Array<(fail: boolean) => void> | undefined;

  hold(): void {
    this.held = [];
  }

  get heldWrites(): number {
    return this.held?.length ?? 0;
  }

  /** Lets the held writes land, or (`fail`) fails them. */
  release(fail = false): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const land of held) land(fail);
  }

  override write(ops: readonly StoreOp[]): Promise<void> {
    if (this.failing) return Promise.reject(new StoreError('injected write failure'));
    if (this.failingAfterWrite) return super.write(ops).then(() => Promise.reject(new StoreError('injected lost reply')));
    const held = this.held;
    if (held === undefined) return super.write(ops);
    return new Promise<void>((resolve, reject) =>
      held.push((fail) => (fail ? reject(new StoreError('injected write failure')) : void super.write(ops).then(resolve, reject))),
    );
  }
}

/** Waits, one event-loop turn at a time, until `condition` holds; fails with `what` after a bound. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let turn = 0; turn < 1_000; turn++) {
    if (condition()) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  throw new Error(`gave up waiting for ${what}`);
}

describe('ConversationLog read cursors', () => {
  it("writes a sender's cursor only with the batch that pushes its newest message out of the window, and reloads every cursor", async () => {
    const store = new MemoryStore();
    await store.open();
    const writes: StoreOp[][] = [];
    const write = store.write.bind(store);
    store.write = (ops) => {
      writes.push([...ops]);
      return write(ops);
    };
    const log = logOn(store);
    const send = (from: string, role: 'customer' | 'agent', cmid: string) => log.append({ tenant: TENANT, conv: CONV, from, role, device: 'd', cmid, body: cmid });
    await send('alice', 'customer', 'a1');
    await send('alice', 'customer', 'a2');
    // Her first send: the message, its idempotency record and the conversation's two index entries; no cursor.
    expect(writes.map((ops) => ops.map((op) => op.key.split('/')[0]))).toEqual([['m', 'i', 'uc', 'mc'], ['m', 'i']]);
    for (let index = 1; index <= SENT_READ_WINDOW + 1; index++) await send('bob', 'agent', `b${index}`);
    const cursorWrites = writes.flatMap((ops, index) => ops.filter((op) => op.key.startsWith('r/')).map((op) => [index, op.key, op.type === 'put' ? op.value : undefined]));
    // Bob's 64th message is seq 66, the next to last write: it pushes her seq 2 out of the newest 64 (3..66).
    expect(cursorWrites).toEqual([[writes.length - 2, keys.readCursor(TENANT, CONV, 'c:alice'), '2']]);
    const state = await log.conversation(TENANT, CONV);
    expect(Object.fromEntries(state.reads)).toEqual({ 'c:alice': 2, 'a:m1:bob': 2 + SENT_READ_WINDOW + 1 });
    expect((await logOn(store).conversation(TENANT, CONV)).reads).toEqual(state.reads);
  });
});

describe('ConversationLog refusals', () => {
  it("holds a device's later sends after a refused one until it comes again, so a send that crossed the refusal cannot overtake it", async () => {
    const store = new FlakyStore();
    await store.open();
    const clock = new ManualClock();
    const log = new ConversationLog({ store, clock, onDurable: () => {} });
    const send = (cmid: string, device = 'phone') => log.append({ tenant: TENANT, conv: CONV, from: 'alice', role: 'customer', device, cmid, body: cmid });
    store.failing = true;
    await expect(send('a1')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    store.failing = false;
    // a2 was sent before the phone heard of the refusal: stored now, it would come before a1.
    await expect(send('a2')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining('send it again first') });
    // Another device of hers keeps its own order.
    expect((await send('l1', 'laptop')).message.seq).toBe(1);
    expect((await send('a1')).message.seq).toBe(2);
    expect((await send('a2')).message.seq).toBe(3);
    // A device that gave its refused send up is held for REFUSAL_HOLD_MS at most.
    store.failing = true;
    await expect(send('a3')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    store.failing = false;
    await expect(send('a4')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    clock.advance(REFUSAL_HOLD_MS);
    expect((await send('a4')).message.seq).toBe(4);
  });
});

describe('ConversationLog invariants', () => {
  it('refuses to load a read cursor beyond the last stored message', async () => {
    const store = await storeWith([...messageOps(1, 2), { type: 'put', key: keys.readCursor(TENANT, CONV, 'c:alice'), value: '5' }]);
    await expect(logOn(store).conversation(TENANT, CONV)).rejects.toThrow(InvariantError);
    await expect(logOn(store).conversation(TENANT, CONV)).rejects.toThrow('stored read cursor of c:alice in m1:alice is 5, outside 0..2');
  });

  it('refuses to load a read cursor that is negative or not a number', async () => {
    for (const value of ['-1', 'two', '1.5']) {
      const store = await storeWith([...messageOps(1, 2), { type: 'put', key: keys.readCursor(TENANT, CONV, 'a:m1:bob'), value }]);
      await expect(logOn(store).conversation(TENANT, CONV), value).rejects.toThrow(InvariantError);
    }
  });

  it('refuses to load stored messages with a gap', async () => {
    const store = await storeWith(messageOps(1, 2, 4));
    await expect(logOn(store).conversation(TENANT, CONV)).rejects.toThrow('stored messages of m1:alice are not gap-free: 3 from seq 1 to 4');
  });

  it('loads a consistent conversation', async () => {
    const store = await storeWith([...messageOps(1, 2, 3), { type: 'put', key: keys.readCursor(TENANT, CONV, 'c:alice'), value: '3' }]);
    const state = await logOn(store).conversation(TENANT, CONV);
    expect(state.durableSeq).toBe(3);
    expect(state.reads.get('c:alice')).toBe(3);
  });

  it('refuses a mirror write that would leave a gap, and writes nothing', async () => {
    const store = await storeWith([]);
    const log = logOn(store);
    await expect(log.mirror(TENANT, CONV, [message(1), message(3)], [])).rejects.toThrow(InvariantError);
    expect((await log.conversation(TENANT, CONV)).durableSeq).toBe(0);
    expect(await store.get(keys.message(TENANT, CONV, 1))).toBeUndefined();
  });

  it("refuses with a failed write the appends its senders queued behind it, so that a retry keeps each sender's order", async () => {
    const store = new FlakyStore();
    await store.open();
    const log = logOn(store);
    await log.conversation(TENANT, CONV);
    store.hold();
    const send = (from: string, role: 'customer' | 'agent', cmid: string) => log.append({ tenant: TENANT, conv: CONV, from, role, device: 'd', cmid, body: cmid });
    const first = send('alice', 'customer', 'a1');
    await until(() => store.heldWrites === 1, 'the first write to be under way');
    // Queued behind it: alice's next message, and the agent's.
    const second = send('alice', 'customer', 'a2');
    const agents = send('bob', 'agent', 'b1');
    store.release(true);
    await expect(first).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    await expect(second).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    // Another sender's message is not held back by alice's failure.
    expect((await agents).message.seq).toBe(1);
    // Alice retries in her order.
    expect((await send('alice', 'customer', 'a1')).message.seq).toBe(2);
    expect((await send('alice', 'customer', 'a2')).message.seq).toBe(3);
  });

  it('takes the messages of a failed write that reached the store as durable, and never gives their seqs again', async () => {
    const store = new FlakyStore();
    await store.open();
    const durable: ChatMessage[] = [];
    const log = logOn(store, (_tenant, message) => durable.push(message));
    const send = (cmid: string, device = 'd') => log.append({ tenant: TENANT, conv: CONV, from: 'alice', role: 'customer', device, cmid, body: cmid });
    await send('a1');
    store.failingAfterWrite = true;
    await expect(send('a2')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    store.failingAfterWrite = false;
    // The next send (from her other device: this one's wait for a2 again) finds a2 stored at seq 2:
    // it takes seq 3, and a2 is told to the cell before it.
    expect((await send('a3', 'd2')).message.seq).toBe(3);
    expect(durable.map((message) => [message.seq, message.cmid])).toEqual([[1, 'a1'], [2, 'a2'], [3, 'a3']]);
    expect(JSON.parse((await store.get(keys.message(TENANT, CONV, 2)))!)).toMatchObject({ cmid: 'a2', body: 'a2' });
    // The refused sender's resend is answered from the store, with its seq.
    await expect(send('a2')).resolves.toMatchObject({ duplicate: true, message: { seq: 2, body: 'a2' } });
    expect((await log.conversation(TENANT, CONV)).reads.get('c:alice')).toBe(3);
  });

  it('refuses a mirror write while an append to the conversation is being written', async () => {
    const store = new FlakyStore();
    await store.open();
    const log = logOn(store);
    await log.conversation(TENANT, CONV);
    store.hold();
    const appended = log.append({ tenant: TENANT, conv: CONV, from: 'alice', role: 'customer', device: 'phone', cmid: 'c1', body: 'hi' });
    await until(() => store.heldWrites === 1, 'the append write to be under way');
    await expect(log.mirror(TENANT, CONV, [message(1)], [])).rejects.toThrow('mirror write to m1:alice while another write is under way');
    store.release();
    expect((await appended).message.seq).toBe(1);
  });

  it('keeps seqs gap-free and increasing, and read cursors within 0..last, through random appends, resends, reads and store failures', async () => {
    const senders = [
      { from: 'alice', role: 'customer', party: 'c:alice' },
      { from: 'bob', role: 'agent', party: 'a:m1:bob' },
    ] as const;
    for (const seed of [1, 2, 3, 4, 5]) {
      const random = new SeededRandom(seed);
      const store = new FlakyStore();
      await store.open();
      const durable: number[] = [];
      const clock = new ManualClock();
      const log = new ConversationLog({ store, clock, onDurable: (_tenant, durableMessage) => durable.push(durableMessage.seq) });
      const state = await log.conversation(TENANT, CONV);
      let lastDurableSeq = 0;
      const pending: Array<Promise<unknown>> = [];
      const expectOnlyOperatingErrors = (promise: Promise<unknown>): void => {
        pending.push(promise.catch((error: unknown) => expect(error instanceof CellError || error instanceof StoreError, `seed ${seed}: ${String(error)}`).toBe(true)));
      };
      for (let step = 0; step < 1_000; step++) {
        const draw = random.next();
        // Later on alice falls silent, so her newest message leaves the window that implies her cursor (read-cursors.ts).
        const sender = senders[step < 300 ? Math.floor(random.next() * senders.length) : 1]!;
        if (draw < 0.55) {
          // A small cmid pool makes resends (same body) and conflicts (another body) common.
          const cmid = `k${Math.floor(random.next() * (step < 300 ? 40 : 1_000))}`;
          const body = random.next() < 0.9 ? `body of ${cmid}` : `other body of ${cmid}`;
          const append: Promise<AppendResult> = log.append({ tenant: TENANT, conv: CONV, from: sender.from, role: sender.role, device: 'd', cmid, body });
          expectOnlyOperatingErrors(append);
        } else if (draw < 0.75) {
          expectOnlyOperatingErrors(log.markRead(TENANT, CONV, sender.party, Math.floor(random.next() * (state.durableSeq + 3))));
        } else if (draw < 0.85) {
          store.failing = !store.failing;
        } else {
          await Promise.all(pending.splice(0));
          // Senders whose refused sends never come again are held no longer (RefusedSenders).
          clock.advance(REFUSAL_HOLD_MS);
        }
        expect(state.durableSeq, `seed ${seed} step ${step}`).toBeGreaterThanOrEqual(lastDurableSeq);
        lastDurableSeq = state.durableSeq;
        for (const seq of state.reads.values()) expect(seq).toBeLessThanOrEqual(state.durableSeq);
      }
      store.failing = false;
      await Promise.all(pending.splice(0));
      // The run did something: messages became durable and cursors moved.
      expect(durable.length, `seed ${seed}`).toBeGreaterThan(20);
      expect(state.reads.size, `seed ${seed}`).toBe(2);
      expect(durable, `seed ${seed}`).toEqual(Array.from({ length: durable.length }, (_, index) => index + 1));
      expect(state.durableSeq).toBe(durable.length);
      // What was written loads again, through the load-time checks, as the same head.
      const reloaded = await logOn(store).conversation(TENANT, CONV);
      expect(reloaded.durableSeq).toBe(state.durableSeq);
      expect(reloaded.reads).toEqual(state.reads);
    }
  });
});
