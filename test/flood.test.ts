/**
 * A device that floods the cell with frames, of whatever kind, is closed with 4429 after a
 * bounded number of them, and the other devices are served throughout; a device that acks
 * every message it gets, however fast they come, is never refused. The cell is a child process,
 * so that the flood and the round trips measured here cross a real socket to a process of its own.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { Cleanup, RawClient, eventually, killChildCell, sendMessage, startChildCell, tokenFor, type ChildCell } from './harness.js';

const CONV = 'm1:c1';
/** The documented defaults (docs/operations.md); the harness raises the general rate for other tests. */
const DEFAULT_RATES = { ratePerSecond: 50, rateBurst: 100 };
const MAX_ERRORS = 50;
/** Frames a flood sends at most; far beyond every budget. */
const FLOOD_FRAMES = 200_000;
const FLOOD_CHUNK = 500;
const PING_INTERVAL_MS = 20;
/** Generous: on an idle machine a round trip takes a few ms; the flood that found this took 1.7 s. */
const PING_ROUND_TRIP_BOUND_MS = 1_000;

/** Pings the cell from another device at a steady pace and records each round trip. */
class PingProbe {
  readonly roundTripsMs: number[] = [];
  private readonly sentAtMs = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private count = 0;

  constructor(private readonly client: RawClient) {
    client.socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as ServerFrame;
      if (frame.t !== 'pong' || frame.id === undefined) return;
      const sentAtMs = this.sentAtMs.get(frame.id);
      if (sentAtMs === undefined) return;
      this.sentAtMs.delete(frame.id);
      this.roundTripsMs.push(performance.now() - sentAtMs);
    });
  }

  start(): void {
    this.roundTripsMs.length = 0;
    this.timer = setInterval(() => {
      const id = `probe-${++this.count}`;
      this.sentAtMs.set(id, performance.now());
      this.client.send({ op: 'ping', id });
    }, PING_INTERVAL_MS);
  }

  /** Stops pinging once every ping sent is answered (or fails after `timeoutMs`). */
  async stop(timeoutMs = 5_000): Promise<void> {
    clearInterval(this.timer);
    await eventually(() => this.sentAtMs.size === 0, `the probe's pongs (${this.sentAtMs.size} unanswered)`, timeoutMs);
  }
}

/**
 * Sends `frameAt(index)` as fast as the socket takes it, in chunks that leave the event loop free
 * for the probe, until the cell closes the connection or FLOOD_FRAMES went out.
 */
async function flood(client: RawClient, frameAt: (index: number) => string): Promise<number> {
  let sent = 0;
  while (sent < FLOOD_FRAMES && client.closeCode === undefined && client.socket.readyState === client.socket.OPEN) {
    for (let index = 0; index < FLOOD_CHUNK; index++) client.socket.send(frameAt(sent++));
    await new Promise((resolve) => setImmediate(resolve));
  }
  return sent;
}

describe('floods end in the 4429 close while another device is served', () => {
  const cleanup = new Cleanup();
  let cell: ChildCell;
  let probe: PingProbe;

  beforeAll(async () => {
    cell = await startChildCell({
      directory: await cleanup.tempDir('cellmesh-flood-'),
      configDir: await cleanup.tempDir('cellmesh-config-'),
      limits: DEFAULT_RATES,
    });
    cleanup.add(() => killChildCell(cell));
    const watcher = await cleanup.client(cell.url, await tokenFor({ user: 'c2', device: 'watcher' }));
    probe = new PingProbe(watcher);
    // One message in the flooder's conversation, so that acking seq 1 is valid.
    const setup = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'setup' }));
    await sendMessage(setup, CONV, 'setup-1', 'something to ack');
  }, 90_000);
  afterAll(() => cleanup.run());

  const valid = JSON.stringify({ op: 'ack', conv: CONV, seq: 1 });
  const floods: Array<{ name: string; frameAt: (index: number) => string }> = [
    { name: 'valid acks', frameAt: () => valid },
    // One valid entry, one out of range (m2:c1 has no messages): each bad entry is an error.
    { name: 'acks mixing a valid entry with a bad one', frameAt: () => JSON.stringify({ op: 'ack', acks: { [CONV]: 1, 'm2:c1': 7 } }) },
    { name: 'bad JSON between valid acks', frameAt: (index) => (index % 2 === 0 ? valid : '{"op":') },
    { name: 'pings', frameAt: (index) => JSON.stringify({ op: 'ping', id: `f${index}` }) },
  ];

  test.each(floods)('a flood of $name', async ({ frameAt }) => {
    const flooder = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'flooder' }));
    // Its cursors are loaded: from now on acking seq 1 is legal.
    await flooder.until(() => flooder.all('synced').length > 0, { what: 'synced' });
    probe.start();
    await eventually(() => probe.roundTripsMs.length >= 2, 'two probe round trips before the flood');
    const sent = await flood(flooder, frameAt);
    await flooder.until(() => flooder.closeCode !== undefined, { what: `the close after ${sent} frames`, timeoutMs: 15_000 });
    // Pings sent during the flood are answered (stop waits for them); two more after it.
    const answeredAtClose = probe.roundTripsMs.length;
    await eventually(() => probe.roundTripsMs.length >= answeredAtClose + 2, 'two probe round trips after the close');
    await probe.stop();

    expect(flooder.closeCode).toBe(4429);
    // Closed long before the flood ended, after a bounded number of error answers.
    expect(sent).toBeLessThan(FLOOD_FRAMES);
    expect(flooder.all('error').length).toBeLessThanOrEqual(MAX_ERRORS);
    // The other device was answered throughout.
    expect(probe.roundTripsMs.length).toBeGreaterThan(0);
    expect(Math.max(...probe.roundTripsMs)).toBeLessThan(PING_ROUND_TRIP_BOUND_MS);
    expect(cell.child.exitCode).toBeNull();
  });
});

test('an agent that acks every message of a fast burst, one frame each, is never refused', async () => {
  const cleanup = new Cleanup();
  try {
    // The general rate stays high (the customer sends fast); the budget of acks by time alone is
    // far smaller than the number of messages.
    const cell = await startChildCell({
      directory: await cleanup.tempDir('cellmesh-flood-'),
      configDir: await cleanup.tempDir('cellmesh-config-'),
      limits: { ackRatePerSecond: 10, ackBurst: 300 },
    });
    cleanup.add(() => killChildCell(cell));
    const agent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    agent.autoAck();
    const customer = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    // Pipelined in batches the store takes at once (a deeper queue of one conversation is refused).
    const total = 1_000;
    const batch = 100;
    for (let first = 1; first <= total; first += batch) {
      for (let index = first; index < first + batch; index++) customer.send({ op: 'send', id: `s${index}`, conv: CONV, cmid: `c${index}`, body: `burst ${index}` });
      await customer.until(() => customer.all('sent').length === first + batch - 1 || customer.all('error').length > 0, { what: `batch ${first}` });
    }
    await agent.until(() => agent.messages(CONV).length === total || agent.closeCode !== undefined, { what: 'every message at the agent', timeoutMs: 60_000 });
    // The last acks reach the cell: a ping behind them is answered after them.
    expect((await agent.request({ op: 'ping', id: 'after' })).t).toBe('pong');
    expect(agent.all('error')).toEqual([]);
    expect(agent.closeCode).toBeUndefined();
    expect(customer.all('error')).toEqual([]);
  } finally {
    await cleanup.run();
  }
}, 90_000);
