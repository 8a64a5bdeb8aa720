import { afterEach, describe, expect, it } from 'vitest';
import type { Inbox } from '../mesh/inbox.js';
import type { Outbox } from '../mesh/outbox.js';
import type { LocationService } from '../mesh/location.js';
import { FAST_CROSS_CELL_TUNING } from '../testing/cross-cell-tuning.js';
import { startCrossCellServices } from '../assembly/cross-cell-services.js';
import { MemoryNetwork, memoryAddress, type MemoryTransport } from '../mesh/memory-network.js';
import type { ClusterDirectory } from '../mesh/cluster-port-adapter.js';
import type { Liveness } from '../mesh/directory.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { mintToken, verifyToken, type Identity } from '../cell/access/tokens.js';
import { CellCore } from '../cell/cell-core.js';
import { CustomerErasure } from '../cell/customer-erasure.js';
import { RetentionSweeper } from '../cell/retention-sweeper.js';
import { DeskConfig, LimitsConfig } from '../cell/settings.js';
import type { DeskPeople } from '../cell/desk/desk-service.js';
import { silentLogger } from '../platform/logger.js';
import type { DeviceConnection, DevicePort } from '../cell/messaging/device.js';
import { keys } from '../cell/messaging/keys.js';
import { CellMetrics } from '../cell/metrics.js';
import { CellError } from '../cell/protocol/errors.js';
import type { ChatMessage, ServerFrame } from '../cell/protocol/frames.js';
import { MemoryStore } from '../platform/store/memory-store.js';
import { MemoryMetrics } from '../platform/memory-metrics.js';
import { TrackedStore, whenStoresIdle } from '../testing/tracked-store.js';
import { AttachmentStore } from '../cell/attachments/index.js';

const SECRET = 'cross-cell-test-secret-0123456789abcdef';
const TENANT = 'mall';

/** A device: records frames, and acks what it receives the way the SDK does (cumulatively). */
class TestDevice implements DevicePort {
  readonly frames: ServerFrame[] = [];
  closed: { code: number; reason: string } | undefined;
  connection!: DeviceConnection;
  private readonly toAck = new Map<string, number>();

  constructor(
    readonly cell: TestCell,
    readonly identity: Identity,
    private readonly autoAck: boolean,
  ) {}

  send(text: string): void {
    if (this.closed !== undefined) return;
    const frame = JSON.parse(text) as ServerFrame;
    this.frames.push(frame);
    if (frame.t === 'msg' || frame.t === 'sent') this.toAck.set(frame.conv, Math.max(this.toAck.get(frame.conv) ?? 0, frame.seq));
  }

  bufferedBytes(): number {
    return 0;
  }

  close(code: number, reason: string): void {
    if (this.closed !== undefined) return;
    this.closed = { code, reason };
    this.cell.core.disconnect(this.connection);
  }

  frame(op: Record<string, unknown>): void {
    this.cell.core.receive(this.connection, JSON.stringify(op));
  }

  /** Sends the acks due; says whether there were any. */
  flushAcks(): boolean {
    if (!this.autoAck || this.closed !== undefined || this.toAck.size === 0) return false;
    for (const [conv, seq] of this.toAck) this.frame({ op: 'ack', conv, seq });
    this.toAck.clear();
    return true;
  }

  of<T extends ServerFrame['t']>(type: T): Array<Extract<ServerFrame, { t: T }>> {
    return this.frames.filter((frame): frame is Extract<ServerFrame, { t: T }> => frame.t === type);
  }

  /** Seqs of `conv` pushed as `msg`, in arrival order. */
  pushed(conv: string): number[] {
    return this.of('msg')
      .filter((frame) => frame.conv === conv)
      .map((frame) => frame.seq);
  }

  /** Every seq of `conv` this device learnt (pushed, or its own `sent`), deduplicated, in arrival order. */
  seen(conv: string): number[] {
    const seqs: number[] = [];
    for (const frame of this.frames) {
      if ((frame.t === 'msg' || frame.t === 'sent') && frame.conv === conv && !seqs.includes(frame.seq)) seqs.push(frame.seq);
    }
    return seqs;
  }
}

interface TestCell {
  readonly cellId: string;
  readonly merchants: readonly string[];
  readonly people: DeskPeople | undefined;
  readonly store: TrackedStore;
  transport: MemoryTransport;
  location: LocationService;
  outbox: Outbox;
  inbox: Inbox;
  core: CellCore;
  erasure: CustomerErasure;
  stopServices: () => Promise<void>;
  readonly devices: TestDevice[];
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, index) => from + index);

class TestCluster {
  readonly clock = new ManualClock();
  readonly random = new SeededRandom(5);
  readonly network = new MemoryNetwork({ clock: this.clock, random: this.random });
  readonly cells = new Map<string, TestCell>();
  /** The directory, static: `tenant/merchant` to its home cell. */
  readonly homes = new Map<string, string>();
  /** Per cell, entries of its directory that lag behind `homes` (`tenant/merchant` to a former home). */
  readonly staleHomes = new Map<string, Map<string, string>>();
  /** Every cell's directory listeners: `announceLeft` tells them a cell left. */
  private readonly directoryListeners = new Set<(cellId: string, before: { liveness: Liveness } | undefined, after: { liveness: Liveness } | undefined) => void>();
  private seed = 100;

  /** Every directory now holds `cellId` as left (it left the cluster gracefully). */
  announceLeft(cellId: string): void {
    for (const listener of this.directoryListeners) listener(cellId, { liveness: 'alive' }, { liveness: 'left' });
  }

  cell(cellId: string): TestCell {
    const cell = this.cells.get(cellId);
    if (cell === undefined) throw new Error(`no cell ${cellId}`);
    return cell;
  }

  /** `people`: the agents of the cell's merchants (a merchant with agents has a desk). */
  async addCell(cellId: string, merchants: readonly string[], store = new TrackedStore(new MemoryStore()), people?: DeskPeople): Promise<TestCell> {
    if (!this.cells.has(cellId)) await store.open();
    for (const merchant of merchants) this.homes.set(`${TENANT}/${merchant}`, cellId);
    const peer = `peer-${cellId}`;
    const transport = this.network.createTransport(peer);
    await transport.start();
    for (const other of this.cells.values()) {
      // Cells across a partition stay undialled; the test dials them after the heal.
      if (other.cellId !== cellId && other.transport.isRunning) await transport.dial(memoryAddress(other.transport.self)).catch(() => undefined);
    }
    const cellOfPeer = (candidate: string): string | undefined => (candidate.startsWith('peer-') ? candidate.slice('peer-'.length) : undefined);
    const directory: ClusterDirectory = {
      homeCellOf: (tenant: string, merchant: string) => this.staleHomes.get(cellId)?.get(`${tenant}/${merchant}`) ?? this.homes.get(`${tenant}/${merchant}`),
      peerOf: (cell: string) => `peer-${cell}`,
      cellOfPeer,
      values: () => [...this.cells.keys()].map((id) => ({ record: { cellId: id }, liveness: 'alive' as const })),
      onChange: (listener) => {
        this.directoryListeners.add(listener);
        return () => this.directoryListeners.delete(listener);
      },
    };
    const cell = { cellId, merchants, people, store, transport, devices: [] as TestDevice[] } as unknown as TestCell;
    const random = new SeededRandom(this.seed++);
    cell.core = new CellCore({
      cellId,
      tenants: [{ id: TENANT, secret: SECRET, origins: [], merchants: merchants.map((id) => ({ id })) }],
      limits: LimitsConfig.parse({ ratePerSecond: 10_000, rateBurst: 10_000, deliveryWindow: 64 }),
      clock: this.clock,
      random,
      store,
      metrics: new CellMetrics(new MemoryMetrics()),
      logger: silentLogger,
      crossCell: { historyPageMessages: 7, historyTimeoutMs: 300, relayWaitMs: 1_000 },
      ...(people === undefined ? {} : { desk: { people, settings: DeskConfig.parse({}) } }),
    });
    cell.erasure = new CustomerErasure({ store, core: cell.core, attachments: new AttachmentStore(store, this.clock) });
    await cell.core.loadDesks();
    const services = await startCrossCellServices({
      cellId,
      core: cell.core,
      transport,
      directory,
      clock: this.clock,
      random,
      store,
      ...FAST_CROSS_CELL_TUNING,
      erasure: cell.erasure,
    });
    cell.location = services.location;
    cell.outbox = services.outbox;
    cell.inbox = services.inbox;
    cell.stopServices = services.stop;
    this.cells.set(cellId, cell);
    return cell;
  }

  /** Stops a cell's mesh services and drops its devices, as a crash would; its store survives. */
  async crash(cellId: string): Promise<void> {
    const cell = this.cell(cellId);
    for (const device of cell.devices) device.close(1006, 'crash');
    await cell.stopServices();
    await cell.transport.stop();
    this.network.forget(cell.transport.self);
  }

  /** A new CellCore and mesh services on the same store, as after a restart. */
  async restart(cellId: string): Promise<TestCell> {
    const old = this.cell(cellId);
    await this.crash(cellId);
    return this.addCell(cellId, old.merchants, old.store, old.people);
  }

  /** `routedFor`: the merchant the connection's URL routes it for (the SDK's route mode). */
  async connect(cellId: string, user: string, options: { merchant?: string; device?: string; autoAck?: boolean; routedFor?: string } = {}): Promise<TestDevice> {
    const cell = this.cell(cellId);
    const token = await mintToken({
      secret: SECRET,
      tenant: TENANT,
      user,
      role: options.merchant === undefined ? 'customer' : 'agent',
      ...(options.merchant === undefined ? {} : { merchant: options.merchant }),
      device: options.device ?? 'd1',
      ttlSeconds: 24 * 3600,
      nowMs: this.clock.now(),
    });
    const identity = verifyToken(token, () => [{ secret: SECRET }], this.clock.now());
    const device = new TestDevice(cell, identity, options.autoAck ?? true);
    device.connection = cell.core.connect(identity, device, options.routedFor);
    cell.devices.push(device);
    await this.until(() => device.of('synced').length > 0, 5_000);
    return device;
  }

  /** Advances virtual time in 1 ms steps, letting promises run and devices ack, until `condition`. */
  async until(condition: () => boolean, maxMs = 20_000): Promise<void> {
    const startMs = this.clock.now();
    await this.settle();
    while (!condition()) {
      if (this.clock.now() - startMs > maxMs) throw new Error(`condition not met within ${maxMs} ms of virtual time`);
      this.clock.advance(1);
      await this.settle();
    }
  }

  /** Lets time pass (the outboxes retry, location windows close), in steps of `stepMs`. */
  async run(ms: number, stepMs = 1): Promise<void> {
    const endMs = this.clock.now() + ms;
    while (this.clock.now() < endMs) {
      this.clock.advance(Math.min(stepMs, endMs - this.clock.now()));
      await this.settle();
    }
  }

  /** Lets the cells finish what they were given: until their stores are idle and no device has an ack to send. */
  async settle(): Promise<void> {
    for (let round = 0; round < 100; round++) {
      await whenStoresIdle([...this.cells.values()].map((cell) => cell.store));
      let acked = false;
      for (const cell of this.cells.values()) for (const device of cell.devices) acked = device.flushAcks() || acked;
      if (!acked) return;
    }
    throw new Error('the devices kept acking for 100 rounds without the cells settling');
  }

  async stopAll(): Promise<void> {
    for (const cell of this.cells.values()) {
      if (!cell.transport.isRunning) continue;
      await cell.stopServices();
      await cell.transport.stop();
    }
  }

  /** The messages a cell's store holds for `conv` (its own or its mirror). */
  async stored(cellId: string, conv: string): Promise<ChatMessage[]> {
    const rows = await this.cell(cellId).store.range({ ...keys.allMessages(TENANT, conv), limit: 10_000 });
    return rows.map(([, value]) => JSON.parse(value) as ChatMessage);
  }
}

const CONV = 'shop:alice';

describe('the desk of a merchant on another cell', () => {
  let cluster: TestCluster;
  afterEach(async () => {
    await cluster?.stopAll();
  });

  it("reaches a customer connected elsewhere: system messages and consultation frames, in order with the messages", async () => {
    cluster = new TestCluster();
    const ann = { id: 'ann', name: 'Ann', capacity: 1, groups: ['default'], supervisor: false };
    await cluster.addCell('a', ['corner']);
    await cluster.addCell('b', ['shop'], undefined, { list: () => [ann], get: (_tenant, _merchant, agent) => (agent === 'ann' ? ann : undefined) });
    const agent = await cluster.connect('b', 'ann', { merchant: 'shop' });
    const alice = await cluster.connect('a', 'alice');
    const carol = await cluster.connect('a', 'carol');
    alice.frame({ op: 'send', conv: CONV, cmid: 'hi', body: 'hi' });
    carol.frame({ op: 'send', conv: 'shop:carol', cmid: 'hi', body: 'me too' });
    await cluster.until(() => alice.of('consultation').length > 0 && carol.of('consultation').length > 0).catch((error: unknown) => {
      throw new Error(`${String(error)}; alice saw ${JSON.stringify(alice.frames.map((frame) => frame.t))}, carol ${JSON.stringify(carol.frames.map((frame) => frame.t))}, ann ${JSON.stringify(agent.frames.slice(-4))}`);
    });
    expect(alice.of('consultation').at(-1)).toMatchObject({ conv: CONV, state: 'assigned', agent: 'ann', agentName: 'Ann' });
    expect(carol.of('consultation').at(-1)).toMatchObject({ conv: 'shop:carol', state: 'waiting', position: 1 });
    const messagesOf = (device: TestDevice, conv: string): ChatMessage[] => device.of('msg').filter((frame) => frame.conv === conv);
    await cluster.until(() => messagesOf(alice, CONV).some((message) => message.role === 'system'));
    expect(messagesOf(alice, CONV).map((message) => [message.seq, message.role, message.body])).toEqual([[2, 'system', 'Ann is here to help.']]);
    agent.frame({ op: 'close', id: 'c', conv: CONV });
    await cluster.until(() => carol.of('consultation').at(-1)?.state === 'assigned');
    await cluster.until(() => alice.of('consultation').at(-1)?.state === 'closed');
    expect(messagesOf(carol, 'shop:carol').map((message) => message.event?.type)).toEqual(['queued', 'assigned']);
    // Typing crosses cells both ways, to the other party only.
    carol.frame({ op: 'typing', conv: 'shop:carol' });
    await cluster.until(() => agent.of('typing').length > 0);
    expect(agent.of('typing')).toEqual([{ t: 'typing', conv: 'shop:carol', user: 'carol', role: 'customer' }]);
    agent.frame({ op: 'typing', conv: 'shop:carol' });
    await cluster.until(() => carol.of('typing').length > 0);
    expect(carol.of('typing')).toEqual([{ t: 'typing', conv: 'shop:carol', user: 'ann', role: 'agent' }]);
    expect(alice.of('typing')).toEqual([]);
  });

  /** Cell b hosts `shop`, whose desk has Ann (capacity 1); cell a hosts another merchant. */
  async function shopOnB(): Promise<TestDevice> {
    cluster = new TestCluster();
    const ann = { id: 'ann', name: 'Ann', capacity: 1, groups: ['default'], supervisor: false };
    await cluster.addCell('a', ['corner']);
    await cluster.addCell('b', ['shop'], undefined, { list: () => [ann], get: (_tenant, _merchant, agent) => (agent === 'ann' ? ann : undefined) });
    return cluster.connect('b', 'ann', { merchant: 'shop' });
  }
  const eventsOf = (device: TestDevice, conv: string): Array<string | undefined> =>
    device
      .of('msg')
      .filter((frame) => frame.conv === conv && frame.role === 'system')
      .map((frame) => frame.event?.type);
  const answerTo = (device: TestDevice, id: string): ServerFrame | undefined => device.frames.find((frame) => 'id' in frame && frame.id === id && (frame.t === 'ok' || frame.t === 'error'));

  it('takes the close and the rating of a customer connected elsewhere, answered from the home desk', async () => {
    const agent = await shopOnB();
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', conv: CONV, cmid: 'hi', body: 'hi' });
    await cluster.until(() => alice.of('consultation').at(-1)?.state === 'assigned');
    // A last message and the close right behind it: the close comes after it, in the same consultation.
    alice.frame({ op: 'send', conv: CONV, cmid: 'bye', body: 'thanks, bye' });
    alice.frame({ op: 'close', id: 'c1', conv: CONV });
    await cluster.until(() => answerTo(alice, 'c1') !== undefined);
    expect(answerTo(alice, 'c1')).toEqual({ t: 'ok', id: 'c1' });
    // The device hears the system message of its close before the answer, as in one cell.
    const closedAt = alice.frames.findIndex((frame) => frame.t === 'msg' && frame.event?.type === 'closed');
    expect(closedAt).toBeGreaterThan(-1);
    expect(closedAt).toBeLessThan(alice.frames.indexOf(answerTo(alice, 'c1')!));
    expect(alice.of('msg').find((frame) => frame.event?.type === 'closed')?.event).toMatchObject({ by: 'customer', agent: 'ann' });
    await cluster.until(() => eventsOf(agent, CONV).includes('closed'));
    expect(alice.of('consultation').at(-1)).toMatchObject({ conv: CONV, state: 'closed' });
    expect((await cluster.stored('b', CONV)).map((message) => message.event?.type ?? message.body)).toEqual(['hi', 'assigned', 'thanks, bye', 'closed']);

    alice.frame({ op: 'rate', id: 'r1', conv: CONV, score: 5, comment: 'quick and kind' });
    await cluster.until(() => answerTo(alice, 'r1') !== undefined);
    expect(answerTo(alice, 'r1')).toEqual({ t: 'ok', id: 'r1' });
    expect((await cluster.stored('b', CONV)).at(-1)?.event).toEqual({ type: 'rated', consultation: alice.of('consultation').at(-1)!.consultation, score: 5, comment: 'quick and kind' });
    expect(eventsOf(alice, CONV)).toEqual(['assigned', 'closed', 'rated']);

    // The home desk's refusals come back with the request's id.
    alice.frame({ op: 'rate', id: 'r2', conv: CONV, score: 4 });
    alice.frame({ op: 'close', id: 'c2', conv: CONV });
    await cluster.until(() => answerTo(alice, 'r2') !== undefined && answerTo(alice, 'c2') !== undefined);
    expect(answerTo(alice, 'r2')).toMatchObject({ t: 'error', id: 'r2', code: 'CONSULTATION_RATED' });
    expect(answerTo(alice, 'c2')).toMatchObject({ t: 'error', id: 'c2', code: 'CONSULTATION_UNKNOWN' });
    // A score out of range is refused at the cell the device is connected to, like any bad frame.
    alice.frame({ op: 'rate', id: 'r3', conv: CONV, score: 6 });
    await cluster.until(() => answerTo(alice, 'r3') !== undefined);
    expect(answerTo(alice, 'r3')).toMatchObject({ t: 'error', id: 'r3', code: 'BAD_FRAME' });
    await cluster.run(100);
    expect(eventsOf(alice, CONV)).toEqual(['assigned', 'closed', 'rated']);
  });

  it('waits in the outbox while the home cell is away, and is answered after it is back', async () => {
    const agent = await shopOnB();
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', conv: CONV, cmid: 'hi', body: 'hi' });
    await cluster.until(() => alice.of('consultation').at(-1)?.state === 'assigned');
    agent.close(1000, 'bye');
    await cluster.crash('b');
    alice.frame({ op: 'close', id: 'c1', conv: CONV, consultation: alice.of('consultation').at(-1)!.consultation });
    await cluster.run(200);
    expect(answerTo(alice, 'c1')).toBeUndefined();
    await cluster.restart('b');
    await cluster.until(() => answerTo(alice, 'c1') !== undefined);
    expect(answerTo(alice, 'c1')).toEqual({ t: 'ok', id: 'c1' });
    expect((await cluster.stored('b', CONV)).map((message) => message.event?.type ?? message.body)).toEqual(['hi', 'assigned', 'closed']);
  });

  it('passes a close that reached the merchant\'s old home on to the new one, and the answer reaches the cell of the device', async () => {
    cluster = new TestCluster();
    const ann = { id: 'ann', name: 'Ann', capacity: 1, groups: ['default'], supervisor: false };
    const people: DeskPeople = { list: (_tenant, merchant) => (merchant === 'shop' ? [ann] : []), get: (_tenant, merchant, agent) => (merchant === 'shop' && agent === 'ann' ? ann : undefined) };
    await cluster.addCell('a', ['corner'], undefined, people);
    await cluster.addCell('b', ['kiosk']);
    await cluster.addCell('c', ['shop'], undefined, people);
    const agent = await cluster.connect('c', 'ann', { merchant: 'shop' });
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', conv: CONV, cmid: 'hi', body: 'hi' });
    await cluster.until(() => alice.of('consultation').at(-1)?.state === 'assigned');
    // Cell a's directory still names b, where the merchant lived before: b passes the close on to c.
    cluster.staleHomes.set('a', new Map([[`${TENANT}/shop`, 'b']]));
    alice.frame({ op: 'close', id: 'c1', conv: CONV });
    await cluster.until(() => answerTo(alice, 'c1') !== undefined);
    expect(answerTo(alice, 'c1')).toEqual({ t: 'ok', id: 'c1' });
    expect(eventsOf(agent, CONV)).toEqual(['assigned', 'closed']);
    // The merchant moves to a while a's next request waits for b behind a partition: b sends it
    // back to a, the merchant's home now, which answers its own device (its desk here, a test's
    // move without the copy, knows no consultation of alice).
    cluster.network.partition(['peer-a'], ['peer-b']);
    alice.frame({ op: 'close', id: 'c2', conv: CONV });
    await cluster.run(100);
    cluster.homes.set(`${TENANT}/shop`, 'a');
    cluster.staleHomes.clear();
    cluster.cell('c').core.moveHost().releaseMerchant(TENANT, 'shop', { cellId: 'a', epoch: 1 });
    cluster.cell('a').core.moveHost().hostMerchant(TENANT, 'shop');
    cluster.network.heal();
    await cluster.cell('b').transport.dial(memoryAddress(cluster.cell('a').transport.self)).catch(() => undefined);
    await cluster.until(() => answerTo(alice, 'c2') !== undefined, 10_000);
    expect(answerTo(alice, 'c2')).toMatchObject({ t: 'error', id: 'c2', code: 'CONSULTATION_UNKNOWN' });
  });

  it("tells a waiting customer connected elsewhere that its position moved, between changes of its state", async () => {
    const agent = await shopOnB();
    const alice = await cluster.connect('a', 'alice');
    const carol = await cluster.connect('a', 'carol');
    const erin = await cluster.connect('a', 'erin');
    for (const device of [alice, carol, erin]) {
      device.frame({ op: 'send', conv: `shop:${device.identity.user}`, cmid: 'hi', body: 'hi' });
      await cluster.until(() => device.of('consultation').length > 0);
    }
    expect(alice.of('consultation').at(-1)).toMatchObject({ state: 'assigned', agent: 'ann' });
    expect(carol.of('consultation').at(-1)).toMatchObject({ state: 'waiting', position: 1 });
    expect(erin.of('consultation').at(-1)).toMatchObject({ state: 'waiting', position: 2 });
    // Ann closes Alice's consultation: Carol, ahead of Erin, is assigned, and Erin moves up.
    agent.frame({ op: 'close', id: 'c', conv: CONV });
    await cluster.until(() => carol.of('consultation').at(-1)?.state === 'assigned');
    await cluster.until(() => erin.of('consultation').at(-1)?.position === 1);
    expect(erin.of('consultation').map((frame) => [frame.state, frame.position])).toEqual([
      ['waiting', 2],
      ['waiting', 1],
    ]);
    // The next change of state follows the position, in order.
    agent.frame({ op: 'close', id: 'c2', conv: 'shop:carol' });
    await cluster.until(() => erin.of('consultation').at(-1)?.state === 'assigned');
    await cluster.run(2_000, 50);
    expect(erin.of('consultation').map((frame) => frame.state)).toEqual(['waiting', 'waiting', 'assigned']);
    expect(eventsOf(erin, 'shop:erin')).toEqual(['queued', 'assigned']);
  });
});

describe('cross-cell conversations over a memory network', () => {
  let cluster: TestCluster;

  async function threeCells(): Promise<TestCluster> {
    cluster = new TestCluster();
    await cluster.addCell('a', ['corner']);
    await cluster.addCell('b', ['shop']);
    await cluster.addCell('c', ['kiosk']);
    return cluster;
  }

  afterEach(async () => {
    await cluster?.stopAll();
  });

  /** Three cells; bob, the agent of `shop`, on b; alice on a, whose first message there is acked. */
  async function aliceSaidHi(): Promise<{ agent: TestDevice; alice: TestDevice }> {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', conv: CONV, cmid: 'hi', body: 'hi' });
    await cluster.until(() => alice.of('sent').length === 1);
    return { agent, alice };
  }

  it('relays a customer send to the home cell: queued, then sent with the home seq; the reply comes back', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', id: 's1', conv: CONV, cmid: 'c1', body: 'hello' });
    await cluster.until(() => alice.of('queued').length === 1);
    expect(alice.of('queued')).toEqual([{ t: 'queued', id: 's1', conv: CONV, cmid: 'c1' }]);
    expect(alice.of('sent')).toEqual([]);
    await cluster.until(() => alice.of('sent').length === 1);
    expect(alice.of('sent')[0]).toMatchObject({ id: 's1', conv: CONV, cmid: 'c1', seq: 1 });
    // The seq was the home cell's, durable there before the access cell heard of it.
    expect((await cluster.stored('b', CONV)).map((message) => [message.seq, message.body, message.device])).toEqual([[1, 'hello', 'd1']]);
    await cluster.until(() => agent.pushed(CONV).length === 1);
    expect(agent.of('msg')[0]).toMatchObject({ from: 'alice', role: 'customer', cmid: 'c1', body: 'hello' });

    agent.frame({ op: 'send', id: 'r1', conv: CONV, cmid: 'r1', body: 'hi alice' });
    await cluster.until(() => alice.pushed(CONV).length === 1);
    expect(alice.of('msg')[0]).toMatchObject({ seq: 2, from: 'bob', body: 'hi alice' });
    // The access cell's mirror holds the conversation under the home cell's seqs.
    expect((await cluster.stored('a', CONV)).map((message) => message.seq)).toEqual([1, 2]);
    alice.frame({ op: 'inbox', id: 'i1' });
    await cluster.until(() => alice.of('inbox').length === 1);
    expect(alice.of('inbox')[0]!.conversations).toEqual([
      expect.objectContaining({ conv: CONV, merchant: 'shop', customer: 'alice', lastSeq: 2, readSeq: 1, unread: 1 }),
    ]);
  });

  it('keeps 200 messages both ways gap-free and in order on every device', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const phone = await cluster.connect('a', 'alice', { device: 'phone' });
    const tablet = await cluster.connect('a', 'alice', { device: 'tablet' });
    for (let index = 0; index < 100; index++) {
      phone.frame({ op: 'send', conv: CONV, cmid: `a${index}`, body: `from alice ${index}` });
      agent.frame({ op: 'send', conv: CONV, cmid: `b${index}`, body: `from bob ${index}` });
      if (index % 10 === 9) await cluster.run(3);
    }
    await cluster.until(() => [agent, phone, tablet].every((device) => device.seen(CONV).length === 200), 60_000);
    for (const device of [agent, phone, tablet]) {
      const pushed = device.pushed(CONV);
      expect(pushed).toEqual([...pushed].sort((x, y) => x - y));
      expect(new Set(pushed).size).toBe(pushed.length);
      expect([...device.seen(CONV)].sort((x, y) => x - y)).toEqual(range(1, 200));
    }
    // Each party's messages keep the order they were sent in.
    const stored = await cluster.stored('b', CONV);
    expect(stored.filter((message) => message.from === 'alice').map((message) => message.body)).toEqual(range(0, 99).map((index) => `from alice ${index}`));
    expect(phone.of('sent').map((frame) => frame.cmid)).toEqual(range(0, 99).map((index) => `a${index}`));
    expect(await cluster.stored('a', CONV)).toEqual(stored);
  });

  it('answers a resend of a relayed send with the same seq and stores nothing twice, through any cell', async () => {
    await threeCells();
    await cluster.connect('b', 'bob', { merchant: 'shop' });
    const phone = await cluster.connect('a', 'alice', { device: 'phone' });
    phone.frame({ op: 'send', id: 's1', conv: CONV, cmid: 'once', body: 'only once' });
    await cluster.until(() => phone.of('sent').length === 1);
    phone.frame({ op: 'send', id: 's2', conv: CONV, cmid: 'once', body: 'only once' });
    await cluster.until(() => phone.of('sent').length === 2);
    expect(phone.of('sent').map((frame) => [frame.id, frame.seq])).toEqual([
      ['s1', 1],
      ['s2', 1],
    ]);
    // The same cmid through another access cell that never saw it: relayed, deduplicated at home.
    const laptop = await cluster.connect('c', 'alice', { device: 'laptop' });
    laptop.frame({ op: 'send', id: 's3', conv: CONV, cmid: 'once', body: 'only once' });
    await cluster.until(() => laptop.of('sent').length === 1);
    expect(laptop.of('sent')[0]).toMatchObject({ id: 's3', seq: 1 });
    await cluster.run(100);
    expect(await cluster.stored('b', CONV)).toHaveLength(1);
    expect(laptop.pushed(CONV)).toEqual([]);
  });

  it('refuses a resend of a relayed cmid with another body wherever it is caught, and the home cell stores only the first', async () => {
    await threeCells();
    await cluster.connect('b', 'bob', { merchant: 'shop' });
    const phone = await cluster.connect('a', 'alice', { device: 'phone' });
    // While the send waits in the access cell's outbox.
    cluster.network.partition(['peer-a'], ['peer-b']);
    phone.frame({ op: 'send', id: 's1', conv: CONV, cmid: 'once', body: 'first' });
    await cluster.until(() => phone.of('queued').length === 1);
    phone.frame({ op: 'send', id: 's2', conv: CONV, cmid: 'once', body: 'second' });
    await cluster.until(() => phone.of('error').length === 1);
    expect(phone.of('error')[0]).toMatchObject({ id: 's2', code: 'IDEMPOTENCY_CONFLICT' });
    cluster.network.heal();
    await cluster.until(() => phone.of('sent').length === 1, 30_000);
    expect(phone.of('sent')[0]).toMatchObject({ id: 's1', seq: 1 });
    // Once the access cell's mirror holds it.
    phone.frame({ op: 'send', id: 's3', conv: CONV, cmid: 'once', body: 'third' });
    await cluster.until(() => phone.of('error').length === 2);
    expect(phone.of('error')[1]).toMatchObject({ id: 's3', code: 'IDEMPOTENCY_CONFLICT' });
    // Through another access cell that never saw it: the home cell refuses it, and says so to its sender.
    const laptop = await cluster.connect('c', 'alice', { device: 'laptop' });
    laptop.frame({ op: 'send', id: 's4', conv: CONV, cmid: 'once', body: 'fourth' });
    await cluster.until(() => laptop.of('error').length === 1);
    expect(laptop.of('queued')).toHaveLength(1);
    expect(laptop.of('error')[0]).toMatchObject({ id: 's4', code: 'IDEMPOTENCY_CONFLICT', conv: CONV, cmid: 'once' });
    await cluster.run(100);
    expect((await cluster.stored('b', CONV)).map((message) => message.body)).toEqual(['first']);
    expect((await cluster.stored('a', CONV)).map((message) => message.body)).toEqual(['first']);
  });

  it("counts each message's closure once, at its home: in cell, relayed from another cell, or copied to one", async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const carol = await cluster.connect('b', 'carol');
    carol.frame({ op: 'send', conv: 'shop:carol', cmid: 'k1', body: 'next door' });
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', conv: CONV, cmid: 'a1', body: 'from afar' });
    await cluster.until(() => agent.pushed('shop:carol').length === 1 && alice.of('sent').length === 1);
    // The agent's answer is written at the home and copied to alice's cell.
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'hello alice' });
    await cluster.until(() => alice.pushed(CONV).length === 1);
    await cluster.until(() => cluster.cell('b').core.closure()?.messages.total === 3);
    expect(cluster.cell('b').core.closure()).toEqual({
      messages: { inCell: 1, relayed: 1, copied: 1, total: 3, inCellRatio: 1 / 3 },
      conversations: { total: 2, crossed: 1, inCell: 1, inCellRatio: 0.5 },
    });
    // The access cell made nothing durable as a home: its mirror copies are not counted again.
    expect(cluster.cell('a').core.closure()?.messages.total).toBe(0);
  });

  it('gives a customer with devices on two access cells everything on both', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const phone = await cluster.connect('a', 'alice', { device: 'phone' });
    const laptop = await cluster.connect('c', 'alice', { device: 'laptop' });
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'welcome' });
    await cluster.until(() => phone.pushed(CONV).length === 1 && laptop.pushed(CONV).length === 1);
    phone.frame({ op: 'send', conv: CONV, cmid: 'p1', body: 'from my phone' });
    await cluster.until(() => laptop.pushed(CONV).length === 2 && agent.pushed(CONV).length === 1);
    laptop.frame({ op: 'send', conv: CONV, cmid: 'l1', body: 'from my laptop' });
    await cluster.until(() => phone.pushed(CONV).length === 2 && agent.pushed(CONV).length === 2);
    expect(phone.seen(CONV)).toEqual([1, 2, 3]);
    expect(laptop.seen(CONV)).toEqual([1, 2, 3]);
    expect(laptop.of('msg').find((frame) => frame.seq === 2)).toMatchObject({ from: 'alice', device: 'phone', body: 'from my phone' });
    expect(phone.of('msg').find((frame) => frame.seq === 3)).toMatchObject({ from: 'alice', device: 'laptop', body: 'from my laptop' });
  });

  it('pushes to a customer device that connects to another cell while the home cell holds her location as nowhere else', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const phone = await cluster.connect('b', 'alice', { device: 'phone' });
    phone.frame({ op: 'send', conv: CONV, cmid: 'p1', body: 'hi' });
    await cluster.until(() => phone.of('sent').length === 1);
    // b located alice for that message: nowhere but here, an answer it serves for 30 s. Her
    // laptop connects to c, which has never seen the conversation; c tells b, which asked.
    await cluster.until(() => cluster.cell('b').location.stats().queriesCompleted === 1);
    const laptop = await cluster.connect('c', 'alice', { device: 'laptop' });
    await cluster.run(20);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'hello' });
    await cluster.until(() => laptop.seen(CONV).includes(2), 1_000);
    expect(cluster.cell('b').location.stats()).toMatchObject({ queriesSent: 1, noticesReceived: 1 });
    await cluster.until(() => laptop.seen(CONV).length === 2, 1_000);
    expect(laptop.seen(CONV).sort()).toEqual([1, 2]);
  });

  it('carries read receipts across cells, both ways, to the reader’s other devices too', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const phone = await cluster.connect('a', 'alice', { device: 'phone' });
    const laptop = await cluster.connect('c', 'alice', { device: 'laptop' });
    for (const cmid of ['b1', 'b2', 'b3']) agent.frame({ op: 'send', conv: CONV, cmid, body: cmid });
    await cluster.until(() => phone.pushed(CONV).length === 3 && laptop.pushed(CONV).length === 3);
    phone.frame({ op: 'read', id: 'rd', conv: CONV, seq: 2 });
    await cluster.until(() => agent.of('receipt').length === 1 && laptop.of('receipt').length === 1);
    expect(phone.of('ok')).toEqual([{ t: 'ok', id: 'rd' }]);
    expect(agent.of('receipt')).toEqual([{ t: 'receipt', conv: CONV, user: 'alice', role: 'customer', seq: 2 }]);
    expect(laptop.of('receipt')).toEqual([{ t: 'receipt', conv: CONV, user: 'alice', role: 'customer', seq: 2 }]);
    expect(phone.of('receipt')).toEqual([{ t: 'receipt', conv: CONV, user: 'alice', role: 'customer', seq: 2 }]);

    agent.frame({ op: 'read', conv: CONV, seq: 0 });
    phone.frame({ op: 'send', conv: CONV, cmid: 'p1', body: 'reply' });
    await cluster.until(() => agent.pushed(CONV).length === 1);
    agent.frame({ op: 'read', conv: CONV, seq: 4 });
    await cluster.until(() => phone.of('receipt').length === 2 && laptop.of('receipt').length === 2);
    expect(phone.of('receipt')[1]).toEqual({ t: 'receipt', conv: CONV, user: 'bob', role: 'agent', seq: 4 });
    phone.frame({ op: 'inbox', id: 'i' });
    await cluster.until(() => phone.of('inbox').length === 1);
    expect(phone.of('inbox')[0]!.conversations[0]).toMatchObject({ lastSeq: 4, readSeq: 4, unread: 0, reads: [{ user: 'bob', role: 'agent', seq: 4 }] });
  });

  it('lets conversations inside each cell go on during a partition, and delivers the rest once, in order, after the heal', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const alice = await cluster.connect('a', 'alice');
    const localAgentA = await cluster.connect('a', 'carol', { merchant: 'corner' });
    const localCustomerA = await cluster.connect('a', 'dave');
    const localCustomerB = await cluster.connect('b', 'erin');
    alice.frame({ op: 'send', conv: CONV, cmid: 'before', body: 'before the partition' });
    await cluster.until(() => agent.pushed(CONV).length === 1 && alice.of('sent').length === 1);

    cluster.network.partition(['peer-a'], ['peer-b']);
    for (let index = 0; index < 5; index++) {
      alice.frame({ op: 'send', id: `p${index}`, conv: CONV, cmid: `p${index}`, body: `during ${index}` });
      agent.frame({ op: 'send', conv: CONV, cmid: `q${index}`, body: `agent during ${index}` });
      localCustomerA.frame({ op: 'send', conv: 'corner:dave', cmid: `d${index}`, body: `in cell a ${index}` });
      localCustomerB.frame({ op: 'send', conv: 'shop:erin', cmid: `e${index}`, body: `in cell b ${index}` });
    }
    await cluster.run(500);
    // Inside each cell nothing waits for the other.
    expect(localCustomerA.of('sent').map((frame) => frame.seq)).toEqual(range(1, 5));
    expect(localAgentA.pushed('corner:dave')).toEqual(range(1, 5));
    expect(localCustomerB.of('sent').map((frame) => frame.seq)).toEqual(range(1, 5));
    expect(agent.pushed('shop:erin')).toEqual(range(1, 5));
    // Across, the sends are durable at the access cell and wait.
    expect(alice.of('queued').map((frame) => frame.cmid)).toEqual(['before', 'p0', 'p1', 'p2', 'p3', 'p4']);
    expect(alice.of('sent')).toHaveLength(1);
    expect(alice.pushed(CONV)).toEqual([]);
    // A resend of a queued send is answered `queued` again and not forwarded twice.
    const relayed = cluster.cell('a').core.crossCellStats()!.relayedSends;
    alice.frame({ op: 'send', id: 'again', conv: CONV, cmid: 'p2', body: 'during 2' });
    await cluster.until(() => alice.of('queued').some((frame) => frame.id === 'again'));
    expect(cluster.cell('a').core.crossCellStats()!.relayedSends).toBe(relayed);

    cluster.network.heal();
    await cluster.until(() => alice.seen(CONV).length === 11 && agent.seen(CONV).length === 11, 30_000);
    // p2's `sent` goes to the request that asked last.
    expect(alice.of('sent').map((frame) => [frame.cmid, frame.id])).toEqual([
      ['before', undefined],
      ['p0', 'p0'],
      ['p1', 'p1'],
      ['p2', 'again'],
      ['p3', 'p3'],
      ['p4', 'p4'],
    ]);
    const stored = await cluster.stored('b', CONV);
    expect(stored.map((message) => message.seq)).toEqual(range(1, 11));
    expect(stored.filter((message) => message.from === 'alice').map((message) => message.cmid)).toEqual(['before', 'p0', 'p1', 'p2', 'p3', 'p4']);
    for (const device of [alice, agent]) {
      const pushed = device.pushed(CONV);
      expect(pushed).toEqual([...new Set(pushed)].sort((x, y) => x - y));
      expect([...device.seen(CONV)].sort((x, y) => x - y)).toEqual(range(1, 11));
    }
  });

  it('still forwards to a silent customer across a partition longer than the location cache', async () => {
    const { agent, alice } = await aliceSaidHi();
    cluster.network.partition(['peer-a'], ['peer-b']);
    // 40 s: the home cell's cached location of alice (30 s) expires meanwhile, and locating her
    // across the partition finds nobody.
    for (let index = 0; index < 8; index++) {
      agent.frame({ op: 'send', conv: CONV, cmid: `b${index}`, body: `while apart ${index}` });
      await cluster.run(5_000, 50);
    }
    expect(alice.pushed(CONV)).toEqual([]);
    cluster.network.heal();
    await cluster.until(() => alice.pushed(CONV).length === 8, 30_000);
    expect(alice.pushed(CONV)).toEqual(range(2, 9));
  });

  it('repairs a mirror the home cell stopped feeding: it restarted, forgot who follows her, and could not locate her', async () => {
    const { alice } = await aliceSaidHi();
    await cluster.restart('b');
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    // While she cannot be reached, the restarted home cell has no follower and locates nobody.
    cluster.network.partition(['peer-a'], ['peer-b']);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'while forgotten' });
    await cluster.until(() => agent.of('sent').length === 1);
    await cluster.run(2_000, 50);
    cluster.network.heal();
    await cluster.run(5_000, 50);
    expect(alice.pushed(CONV)).toEqual([]);
    // The access cell's repair pass (every 30 s) finds the message and re-subscribes her.
    await cluster.until(() => alice.pushed(CONV).length === 1, 40_000);
    expect(alice.pushed(CONV)).toEqual([2]);
    expect(cluster.cell('a').core.crossCellStats()!.repairedMessages).toBe(1);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b2', body: 'found again' });
    await cluster.until(() => alice.pushed(CONV).includes(3), 5_000);
  });

  it('fetches at its repair pass a conversation a device asked about while the home was out of reach, which the home does not locate here, also after the device dropped and came back', async () => {
    // desk.yaml seed 123: the customer came back to the home of the merchant its device is routed
    // for, and asked that cell about her conversation with a merchant of another cell, whose home
    // was down; the agent's close stored later was never pushed there (a device routed for
    // another merchant is not located for this one's conversations, and the home followed nobody).
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const phone = await cluster.connect('b', 'alice', { device: 'phone' });
    phone.frame({ op: 'send', conv: CONV, cmid: 'p1', body: 'hi' });
    await cluster.until(() => phone.of('sent').length === 1);
    phone.close(1000, 'gone to another cell');
    const before = await cluster.connect('c', 'alice', { device: 'laptop', routedFor: 'kiosk' });
    cluster.network.partition(['peer-c'], ['peer-b']);
    before.frame({ op: 'history', id: 'h1', conv: CONV, before: 202, limit: 200 });
    await cluster.until(() => before.of('history').length === 1, 2_000);
    expect(before.of('history')[0]!.messages).toEqual([]);
    // Her connection drops and comes back to the same cell: her client does not ask again.
    before.close(1006, 'network');
    const laptop = await cluster.connect('c', 'alice', { device: 'laptop', routedFor: 'kiosk' });
    cluster.network.heal();
    await cluster.run(1_000, 50);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'after she left' });
    await cluster.until(() => agent.of('sent').length === 1);
    await cluster.run(5_000, 50);
    expect(laptop.seen(CONV)).toEqual([]);
    // c's repair pass (every 30 s) copies the conversation and has b follow alice there.
    await cluster.until(() => laptop.seen(CONV).includes(2), 40_000);
    expect(laptop.pushed(CONV)).toEqual([1, 2]);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b2', body: 'found' });
    await cluster.until(() => laptop.pushed(CONV).includes(3), 5_000);
  });

  it('keeps under its repair pass a conversation a device asked about and the home sent at once, which the home forgets it follows when it restarts', async () => {
    // desk.yaml seed 36: the customer followed the merchant her device is routed for to a new cell
    // and asked it about her conversation with a merchant of another cell; the copy came at once,
    // and the home followed her there, until it restarted. Routed for another merchant, her device
    // is not located for this one's conversations, and her connect found no mirror to watch:
    // the desk's system messages stored after the restart never reached her.
    await threeCells();
    const phone = await cluster.connect('b', 'alice', { device: 'phone' });
    phone.frame({ op: 'send', conv: CONV, cmid: 'p1', body: 'hi' });
    await cluster.until(() => phone.of('sent').length === 1);
    phone.close(1000, 'gone to another cell');
    const laptop = await cluster.connect('c', 'alice', { device: 'laptop', routedFor: 'kiosk' });
    laptop.frame({ op: 'history', id: 'h1', conv: CONV, before: 202, limit: 200 });
    await cluster.until(() => laptop.of('history').length === 1, 2_000);
    expect(laptop.of('history')[0]!.messages.map((message) => message.seq)).toEqual([1]);
    await cluster.restart('b');
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'after the restart' });
    await cluster.until(() => agent.of('sent').length === 1);
    await cluster.run(5_000, 50);
    expect(laptop.seen(CONV)).toEqual([1]);
    // c's repair pass (every 30 s) finds the message and has b follow alice there again.
    await cluster.until(() => laptop.seen(CONV).includes(2), 40_000);
    expect(laptop.seen(CONV)).toEqual([1, 2]);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b2', body: 'found' });
    await cluster.until(() => laptop.pushed(CONV).includes(3), 5_000);
  });

  it('delivers, when a merchant moves in, what its old home wrote and never pushed to the devices here', async () => {
    const { alice } = await aliceSaidHi();
    // The move's copy brings seq 2, which the old home never pushed here (its locate came back empty).
    const missed: ChatMessage = { conv: CONV, seq: 2, from: 'bob', role: 'agent', device: 'd1', cmid: 'b1', body: 'never pushed', ts: cluster.clock.now() };
    await cluster.cell('a').store.write([
      { type: 'put', key: keys.message(TENANT, CONV, 2), value: JSON.stringify(missed) },
      { type: 'put', key: keys.merchantConversation(TENANT, 'shop', CONV), value: '' },
    ]);
    cluster.homes.set(`${TENANT}/shop`, 'a');
    cluster.cell('a').core.moveHost().hostMerchant(TENANT, 'shop');
    await cluster.until(() => alice.pushed(CONV).includes(2), 2_000);
    expect(alice.pushed(CONV)).toEqual([2]);
  });

  it('passes a send that reached the old home on to the new one, and the customer\'s cell gets it and what follows, though nobody could locate her', async () => {
    await threeCells();
    // The merchant moved from b to c; cell a's directory has not heard of it yet.
    cluster.homes.set(`${TENANT}/shop`, 'c');
    cluster.staleHomes.set('a', new Map([[`${TENANT}/shop`, 'b']]));
    cluster.cell('b').core.moveHost().releaseMerchant(TENANT, 'shop', { cellId: 'c', epoch: 1 });
    cluster.cell('c').core.moveHost().hostMerchant(TENANT, 'shop');
    const agent = await cluster.connect('c', 'bob', { merchant: 'shop' });
    const alice = await cluster.connect('a', 'alice');
    // The new home cannot reach a while the send travels a -> b -> c: its locate finds nobody.
    cluster.network.partition(['peer-a'], ['peer-c']);
    alice.frame({ op: 'send', conv: CONV, cmid: 'hi', body: 'a new conversation' });
    await cluster.until(() => agent.pushed(CONV).includes(1), 5_000);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'welcome' });
    await cluster.until(() => agent.of('sent').length === 1);
    await cluster.run(1_000, 50);
    cluster.network.heal();
    // c sends both to a, the cell the send came from, not to b, which passed it on.
    await cluster.until(() => alice.of('sent').length === 1 && alice.pushed(CONV).includes(2), 10_000);
    expect(alice.of('sent').map((frame) => frame.seq)).toEqual([1]);
    expect(alice.pushed(CONV)).toEqual([2]);
    expect(await cluster.stored('b', CONV)).toEqual([]);
  });

  it('forgets a customer\'s cell that left: the next message finds her on the cell she moved to', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const onA = await cluster.connect('a', 'alice', { device: 'phone' });
    onA.frame({ op: 'send', conv: CONV, cmid: 'hi', body: 'hi' });
    await cluster.until(() => onA.of('sent').length === 1);
    // Cell a leaves the cluster; her device reconnects to c, which has never seen the conversation.
    await cluster.crash('a');
    cluster.announceLeft('a');
    const onC = await cluster.connect('c', 'alice', { device: 'phone' });
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'where are you?' });
    // The home cell no longer sends to a (cached location, follower) but locates her anew.
    await cluster.until(() => onC.pushed(CONV).includes(2), 5_000);
    expect(onC.pushed(CONV)).toEqual([1, 2]);
  });

  it('syncs a reconnecting customer from the mirror, backfilled from the home cell where it fell behind', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const first = await cluster.connect('a', 'alice', { device: 'phone' });
    first.frame({ op: 'send', conv: CONV, cmid: 'c1', body: 'hi' });
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'hello' });
    await cluster.until(() => first.seen(CONV).length === 2);
    first.close(1000, 'bye');
    // The first message after she left reaches the mirror, which tells the home cell she is gone;
    // the later ones stay at home.
    for (let index = 0; index < 20; index++) {
      agent.frame({ op: 'send', conv: CONV, cmid: `later${index}`, body: `later ${index}` });
      await cluster.run(30);
    }
    await cluster.run(200);
    const mirrored = (await cluster.stored('a', CONV)).length;
    expect(mirrored).toBeLessThan(22);
    expect(cluster.cell('b').core.crossCellStats()).toMatchObject({ historyPagesServed: 0 });

    expect(cluster.cell('a').core.crossCellStats()!.goneHints).toBe(1);
    const second = await cluster.connect('a', 'alice', { device: 'phone' });
    expect(second.pushed(CONV)).toEqual(range(3, 22));
    expect(cluster.cell('b').core.crossCellStats()!.historyPagesServed).toBeGreaterThan(0);
    expect(second.frames.findIndex((frame) => frame.t === 'synced')).toBeGreaterThan(second.frames.findLastIndex((frame) => frame.t === 'msg'));
    expect((await cluster.stored('a', CONV)).map((message) => message.seq)).toEqual(range(1, 22));
    // The home cell finds her again for what follows.
    agent.frame({ op: 'send', conv: CONV, cmid: 'after', body: 'after the reconnect' });
    await cluster.until(() => second.pushed(CONV).includes(23));
  });

  it('moves a mirror past the messages its home cell deleted by retention, and syncs the device from there', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const first = await cluster.connect('a', 'alice', { device: 'phone' });
    first.frame({ op: 'send', conv: CONV, cmid: 'c1', body: 'hi' });
    await cluster.until(() => first.seen(CONV).length === 1);
    first.close(1000, 'bye');
    for (let index = 0; index < 10; index++) {
      agent.frame({ op: 'send', conv: CONV, cmid: `later${index}`, body: `later ${index}` });
      await cluster.run(30);
    }
    await cluster.run(200);
    const mirrored = (await cluster.stored('a', CONV)).length;
    expect(mirrored).toBeLessThan(11);
    // A month on, the home cell's retention deletes all but its newest message.
    cluster.clock.advance(31 * 24 * 3600 * 1000);
    // The agent's token expired meanwhile: a new one.
    const agentLater = await cluster.connect('b', 'bob', { merchant: 'shop', device: 'later' });
    agentLater.frame({ op: 'send', conv: CONV, cmid: 'month', body: 'a month later' });
    await cluster.run(50);
    const home = cluster.cell('b');
    const sweeper = new RetentionSweeper({
      store: home.store,
      clock: cluster.clock,
      logger: silentLogger,
      tenants: [{ id: TENANT, secret: SECRET, origins: [], merchants: [], retention: { conversationDays: 30 } }],
      attachments: new AttachmentStore(home.store, cluster.clock),
      forgetConversations: (tenant, merchant) => home.core.forgetConversations(tenant, merchant),
      settleReadCursors: (tenant, conv) => home.core.settleReadCursors(tenant, conv),
    });
    expect(await sweeper.runOnce()).toMatchObject({ conversationsVisited: 1, messagesDeleted: 11 });
    expect((await cluster.stored('b', CONV)).map((message) => message.seq)).toEqual([12]);

    const second = await cluster.connect('a', 'alice', { device: 'phone' });
    expect(second.pushed(CONV)).toEqual([...range(2, mirrored), 12]);
    expect((await cluster.stored('a', CONV)).map((message) => message.seq)).toEqual([...range(1, mirrored), 12]);
    agentLater.frame({ op: 'send', conv: CONV, cmid: 'after', body: 'after the sweep' });
    await cluster.until(() => second.pushed(CONV).includes(13));
  });

  it('backfills a mirror that starts in the middle of a conversation', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const onHome = await cluster.connect('b', 'alice', { device: 'web' });
    for (let index = 0; index < 30; index++) agent.frame({ op: 'send', conv: CONV, cmid: `b${index}`, body: `m${index}` });
    await cluster.until(() => onHome.pushed(CONV).length === 30);
    // Her new device on another cell starts from nothing: the mirror copies the whole prefix first.
    const phone = await cluster.connect('a', 'alice', { device: 'phone' });
    agent.frame({ op: 'send', conv: CONV, cmid: 'b30', body: 'm30' });
    await cluster.until(() => phone.pushed(CONV).length === 31);
    expect(phone.pushed(CONV)).toEqual(range(1, 31));
    expect(await cluster.stored('a', CONV)).toEqual(await cluster.stored('b', CONV));
  });

  it('loses nothing when the access cell restarts from its store with sends waiting in its outbox', async () => {
    await threeCells();
    const agent = await cluster.connect('b', 'bob', { merchant: 'shop' });
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', conv: CONV, cmid: 'm0', body: 'zero' });
    await cluster.until(() => alice.of('sent').length === 1);
    cluster.network.partition(['peer-a'], ['peer-b']);
    for (let index = 1; index <= 3; index++) alice.frame({ op: 'send', id: `s${index}`, conv: CONV, cmid: `m${index}`, body: `msg ${index}` });
    await cluster.until(() => alice.of('queued').length === 4);
    agent.frame({ op: 'send', conv: CONV, cmid: 'b1', body: 'while apart' });
    // Long enough for her device's delivery cursor to be written (cursorWriteIntervalMs).
    await cluster.run(600);

    await cluster.restart('a');
    cluster.network.heal();
    // The restarted cell re-dials; the home cell's cell reaches it again.
    await cluster.cell('b').transport.dial(memoryAddress('peer-a'));
    await cluster.cell('c').transport.dial(memoryAddress('peer-a'));
    await cluster.until(() => agent.seen(CONV).length === 5, 30_000);
    const stored = await cluster.stored('b', CONV);
    expect(stored.map((message) => message.cmid)).toEqual(['m0', 'b1', 'm1', 'm2', 'm3']);

    // Reconnected, she gets everything after her cursor; her queued sends come as deliveries.
    const again = await cluster.connect('a', 'alice');
    await cluster.until(() => again.seen(CONV).length === 4);
    expect(again.of('msg').map((frame) => [frame.seq, frame.cmid])).toEqual([
      [2, 'b1'],
      [3, 'm1'],
      [4, 'm2'],
      [5, 'm3'],
    ]);
    // A resend after the restart is answered from the mirror.
    again.frame({ op: 'send', id: 'r', conv: CONV, cmid: 'm2', body: 'msg 2' });
    await cluster.until(() => again.of('sent').length === 1);
    expect(again.of('sent')[0]).toMatchObject({ id: 'r', seq: 4 });
    expect(await cluster.stored('b', CONV)).toHaveLength(5);
  });

  it('waits for the seq of an HTTP send to another cell, and says FORWARD_PENDING when it does not come', async () => {
    await threeCells();
    await cluster.connect('b', 'bob', { merchant: 'shop' });
    const identity = (await cluster.connect('a', 'alice', { autoAck: false })).identity;
    const core = cluster.cell('a').core;
    let answered: unknown;
    void core.send(identity, CONV, 'h1', 'over http').then((result) => (answered = result));
    await cluster.until(() => answered !== undefined);
    expect(answered).toMatchObject({ duplicate: false, message: { seq: 1, cmid: 'h1' } });
    await expect(core.send(identity, CONV, 'h1', 'over http')).resolves.toMatchObject({ duplicate: true, message: { seq: 1 } });

    cluster.network.partition(['peer-a'], ['peer-b']);
    const pending = core.send(identity, CONV, 'h2', 'stuck');
    const outcome = pending.then(
      () => 'resolved',
      (error: unknown) => (error instanceof CellError ? error.code : 'other'),
    );
    await cluster.run(1_100);
    expect(await outcome).toBe('FORWARD_PENDING');
  });

  it('refuses cross-cell conversations nobody hosts, and agents of merchants hosted elsewhere', async () => {
    await threeCells();
    const alice = await cluster.connect('a', 'alice');
    alice.frame({ op: 'send', id: 'x', conv: 'nowhere:alice', cmid: 'c', body: 'b' });
    await cluster.until(() => alice.of('error').length === 1);
    expect(alice.of('error')[0]).toMatchObject({ id: 'x', code: 'MERCHANT_NOT_HOSTED' });
    const agent = cluster.cell('a').core;
    const token = await mintToken({ secret: SECRET, tenant: TENANT, user: 'bob', role: 'agent', merchant: 'shop', device: 'd', ttlSeconds: 60, nowMs: cluster.clock.now() });
    expect(() => agent.admit(verifyToken(token, () => [{ secret: SECRET }], cluster.clock.now()), undefined)).toThrow(/not hosted/);
  });

  it('tells the sending device when the home cell refuses a relayed send', async () => {
    await threeCells();
    const alice = await cluster.connect('a', 'alice');
    // The directory says cell b hosts "moved", but cell b does not (a stale directory).
    cluster.homes.set(`${TENANT}/moved`, 'b');
    alice.frame({ op: 'send', id: 's', conv: 'moved:alice', cmid: 'c1', body: 'hello?' });
    await cluster.until(() => alice.of('error').length === 1);
    expect(alice.of('queued')).toHaveLength(1);
    expect(alice.of('error')[0]).toMatchObject({ id: 's', code: 'MERCHANT_NOT_HOSTED', conv: 'moved:alice', cmid: 'c1' });
  });

  it('erases a customer in every cell that holds a copy, asked at the home cell or at the access cell', async () => {
    const { agent, alice } = await aliceSaidHi();
    agent.frame({ op: 'send', conv: CONV, cmid: 'r1', body: 'hi alice' });
    await cluster.until(() => alice.pushed(CONV).length === 1);
    expect((await cluster.stored('a', CONV)).length).toBe(2);

    const answer = await cluster.cell('b').erasure.erase(TENANT, 'alice');
    expect(answer).toMatchObject({ deleted: { conversations: 1, messages: 2 }, devicesClosed: 0, cellsAsked: ['a', 'c'], cellsFailed: [] });
    // The access cell applies it from its inbox: the mirror goes, and so does alice's device there.
    await cluster.until(() => alice.closed !== undefined);
    expect(alice.closed?.code).toBe(4403);
    expect(await cluster.stored('a', CONV)).toEqual([]);
    expect(await cluster.stored('b', CONV)).toEqual([]);
    expect(await cluster.cell('a').store.range({ ...keys.customerConversations(TENANT, 'alice'), limit: 10 })).toEqual([]);

    // Asked at the access cell, it reaches the home cell.
    const again = await cluster.connect('a', 'alice', { device: 'd2' });
    again.frame({ op: 'send', conv: CONV, cmid: 'back', body: 'back' });
    await cluster.until(() => again.of('sent').length === 1);
    expect((await cluster.stored('b', CONV)).map((message) => [message.seq, message.body])).toEqual([[1, 'back']]);
    expect((await cluster.cell('a').erasure.erase(TENANT, 'alice')).devicesClosed).toBe(1);
    for (let step = 0; step < 100 && (await cluster.stored('b', CONV)).length > 0; step++) await cluster.run(20);
    expect(await cluster.stored('b', CONV)).toEqual([]);
    expect(await cluster.stored('a', CONV)).toEqual([]);
  });

  it('erases a customer in a cell that was down when the erasure was asked, once it is back', async () => {
    await aliceSaidHi();
    await cluster.crash('a');
    const answer = await cluster.cell('b').erasure.erase(TENANT, 'alice');
    expect(answer.cellsAsked).toEqual(['a', 'c']);
    await cluster.run(500, 10);
    // Down: its store still holds the mirror; the entry waits in b's outbox.
    expect((await cluster.stored('a', CONV)).length).toBe(1);
    await cluster.restart('a');
    for (let step = 0; step < 200 && (await cluster.stored('a', CONV)).length > 0; step++) await cluster.run(50, 10);
    expect(await cluster.stored('a', CONV)).toEqual([]);
  });

  it('carries the metadata of an agent’s attachments to the customer’s cell, and refuses attachments from there', async () => {
    const { alice } = await aliceSaidHi();
    const agent = cluster.cell('b').devices[0]!;
    const id = await new AttachmentStore(cluster.cell('b').store, cluster.clock).put(TENANT, CONV, Buffer.from('receipt'), { name: 'receipt.txt', type: 'text/plain', from: 'a:shop:bob' });
    agent.frame({ op: 'send', id: 'with-file', conv: CONV, cmid: 'with-file', body: '', attachments: [id] });
    await cluster.until(() => alice.pushed(CONV).length === 1);
    const attachment = { id, name: 'receipt.txt', type: 'text/plain', bytes: 7 };
    expect(alice.of('msg')[0]).toMatchObject({ body: '', attachments: [attachment] });
    expect((await cluster.stored('a', CONV)).at(-1)).toMatchObject({ attachments: [attachment] });

    alice.frame({ op: 'send', id: 'from-a', conv: CONV, cmid: 'from-a', body: 'mine', attachments: [id] });
    await cluster.until(() => alice.of('error').length === 1);
    expect(alice.of('error')[0]).toMatchObject({ id: 'from-a', code: 'ATTACHMENT_CROSS_CELL' });
    expect(await cluster.cell('a').core.authorizeParty(alice.identity, CONV)).toEqual({ home: 'b' });
  });

  it("keeps a relayed customer's sends and reads apart from those of the merchant's agent of the same id", async () => {
    await threeCells();
    // The shop's agent is also called alice.
    const agent = await cluster.connect('b', 'alice', { merchant: 'shop' });
    const customer = await cluster.connect('a', 'alice');
    agent.frame({ op: 'send', id: 'g', conv: CONV, cmid: 'x', body: 'hello from the shop' });
    await cluster.until(() => customer.pushed(CONV).length === 1);
    expect(customer.of('msg')[0]).toMatchObject({ seq: 1, from: 'alice', role: 'agent' });
    // Her cmid `x` is her own, though the mirror holds the agent's `x`: relayed, and stored as seq 2.
    customer.frame({ op: 'send', id: 's', conv: CONV, cmid: 'x', body: 'hello from the customer' });
    await cluster.until(() => customer.of('sent').length === 1);
    expect(customer.of('queued')).toEqual([{ t: 'queued', id: 's', conv: CONV, cmid: 'x' }]);
    expect(customer.of('sent')[0]).toMatchObject({ id: 's', seq: 2 });
    expect((await cluster.stored('b', CONV)).map((message) => [message.seq, message.role, message.body])).toEqual([
      [1, 'agent', 'hello from the shop'],
      [2, 'customer', 'hello from the customer'],
    ]);
    // Her read is hers: the agent's cursor (moved by his send) is another one, in both cells.
    await cluster.until(() => agent.pushed(CONV).length === 1);
    agent.frame({ op: 'read', id: 'r', conv: CONV, seq: 2 });
    await cluster.until(() => customer.of('receipt').length === 1);
    expect(customer.of('receipt')[0]).toEqual({ t: 'receipt', conv: CONV, user: 'alice', role: 'agent', seq: 2 });
    customer.frame({ op: 'inbox', id: 'i' });
    await cluster.until(() => customer.of('inbox').length === 1);
    expect(customer.of('inbox')[0]!.conversations[0]).toMatchObject({ readSeq: 2, reads: [{ user: 'alice', role: 'agent', seq: 2 }] });
  });
});
