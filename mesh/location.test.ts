import { afterEach, describe, expect, it } from 'vitest';
import { PromMetrics } from '../platform/prom-metrics.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { LOCATE_NOTICE_PROTOCOL, LOCATE_REPLY_PROTOCOL, LOCATE_TOPIC } from './locate-wire.js';
import { LocationError, LocationService, type LocationInit } from './location.js';
import { MemoryNetwork, memoryAddress, type MemoryTransport } from './memory-network.js';
import { TrackedWork, whenIdle } from '../testing/tracked-work.js';

/**
 * A virtual clock and the work of the cells on it that ends outside the promise queue. The memory
 * network delivers on clock timers, so what else can wake a cell is a request handler or the
 * `localUsers` port, which the test counts (`trackHandlers`, `trackedLocalUsers`).
 */
interface World {
  readonly clock: ManualClock;
  readonly work: TrackedWork;
}

/** Advances the clock in steps, waiting after each until the cells are done with that instant. */
async function advance(world: World, totalMs: number, stepMs = 1): Promise<void> {
  for (let elapsedMs = 0; elapsedMs < totalMs; elapsedMs += stepMs) {
    world.clock.advance(Math.min(stepMs, totalMs - elapsedMs));
    await whenIdle([world.work], 'the cells');
  }
}

/** Counts every request `transport` serves as work under way until its handler settles. */
function trackHandlers(transport: MemoryTransport, work: TrackedWork): void {
  const handle = transport.handle.bind(transport);
  transport.handle = (protocol, handler) => handle(protocol, (from, data) => work.track(handler(from, data)));
}

/** The users a cell holds, as its `localUsers` port, counted as work under way until answered. */
function trackedLocalUsers(users: ReadonlySet<string>, work: TrackedWork) {
  return (tenant: string, userIds: readonly string[]) => work.track(userIds.filter((userId) => users.has(`${tenant}/${userId}`)));
}

/** Counts publishes and requests a transport makes, to assert on network traffic. */
function countTraffic(transport: MemoryTransport): { publishes: number; requests: number } {
  const counts = { publishes: 0, requests: 0 };
  const publish = transport.publish.bind(transport);
  const request = transport.request.bind(transport);
  transport.publish = (topic, data) => {
    counts.publishes++;
    return publish(topic, data);
  };
  transport.request = (peer, protocol, data, options) => {
    counts.requests++;
    return request(peer, protocol, data, options);
  };
  return counts;
}

interface TestCell {
  readonly cellId: string;
  readonly transport: MemoryTransport;
  readonly service: LocationService;
  /** `tenant/user` held on this cell. */
  readonly users: Set<string>;
  readonly traffic: { publishes: number; requests: number };
}

async function makeMesh(count: number, init: LocationInit = {}) {
  const clock = new ManualClock();
  const work = new TrackedWork();
  const random = new SeededRandom(42);
  const network = new MemoryNetwork({ clock, random });
  const peerOf = new Map<string, string>();
  const cellOf = new Map<string, string>();
  const cells: TestCell[] = [];
  for (let index = 0; index < count; index++) {
    const cellId = `cell-${index}`;
    const peer = `peer-${index}`;
    peerOf.set(cellId, peer);
    cellOf.set(peer, cellId);
    const transport = network.createTransport(peer);
    await transport.start();
    const traffic = countTraffic(transport);
    trackHandlers(transport, work);
    const users = new Set<string>();
    const service = new LocationService(
      {
        transport,
        clock,
        random,
        cellId,
        cellOfPeer: (peerId) => cellOf.get(peerId),
        localUsers: trackedLocalUsers(users, work),
        metrics: new PromMetrics(),
      },
      init,
    );
    service.start();
    cells.push({ cellId, transport, service, users, traffic });
  }
  // A full mesh of connections, as gossipsub would form among five cells.
  for (const a of cells) for (const b of cells) if (a.cellId < b.cellId) await a.transport.dial(memoryAddress(b.transport.self));
  const resetTraffic = (): void => {
    for (const cell of cells) {
      cell.traffic.publishes = 0;
      cell.traffic.requests = 0;
    }
  };
  return { clock, work, network, cells, resetTraffic };
}

/** Runs a locate to completion on the manual clock. */
async function locate(mesh: Awaited<ReturnType<typeof makeMesh>>, asker: TestCell, tenant: string, userId: string): Promise<string[]> {
  let result: string[] | undefined;
  let failure: unknown;
  asker.service.locate(tenant, userId).then(
    (cells) => (result = cells),
    (error: unknown) => (failure = error),
  );
  for (let step = 0; step < 400 && result === undefined && failure === undefined; step++) await advance(mesh, 1);
  if (failure !== undefined) throw failure;
  if (result === undefined) throw new Error('locate did not resolve');
  return result;
}

let stopAll: (() => void) | undefined;
afterEach(() => {
  stopAll?.();
  stopAll = undefined;
});

async function fiveCells(init: LocationInit = {}) {
  const mesh = await makeMesh(5, init);
  stopAll = () => mesh.cells.forEach((cell) => cell.service.stop());
  return mesh;
}

describe('LocationService', () => {
  it('locates a user held by one of five cells with one publish and one reply', async () => {
    const mesh = await fiveCells();
    const [asker, , , holder] = mesh.cells as [TestCell, TestCell, TestCell, TestCell, TestCell];
    holder.users.add('mall/alice');
    expect(await locate(mesh, asker, 'mall', 'alice')).toEqual(['cell-3']);
    expect(asker.traffic.publishes).toBe(1);
    const totalRequests = mesh.cells.reduce((sum, cell) => sum + cell.traffic.requests, 0);
    expect(totalRequests).toBe(1);
    expect(holder.traffic.requests).toBe(1);
    const stats = asker.service.stats();
    expect(stats).toMatchObject({ queriesSent: 1, queriesCompleted: 1, repliesReceived: 1, cacheMisses: 1, usersQueried: 1 });
    expect(stats.queryMessages / stats.queriesCompleted).toBe(2);
    expect(holder.service.stats().repliesSent).toBe(1);
  });

  it('finds a user on two cells', async () => {
    const mesh = await fiveCells();
    const [asker, one, , , four] = mesh.cells as [TestCell, TestCell, TestCell, TestCell, TestCell];
    one.users.add('mall/bob');
    four.users.add('mall/bob');
    four.users.add('market/bob'); // another tenant's user of the same name is not confused with him
    expect(await locate(mesh, asker, 'mall', 'bob')).toEqual(['cell-1', 'cell-4']);
    expect(asker.service.stats().queryMessages).toBe(3);
  });

  it('answers [] for an absent user after the answer window, with no reply traffic', async () => {
    const mesh = await fiveCells();
    const asker = mesh.cells[0]!;
    const started = mesh.clock.now();
    expect(await locate(mesh, asker, 'mall', 'nobody')).toEqual([]);
    expect(mesh.clock.now() - started).toBeGreaterThanOrEqual(150);
    expect(mesh.cells.reduce((sum, cell) => sum + cell.traffic.requests, 0)).toBe(0);
  });

  it('sends 20 concurrent locates inside the batch window as one publish', async () => {
    const mesh = await fiveCells();
    const [asker, one, two] = mesh.cells as [TestCell, TestCell, TestCell];
    for (let index = 0; index < 20; index++) (index % 2 === 0 ? one : two).users.add(`mall/u${index}`);
    const results = new Map<string, string[]>();
    const pending: Array<Promise<void>> = [];
    for (let index = 0; index < 20; index++) {
      pending.push(asker.service.locate('mall', `u${index}`).then((cells) => void results.set(`u${index}`, cells)));
      if (index % 5 === 4) await advance(mesh, 1); // spread over 4 ms, inside the 5 ms window
    }
    // A second caller for the same user shares the flight.
    pending.push(asker.service.locate('mall', 'u3').then((cells) => expect(cells).toEqual(['cell-2'])));
    await advance(mesh, 200);
    await Promise.all(pending);
    expect(asker.traffic.publishes).toBe(1);
    expect(results.get('u0')).toEqual(['cell-1']);
    expect(results.get('u7')).toEqual(['cell-2']);
    // One reply per holding cell, each carrying its ten users.
    expect(one.traffic.requests + two.traffic.requests).toBe(2);
    expect(asker.service.stats()).toMatchObject({ queriesSent: 1, usersQueried: 20, repliesReceived: 2 });
  });

  it('splits a batch larger than batchMaxUsers into several queries', async () => {
    const mesh = await fiveCells({ batchMaxUsers: 8 });
    const asker = mesh.cells[0]!;
    const pending = Array.from({ length: 20 }, (_, index) => asker.service.locate('mall', `x${index}`));
    await advance(mesh, 200);
    expect(await Promise.all(pending)).toEqual(Array.from({ length: 20 }, () => []));
    expect(asker.traffic.publishes).toBe(3);
  });

  it('answers from the cache without network traffic, forgets on demand and expires after the TTL', async () => {
    const mesh = await fiveCells();
    const [asker, one] = mesh.cells as [TestCell, TestCell];
    one.users.add('mall/carol');
    expect(await locate(mesh, asker, 'mall', 'carol')).toEqual(['cell-1']);
    mesh.resetTraffic();

    expect(await asker.service.locate('mall', 'carol')).toEqual(['cell-1']);
    expect(mesh.cells.reduce((sum, cell) => sum + cell.traffic.publishes + cell.traffic.requests, 0)).toBe(0);
    expect(asker.service.stats().cacheHits).toBe(1);

    // A delivery found carol gone from cell-1; she is now on cell-2.
    one.users.delete('mall/carol');
    mesh.cells[2]!.users.add('mall/carol');
    asker.service.forget('mall', 'carol', 'cell-1');
    expect(await locate(mesh, asker, 'mall', 'carol')).toEqual(['cell-2']);
    expect(asker.traffic.publishes).toBe(1);

    // The TTL (30 s) expires: the next locate asks again.
    mesh.resetTraffic();
    await advance(mesh, 29_000, 1_000);
    expect(await asker.service.locate('mall', 'carol')).toEqual(['cell-2']);
    expect(asker.traffic.publishes).toBe(0);
    await advance(mesh, 1_000, 1_000);
    expect(await locate(mesh, asker, 'mall', 'carol')).toEqual(['cell-2']);
    expect(asker.traffic.publishes).toBe(1);
  });

  it('caches an empty answer only for the negative TTL', async () => {
    const mesh = await fiveCells({ negativeCacheTtlMs: 500 });
    const [asker, one] = mesh.cells as [TestCell, TestCell];
    expect(await locate(mesh, asker, 'mall', 'dave')).toEqual([]);
    one.users.add('mall/dave');
    mesh.resetTraffic();
    expect(await asker.service.locate('mall', 'dave')).toEqual([]);
    expect(asker.traffic.publishes).toBe(0);
    await advance(mesh, 500, 100);
    expect(await locate(mesh, asker, 'mall', 'dave')).toEqual(['cell-1']);
  });

  it('tells an asker serving an empty answer when the user connects to a cell, without a new query', async () => {
    const mesh = await fiveCells();
    const [asker, , two] = mesh.cells as [TestCell, TestCell, TestCell];
    expect(await locate(mesh, asker, 'mall', 'gina')).toEqual([]);
    mesh.resetTraffic();
    await advance(mesh, 10_000, 1_000);
    two.users.add('mall/gina');
    two.service.userArrived('mall', 'gina');
    await advance(mesh, 10);
    expect(await asker.service.locate('mall', 'gina')).toEqual(['cell-2']);
    expect(asker.traffic.publishes).toBe(0);
    expect(two.traffic.requests).toBe(1);
    expect(two.service.stats().noticesSent).toBe(1);
    expect(asker.service.stats().noticesReceived).toBe(1);
    // The answer keeps the expiry of the query behind it (30 s), which is as long as the watches last.
    await advance(mesh, 20_000, 1_000);
    expect(await locate(mesh, asker, 'mall', 'gina')).toEqual(['cell-2']);
    expect(asker.traffic.publishes).toBe(1);
  });

  it('adds a notified cell to a positive answer and to a query still collecting replies', async () => {
    const mesh = await fiveCells();
    const [asker, one, two, three] = mesh.cells as [TestCell, TestCell, TestCell, TestCell];
    one.users.add('mall/hugo');
    expect(await locate(mesh, asker, 'mall', 'hugo')).toEqual(['cell-1']);
    two.users.add('mall/hugo');
    two.service.userArrived('mall', 'hugo');
    await advance(mesh, 10);
    expect(await asker.service.locate('mall', 'hugo')).toEqual(['cell-1', 'cell-2']);

    const pending = asker.service.locate('mall', 'ines');
    await advance(mesh, 20); // the query is out and watched, its window still open
    three.users.add('mall/ines');
    three.service.userArrived('mall', 'ines');
    await advance(mesh, 200);
    expect(await pending).toEqual(['cell-3']);
  });

  it('stops watching once the watch ends, and never for a query that asks for no watch', async () => {
    const mesh = await fiveCells();
    const [asker, one] = mesh.cells as [TestCell, TestCell];
    await locate(mesh, asker, 'mall', 'jo');
    await advance(mesh, 30_200, 1_000); // the query's watch: 150 ms window + 30 s TTL
    one.service.userArrived('mall', 'jo');
    await advance(mesh, 10);
    expect(one.service.stats().noticesSent).toBe(0);

    // A query of an earlier version, without watchMs.
    await asker.transport.publish(LOCATE_TOPIC, new TextEncoder().encode(JSON.stringify({ queryId: 'old1', fromCellId: 'cell-0', users: [{ tenant: 'mall', userId: 'kim' }] })));
    await advance(mesh, 10);
    one.service.userArrived('mall', 'kim');
    await advance(mesh, 10);
    expect(one.service.stats().noticesSent).toBe(0);
  });

  it('bounds the watches, dropping the least recently asked', async () => {
    const mesh = await fiveCells({ maxWatchedUsers: 2 });
    const [asker, one] = mesh.cells as [TestCell, TestCell];
    for (const user of ['la', 'lb', 'lc']) await locate(mesh, asker, 'mall', user);
    expect(one.service.stats().watchesDropped).toBe(1);
    for (const user of ['la', 'lb', 'lc']) one.service.userArrived('mall', user);
    await advance(mesh, 10);
    expect(one.service.stats().noticesSent).toBe(2);
    expect(await asker.service.locate('mall', 'la')).toEqual([]);
    expect(await asker.service.locate('mall', 'lc')).toEqual(['cell-1']);
  });

  it('rejects notices that are malformed or from a peer that is not the named cell', async () => {
    const mesh = await fiveCells();
    const [asker, , two] = mesh.cells as [TestCell, TestCell, TestCell];
    expect(await locate(mesh, asker, 'mall', 'max')).toEqual([]);
    const notice = (data: string) => two.transport.request('peer-0', LOCATE_NOTICE_PROTOCOL, new TextEncoder().encode(data), { timeoutMs: 100 });
    const answers = await Promise.all([
      notice('{"cellId":'),
      notice(JSON.stringify({ cellId: 'cell-1', users: [{ tenant: 'mall', userId: 'max' }] })),
      advance(mesh, 10).then(() => new Uint8Array()),
    ]);
    expect(JSON.parse(new TextDecoder().decode(answers[0]))).toEqual({ ok: false, code: 'LOCATE_BAD_MESSAGE' });
    expect(JSON.parse(new TextDecoder().decode(answers[1]))).toEqual({ ok: false, code: 'LOCATE_UNKNOWN_SENDER' });
    expect(await asker.service.locate('mall', 'max')).toEqual([]);
  });

  it('bounds the cache by evicting the least recently used entry', async () => {
    const mesh = await fiveCells({ cacheMaxEntries: 2 });
    const [asker, one] = mesh.cells as [TestCell, TestCell];
    for (const user of ['a', 'b', 'c']) one.users.add(`mall/${user}`);
    for (const user of ['a', 'b']) await locate(mesh, asker, 'mall', user);
    await asker.service.locate('mall', 'a'); // a is now the most recent
    await locate(mesh, asker, 'mall', 'c'); // evicts b
    mesh.resetTraffic();
    await asker.service.locate('mall', 'a');
    await asker.service.locate('mall', 'c');
    expect(asker.traffic.publishes).toBe(0);
    await locate(mesh, asker, 'mall', 'b');
    expect(asker.traffic.publishes).toBe(1);
  });

  it('does not find a partitioned holder, and finds it after the heal', async () => {
    const mesh = await fiveCells({ negativeCacheTtlMs: 0 });
    const [asker, , , , holder] = mesh.cells as [TestCell, TestCell, TestCell, TestCell, TestCell];
    holder.users.add('mall/erin');
    const others = mesh.cells.filter((cell) => cell !== holder).map((cell) => cell.transport.self);
    mesh.network.partition(others, [holder.transport.self]);
    expect(await locate(mesh, asker, 'mall', 'erin')).toEqual([]);
    mesh.network.heal();
    expect(await locate(mesh, asker, 'mall', 'erin')).toEqual(['cell-4']);
  });

  it('rejects malformed queries and replies, and replies from peers that are not the named cell', async () => {
    const mesh = await fiveCells();
    const [asker, one, two] = mesh.cells as [TestCell, TestCell, TestCell];
    one.users.add('mall/frank');
    const send = (data: string | Uint8Array) => asker.transport.publish(LOCATE_TOPIC, typeof data === 'string' ? new TextEncoder().encode(data) : data);
    await send('not json');
    await send(new Uint8Array([0xff, 0xfe, 0x00]));
    await send(JSON.stringify({ queryId: 'q1', fromCellId: 'cell-0', users: [] }));
    await send(JSON.stringify({ queryId: 'q2', fromCellId: 'cell-0', users: [{ tenant: 'mall/x', userId: 'frank' }] }));
    // A query in another cell's name: cell-1 must not answer it.
    await send(JSON.stringify({ queryId: 'q3', fromCellId: 'cell-2', users: [{ tenant: 'mall', userId: 'frank' }] }));
    await advance(mesh, 20);
    expect(one.traffic.requests).toBe(0);
    expect(one.service.stats().messagesRejected).toBeGreaterThanOrEqual(5);

    // While cell-0 locates frank, cell-2 claims to be cell-1 and cell-1's reply is garbage.
    const found = asker.service.locate('mall', 'ghost');
    await advance(mesh, 6);
    const answers = await Promise.all([
      two.transport.request('peer-0', LOCATE_REPLY_PROTOCOL, new TextEncoder().encode('{"queryId":'), { timeoutMs: 100 }),
      two.transport.request(
        'peer-0',
        LOCATE_REPLY_PROTOCOL,
        new TextEncoder().encode(JSON.stringify({ queryId: 'whatever', cellId: 'cell-1', users: [{ tenant: 'mall', userId: 'ghost' }] })),
        { timeoutMs: 100 },
      ),
      advance(mesh, 10).then(() => new Uint8Array()),
    ]);
    expect(JSON.parse(new TextDecoder().decode(answers[0]))).toEqual({ ok: false, code: 'LOCATE_BAD_MESSAGE' });
    expect(JSON.parse(new TextDecoder().decode(answers[1]))).toEqual({ ok: false, code: 'LOCATE_UNKNOWN_SENDER' });
    await advance(mesh, 200);
    expect(await found).toEqual([]);
  });

  it('rejects invalid arguments, overload, abort and stop with typed errors', async () => {
    const mesh = await fiveCells({ maxInFlightUsers: 2 });
    const asker = mesh.cells[0]!;
    await expect(asker.service.locate('mall/x', 'a')).rejects.toMatchObject({ code: 'LOCATE_INVALID_ARGUMENT' });
    const first = asker.service.locate('mall', 'a');
    const controller = new AbortController();
    const second = asker.service.locate('mall', 'b', { signal: controller.signal });
    await expect(asker.service.locate('mall', 'c')).rejects.toMatchObject({ code: 'LOCATE_OVERLOADED' });
    controller.abort();
    await expect(second).rejects.toMatchObject({ code: 'LOCATE_ABORTED' });
    asker.service.stop();
    await expect(first).rejects.toBeInstanceOf(LocationError);
    await expect(first).rejects.toMatchObject({ code: 'LOCATE_STOPPED' });
    await expect(asker.service.locate('mall', 'a')).rejects.toMatchObject({ code: 'LOCATE_NOT_STARTED' });
  });

  it('exports its metrics on the injected metrics port', async () => {
    const metrics = new PromMetrics();
    const world: World = { clock: new ManualClock(), work: new TrackedWork() };
    const { clock, work } = world;
    const network = new MemoryNetwork({ clock, random: new SeededRandom(1) });
    const transport = network.createTransport('p');
    await transport.start();
    trackHandlers(transport, work);
    const service = new LocationService({ transport, clock, random: new SeededRandom(2), cellId: 'c', cellOfPeer: () => undefined, localUsers: trackedLocalUsers(new Set(), work), metrics });
    service.start();
    const found = service.locate('mall', 'zed');
    await advance(world, 200);
    expect(await found).toEqual([]);
    const text = await metrics.render();
    expect(text).toContain('cellmesh_locate_queries_total 1');
    expect(text).toContain('cellmesh_locate_messages_per_query_sum 1');
    expect(text).toContain('cellmesh_locate_cache_total{result="miss"} 1');
    expect(text).toContain('cellmesh_locate_notices_total');
    expect(text).toContain('cellmesh_locate_watches_dropped_total 0');
    service.stop();
    expect(await metrics.render()).not.toContain('cellmesh_locate_queries_total');
  });
});
