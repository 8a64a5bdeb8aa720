import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStore } from '../platform/store/memory-store.js';
import type { Store, StoreOp } from '../platform/store/store.js';
import { ManualClock } from '../platform/manual-clock.js';
import { PromMetrics } from '../platform/prom-metrics.js';
import { SeededRandom } from '../platform/random.js';
import { MemoryNetwork, memoryAddress, type MemoryTransport } from './memory-network.js';
import { outboxKeys } from './forward-store.js';
import { FORWARD_PROTOCOL, ForwardResponse, type ForwardedEntry } from './forward-wire.js';
import { Inbox, type InboxInit } from './inbox.js';
import { Outbox, type OutboxEntry, type OutboxInit } from './outbox.js';
import { TrackedStore, whenStoresIdle } from '../testing/tracked-store.js';

/**
 * Waits until the code under test is done with the present instant: the memory network delivers
 * on clock timers, so only the stores of the cluster under test can wake it (see TrackedStore).
 */
function drain(): Promise<void> {
  if (cluster === undefined) throw new Error('no cluster under test');
  return whenStoresIdle(cluster.stores);
}

/** Advances the manual clock in steps, letting the cells finish their work between them. */
async function advance(clock: ManualClock, totalMs: number, stepMs = 1): Promise<void> {
  for (let elapsedMs = 0; elapsedMs < totalMs; elapsedMs += stepMs) {
    clock.advance(Math.min(stepMs, totalMs - elapsedMs));
    await drain();
  }
}

/** Advances until `condition` holds; fails after `maxMs` of virtual time. */
async function runUntil(clock: ManualClock, condition: () => boolean, maxMs = 60_000, stepMs = 1): Promise<void> {
  const startMs = clock.now();
  await drain();
  while (!condition()) {
    if (clock.now() - startMs > maxMs) throw new Error(`condition not met within ${maxMs} ms of virtual time`);
    clock.advance(stepMs);
    await drain();
  }
}

const TEST_OUTBOX: OutboxInit = { requestTimeoutMs: 200, backoffInitialMs: 10, backoffMaxMs: 400 };

/** What a receiving cell applied: the handler returns StoreOps (the exactly-once path). */
interface Applied {
  /** Every handler invocation's entries, per source, in call order. */
  readonly calls: Array<{ source: string; entries: ForwardedEntry[] }>;
  /** Keys applied per source, in order. */
  readonly bySource: Map<string, string[]>;
}

interface TestCell {
  readonly cellId: string;
  peer: string;
  transport: MemoryTransport;
  store: TrackedStore;
  outbox: Outbox;
  inbox: Inbox;
  readonly applied: Applied;
}

class Cluster {
  readonly clock = new ManualClock();
  readonly random = new SeededRandom(7);
  readonly network = new MemoryNetwork({ clock: this.clock, random: this.random });
  readonly cells = new Map<string, TestCell>();
  /** The directory: cell to peer and back; tests edit it to model what the directory knows. */
  readonly peerOfCell = new Map<string, string>();
  readonly cellOfPeer = new Map<string, string>();
  /** Every store the cells have used, crashed ones included. */
  readonly stores = new Set<TrackedStore>();

  /** An arrow function, so tests can destructure it. */
  readonly cell = (cellId: string): TestCell => {
    const cell = this.cells.get(cellId);
    if (cell === undefined) throw new Error(`no cell ${cellId}`);
    return cell;
  };

  async addCell(cellId: string, options: { outbox?: OutboxInit; inbox?: InboxInit; store?: Store; peer?: string } = {}): Promise<TestCell> {
    const peer = options.peer ?? `peer-${cellId}`;
    const given = options.store;
    // A crashed cell's store comes back already tracked; a fresh one handed in is wrapped.
    const store = given instanceof TrackedStore ? given : new TrackedStore(given ?? new MemoryStore());
    if (given === undefined) await store.open();
    this.stores.add(store);
    const transport = await this.startTransport(peer);
    this.peerOfCell.set(cellId, peer);
    this.cellOfPeer.set(peer, cellId);
    const applied: Applied = this.cells.get(cellId)?.applied ?? { calls: [], bySource: new Map() };
    const cell: TestCell = { cellId, peer, transport, store, applied, outbox: undefined as unknown as Outbox, inbox: undefined as unknown as Inbox };
    cell.outbox = this.makeOutbox(cell, options.outbox);
    cell.inbox = this.makeInbox(cell, options.inbox);
    this.cells.set(cellId, cell);
    await cell.outbox.start();
    return cell;
  }

  makeOutbox(cell: TestCell, init: OutboxInit = {}): Outbox {
    return new Outbox(
      {
        store: cell.store,
        transport: cell.transport,
        clock: this.clock,
        random: this.random,
        cellId: cell.cellId,
        resolvePeer: (cellId) => this.peerOfCell.get(cellId),
      },
      { ...TEST_OUTBOX, ...init },
    );
  }

  makeInbox(cell: TestCell, init: InboxInit = {}): Inbox {
    const inbox = new Inbox({ store: cell.store, transport: cell.transport, cellOfPeer: (peer) => this.cellOfPeer.get(peer) }, init);
    inbox.onForward(async (source, entries) => {
      cell.applied.calls.push({ source, entries: [...entries] });
      let keys = cell.applied.bySource.get(source);
      if (keys === undefined) cell.applied.bySource.set(source, (keys = []));
      keys.push(...entries.map((entry) => entry.key));
      return entries.map((entry): StoreOp => ({ type: 'put', key: `applied/${source}/${entry.key}`, value: JSON.stringify(entry.payload) }));
    });
    inbox.start();
    return inbox;
  }

  async startTransport(peer: string): Promise<MemoryTransport> {
    const transport = this.network.createTransport(peer);
    await transport.start();
    for (const other of this.cells.values()) {
      if (other.transport.isRunning && other.peer !== peer) await transport.dial(memoryAddress(other.peer));
    }
    return transport;
  }

  /** Stops a cell as a crash would leave it: only its store survives. */
  async crash(cellId: string): Promise<TrackedStore> {
    const cell = this.cell(cellId);
    await cell.outbox.stop();
    await cell.inbox.stop();
    await cell.transport.stop();
    this.network.forget(cell.peer);
    return cell.store;
  }

  async stopAll(): Promise<void> {
    for (const cell of this.cells.values()) {
      await cell.outbox.stop();
      await cell.inbox.stop();
      await cell.transport.stop();
    }
  }
}

function entries(prefix: string, from: number, count: number, pad = ''): OutboxEntry[] {
  return Array.from({ length: count }, (_, index) => ({ key: `${prefix}${from + index}`, payload: { n: from + index, pad } }));
}

function keysOf(prefix: string, from: number, count: number): string[] {
  return Array.from({ length: count }, (_, index) => `${prefix}${from + index}`);
}

async function appliedKeys(store: Store, source: string): Promise<string[]> {
  const rows = await store.range({ gte: `applied/${source}/`, lt: `applied/${source}/\x7f`, limit: 100_000 });
  return rows.map(([key]) => key.slice(`applied/${source}/`.length));
}

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

async function makeCluster(cellIds: string[], options: { outbox?: OutboxInit; inbox?: InboxInit } = {}): Promise<Cluster> {
  cluster = new Cluster();
  for (const cellId of cellIds) await cluster.addCell(cellId, options);
  return cluster;
}

describe('Outbox and Inbox', () => {
  it('delivers 1,000 entries once and in order, in bounded batches, and empties the outbox', async () => {
    const { clock, cell } = await makeCluster(['a', 'b']);
    const a = cell('a');
    const b = cell('b');
    for (let chunk = 0; chunk < 10; chunk++) await a.outbox.enqueue('b', entries('m', chunk * 100, 100));
    expect(a.outbox.waiting().get('b')?.entries).toBe(1_000);
    let flushed = false;
    void a.outbox.flushed('b').then(() => (flushed = true));
    await runUntil(clock, () => flushed);
    expect(b.applied.bySource.get('a')).toEqual(keysOf('m', 0, 1_000));
    expect(await appliedKeys(b.store, 'a')).toHaveLength(1_000);
    expect(Math.max(...b.applied.calls.map((call) => call.entries.length))).toBeLessThanOrEqual(256);
    expect(a.outbox.waiting().get('b')?.entries).toBe(0);
    expect(await a.store.range({ gte: outboxKeys.entries('b'), lt: `${outboxKeys.entries('b')}\x7f`, limit: 10 })).toEqual([]);
    expect(a.outbox.stats()).toMatchObject({ enqueuedEntries: 1_000, ackedEntries: 1_000, failedAttempts: 0 });
    expect(await b.inbox.highWaterMark('a')).toMatchObject({ hw: 1_000 });
  });

  it('keeps batches within maxBatchEntries and maxBatchBytes', async () => {
    const { clock, cell } = await makeCluster(['a', 'b'], { outbox: { maxBatchEntries: 16, maxBatchBytes: 2_000, maxEntryBytes: 1_000 } });
    const a = cell('a');
    const b = cell('b');
    await a.outbox.enqueue('b', entries('x', 0, 100, 'p'.repeat(300)));
    await runUntil(clock, () => (b.applied.bySource.get('a')?.length ?? 0) === 100);
    const sizes = b.applied.calls.map((call) => call.entries.length);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(5); // about 360 bytes each: at most 5 fit in 2,000
    expect(b.applied.bySource.get('a')).toEqual(keysOf('x', 0, 100));
  });

  it('waits during a partition while cells on each side go on, then delivers once and in order after the heal', async () => {
    const { clock, network, cell } = await makeCluster(['a', 'b', 'c']);
    const a = cell('a');
    const b = cell('b');
    const c = cell('c');
    network.partition(['peer-a', 'peer-b'], ['peer-c']);
    for (let round = 0; round < 5; round++) {
      await a.outbox.enqueue('c', entries('toC', round * 40, 40));
      await a.outbox.enqueue('b', entries('toB', round * 40, 40));
      await c.outbox.enqueue('a', entries('toA', round * 40, 40));
      await advance(clock, 300, 10);
    }
    // Same side: delivered. Across the partition: waiting, counted, nothing lost.
    expect(b.applied.bySource.get('a')).toEqual(keysOf('toB', 0, 200));
    expect(c.applied.bySource.get('a')).toBeUndefined();
    expect(a.outbox.waiting().get('c')?.entries).toBe(200);
    expect(c.outbox.waiting().get('a')?.entries).toBe(200);
    expect(a.outbox.waiting().get('c')?.oldestEnqueuedAtMs).toBeLessThan(clock.now() - 1_000);
    expect(a.outbox.stats().failedAttempts).toBeGreaterThan(0);

    network.heal();
    a.outbox.nudge();
    c.outbox.nudge('a');
    await runUntil(clock, () => a.outbox.waiting().get('c')?.entries === 0 && c.outbox.waiting().get('a')?.entries === 0);
    expect(c.applied.bySource.get('a')).toEqual(keysOf('toC', 0, 200));
    expect(a.applied.bySource.get('c')).toEqual(keysOf('toA', 0, 200));
    expect(await appliedKeys(c.store, 'a')).toHaveLength(200);
  });

  it('delivers once and in order under 30% loss of every delivery', async () => {
    const { clock, network, cell } = await makeCluster(['a', 'b'], { outbox: { maxBatchEntries: 20 } });
    const a = cell('a');
    const b = cell('b');
    network.setFaults({ lossRate: 0.3 });
    for (let chunk = 0; chunk < 10; chunk++) await a.outbox.enqueue('b', entries('l', chunk * 50, 50));
    let flushed = false;
    void a.outbox.flushed('b').then(() => (flushed = true));
    await runUntil(clock, () => flushed, 600_000, 5);
    expect(b.applied.bySource.get('a')).toEqual(keysOf('l', 0, 500));
    expect(a.outbox.stats().failedAttempts).toBeGreaterThan(0);
    expect(b.inbox.stats().duplicateEntries).toBeGreaterThan(0); // lost acks made resends
    expect(b.inbox.stats().appliedEntries).toBe(500);
  });

  it('resumes after a sender crash from the same store, without duplicates at the receiver', async () => {
    const c = await makeCluster(['a', 'b'], { outbox: { maxBatchEntries: 50 } });
    const { clock, network } = c;
    const b = c.cell('b');
    await c.cell('a').outbox.enqueue('b', entries('r', 0, 300));
    await runUntil(clock, () => (b.applied.bySource.get('a')?.length ?? 0) >= 100);
    // From now on b's acks are lost: the next batch is applied but stays in a's outbox. Then a dies.
    network.blockOneWay(['peer-b'], ['peer-a']);
    await advance(clock, 1_000, 5);
    expect(b.applied.bySource.get('a')!.length).toBeLessThan(300);
    const store = await c.crash('a');
    network.heal();

    const a2 = await c.addCell('a', { store });
    expect(a2.outbox.waiting().get('b')!.entries).toBeGreaterThan(0);
    await a2.outbox.enqueue('b', entries('r', 300, 50));
    let flushed = false;
    void a2.outbox.flushed('b').then(() => (flushed = true));
    await runUntil(clock, () => flushed);
    expect(b.applied.bySource.get('a')).toEqual(keysOf('r', 0, 350));
    expect(b.inbox.stats().duplicateEntries).toBeGreaterThan(0);
    expect(b.inbox.stats().appliedEntries).toBe(350);

    // Everything acked and deleted: a further restart must number above the acked entries.
    await c.crash('a');
    const a3 = await c.addCell('a', { store });
    await a3.outbox.enqueue('b', entries('r', 350, 5));
    await runUntil(clock, () => b.applied.bySource.get('a')!.length === 355);
    expect(b.applied.bySource.get('a')).toEqual(keysOf('r', 0, 355));
  });

  it('applies nothing twice when the receiver crashes between its write and its ack, and finds it at a new address', async () => {
    const c = await makeCluster(['a', 'b']);
    const { clock, network } = c;
    const a = c.cell('a');
    const b = c.cell('b');
    const handlerCalls = new Map<string, number>();
    const countCalls = (calls: Applied['calls']): void => {
      handlerCalls.clear();
      for (const call of calls) for (const entry of call.entries) handlerCalls.set(entry.key, (handlerCalls.get(entry.key) ?? 0) + 1);
    };
    // Lose the acks from b, so b's writes land but a never hears of them.
    await a.outbox.enqueue('b', entries('k', 0, 100));
    network.blockOneWay(['peer-b'], ['peer-a']);
    await runUntil(clock, () => (b.applied.bySource.get('a')?.length ?? 0) === 100);
    expect(a.outbox.waiting().get('b')!.entries).toBe(100);
    const store = await c.crash('b');
    network.heal();

    // b comes back on the same store with a new peer id; the directory learns it.
    c.peerOfCell.delete('b');
    c.cellOfPeer.delete('peer-b');
    const b2 = await c.addCell('b', { store, peer: 'peer-b2' });
    await a.transport.dial(memoryAddress('peer-b2'));
    a.outbox.nudge('b');
    await a.outbox.enqueue('b', entries('k', 100, 10));
    await runUntil(clock, () => a.outbox.waiting().get('b')!.entries === 0);
    countCalls(b2.applied.calls);
    expect([...handlerCalls.values()].every((count) => count === 1)).toBe(true);
    expect(handlerCalls.size).toBe(110);
    expect(b2.applied.bySource.get('a')).toEqual(keysOf('k', 0, 110));
    expect(await appliedKeys(store, 'a')).toHaveLength(110);
    expect(b2.inbox.stats().duplicateEntries).toBe(100);
  });

  it('accepts a source that lost its store (a new epoch) and refuses late requests of the old one', async () => {
    const c = await makeCluster(['a', 'b']);
    const { clock } = c;
    const b = c.cell('b');
    await c.cell('a').outbox.enqueue('b', entries('e', 0, 50));
    await runUntil(clock, () => (b.applied.bySource.get('a')?.length ?? 0) === 50);
    const oldEpoch = c.cell('a').outbox.currentEpoch!;
    await c.crash('a');

    const fresh = new MemoryStore();
    await fresh.open();
    const a2 = await c.addCell('a', { store: fresh });
    expect(a2.outbox.currentEpoch!.id).not.toBe(oldEpoch.id);
    await a2.outbox.enqueue('b', entries('f', 0, 10));
    await runUntil(clock, () => a2.outbox.waiting().get('b')!.entries === 0);
    expect(b.applied.bySource.get('a')).toEqual([...keysOf('e', 0, 50), ...keysOf('f', 0, 10)]);
    expect(a2.outbox.stats().epochRaises).toBe(1);
    expect(a2.outbox.currentEpoch!.generation).toBe(2);
    expect(b.inbox.stats().epochChanges).toBe(1);

    // A late request of the dead incarnation cannot reset the mark.
    const late = a2.transport.request(
      'peer-b',
      FORWARD_PROTOCOL,
      new TextEncoder().encode(JSON.stringify({ v: 1, sourceCellId: 'a', epoch: oldEpoch, entries: [{ seq: 51, key: 'zombie', payload: null }] })),
      { timeoutMs: 100 },
    );
    await advance(clock, 10);
    expect(ForwardResponse.parse(JSON.parse(new TextDecoder().decode(await late)))).toMatchObject({ ok: false, code: 'STALE_EPOCH', generation: 2 });
    expect(b.applied.bySource.get('a')).not.toContain('zombie');
  });

  it('refuses a sender the directory does not know, then delivers once it does', async () => {
    const c = await makeCluster(['a', 'b']);
    const { clock } = c;
    const a = c.cell('a');
    c.cellOfPeer.delete('peer-a');
    await a.outbox.enqueue('b', entries('u', 0, 5));
    await advance(clock, 500, 5);
    expect(c.cell('b').applied.bySource.get('a')).toBeUndefined();
    expect(c.cell('b').inbox.stats().refusedRequests).toBeGreaterThan(0);
    expect(a.outbox.waiting().get('b')!.entries).toBe(5);
    c.cellOfPeer.set('peer-a', 'a');
    a.outbox.nudge('b');
    await runUntil(clock, () => a.outbox.waiting().get('b')!.entries === 0);
    expect(c.cell('b').applied.bySource.get('a')).toEqual(keysOf('u', 0, 5));
  });

  it('retries a batch the handler refused, and applies a handler without ops (the idempotent path) in order', async () => {
    const { clock, cell } = await makeCluster(['a', 'b']);
    const a = cell('a');
    const b = cell('b');
    let failuresLeft = 2;
    const seen: string[] = [];
    b.inbox.onForward(async (_source, batch) => {
      if (failuresLeft-- > 0) throw new Error('not now');
      seen.push(...batch.map((entry) => entry.key));
    });
    await a.outbox.enqueue('b', entries('h', 0, 30));
    await runUntil(clock, () => a.outbox.waiting().get('b')!.entries === 0);
    expect(seen).toEqual(keysOf('h', 0, 30));
    expect(b.inbox.stats().refusedRequests).toBe(2);
    expect(await b.inbox.highWaterMark('a')).toMatchObject({ hw: 30 });
  });

  it('answers malformed and forged requests with a refusal code and never crashes', async () => {
    const c = await makeCluster(['a', 'b']);
    const { clock } = c;
    const a = c.cell('a');
    const epoch = a.outbox.currentEpoch!;
    const ask = async (body: string | Uint8Array): Promise<unknown> => {
      const data = typeof body === 'string' ? new TextEncoder().encode(body) : body;
      const pending = a.transport.request('peer-b', FORWARD_PROTOCOL, data, { timeoutMs: 100 });
      await advance(clock, 5);
      return JSON.parse(new TextDecoder().decode(await pending));
    };
    const valid = { v: 1, sourceCellId: 'a', epoch, entries: [{ seq: 1, key: 'k', payload: { x: 1 } }] };
    expect(await ask(new Uint8Array([0xff, 0x00, 0xfe]))).toMatchObject({ ok: false, code: 'BAD_REQUEST' });
    expect(await ask('{"v":1')).toMatchObject({ ok: false, code: 'BAD_REQUEST' });
    expect(await ask(JSON.stringify({ ...valid, v: 2 }))).toMatchObject({ ok: false, code: 'BAD_REQUEST' });
    expect(await ask(JSON.stringify({ ...valid, entries: [] }))).toMatchObject({ ok: false, code: 'BAD_REQUEST' });
    expect(await ask(JSON.stringify({ ...valid, entries: [{ seq: 2, key: 'k', payload: 1 }, { seq: 2, key: 'k', payload: 1 }] }))).toMatchObject({ code: 'BAD_REQUEST' });
    expect(await ask(JSON.stringify({ ...valid, entries: [{ seq: 1, key: 'k' }] }))).toMatchObject({ code: 'BAD_REQUEST' });
    expect(await ask(JSON.stringify({ ...valid, sourceCellId: 'c' }))).toMatchObject({ ok: false, code: 'SENDER_MISMATCH' });
    expect(c.cell('b').applied.calls).toHaveLength(0);
    expect(await ask(JSON.stringify(valid))).toEqual({ ok: true, hw: 1 });
  });

  it('holds back later entries until an enqueueOps reservation is settled, and writes with the caller', async () => {
    const { clock, cell } = await makeCluster(['a', 'b']);
    const a = cell('a');
    const b = cell('b');
    const first = a.outbox.enqueueOps('b', [{ key: 'first', payload: 1 }]);
    await a.outbox.enqueue('b', [{ key: 'second', payload: 2 }]);
    await advance(clock, 100, 5);
    expect(b.applied.bySource.get('a')).toBeUndefined();
    // The caller writes its own data and the outbox entry in one atomic write.
    await a.store.write([{ type: 'put', key: 'm/mall/conv/1', value: 'hello' }, ...first.ops]);
    first.committed();
    await runUntil(clock, () => (b.applied.bySource.get('a')?.length ?? 0) === 2);
    expect(b.applied.bySource.get('a')).toEqual(['first', 'second']);

    // An abandoned reservation leaves a gap in the numbering that the receiver tolerates.
    const dropped = a.outbox.enqueueOps('b', [{ key: 'never', payload: 0 }]);
    await a.outbox.enqueue('b', [{ key: 'third', payload: 3 }]);
    dropped.abandoned();
    await runUntil(clock, () => a.outbox.waiting().get('b')!.entries === 0);
    expect(b.applied.bySource.get('a')).toEqual(['first', 'second', 'third']);
  });

  it('refuses invalid enqueues with typed errors and bounds what waits', async () => {
    cluster = new Cluster();
    const unstarted = cluster.makeOutbox({ cellId: 'z', store: new MemoryStore(), transport: cluster.network.createTransport('pz') } as unknown as TestCell);
    expect(() => unstarted.enqueueOps('b', [{ key: 'k', payload: 1 }])).toThrow(expect.objectContaining({ code: 'OUTBOX_NOT_STARTED' }));
    await cluster.addCell('a', { outbox: { maxWaitingEntries: 10, maxEntryBytes: 200 } });
    const { outbox } = cluster.cell('a');
    await expect(outbox.enqueue('a', [{ key: 'k', payload: 1 }])).rejects.toMatchObject({ code: 'OUTBOX_INVALID_DESTINATION' });
    await expect(outbox.enqueue('b/../x y', [{ key: 'k', payload: 1 }])).rejects.toMatchObject({ code: 'OUTBOX_INVALID_DESTINATION' });
    await expect(outbox.enqueue('b', [])).rejects.toMatchObject({ code: 'OUTBOX_INVALID_ENTRY' });
    await expect(outbox.enqueue('b', [{ key: '', payload: 1 }])).rejects.toMatchObject({ code: 'OUTBOX_INVALID_ENTRY' });
    await expect(outbox.enqueue('b', [{ key: 'k', payload: undefined as never }])).rejects.toMatchObject({ code: 'OUTBOX_INVALID_ENTRY' });
    await expect(outbox.enqueue('b', [{ key: 'k', payload: 10n as never }])).rejects.toMatchObject({ code: 'OUTBOX_INVALID_ENTRY' });
    await expect(outbox.enqueue('b', [{ key: 'k', payload: 'x'.repeat(300) }])).rejects.toMatchObject({ code: 'OUTBOX_INVALID_ENTRY' });
    await outbox.enqueue('b', entries('w', 0, 8));
    await expect(outbox.enqueue('b', entries('w', 8, 3))).rejects.toMatchObject({ code: 'OUTBOX_FULL' });
    expect(outbox.waiting().get('b')!.entries).toBe(8);
    await outbox.stop();
    await expect(outbox.enqueue('b', entries('w', 8, 1))).rejects.toMatchObject({ code: 'OUTBOX_STOPPED' });
  });

  it('exports waiting entries and the oldest age as gauges on the injected metrics port', async () => {
    cluster = new Cluster();
    const a = await cluster.addCell('a');
    const metrics = new PromMetrics();
    const outbox = new Outbox(
      { store: a.store, transport: a.transport, clock: cluster.clock, random: cluster.random, cellId: 'a', resolvePeer: () => undefined, metrics },
      TEST_OUTBOX,
    );
    await a.outbox.stop();
    a.outbox = outbox;
    await outbox.start();
    await outbox.enqueue('far', entries('g', 0, 3));
    await advance(cluster.clock, 2_000, 50);
    const text = await metrics.render();
    expect(text).toContain('cellmesh_outbox_waiting_entries{destination="far"} 3');
    expect(text).toMatch(/cellmesh_outbox_oldest_age_seconds\{destination="far"\} 2/);
    expect(text).toMatch(/cellmesh_outbox_attempts_total\{result="UNRESOLVED"\} \d+/);
    await outbox.stop();
    expect(await metrics.render()).not.toContain('cellmesh_outbox_waiting_entries');
  });
});
