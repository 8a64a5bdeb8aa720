import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../platform/manual-clock.js';
import { InvariantError } from '../../platform/invariant.js';
import { silentLogger } from '../../platform/logger.js';
import { SeededRandom } from '../../platform/random.js';
import { MemoryStore } from '../../platform/store/memory-store.js';
import type { Identity } from '../access/tokens.js';
import { CellError } from '../protocol/errors.js';
import type { ChatMessage, ServerFrame } from '../protocol/frames.js';
import { ConversationLog } from './conversation-log.js';
import { DeliveryService, type DeliveryLimits } from './delivery.js';
import { DeviceConnection, type DevicePort } from './device.js';
import { keys } from './keys.js';
import { partyId } from './principal.js';

const TENANT = 'mall';
const CONVS = ['m1:alice', 'm1:carol'];

/** Delivery counts pushes and backpressure closes; nothing else of the metrics is touched. */
const noMetrics = { messagesOut: { inc() {} }, backpressureCloses: { inc() {} } } as unknown as ConstructorParameters<typeof DeliveryService>[3];

class RecordingPort implements DevicePort {
  readonly frames: ServerFrame[] = [];
  closed = false;

  send(text: string): void {
    if (!this.closed) this.frames.push(JSON.parse(text) as ServerFrame);
  }

  bufferedBytes(): number {
    return 0;
  }

  close(): void {
    this.closed = true;
  }
}

function agentIdentity(device: string): Identity {
  return { tenant: TENANT, user: 'bob', role: 'agent', merchant: 'm1', device, expiresAtMs: Number.MAX_SAFE_INTEGER };
}

function connectionOf(identity: Identity, port: DevicePort): DeviceConnection {
  const limits = { ratePerSecond: 1e6, burst: 1e6, ackRatePerSecond: 1e6, ackBurst: 1e6, maxErrors: 1e6, errorRecoveryPerSecond: 1e6 };
  return new DeviceConnection(identity, `session-${identity.device}`, port, 0, limits);
}

async function cell(limits: Partial<DeliveryLimits> = {}): Promise<{ store: MemoryStore; clock: ManualClock; log: ConversationLog; delivery: DeliveryService; durable: ChatMessage[] }> {
  const store = new MemoryStore();
  await store.open();
  const clock = new ManualClock();
  const durable: ChatMessage[] = [];
  const log = new ConversationLog({ store, clock, onDurable: (_tenant, message) => durable.push(message) });
  const delivery = new DeliveryService(log, store, clock, noMetrics, silentLogger, {
    deliveryWindow: 4,
    syncPageSize: 3,
    maxBackpressureBytes: 1 << 20,
    cursorWriteIntervalMs: 100,
    ...limits,
  });
  return { store, clock, log, delivery, durable };
}

/** Waits, one event-loop turn at a time, until `condition` holds; fails with `what` after a bound. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let turn = 0; turn < 1_000; turn++) {
    if (condition()) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  throw new Error(`gave up waiting for ${what}`);
}

describe('DeliveryService invariants', () => {
  it('refuses to attach a device whose stored delivery cursor is negative or not a number', async () => {
    for (const value of ['-2', 'NaN', '0.5']) {
      const { store, delivery } = await cell();
      const identity = agentIdentity('desk');
      await store.write([
        { type: 'put', key: keys.merchantConversation(TENANT, 'm1', 'm1:alice'), value: '' },
        { type: 'put', key: keys.deliveryCursor(TENANT, partyId(identity), 'desk', 'm1:alice'), value },
      ]);
      await expect(delivery.attach(connectionOf(identity, new RecordingPort())), value).rejects.toThrow(InvariantError);
    }
  });

  it('clamps a stored delivery cursor beyond the conversation to its last message', async () => {
    const { store, log, delivery } = await cell();
    const identity = agentIdentity('desk');
    await log.append({ tenant: TENANT, conv: 'm1:alice', from: 'alice', role: 'customer', device: 'phone', cmid: 'c1', body: 'hi' });
    await store.write([{ type: 'put', key: keys.deliveryCursor(TENANT, partyId(identity), 'desk', 'm1:alice'), value: '9' }]);
    const connection = connectionOf(identity, new RecordingPort());
    await delivery.attach(connection);
    expect(connection.cursors.get('m1:alice')).toMatchObject({ sentSeq: 1, ackedSeq: 1 });
  });

  it('keeps every device cursor within 0..last, pushes in order, and never counts fewer than 0 in flight, through random traffic', async () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const random = new SeededRandom(seed);
      const { clock, log, delivery, durable } = await cell();
      const devices = ['desk', 'laptop'].map((device) => {
        const port = new RecordingPort();
        return { identity: agentIdentity(device), port, connection: connectionOf(agentIdentity(device), port) };
      });
      for (const device of devices) await delivery.attach(device.connection);
      const offered = new Set<ChatMessage>();
      const pending: Array<Promise<unknown>> = [];
      let cmid = 0;
      for (let step = 0; step < 400; step++) {
        const draw = random.next();
        const conv = CONVS[Math.floor(random.next() * CONVS.length)]!;
        const device = devices[Math.floor(random.next() * devices.length)]!;
        if (draw < 0.4) {
          pending.push(log.append({ tenant: TENANT, conv, from: conv.slice(3), role: 'customer', device: 'phone', cmid: `c${cmid++}`, body: 'hi' }));
        } else if (draw < 0.75) {
          // Mostly an ack of what the device was sent; else anywhere up to beyond the conversation
          // (a device may ack what it holds from elsewhere; beyond the last message it is refused).
          const last = log.cached(TENANT, conv)?.durableSeq ?? 0;
          const sent = device.connection.cursors.get(conv)?.sentSeq ?? 0;
          const seq = Math.floor(random.next() * ((random.next() < 0.8 ? sent : last + 2) + 1));
          try {
            const applied = delivery.ack(device.connection, conv, seq);
            if (applied !== undefined) pending.push(applied.catch((error: unknown) => expect(error).toBeInstanceOf(CellError)));
          } catch (error) {
            expect(error).toBeInstanceOf(CellError);
          }
        } else if (draw < 0.85) {
          // The device reconnects: a new connection resumes from the stored cursors.
          device.connection.closed = true;
          device.port.closed = true;
          clock.advance(100);
          device.port = new RecordingPort();
          device.connection = connectionOf(device.identity, device.port);
          pending.push(delivery.attach(device.connection));
        } else {
          await Promise.all(pending.splice(0));
        }
        // The cell's fan-out: every newly durable message is offered to every device.
        for (const message of durable) {
          if (offered.has(message)) continue;
          offered.add(message);
          for (const { connection } of devices) delivery.offer(connection, message);
        }
        for (const { connection } of devices) {
          expect(connection.inFlight, `seed ${seed} step ${step}`).toBeGreaterThanOrEqual(0);
          for (const [cursorConv, cursor] of connection.cursors) {
            const last = log.cached(TENANT, cursorConv)?.durableSeq ?? 0;
            expect(0 <= cursor.ackedSeq && cursor.ackedSeq <= cursor.sentSeq && cursor.sentSeq <= last, `seed ${seed} step ${step}: ${JSON.stringify(cursor)} of ${last}`).toBe(true);
          }
        }
      }
      await Promise.all(pending.splice(0));
      for (const { port } of devices) {
        const pushed = port.frames.filter((frame): frame is Extract<ServerFrame, { t: 'msg' }> => frame.t === 'msg');
        for (const conv of CONVS) {
          // Strictly increasing: gaps only where the device acked ahead of what it was sent.
          const seqs = pushed.filter((frame) => frame.conv === conv).map((frame) => frame.seq);
          expect(seqs, `seed ${seed} ${conv}`).toEqual([...new Set(seqs)].sort((a, b) => a - b));
        }
      }
      // The run did something: messages were pushed and cursors moved on every device.
      expect(durable.length, `seed ${seed}`).toBeGreaterThan(50);
      for (const { connection } of devices) {
        await until(() => connection.loaded, 'the last attach');
        expect([...connection.cursors.values()].some((cursor) => cursor.ackedSeq > 0), `seed ${seed}`).toBe(true);
      }
    }
  });

  it('never has more than the window in flight when many conversations catch up at once', async () => {
    const { log, delivery } = await cell({ deliveryWindow: 4, syncPageSize: 3 });
    const conversations = Array.from({ length: 20 }, (_, index) => `m1:c${index}`);
    for (const conv of conversations) {
      for (let index = 0; index < 2; index++) {
        await log.append({ tenant: TENANT, conv, from: conv.slice(3), role: 'customer', device: 'phone', cmid: `c${index}`, body: 'hi' });
      }
    }
    const port = new RecordingPort();
    const connection = connectionOf(agentIdentity('desk'), port);
    // Twenty catch-ups each judge the room before their page is read, then push it.
    await delivery.attach(connection);
    await until(() => [...connection.cursors.values()].every((cursor) => !cursor.pumping), 'the catch-ups to stop');
    expect(connection.inFlight).toBe(4);
    expect(port.frames.filter((frame) => frame.t === 'msg')).toHaveLength(4);
    // Acks free the window, and everything comes, in order, never beyond the window.
    let pushed = 4;
    while (pushed < 40) {
      const acks = port.frames.filter((frame): frame is Extract<ServerFrame, { t: 'msg' }> => frame.t === 'msg').slice(pushed - connection.inFlight, pushed);
      for (const frame of acks) await delivery.ack(connection, frame.conv, frame.seq);
      await until(() => [...connection.cursors.values()].every((cursor) => !cursor.pumping), 'the catch-ups to stop');
      expect(connection.inFlight).toBeLessThanOrEqual(4);
      const now = port.frames.filter((frame) => frame.t === 'msg').length;
      expect(now).toBeGreaterThan(pushed);
      pushed = now;
    }
    expect(pushed).toBe(40);
  });
});
