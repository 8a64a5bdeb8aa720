import { beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../platform/logger.js';
import { ManualClock } from '../../platform/manual-clock.js';
import { noopMetrics } from '../../platform/metrics.js';
import { SeededRandom } from '../../platform/random.js';
import { MemoryStore } from '../../platform/store/memory-store.js';
import { RecordingPort } from '../../testing/recording-port.js';
import { TrackedStore, whenStoresIdle } from '../../testing/tracked-store.js';
import { mintToken, verifyToken } from '../access/tokens.js';
import { CellCore } from '../cell-core.js';
import type { DeviceConnection } from '../messaging/device.js';
import { CellMetrics } from '../metrics.js';
import type { ChatMessage } from '../protocol/frames.js';
import { DeskConfig, LimitsConfig } from '../settings.js';
import { QUEUE_TELL_INTERVAL_MS, type DeskPeople, type DeskPerson } from './desk-service.js';

const SECRET = 'unit-test-secret-0123456789abcdef-0123';
const GRACE_MS = 60_000;
const INACTIVITY_MS = 600_000;

/** The people port over a plain list (the people directory is tested on its own). */
class ListedPeople implements DeskPeople {
  constructor(readonly people: DeskPerson[]) {}
  list(): readonly DeskPerson[] {
    return this.people;
  }
  get(_tenant: string, _merchant: string, agent: string): DeskPerson | undefined {
    return this.people.find((person) => person.id === agent);
  }
}

interface Device {
  port: RecordingPort;
  connection: DeviceConnection;
  send(frame: object): void;
  messages(conv?: string): ChatMessage[];
  notices(conv?: string): string[];
}

describe('the desk inside a cell', () => {
  let clock: ManualClock;
  let store: TrackedStore;
  let memory: MemoryStore;
  let core: CellCore;
  let people: ListedPeople;

  async function start(reuse = false): Promise<void> {
    clock ??= new ManualClock();
    if (!reuse) memory = new MemoryStore();
    store = new TrackedStore(memory);
    if (!reuse) await store.open();
    core = new CellCore({
      cellId: 'unit',
      tenants: [{ id: 'mall', secret: SECRET, origins: [], merchants: [{ id: 'm1' }] }],
      limits: LimitsConfig.parse({ ratePerSecond: 1000, rateBurst: 1000 }),
      clock,
      random: new SeededRandom(reuse ? 8 : 7),
      store,
      metrics: new CellMetrics(noopMetrics),
      logger: silentLogger,
      desk: { people, settings: DeskConfig.parse({ graceMs: GRACE_MS, inactivityCloseMs: INACTIVITY_MS }) },
    });
    await core.loadDesks();
  }

  const settle = (): Promise<void> => whenStoresIdle([store]);

  async function connect(user: string, merchant?: string, device = 'd1'): Promise<Device> {
    const token = await mintToken({
      secret: SECRET,
      tenant: 'mall',
      user,
      role: merchant === undefined ? 'customer' : 'agent',
      ...(merchant === undefined ? {} : { merchant }),
      device,
      ttlSeconds: 86_400,
      nowMs: clock.now(),
    });
    const port = new RecordingPort();
    const connection = core.connect(verifyToken(token, () => [{ secret: SECRET }], clock.now()), port);
    port.onClose = () => core.disconnect(connection);
    await settle();
    const messages = (conv?: string): ChatMessage[] => port.of('msg').filter((frame) => conv === undefined || frame.conv === conv);
    return {
      port,
      connection,
      send: (frame) => core.receive(connection, JSON.stringify(frame)),
      messages,
      notices: (conv) => messages(conv).flatMap((message) => (message.event === undefined ? [] : [message.event.type])),
    };
  }

  async function say(device: Device, conv: string, body: string, extra: object = {}): Promise<void> {
    device.send({ op: 'send', conv, cmid: `${body}-${clock.now()}`, body, ...extra });
    await settle();
  }

  beforeEach(async () => {
    clock = new ManualClock();
    people = new ListedPeople([
      { id: 'ann', name: 'Ann', capacity: 1, groups: ['default'], supervisor: false },
      { id: 'bob', name: 'Bob', capacity: 1, groups: ['default', 'after-sales'], supervisor: false },
      { id: 'sue', name: 'Sue', capacity: 1, groups: ['after-sales'], supervisor: true },
    ]);
    await start();
  });

  it("assigns a customer's first message to one agent, says so in the conversation, and keeps the other agents out", async () => {
    const ann = await connect('ann', 'm1');
    const bob = await connect('bob', 'm1');
    bob.send({ op: 'status', id: 's1', status: 'away' });
    await settle();
    const alice = await connect('alice');
    await say(alice, 'm1:alice', 'hello');
    // Alice's own message came back as `sent`; the desk's answer is pushed.
    expect(alice.port.of('sent').map((sent) => sent.seq)).toEqual([1]);
    expect(alice.messages().map((message) => [message.seq, message.role, message.body])).toEqual([[2, 'system', 'Ann is here to help.']]);
    expect(alice.port.of('consultation').at(-1)).toMatchObject({ conv: 'm1:alice', state: 'assigned', agent: 'ann', agentName: 'Ann' });
    expect(ann.messages('m1:alice').map((message) => message.body)).toEqual(['hello', 'Ann is here to help.']);
    expect(bob.messages()).toEqual([]);
    // Bob is not assigned: he may not write into it, nor read its history.
    bob.send({ op: 'send', id: 'x', conv: 'm1:alice', cmid: 'c', body: 'hi' });
    bob.send({ op: 'history', id: 'h', conv: 'm1:alice' });
    await settle();
    expect(bob.port.of('error').map((error) => [error.id, error.code])).toEqual([
      ['x', 'NOT_ASSIGNED'],
      ['h', 'NOT_ASSIGNED'],
    ]);
    // The history has the system message in order.
    expect((await core.history(ann.connection.identity, { conv: 'm1:alice' })).messages.map((message) => message.role)).toEqual(['customer', 'system']);
  });

  it('queues customers beyond capacity with positions, and a close pulls the next one at once', async () => {
    const ann = await connect('ann', 'm1');
    const [alice, carol, dave] = [await connect('alice'), await connect('carol'), await connect('dave')];
    await say(alice, 'm1:alice', 'one');
    await say(carol, 'm1:carol', 'two');
    await say(dave, 'm1:dave', 'three');
    expect(carol.port.of('consultation').at(-1)).toMatchObject({ state: 'waiting', position: 1 });
    expect(dave.port.of('consultation').at(-1)).toMatchObject({ state: 'waiting', position: 2 });
    expect(carol.notices()).toEqual(['queued']);
    ann.send({ op: 'close', id: 'c', conv: 'm1:alice' });
    await settle();
    expect(ann.port.of('ok').map((ok) => ok.id)).toContain('c');
    expect(alice.notices()).toEqual(['assigned', 'closed']);
    expect(carol.notices()).toEqual(['queued', 'assigned']);
    // Those still waiting hear their new place with the next queue update.
    expect(dave.port.of('consultation').at(-1)).toMatchObject({ state: 'waiting', position: 2 });
    clock.advance(QUEUE_TELL_INTERVAL_MS);
    await settle();
    expect(dave.port.of('consultation').at(-1)).toMatchObject({ state: 'waiting', position: 1 });
    // Ann now gets Carol's conversation, whole, and no more of Alice's.
    expect(ann.messages('m1:carol').map((message) => message.body)).toContain('two');
    await say(alice, 'm1:alice', 'again');
    expect(ann.messages('m1:alice').map((message) => message.body)).not.toContain('again');
    expect(alice.notices().at(-1)).toBe('queued');
  });

  it('transfers to another agent, who sees the whole history; the first agent stops receiving', async () => {
    const ann = await connect('ann', 'm1');
    const alice = await connect('alice');
    await say(alice, 'm1:alice', 'my bike is broken');
    const bob = await connect('bob', 'm1');
    ann.send({ op: 'transfer', id: 't', conv: 'm1:alice', agent: 'bob', note: 'repairs' });
    await settle();
    expect(ann.port.of('ok').map((ok) => ok.id)).toContain('t');
    expect(alice.messages().at(-1)).toMatchObject({ role: 'system', body: 'Transferred to Bob: repairs', event: { type: 'transferred', from: 'ann', agent: 'bob' } });
    expect(bob.messages('m1:alice').map((message) => message.body)).toEqual(['my bike is broken', 'Ann is here to help.', 'Transferred to Bob: repairs']);
    await say(alice, 'm1:alice', 'thanks');
    expect(bob.messages('m1:alice').at(-1)?.body).toBe('thanks');
    expect(ann.messages('m1:alice').map((message) => message.body)).not.toContain('thanks');
    // A transfer to an agent without free capacity is refused, and nothing changes.
    await say(await connect('carol'), 'm1:carol', 'hi');
    bob.send({ op: 'transfer', id: 't2', conv: 'm1:alice', agent: 'ann' });
    await settle();
    expect(bob.port.of('error').at(-1)).toMatchObject({ id: 't2', code: 'AGENT_UNAVAILABLE' });
  });

  it("reassigns an agent's consultations once its devices stayed away past the grace period, not before", async () => {
    const ann = await connect('ann', 'm1');
    const alice = await connect('alice');
    await say(alice, 'm1:alice', 'hello');
    const bob = await connect('bob', 'm1');
    ann.port.close(1000, 'bye');
    clock.advance(GRACE_MS - 1);
    await settle();
    expect(alice.notices()).toEqual(['assigned']);
    // Ann comes back within the grace period on another device, and keeps it.
    const annAgain = await connect('ann', 'm1', 'd2');
    clock.advance(GRACE_MS);
    await settle();
    expect(alice.notices()).toEqual(['assigned']);
    expect(annAgain.messages('m1:alice').map((message) => message.body)).toContain('hello');
    annAgain.port.close(1000, 'bye');
    clock.advance(GRACE_MS);
    await settle();
    expect(alice.notices()).toEqual(['assigned', 'released', 'assigned']);
    expect(alice.port.of('consultation').at(-1)).toMatchObject({ state: 'assigned', agent: 'bob' });
    expect(bob.messages('m1:alice').map((message) => message.body)).toContain('hello');
  });

  it('releases after the grace period an agent whose status change was still being written when its last device left', async () => {
    const ann = await connect('ann', 'm1');
    const alice = await connect('alice');
    await say(alice, 'm1:alice', 'hello');
    // The status is written before it applies; the device is gone by the time it is durable.
    ann.send({ op: 'status', status: 'busy' });
    ann.port.close(1000, 'bye');
    await settle();
    clock.advance(GRACE_MS);
    await settle();
    expect(alice.notices()).toEqual(['assigned', 'released']);
    // The status it chose applies when it comes back.
    const annAgain = await connect('ann', 'm1', 'd2');
    annAgain.send({ op: 'desk', id: 'v' });
    await settle();
    expect(JSON.stringify(annAgain.port.of('desk').at(-1))).toContain('"busy"');
  });

  it('keeps consultations, queues and the sticky agent across a restart', async () => {
    const ann = await connect('ann', 'm1');
    const alice = await connect('alice');
    const carol = await connect('carol');
    await say(alice, 'm1:alice', 'first');
    await say(carol, 'm1:carol', 'second');
    ann.send({ op: 'status', status: 'busy' });
    await settle();
    core.desk.stop();
    await start(true);
    const annBack = await connect('ann', 'm1');
    const view = await new Promise<unknown>((resolve) => {
      annBack.send({ op: 'desk', id: 'v' });
      void settle().then(() => resolve(annBack.port.of('desk').at(-1)));
    });
    expect(view).toMatchObject({
      agents: expect.arrayContaining([expect.objectContaining({ id: 'ann', status: 'busy', open: 1 })]),
      consultations: expect.arrayContaining([
        expect.objectContaining({ conv: 'm1:alice', state: 'assigned', agent: 'ann' }),
        expect.objectContaining({ conv: 'm1:carol', state: 'waiting', position: 1 }),
      ]),
    });
    expect(annBack.messages('m1:alice').map((message) => message.body)).toContain('first');
  });

  it('keeps a consultation put back by a release ahead of the queue across a restart, before one released later (desk seed 95)', async () => {
    const ann = await connect('ann', 'm1');
    const bob = await connect('bob', 'm1');
    const [alice, carol, dave] = [await connect('alice'), await connect('carol'), await connect('dave')];
    await say(alice, 'm1:alice', 'first');
    await say(carol, 'm1:carol', 'second');
    await say(dave, 'm1:dave', 'third');
    expect([alice, carol, dave].map((customer) => customer.notices())).toEqual([['assigned'], ['assigned'], ['queued']]);
    // Alice's agent goes away for good: she is put back ahead of Dave.
    const aliceAgent = alice.port.of('consultation').at(-1)!.agent === 'ann' ? ann : bob;
    aliceAgent.port.close(1000, 'bye');
    clock.advance(GRACE_MS);
    await settle();
    expect(alice.notices()).toEqual(['assigned', 'released']);
    core.desk.stop();
    await start(true);
    const noticesOf = async (customer: string): Promise<string[]> => {
      const device = await connect(customer, undefined, 'd2');
      const { messages } = await core.history(device.connection.identity, { conv: `m1:${customer}` });
      return messages.flatMap((message) => (message.event === undefined ? [] : [message.event.type]));
    };
    // After the restart Carol's agent is gone too (every agent starts offline): she is put back
    // after Alice, who opened first and was put back first, and ahead of Dave.
    clock.advance(GRACE_MS);
    await settle();
    expect(await noticesOf('carol')).toEqual(['assigned', 'released']);
    await connect('ann', 'm1', 'd2');
    await settle();
    expect(await noticesOf('alice')).toEqual(['assigned', 'released', 'assigned']);
    expect(await noticesOf('carol')).toEqual(['assigned', 'released']);
    expect(await noticesOf('dave')).toEqual(['queued']);
  });

  it('closes inactive consultations, lets the customer rate once, and opens a new consultation with the next message', async () => {
    const ann = await connect('ann', 'm1');
    const alice = await connect('alice');
    await say(alice, 'm1:alice', 'hello');
    clock.advance(INACTIVITY_MS + 60_000);
    await settle();
    expect(alice.messages().at(-1)).toMatchObject({ role: 'system', event: { type: 'closed', by: 'inactivity', agent: 'ann' } });
    alice.send({ op: 'rate', id: 'r1', conv: 'm1:alice', score: 5, comment: 'quick' });
    await settle();
    alice.send({ op: 'rate', id: 'r2', conv: 'm1:alice', score: 1 });
    await settle();
    expect(alice.port.of('ok').map((ok) => ok.id)).toContain('r1');
    expect(alice.port.of('error').at(-1)).toMatchObject({ id: 'r2', code: 'CONSULTATION_RATED' });
    expect(alice.messages().at(-1)).toMatchObject({ role: 'system', body: 'Rated 5/5: quick', event: { type: 'rated', score: 5 } });
    // Ann left the conversation with the close: what follows is no longer hers.
    expect(ann.messages('m1:alice').map((message) => message.event?.type)).toEqual([undefined, 'assigned', 'closed']);
    // The sticky rule: Ann served Alice last, so Ann gets her again.
    await say(alice, 'm1:alice', 'me again');
    expect(alice.messages().at(-1)).toMatchObject({ event: { type: 'assigned', agent: 'ann', sticky: true } });
  });

  it('relays typing to the other party only, at most once a second', async () => {
    const ann = await connect('ann', 'm1');
    const bob = await connect('bob', 'm1');
    const alice = await connect('alice');
    await say(alice, 'm1:alice', 'hello');
    alice.send({ op: 'typing', conv: 'm1:alice' });
    alice.send({ op: 'typing', conv: 'm1:alice' });
    await settle();
    expect(ann.port.of('typing')).toEqual([{ t: 'typing', conv: 'm1:alice', user: 'alice', role: 'customer' }]);
    expect(bob.port.of('typing')).toEqual([]);
    clock.advance(1_000);
    ann.send({ op: 'typing', conv: 'm1:alice' });
    await settle();
    expect(alice.port.of('typing')).toEqual([{ t: 'typing', conv: 'm1:alice', user: 'ann', role: 'agent' }]);
  });

  it('lets a supervisor see and act on every consultation of the merchant', async () => {
    const sue = await connect('sue', 'm1');
    sue.send({ op: 'status', status: 'away' });
    const ann = await connect('ann', 'm1');
    const alice = await connect('alice');
    await say(alice, 'm1:alice', 'hello');
    expect(sue.messages('m1:alice').map((message) => message.body)).toEqual(['hello', 'Ann is here to help.']);
    sue.send({ op: 'close', id: 'c', conv: 'm1:alice' });
    await settle();
    expect(ann.messages('m1:alice').at(-1)).toMatchObject({ event: { type: 'closed', by: 'agent' } });
  });
});
