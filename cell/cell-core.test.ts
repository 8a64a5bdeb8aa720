import { beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { verifyToken, mintToken, type Identity } from './access/tokens.js';
import { CellCore } from './cell-core.js';
import { LimitsConfig } from './settings.js';
import { silentLogger } from '../platform/logger.js';
import { noopMetrics } from '../platform/metrics.js';
import type { DeviceConnection } from './messaging/device.js';
import { CellMetrics } from './metrics.js';
import { CloseCode } from './protocol/errors.js';
import { keys } from './messaging/keys.js';
import { storedReadCursors } from './messaging/read-cursors.js';
import { MemoryStore } from '../platform/store/memory-store.js';
import type { Store, StoreOp } from '../platform/store/store.js';
import { StoreError } from '../platform/store/store.js';
import { TrackedStore, whenStoresIdle } from '../testing/tracked-store.js';
import { RecordingPort } from '../testing/recording-port.js';

const SECRET = 'unit-test-secret-0123456789abcdef-0123';

/** A store whose writes can be made to fail, to see what a failed write leaves behind. */
class FlakyStore extends MemoryStore {
  failWrites = false;

  override async write(ops: readonly StoreOp[]): Promise<void> {
    if (this.failWrites) throw new StoreError('injected write failure');
    return super.write(ops);
  }
}

/** A store whose writes can be held back; held writes then land in the order they were made, as a group commit's do. */
class GatedStore extends MemoryStore {
  private held: Array<() => void> | undefined;

  hold(): void {
    this.held = [];
  }

  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const land of held) land();
  }

  override write(ops: readonly StoreOp[]): Promise<void> {
    const held = this.held;
    if (held === undefined) return super.write(ops);
    return new Promise<void>((resolve, reject) => held.push(() => void super.write(ops).then(resolve, reject)));
  }

  /** Writes held back now (TrackedStore leaves them out of what it waits for). */
  get heldWrites(): number {
    return this.held?.length ?? 0;
  }
}

/**
 * A store whose reads complete in a shuffled order, as a thread-pooled LevelDB's may, and that
 * has no synchronous reads (as Redis will not), so the cell must take the asynchronous path.
 */
class ShuffledReadStore implements Store {
  private readonly inner = new MemoryStore();
  private readonly random = new SeededRandom(11);

  open = (): Promise<void> => this.inner.open();
  close = (): Promise<void> => this.inner.close();
  write = (ops: readonly StoreOp[]): Promise<void> => this.inner.write(ops);
  range: Store['range'] = (query) => this.inner.range(query);

  async getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    await this.delay();
    return this.inner.getMany(keys);
  }

  async get(key: string): Promise<string | undefined> {
    await this.delay();
    return this.inner.get(key);
  }

  private async delay(): Promise<void> {
    const rounds = Math.floor(this.random.next() * 5);
    for (let round = 0; round < rounds; round++) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

describe('CellCore on a manual clock and a memory store', () => {
  let clock: ManualClock;
  let store: TrackedStore;
  let core: CellCore;

  /** Waits until the core has nothing left to do (TrackedStore); fails if it never gets there. */
  function settle(): Promise<void> {
    return whenStoresIdle([store]);
  }

  async function makeCore(limits: Partial<LimitsConfig> = {}, storeToUse: Store = new MemoryStore()): Promise<void> {
    clock = new ManualClock();
    store = new TrackedStore(storeToUse);
    await store.open();
    core = new CellCore({
      cellId: 'unit',
      tenants: [{ id: 'mall', secret: SECRET, origins: [], merchants: [{ id: 'm1' }] }],
      limits: LimitsConfig.parse({ ratePerSecond: 1000, rateBurst: 1000, ...limits }),
      clock,
      random: new SeededRandom(7),
      store,
      metrics: new CellMetrics(noopMetrics),
      logger: silentLogger,
    });
  }

  async function identity(user: string, options: { merchant?: string; device?: string; ttlSeconds?: number } = {}): Promise<Identity> {
    const token = await mintToken({
      secret: SECRET,
      tenant: 'mall',
      user,
      role: options.merchant === undefined ? 'customer' : 'agent',
      ...(options.merchant === undefined ? {} : { merchant: options.merchant }),
      device: options.device ?? 'd1',
      ttlSeconds: options.ttlSeconds ?? 600,
      nowMs: clock.now(),
    });
    return verifyToken(token, () => [{ secret: SECRET }], clock.now());
  }

  async function connect(user: string, options: { merchant?: string; device?: string; ttlSeconds?: number } = {}): Promise<{ port: RecordingPort; connection: DeviceConnection }> {
    const port = new RecordingPort();
    const connection = core.connect(await identity(user, options), port);
    port.onClose = () => core.disconnect(connection);
    await settle();
    return { port, connection };
  }

  beforeEach(async () => {
    await makeCore();
  });

  it('closes a device with 4401 when its token expires on the virtual clock', async () => {
    const { port } = await connect('alice', { ttlSeconds: 60 });
    clock.advance(59_000);
    expect(port.closed).toBeUndefined();
    clock.advance(1_000);
    expect(port.closed?.code).toBe(CloseCode.TokenExpired);
    expect(core.presence.connections).toBe(0);
  });

  it('rate-limits frames by virtual time and refills the bucket as time passes', async () => {
    await makeCore({ ratePerSecond: 2, rateBurst: 2 });
    const { port, connection } = await connect('alice');
    for (let index = 0; index < 3; index++) core.receive(connection, JSON.stringify({ op: 'ping', id: `p${index}` }));
    await settle();
    expect(port.of('pong').map((frame) => frame.id)).toEqual(['p0', 'p1']);
    expect(port.of('error')).toMatchObject([{ id: 'p2', code: 'RATE_LIMITED', retryAfterMs: 500 }]);
    clock.advance(500);
    core.receive(connection, JSON.stringify({ op: 'ping', id: 'p3' }));
    await settle();
    expect(port.of('pong').map((frame) => frame.id)).toEqual(['p0', 'p1', 'p3']);
  });

  it('counts acks against their own, larger budget than other frames', async () => {
    await makeCore({ ratePerSecond: 1, rateBurst: 1 });
    const { connection: customer } = await connect('alice');
    core.receive(customer, JSON.stringify({ op: 'send', id: 's', conv: 'm1:alice', cmid: 'c1', body: 'hi' }));
    await settle();
    const { port: agent, connection } = await connect('bob', { merchant: 'm1' });
    expect(agent.of('msg').map((frame) => frame.seq)).toEqual([1]);
    for (let index = 0; index < 5; index++) core.receive(connection, JSON.stringify({ op: 'ack', conv: 'm1:alice', seq: 1 }));
    await settle();
    expect(connection.cursors.get('m1:alice')?.ackedSeq).toBe(1);
    expect(agent.of('error')).toEqual([]);
  });

  it('limits acks by their own budget, credited with every message pushed', async () => {
    await makeCore({ ackRatePerSecond: 1, ackBurst: 2, deliveryWindow: 2 });
    const { connection: customer } = await connect('alice');
    const { port: agent, connection } = await connect('bob', { merchant: 'm1' });
    expect(agent.of('welcome')[0]?.limits).toMatchObject({ ackRatePerSecond: 1, ackBurst: 2 });
    const ack = JSON.stringify({ op: 'ack', conv: 'm1:alice', seq: 1 });
    for (let index = 0; index < 3; index++) core.receive(connection, ack);
    await settle();
    // The first two went into an empty conversation (out of range); the third was over budget.
    expect(agent.of('error').map((frame) => frame.code).sort()).toEqual(['RATE_LIMITED', 'SEQ_OUT_OF_RANGE', 'SEQ_OUT_OF_RANGE']);
    clock.advance(1_000);
    core.receive(customer, JSON.stringify({ op: 'send', id: 's', conv: 'm1:alice', cmid: 'c1', body: 'hi' }));
    await settle();
    expect(agent.of('msg').map((frame) => frame.seq)).toEqual([1]);
    // One token came back with time, one with the push.
    for (let index = 0; index < 3; index++) core.receive(connection, ack);
    await settle();
    expect(agent.of('error').map((frame) => frame.code).slice(3)).toEqual(['RATE_LIMITED']);
  });

  it('counts every refused entry of an ack frame against the error allowance', async () => {
    await makeCore({ maxConsecutiveErrors: 10 });
    const { port, connection } = await connect('alice');
    core.receive(connection, JSON.stringify({ op: 'send', id: 's', conv: 'm1:alice', cmid: 'c1', body: 'hi' }));
    await settle();
    // One good entry and four refused (merchants not hosted here): the good one excuses nothing.
    const acks = { 'm1:alice': 1, 'm2:alice': 3, 'm3:alice': 3, 'm4:alice': 3, 'm5:alice': 3 };
    core.receive(connection, JSON.stringify({ op: 'ack', acks }));
    await settle();
    expect(port.closed).toBeUndefined();
    core.receive(connection, JSON.stringify({ op: 'ack', acks }));
    await settle();
    expect(port.of('error')).toHaveLength(8);
    core.receive(connection, JSON.stringify({ op: 'ack', acks }));
    await settle();
    expect(port.closed?.code).toBe(CloseCode.PolicyViolation);
    expect(port.of('error')).toHaveLength(10);
  });

  it('a failed store write fails the send and leaves no gap in the sequence', async () => {
    const flaky = new FlakyStore();
    await makeCore({}, flaky);
    const { port, connection } = await connect('alice');
    core.receive(connection, JSON.stringify({ op: 'send', id: 'a', conv: 'm1:alice', cmid: 'c1', body: 'one' }));
    await settle();
    flaky.failWrites = true;
    core.receive(connection, JSON.stringify({ op: 'send', id: 'b', conv: 'm1:alice', cmid: 'c2', body: 'two' }));
    await settle();
    expect(port.of('error')).toMatchObject([{ id: 'b', code: 'STORE_UNAVAILABLE' }]);
    flaky.failWrites = false;
    core.receive(connection, JSON.stringify({ op: 'send', id: 'c', conv: 'm1:alice', cmid: 'c2', body: 'two' }));
    await settle();
    expect(port.of('sent').map((frame) => [frame.id, frame.seq])).toEqual([
      ['a', 1],
      ['c', 2],
    ]);
  });

  it("never stores a read cursor below the one the sender's own message under way implies", async () => {
    const gated = new GatedStore();
    await makeCore({}, gated);
    const { connection: alice } = await connect('alice');
    const { connection: agent } = await connect('bob', { merchant: 'm1' });
    core.receive(alice, JSON.stringify({ op: 'send', id: 'a1', conv: 'm1:alice', cmid: 'a1', body: 'hello' }));
    for (const cmid of ['b2', 'b3']) core.receive(agent, JSON.stringify({ op: 'send', id: cmid, conv: 'm1:alice', cmid, body: 'hi' }));
    await settle();
    // Her seq 4 is being written (sending means having read up to 4) when her read of 3 arrives.
    gated.hold();
    core.receive(alice, JSON.stringify({ op: 'send', id: 'a4', conv: 'm1:alice', cmid: 'a4', body: 'again' }));
    await settle();
    core.receive(alice, JSON.stringify({ op: 'read', id: 'r3', conv: 'm1:alice', seq: 3 }));
    await settle();
    gated.release();
    await settle();
    // Her read of 3 is stored, and her own message 4 says she read up to 4 (read-cursors.ts).
    expect(await store.get(keys.readCursor('mall', 'm1:alice', 'c:alice'))).toBe('3');
    expect((await storedReadCursors(store, 'mall', 'm1:alice')).get('c:alice')).toBe(4);
  });

  it("sequences a sender's pipelined messages in arrival order, whatever order store reads complete in", async () => {
    await makeCore({}, new ShuffledReadStore());
    const { port, connection } = await connect('alice');
    for (let index = 1; index <= 40; index++) {
      core.receive(connection, JSON.stringify({ op: 'send', id: `s${index}`, conv: 'm1:alice', cmid: `c${index}`, body: `m${index}` }));
      if (index % 7 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await settle();
    expect(port.of('sent').map((frame) => frame.id)).toEqual(Array.from({ length: 40 }, (_, index) => `s${index + 1}`));
    expect(port.of('sent').map((frame) => frame.seq)).toEqual(Array.from({ length: 40 }, (_, index) => index + 1));
  });

  it('holds at most deliveryWindow unacked messages per device and resumes on ack', async () => {
    await makeCore({ deliveryWindow: 3 });
    const { connection: customer } = await connect('alice');
    const { port: agent, connection } = await connect('bob', { merchant: 'm1' });
    for (let index = 1; index <= 7; index++) {
      core.receive(customer, JSON.stringify({ op: 'send', conv: 'm1:alice', cmid: `c${index}`, body: `m${index}` }));
    }
    await settle();
    expect(agent.of('msg').map((frame) => frame.seq)).toEqual([1, 2, 3]);
    core.receive(connection, JSON.stringify({ op: 'ack', conv: 'm1:alice', seq: 2 }));
    await settle();
    expect(agent.of('msg').map((frame) => frame.seq)).toEqual([1, 2, 3, 4, 5]);
    core.receive(connection, JSON.stringify({ op: 'ack', conv: 'm1:alice', seq: 5 }));
    await settle();
    expect(agent.of('msg').map((frame) => frame.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('writes delivery cursors at most every cursorWriteIntervalMs, yet resumes a reconnect from the latest ack', async () => {
    await makeCore({ cursorWriteIntervalMs: 500 });
    const { connection: customer } = await connect('alice');
    for (let index = 1; index <= 5; index++) {
      core.receive(customer, JSON.stringify({ op: 'send', conv: 'm1:alice', cmid: `c${index}`, body: `m${index}` }));
    }
    await settle();
    const first = await connect('bob', { merchant: 'm1', device: 'desk' });
    expect(first.port.of('msg').map((frame) => frame.seq)).toEqual([1, 2, 3, 4, 5]);
    core.receive(first.connection, JSON.stringify({ op: 'ack', conv: 'm1:alice', seq: 3 }));
    await settle();
    const cursorKey = 'd/mall/a:m1:bob/desk/m1:alice';
    expect(await store.get(cursorKey)).toBeUndefined();

    first.port.close(1000, 'bye');
    const second = await connect('bob', { merchant: 'm1', device: 'desk' });
    expect(second.port.of('msg').map((frame) => frame.seq)).toEqual([4, 5]);

    clock.advance(500);
    await settle();
    expect(await store.get(cursorKey)).toBe('3');
  });

  it('drain lets writes under way finish and be acked, then says going away', async () => {
    const { port, connection } = await connect('alice');
    core.receive(connection, JSON.stringify({ op: 'send', id: 'a', conv: 'm1:alice', cmid: 'c1', body: 'one' }));
    await core.drain();
    expect(port.of('sent').map((frame) => frame.seq)).toEqual([1]);
    expect(port.closed?.code).toBe(CloseCode.GoingAway);
  });

  it('a device connecting again replaces its older connection with 4409', async () => {
    const first = await connect('alice', { device: 'phone' });
    const second = await connect('alice', { device: 'phone' });
    expect(first.port.closed?.code).toBe(CloseCode.Replaced);
    expect(second.port.closed).toBeUndefined();
    expect(core.presence.deviceCount({ tenant: 'mall', role: 'customer', user: 'alice' })).toBe(1);
  });
});
