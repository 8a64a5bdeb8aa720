import { describe, expect, it } from 'vitest';
import type { ChatMessage, ClientFrame, Limits, ServerFrame } from '../cell/protocol/frames.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { CellmeshClient } from './client.js';
import type { StateChange } from './client-types.js';
import { ClientError } from './errors.js';
import type { CellmeshClientOptions } from './settings.js';
import type { ClientConnection, ClientTransport, ConnectionListener } from './transport.js';

const CONV = 'shop1:alice';
const OTHER_CONV = 'shop1:bob';
const LIMITS: Limits = { maxFrameBytes: 65_536, maxBodyChars: 16_384, ratePerSecond: 20, rateBurst: 40, deliveryWindow: 64 };

type Welcome = Extract<ServerFrame, { t: 'welcome' }>;
type FrameOf<Op extends ClientFrame['op']> = Extract<ClientFrame, { op: Op }>;

/**
 * One connection of the scripted transport: the test plays the cell through `open`, `push`,
 * `serverClose` and friends, and reads what the client sent from `frames`.
 */
class ScriptedConnection implements ClientConnection {
  readonly frames: ClientFrame[] = [];
  closedByClient: { code: number | undefined; reason: string | undefined } | undefined;
  private ended = false;

  constructor(
    readonly url: string,
    readonly protocols: readonly string[],
    private readonly listener: ConnectionListener,
  ) {}

  send(text: string): void {
    if (!this.ended) this.frames.push(JSON.parse(text) as ClientFrame);
  }

  close(code?: number, reason?: string): void {
    if (this.ended) return;
    this.closedByClient = { code, reason };
    this.end(code ?? 1005, reason ?? '');
  }

  open(welcome: Partial<Welcome> = {}): void {
    this.listener.onOpen();
    this.push({
      t: 'welcome',
      v: 1,
      cell: 'cell-a',
      tenant: 'mall',
      user: 'alice',
      role: 'customer',
      device: 'phone',
      session: `session-${this.url.length}`,
      limits: LIMITS,
      ...welcome,
    });
  }

  push(frame: ServerFrame): void {
    this.listener.onMessage(JSON.stringify(frame));
  }

  serverClose(code: number, reason = ''): void {
    this.end(code, reason);
  }

  /** A connection attempt that failed below the protocol (refused, reset). */
  fail(): void {
    this.listener.onError({ message: 'connect ECONNREFUSED' });
    this.end(1006, '');
  }

  /** How the cell refuses a browser: it completes the handshake, explains, then closes. */
  rejectInBand(code: string, closeCode: number): void {
    this.listener.onOpen();
    this.push({ t: 'error', code, message: `refused: ${code}` });
    this.end(closeCode, code);
  }

  /** The upgrade completed (an in-band refusal follows). */
  listenerOpen(): void {
    this.listener.onOpen();
  }

  rejectUpgrade(httpStatus: number, code: string): void {
    this.listener.onError({ message: `upgrade rejected with HTTP ${httpStatus}`, httpStatus, code });
    this.end(1006, '');
  }

  ops<Op extends ClientFrame['op']>(op: Op): Array<FrameOf<Op>> {
    return this.frames.filter((frame): frame is FrameOf<Op> => frame.op === op);
  }

  get isEnded(): boolean {
    return this.ended;
  }

  private end(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.listener.onClose(code, reason);
  }
}

class ScriptedTransport implements ClientTransport {
  readonly connections: ScriptedConnection[] = [];

  connect(url: string, protocols: readonly string[], listener: ConnectionListener): ClientConnection {
    const connection = new ScriptedConnection(url, protocols, listener);
    this.connections.push(connection);
    return connection;
  }

  get last(): ScriptedConnection {
    const connection = this.connections.at(-1);
    if (connection === undefined) throw new Error('no connection yet');
    return connection;
  }
}

function setup(overrides: Partial<CellmeshClientOptions> = {}) {
  const clock = new ManualClock();
  const transport = new ScriptedTransport();
  const client = new CellmeshClient({
    url: 'ws://cell.test:8080',
    token: 'token-1',
    transport,
    clock,
    random: new SeededRandom(7),
    // Most tests play a cell that never pings back; the heartbeat has a test of its own.
    heartbeatIntervalMs: 0,
    ...overrides,
  });
  const states: StateChange[] = [];
  const messages: ChatMessage[] = [];
  const errors: ClientError[] = [];
  client.on('state', (change) => states.push(change));
  client.on('message', (message) => messages.push(message));
  client.on('error', (error) => errors.push(error));
  const lastState = (): StateChange => {
    const change = states.at(-1);
    if (change === undefined) throw new Error('no state change yet');
    return change;
  };
  return { clock, transport, client, states, messages, errors, lastState };
}

async function connected(overrides: Partial<CellmeshClientOptions> = {}, welcome: Partial<Welcome> = {}) {
  const context = setup(overrides);
  const opened = context.client.connect();
  await until(() => context.transport.connections.length === 1, 'the client dials');
  context.transport.last.open(welcome);
  await opened;
  return context;
}

/**
 * Waits until `condition` holds, letting promise callbacks run in between (the client resolves
 * and awaits through microtasks, for example a token provider); virtual time stands still. Fails,
 * rather than returning early, when `what` has not happened within `maxTurns` event-loop turns.
 */
async function until(condition: () => boolean, what: string, maxTurns = 100): Promise<void> {
  for (let turn = 0; !condition(); turn++) {
    if (turn === maxTurns) throw new Error(`${what}: not within ${maxTurns} event-loop turns`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

function chat(conv: string, seq: number, overrides: Partial<ChatMessage> = {}): ChatMessage {
  return { conv, seq, from: 'shop1-agent', role: 'agent', device: 'desk', cmid: `c${conv}${seq}`, body: `m${seq}`, ts: 1_000 + seq, ...overrides };
}

function msg(conv: string, seq: number, overrides: Partial<ChatMessage> = {}): ServerFrame {
  return { t: 'msg', ...chat(conv, seq, overrides) };
}

/** The id the client gave a frame; every send and request carries one. */
function idOf(frame: { id?: string | undefined }): string {
  if (frame.id === undefined) throw new Error(`no id on ${JSON.stringify(frame)}`);
  return frame.id;
}

async function rejection(promise: Promise<unknown>): Promise<ClientError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ClientError) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

describe('CellmeshClient connection', () => {
  it('connects with the token and subprotocol and resolves on welcome', async () => {
    const { client, transport, states } = setup();
    const opened = client.connect();
    expect(transport.last.url).toBe('ws://cell.test:8080/v1/ws?token=token-1');
    expect(transport.last.protocols).toEqual(['cellmesh.v1']);
    transport.last.open();
    const session = await opened;
    expect(session).toMatchObject({ user: 'alice', device: 'phone', role: 'customer', limits: LIMITS });
    expect(client.state).toBe('open');
    expect(states.map((change) => change.state)).toEqual(['connecting', 'open']);
  });

  it('grows the backoff exponentially with jitter, caps it, and resets it after a stable connection', async () => {
    const { client, transport, clock, lastState } = setup({
      backoff: { initialDelayMs: 100, maxDelayMs: 1_000, multiplier: 2, jitter: 0.5, stableAfterMs: 5_000 },
    });
    void client.connect();
    const delays: number[] = [];
    for (let attempt = 0; attempt < 8; attempt++) {
      transport.last.fail();
      expect(lastState().state).toBe('reconnecting');
      const delayMs = lastState().delayMs ?? -1;
      delays.push(delayMs);
      clock.advance(delayMs);
    }
    const ceilings = [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000];
    ceilings.forEach((ceilingMs, index) => {
      expect(delays[index]).toBeGreaterThanOrEqual(ceilingMs * 0.5);
      expect(delays[index]).toBeLessThanOrEqual(ceilingMs);
    });
    // Jitter: at the cap, the delays still differ from each other.
    expect(new Set(delays.slice(4)).size).toBeGreaterThan(1);
    expect(transport.connections).toHaveLength(9);

    // A connection that drops before it proved stable keeps the backoff growing...
    transport.last.open();
    clock.advance(1_000);
    transport.last.serverClose(1006);
    expect(lastState().attempt).toBe(9);
    expect(lastState().delayMs).toBeGreaterThanOrEqual(500);
    clock.advance(lastState().delayMs ?? 0);

    // ...one that stayed up past stableAfterMs starts it afresh.
    transport.last.open();
    clock.advance(5_000);
    transport.last.serverClose(1001, 'draining');
    expect(lastState()).toMatchObject({ state: 'reconnecting', attempt: 1, closeCode: 1001 });
    expect(lastState().delayMs).toBeLessThanOrEqual(100);
  });

  it('waits at least the policy delay after a 4429 close', async () => {
    const { transport, lastState } = await connected({ backoff: { policyDelayMs: 20_000, jitter: 0.5 } });
    transport.last.serverClose(4429, 'too many errors');
    expect(lastState().state).toBe('reconnecting');
    expect(lastState().delayMs).toBeGreaterThanOrEqual(10_000);
  });

  it('stops for good on 4409 (replaced) and rejects pending work', async () => {
    const { client, transport, clock, lastState } = await connected();
    const pending = client.send(CONV, 'hello');
    transport.last.serverClose(4409, 'replaced');
    expect(client.state).toBe('replaced');
    expect(lastState().error?.code).toBe('REPLACED');
    expect((await rejection(pending)).code).toBe('REPLACED');
    clock.advance(600_000);
    expect(transport.connections).toHaveLength(1);
    expect((await rejection(client.send(CONV, 'again'))).code).toBe('REPLACED');
  });

  it('gets a fresh token from the provider after 4401, and reuses a valid one otherwise', async () => {
    let calls = 0;
    const signals: AbortSignal[] = [];
    const { client, transport, clock, lastState } = setup({
      token: async (signal) => {
        signals.push(signal);
        calls++;
        return `token-${calls}`;
      },
    });
    const opened = client.connect();
    await until(() => transport.connections.length === 1, 'the client dials');
    expect(calls).toBe(1);
    expect(transport.last.url).toContain('token=token-1');
    transport.last.open();
    await opened;

    transport.last.serverClose(4401, 'token expired');
    expect(lastState().error?.code).toBe('TOKEN_EXPIRED');
    clock.advance(lastState().delayMs ?? 0);
    await until(() => transport.connections.length === 2, 'the client dials again after 4401');
    expect(calls).toBe(2);
    expect(transport.last.url).toContain('token=token-2');

    transport.last.open();
    transport.last.serverClose(1006);
    clock.advance(lastState().delayMs ?? 0);
    await until(() => transport.connections.length === 3, 'the client dials again after 1006');
    expect(calls).toBe(2);
    expect(transport.last.url).toContain('token=token-2');
  });

  it('refreshes a JWT that is about to expire before connecting', async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const expiringSoon = jwtWithExp(clock.now() / 1000 + 10);
    const fresh = jwtWithExp(clock.now() / 1000 + 3_600);
    const tokens = [expiringSoon, fresh];
    let calls = 0;
    const { client, transport, lastState } = setup({
      clock,
      tokenRefreshMarginMs: 30_000,
      token: async () => tokens[calls++] ?? fresh,
    });
    void client.connect();
    await until(() => transport.connections.length === 1, 'the client dials');
    transport.last.fail();
    clock.advance(lastState().delayMs ?? 0);
    await until(() => transport.connections.length === 2, 'the client dials again');
    expect(calls).toBe(2);
    expect(transport.last.url).toContain(encodeURIComponent(fresh).slice(0, 20));
  });

  it('stops on 4401 when the token is fixed, and on a forbidden origin', async () => {
    const first = await connected();
    first.transport.last.serverClose(4401);
    expect(first.client.state).toBe('closed');
    expect(first.lastState().error?.code).toBe('TOKEN_EXPIRED');

    const second = setup();
    const opened = second.client.connect();
    second.transport.last.rejectUpgrade(403, 'ORIGIN_FORBIDDEN');
    const error = await rejection(opened);
    expect(error.code).toBe('ORIGIN_FORBIDDEN');
    expect(error.details.httpStatus).toBe(403);
    expect(second.client.state).toBe('closed');
    second.clock.advance(600_000);
    expect(second.transport.connections).toHaveLength(1);
  });

  it('understands refusals a browser gets in band: an error frame before welcome, then 4403 or 4401', async () => {
    const forbidden = setup();
    const opened = forbidden.client.connect();
    forbidden.transport.last.rejectInBand('ORIGIN_FORBIDDEN', 4403);
    expect((await rejection(opened)).code).toBe('ORIGIN_FORBIDDEN');
    expect(forbidden.client.state).toBe('closed');

    const badToken = setup();
    const refused = badToken.client.connect();
    badToken.transport.last.rejectInBand('TOKEN_INVALID', 4401);
    expect((await rejection(refused)).code).toBe('TOKEN_INVALID');
    expect(badToken.client.state).toBe('closed');

    let calls = 0;
    const refreshing = setup({ token: async () => `token-${++calls}` });
    void refreshing.client.connect();
    await until(() => refreshing.transport.connections.length === 1, 'the client dials');
    refreshing.transport.last.rejectInBand('TOKEN_EXPIRED', 4401);
    refreshing.clock.advance(refreshing.lastState().delayMs ?? 0);
    await until(() => refreshing.transport.connections.length === 2, 'the client dials again after 4401');
    expect(calls).toBe(2);
    expect(refreshing.transport.last.url).toContain('token=token-2');
  });

  it('stops when the merchant is not hosted, and waits the policy delay at the device limit', async () => {
    const notHosted = setup();
    const opened = notHosted.client.connect();
    notHosted.transport.last.rejectUpgrade(404, 'MERCHANT_NOT_HOSTED');
    expect((await rejection(opened)).code).toBe('MERCHANT_NOT_HOSTED');

    const limited = setup({ backoff: { policyDelayMs: 20_000, jitter: 0.5 } });
    void limited.client.connect();
    limited.transport.last.rejectUpgrade(409, 'DEVICE_LIMIT');
    expect(limited.lastState()).toMatchObject({ state: 'reconnecting' });
    expect(limited.lastState().error?.code).toBe('DEVICE_LIMIT');
    expect(limited.lastState().delayMs).toBeGreaterThanOrEqual(10_000);
  });

  it('gives up after maxAuthFailures 401 rejections even with fresh tokens', async () => {
    let calls = 0;
    const { client, transport, clock, lastState } = setup({
      maxAuthFailures: 2,
      token: async () => `token-${++calls}`,
    });
    const opened = client.connect();
    await until(() => transport.connections.length === 1, 'the client dials');
    transport.last.rejectUpgrade(401, 'TOKEN_INVALID');
    clock.advance(lastState().delayMs ?? 0);
    await until(() => transport.connections.length === 2, 'the client dials again after a 401');
    expect(calls).toBe(2);
    transport.last.rejectUpgrade(401, 'TOKEN_INVALID');
    expect((await rejection(opened)).code).toBe('TOKEN_INVALID');
    expect(client.state).toBe('closed');
  });

  it('gives an attempt up when no welcome comes within connectTimeoutMs', async () => {
    const { client, transport, clock, lastState } = setup({ connectTimeoutMs: 3_000 });
    void client.connect();
    transport.last.open = () => {}; // the cell accepts the upgrade but never welcomes
    clock.advance(3_000);
    expect(transport.last.closedByClient?.code).toBe(1000);
    expect(lastState()).toMatchObject({ state: 'reconnecting' });
    expect(lastState().error?.code).toBe('CONNECT_TIMEOUT');
  });

  it('pings when the connection is silent and drops it when nothing answers', async () => {
    const { transport, clock, lastState } = await connected({ heartbeatIntervalMs: 1_000, requestTimeoutMs: 500 });
    const connection = transport.last;
    clock.advance(999);
    expect(connection.ops('ping')).toHaveLength(0);
    clock.advance(1);
    expect(connection.ops('ping')).toHaveLength(1);
    // Any frame shows the connection alive; the next ping follows a full interval of silence.
    connection.push({ t: 'pong', ts: clock.now() });
    clock.advance(999);
    expect(connection.ops('ping')).toHaveLength(1);
    clock.advance(1);
    expect(connection.ops('ping')).toHaveLength(2);
    clock.advance(499);
    expect(connection.isEnded).toBe(false);
    clock.advance(1);
    expect(connection.isEnded).toBe(true);
    expect(lastState().error?.code).toBe('HEARTBEAT_TIMEOUT');
  });
});

describe('CellmeshClient sending', () => {
  it('resends unconfirmed sends after a reconnect, in order and with the same cmids', async () => {
    const { client, transport, clock, lastState } = await connected();
    const one = client.send(CONV, 'one');
    const two = client.send(CONV, 'two');
    const three = client.send(CONV, 'three');
    const first = transport.last;
    const sentFirst = first.ops('send');
    expect(sentFirst.map((frame) => frame.body)).toEqual(['one', 'two', 'three']);
    const [frameOne, frameTwo, frameThree] = sentFirst;
    if (frameOne === undefined || frameTwo === undefined || frameThree === undefined) throw new Error('three sends expected');
    first.push({ t: 'sent', id: idOf(frameOne), conv: CONV, cmid: frameOne.cmid, seq: 1, ts: 10 });
    first.serverClose(1001, 'draining');

    const four = client.send(CONV, 'four');
    expect(client.state).toBe('reconnecting');
    clock.advance(lastState().delayMs ?? 0);
    const second = transport.last;
    expect(second).not.toBe(first);
    expect(second.ops('send')).toHaveLength(0);
    second.open();
    const resent = second.ops('send');
    expect(resent.map((frame) => [frame.cmid, frame.body])).toEqual([
      [frameTwo.cmid, 'two'],
      [frameThree.cmid, 'three'],
      [expect.any(String), 'four'],
    ]);
    resent.forEach((frame, index) => {
      second.push({ t: 'sent', id: idOf(frame), conv: CONV, cmid: frame.cmid, seq: index + 2, ts: 20 + index });
    });
    await expect(one).resolves.toEqual({ conv: CONV, cmid: frameOne.cmid, seq: 1, ts: 10 });
    await expect(two).resolves.toMatchObject({ cmid: frameTwo.cmid, seq: 2 });
    await expect(three).resolves.toMatchObject({ seq: 3 });
    await expect(four).resolves.toMatchObject({ seq: 4 });
  });

  it('generates cmids from the injected randomness, and keeps a given one', async () => {
    const runs = await Promise.all([connected(), connected()]);
    for (const { client } of runs) {
      void client.send(CONV, 'a');
      void client.send(CONV, 'b', { cmid: 'my-own-id' });
    }
    const [left, right] = runs.map(({ transport }) => transport.last.ops('send').map((frame) => frame.cmid));
    expect(left).toEqual(right);
    expect(left?.[0]).toMatch(/^[0-9a-z]{20}$/);
    expect(left?.[1]).toBe('my-own-id');
  });

  it('waits retryAfterMs after RATE_LIMITED and then retries the send and those behind it', async () => {
    const { client, transport, clock } = await connected();
    const connection = transport.last;
    const first = client.send(CONV, 'hi');
    const [frame] = connection.ops('send');
    if (frame === undefined) throw new Error('a send expected');
    connection.push({ t: 'error', id: idOf(frame), code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 500 });
    const second = client.send(CONV, 'there');
    clock.advance(499);
    expect(connection.ops('send')).toHaveLength(1);
    clock.advance(1);
    expect(connection.ops('send').slice(1).map((sent) => [sent.id, sent.cmid, sent.body])).toEqual([[frame.id, frame.cmid, 'hi']]);
    // The sends behind it are paced again from the bucket the cell reported empty.
    clock.advance(100);
    const retried = connection.ops('send').slice(1);
    expect(retried.map((sent) => sent.body)).toEqual(['hi', 'there']);
    retried.forEach((sent, index) => {
      connection.push({ t: 'sent', id: idOf(sent), conv: CONV, cmid: sent.cmid, seq: index + 1, ts: 5 });
    });
    await expect(first).resolves.toMatchObject({ seq: 1 });
    await expect(second).resolves.toMatchObject({ seq: 2 });
  });

  it('paces sends to the announced rate limit, keeping a reserve for acks', async () => {
    const { client, transport, clock } = await connected({}, { limits: { ...LIMITS, ratePerSecond: 10, rateBurst: 4 } });
    for (let index = 0; index < 5; index++) void client.send(CONV, `burst ${index}`);
    // A burst of 4 with a reserve of 1: three go at once, then one per 100 ms.
    expect(transport.last.ops('send')).toHaveLength(3);
    clock.advance(99);
    expect(transport.last.ops('send')).toHaveLength(3);
    clock.advance(1);
    expect(transport.last.ops('send')).toHaveLength(4);
    clock.advance(100);
    expect(transport.last.ops('send').map((frame) => frame.body)).toEqual([0, 1, 2, 3, 4].map((index) => `burst ${index}`));
  });

  it('rejects a send with the cell code of an error that retrying cannot fix', async () => {
    const { client, transport } = await connected();
    const pending = client.send('shop2:alice', 'hi');
    const [frame] = transport.last.ops('send');
    if (frame === undefined) throw new Error('a send expected');
    transport.last.push({ t: 'error', id: idOf(frame), code: 'CONVERSATION_FORBIDDEN', message: 'not yours' });
    const error = await rejection(pending);
    expect(error).toBeInstanceOf(ClientError);
    expect(error.code).toBe('CONVERSATION_FORBIDDEN');
    expect(error.details.conv).toBe('shop2:alice');
  });

  it('rejects invalid input locally with BAD_FRAME and a full outbox with OUTBOX_FULL', async () => {
    const { client } = setup({ maxPendingSends: 2 });
    expect((await rejection(client.send('no-separator', 'hi'))).code).toBe('BAD_FRAME');
    expect((await rejection(client.send(CONV, ''))).code).toBe('BAD_FRAME');
    void client.send(CONV, 'one');
    void client.send(CONV, 'two');
    expect((await rejection(client.send(CONV, 'three'))).code).toBe('OUTBOX_FULL');
  });

  it('withdraws a send aborted before it was transmitted', async () => {
    const { client, transport } = setup();
    const controller = new AbortController();
    const pending = client.send(CONV, 'never mind', { signal: controller.signal });
    controller.abort();
    expect((await rejection(pending)).code).toBe('ABORTED');
    const opened = client.connect();
    transport.last.open();
    await opened;
    expect(transport.last.ops('send')).toHaveLength(0);
  });
});

describe('CellmeshClient sends to conversations of other cells', () => {
  it('sends the next ones when its sends in flight are confirmed by their pushed messages before their sent', async () => {
    const { client, transport } = await connected({ maxInFlightSends: 2 });
    const connection = transport.last;
    const sends = ['one', 'two', 'three', 'four'].map((body) => client.send(CONV, body));
    const [frameOne, frameTwo] = connection.ops('send');
    if (frameOne === undefined || frameTwo === undefined) throw new Error('two sends expected');
    expect(connection.ops('send')).toHaveLength(2);
    // After a reconnect the catch-up pushes the own messages first; their `sent` come later, as repeats.
    connection.push(msg(CONV, 1, { from: 'alice', role: 'customer', device: 'phone', cmid: frameOne.cmid, body: 'one' }));
    connection.push(msg(CONV, 2, { from: 'alice', role: 'customer', device: 'phone', cmid: frameTwo.cmid, body: 'two' }));
    expect(connection.ops('send').map((frame) => frame.body)).toEqual(['one', 'two', 'three', 'four']);
    connection.ops('send').slice(2).forEach((frame, index) => connection.push({ t: 'sent', id: idOf(frame), conv: CONV, cmid: frame.cmid, seq: index + 3, ts: 3 }));
    expect((await Promise.all(sends)).map((result) => result.seq)).toEqual([1, 2, 3, 4]);
  });

  it('keeps a queued send pending without holding a send slot, and resolves it on sent', async () => {
    const { client, transport } = await connected({ maxInFlightSends: 1 });
    const queuedEvents: unknown[] = [];
    client.on('queued', (event) => queuedEvents.push(event));
    const connection = transport.last;
    const first = client.send(CONV, 'one');
    const second = client.send(CONV, 'two');
    const [frameOne] = connection.ops('send');
    if (frameOne === undefined) throw new Error('a send expected');
    expect(connection.ops('send')).toHaveLength(1);
    connection.push({ t: 'queued', id: idOf(frameOne), conv: CONV, cmid: frameOne.cmid });
    // The queued send no longer counts as in flight: the next one goes out.
    expect(connection.ops('send').map((frame) => frame.body)).toEqual(['one', 'two']);
    expect(queuedEvents).toEqual([{ conv: CONV, cmid: frameOne.cmid }]);
    connection.push({ t: 'sent', id: idOf(frameOne), conv: CONV, cmid: frameOne.cmid, seq: 7, ts: 1 });
    await expect(first).resolves.toMatchObject({ seq: 7 });
    const frameTwo = connection.ops('send')[1]!;
    connection.push({ t: 'sent', id: idOf(frameTwo), conv: CONV, cmid: frameTwo.cmid, seq: 8, ts: 2 });
    await expect(second).resolves.toMatchObject({ seq: 8 });
  });

  it('does not resend a queued send to the cell that holds it, and matches its message by cmid', async () => {
    const { client, transport, clock, lastState, messages } = await connected({ initialCursors: { [CONV]: 4 } });
    const first = transport.last;
    const pending = client.send(CONV, 'across');
    const [frame] = first.ops('send');
    if (frame === undefined) throw new Error('a send expected');
    first.push({ t: 'queued', id: idOf(frame), conv: CONV, cmid: frame.cmid });
    first.serverClose(1001, 'restarting');
    clock.advance(lastState().delayMs ?? 0);
    const second = transport.last;
    second.open();
    expect(second.ops('send')).toEqual([]);
    // The restarted cell no longer knows which device sent it: the message comes as a delivery.
    second.push(msg(CONV, 5, { from: 'alice', role: 'customer', device: 'phone', cmid: frame.cmid, body: 'across' }));
    await expect(pending).resolves.toEqual({ conv: CONV, cmid: frame.cmid, seq: 5, ts: 1_005 });
    expect(messages.map((message) => [message.seq, message.body])).toEqual([[5, 'across']]);
  });

  it('resends a queued send through another cell after connecting there', async () => {
    const { client, transport, clock, lastState } = await connected();
    const first = transport.last;
    void client.send(CONV, 'across');
    const [frame] = first.ops('send');
    if (frame === undefined) throw new Error('a send expected');
    first.push({ t: 'queued', id: idOf(frame), conv: CONV, cmid: frame.cmid });
    first.serverClose(1001, 'draining');
    clock.advance(lastState().delayMs ?? 0);
    const second = transport.last;
    second.open({ cell: 'cell-c' });
    expect(second.ops('send').map((resent) => resent.cmid)).toEqual([frame.cmid]);
  });

  it('keeps later sends behind the queued ones it resends through another cell', async () => {
    const { client, transport, clock, lastState } = await connected();
    const first = transport.last;
    void client.send(CONV, 'left one');
    void client.send(CONV, 'left two');
    for (const frame of first.ops('send')) first.push({ t: 'queued', id: idOf(frame), conv: CONV, cmid: frame.cmid });
    first.serverClose(1001, 'draining');
    // Written while away: it must not overtake the two left at the other cell.
    void client.send(CONV, 'written meanwhile');
    clock.advance(lastState().delayMs ?? 0);
    const second = transport.last;
    second.open({ cell: 'home' });
    expect(second.ops('send').map((resent) => resent.body)).toEqual(['left one', 'left two', 'written meanwhile']);
  });

  it('rejects a queued send that the home cell refused, by conv and cmid when the id is gone', async () => {
    const { client, transport } = await connected();
    const connection = transport.last;
    const pending = client.send('moved:alice', 'hello?');
    const [frame] = connection.ops('send');
    if (frame === undefined) throw new Error('a send expected');
    connection.push({ t: 'queued', id: idOf(frame), conv: 'moved:alice', cmid: frame.cmid });
    connection.push({ t: 'error', code: 'MERCHANT_NOT_HOSTED', message: 'not here', conv: 'moved:alice', cmid: frame.cmid });
    const error = await rejection(pending);
    expect(error.code).toBe('MERCHANT_NOT_HOSTED');
  });
});

describe('CellmeshClient delivery', () => {
  it('delivers repeated messages once and still acknowledges them', async () => {
    const { transport, clock, messages } = await connected({}, {});
    const connection = transport.last;
    for (const seq of [1, 2, 2, 1, 3]) connection.push(msg(CONV, seq));
    expect(messages.map((message) => message.seq)).toEqual([1, 2, 3]);
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 3 }]);
  });

  it('drops messages at or below the initial cursor but acknowledges them', async () => {
    const { transport, clock, messages, client } = await connected({ initialCursors: { [CONV]: 5 } });
    transport.last.push(msg(CONV, 4));
    transport.last.push(msg(CONV, 5));
    expect(messages).toEqual([]);
    clock.advance(20);
    expect(transport.last.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 5 }]);
    transport.last.push(msg(CONV, 6));
    expect(messages.map((message) => message.seq)).toEqual([6]);
    expect(client.cursors()).toEqual({ [CONV]: 6 });
  });

  it('fills a gap with history before delivering in order, and holds synced until then', async () => {
    const { client, transport, clock, messages } = await connected({ initialCursors: { [CONV]: 2 } });
    const synced: string[] = [];
    client.on('synced', (event) => synced.push(event.session));
    const connection = transport.last;
    connection.push(msg(CONV, 5));
    connection.push(msg(CONV, 6));
    connection.push({ t: 'synced' });
    const requests = connection.ops('history');
    expect(requests).toEqual([{ op: 'history', id: expect.any(String), conv: CONV, before: 5, limit: 2 }]);
    expect(messages).toEqual([]);
    expect(synced).toEqual([]);
    clock.advance(20);
    // Nothing is delivered in order yet, so nothing is acknowledged yet.
    expect(connection.ops('ack')).toEqual([]);

    connection.push({ t: 'history', id: requests[0]?.id ?? '', conv: CONV, messages: [chat(CONV, 3), chat(CONV, 4)], hasMore: true });
    await until(() => synced.length > 0, 'synced, once the gap is filled');
    expect(messages.map((message) => message.seq)).toEqual([3, 4, 5, 6]);
    expect(synced).toHaveLength(1);
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 6 }]);
  });

  it('fills a gap longer than a history page page by page', async () => {
    const { transport, messages } = await connected({ initialCursors: { [CONV]: 0 } });
    const connection = transport.last;
    connection.push(msg(CONV, 251));
    const answer = (from: number, to: number) => {
      const request = connection.ops('history').at(-1);
      const page: ChatMessage[] = [];
      for (let seq = from; seq <= to; seq++) page.push(chat(CONV, seq));
      connection.push({ t: 'history', id: request?.id ?? '', conv: CONV, messages: page, hasMore: from > 1 });
    };
    expect(connection.ops('history').at(-1)).toMatchObject({ before: 201, limit: 200 });
    answer(1, 200);
    await until(() => connection.ops('history').length === 2, 'the second history page is asked for');
    expect(connection.ops('history').at(-1)).toMatchObject({ before: 251, limit: 50 });
    answer(201, 250);
    await until(() => messages.length >= 251, 'the gap delivered');
    expect(messages.map((message) => message.seq)).toEqual(Array.from({ length: 251 }, (_, index) => index + 1));
  });

  it('pages on below a history page the cell cut short by bytes, and skips nothing', async () => {
    const { transport, messages, errors } = await connected({ initialCursors: { [CONV]: 0 } });
    const connection = transport.last;
    connection.push(msg(CONV, 101));
    const answer = (from: number, to: number) => {
      const request = connection.ops('history').at(-1);
      const page: ChatMessage[] = [];
      for (let seq = from; seq <= to; seq++) page.push(chat(CONV, seq));
      connection.push({ t: 'history', id: request?.id ?? '', conv: CONV, messages: page, hasMore: from > 1 });
    };
    expect(connection.ops('history').at(-1)).toMatchObject({ before: 101, limit: 100 });
    // Large messages: the cell answers only the newest part of the window asked for.
    answer(61, 100);
    await until(() => connection.ops('history').length === 2, 'the page below the cut is asked for');
    expect(connection.ops('history').at(-1)).toMatchObject({ before: 61, limit: 60 });
    answer(21, 60);
    await until(() => connection.ops('history').length === 3, 'the page below the second cut is asked for');
    expect(connection.ops('history').at(-1)).toMatchObject({ before: 21, limit: 20 });
    answer(1, 20);
    await until(() => messages.length >= 101, 'the gap delivered');
    expect(messages.map((message) => message.seq)).toEqual(Array.from({ length: 101 }, (_, index) => index + 1));
    expect(errors.filter((error) => error.code === 'GAP_UNFILLED')).toEqual([]);
  });

  it('skips a gap the cell cannot fill and reports it', async () => {
    const { transport, messages, errors } = await connected({ initialCursors: { [CONV]: 2 } });
    const connection = transport.last;
    connection.push(msg(CONV, 5));
    const [request] = connection.ops('history');
    connection.push({ t: 'history', id: request?.id ?? '', conv: CONV, messages: [], hasMore: false });
    await until(() => messages.length > 0 && errors.some((error) => error.code === 'GAP_UNFILLED'), 'the gap skipped and reported');
    expect(messages.map((message) => message.seq)).toEqual([5]);
    expect(errors.find((error) => error.code === 'GAP_UNFILLED')?.details).toEqual({ conv: CONV, fromSeq: 3, toSeq: 4 });
  });

  it('acks cumulatively, at most once per conversation per ackDelayMs', async () => {
    const { transport, clock } = await connected();
    const connection = transport.last;
    for (let seq = 1; seq <= 5; seq++) connection.push(msg(CONV, seq));
    for (let seq = 1; seq <= 3; seq++) connection.push(msg(OTHER_CONV, seq));
    clock.advance(19);
    expect(connection.ops('ack')).toEqual([]);
    connection.push(msg(CONV, 6));
    clock.advance(1);
    expect(connection.ops('ack')).toEqual([
      { op: 'ack', conv: CONV, seq: 6 },
      { op: 'ack', conv: OTHER_CONV, seq: 3 },
    ]);
    connection.push(msg(CONV, 7));
    clock.advance(10);
    connection.push(msg(CONV, 8));
    clock.advance(9);
    expect(connection.ops('ack')).toHaveLength(2);
    clock.advance(1);
    expect(connection.ops('ack').slice(2)).toEqual([{ op: 'ack', conv: CONV, seq: 8 }]);
    clock.advance(1_000);
    expect(connection.ops('ack')).toHaveLength(3);
  });

  it('acks many conversations in one frame when the cell announces maxAcksPerFrame', async () => {
    const { transport, clock } = await connected({}, { limits: { ...LIMITS, maxAcksPerFrame: 2 } });
    const connection = transport.last;
    const third = 'shop1:carol';
    for (let seq = 1; seq <= 4; seq++) connection.push(msg(CONV, seq));
    connection.push(msg(OTHER_CONV, 1));
    connection.push(msg(third, 1));
    clock.advance(20);
    // Two conversations fill the first frame; the third goes in the next.
    expect(connection.ops('ack')).toEqual([
      { op: 'ack', acks: { [CONV]: 4, [OTHER_CONV]: 1 } },
      { op: 'ack', acks: { [third]: 1 } },
    ]);
    connection.push(msg(CONV, 5));
    clock.advance(20);
    expect(connection.ops('ack').slice(2)).toEqual([{ op: 'ack', acks: { [CONV]: 5 } }]);
  });

  it('acks at once when half the delivery window is unacknowledged', async () => {
    const { transport } = await connected({}, { limits: { ...LIMITS, deliveryWindow: 8 } });
    const connection = transport.last;
    for (let seq = 1; seq <= 3; seq++) connection.push(msg(CONV, seq));
    expect(connection.ops('ack')).toEqual([]);
    connection.push(msg(CONV, 4));
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 4 }]);
  });

  it("puts this device's own sends into the stream once, in order", async () => {
    const { client, transport, messages, clock } = await connected({ initialCursors: { [CONV]: 0 } });
    const connection = transport.last;
    const pending = client.send(CONV, 'mine');
    const [frame] = connection.ops('send');
    if (frame === undefined) throw new Error('a send expected');
    // Confirmed as seq 2 before seq 1 was pushed: it waits for seq 1.
    connection.push({ t: 'sent', id: idOf(frame), conv: CONV, cmid: frame.cmid, seq: 2, ts: 50 });
    await pending;
    expect(messages).toEqual([]);
    connection.push(msg(CONV, 1));
    // The cell may push the own message back as well; it is not repeated.
    connection.push(msg(CONV, 2, { from: 'alice', role: 'customer', device: 'phone', cmid: frame.cmid, body: 'mine' }));
    connection.push(msg(CONV, 3));
    expect(messages.map((message) => [message.seq, message.from, message.body])).toEqual([
      [1, 'shop1-agent', 'm1'],
      [2, 'alice', 'mine'],
      [3, 'shop1-agent', 'm3'],
    ]);
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 3 }]);
  });

  it("acknowledges this device's own confirmed sends, which the cell counts against the window", async () => {
    const { client, transport, clock } = await connected({ initialCursors: { [CONV]: 3 } });
    const connection = transport.last;
    for (const body of ['a', 'b', 'c']) void client.send(CONV, body);
    connection.ops('send').forEach((frame, index) => {
      connection.push({ t: 'sent', id: idOf(frame), conv: CONV, cmid: frame.cmid, seq: 4 + index, ts: 70 });
    });
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 6 }]);
  });

  it('does not acknowledge a conversation this device just started until the cell pushes in it', async () => {
    const { client, transport, clock, messages } = await connected();
    const connection = transport.last;
    void client.send(CONV, 'hello shop');
    const [frame] = connection.ops('send');
    connection.push({ t: 'sent', id: frame?.id ?? '', conv: CONV, cmid: frame?.cmid ?? '', seq: 1, ts: 80 });
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([]);
    // The agent answers; the cell now tracks the conversation and pushes it from the start.
    connection.push(msg(CONV, 1, { from: 'alice', role: 'customer', device: 'phone', cmid: frame?.cmid ?? '', body: 'hello shop' }));
    connection.push(msg(CONV, 2));
    expect(messages.map((message) => [message.seq, message.body])).toEqual([
      [1, 'hello shop'],
      [2, 'm2'],
    ]);
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 2 }]);
  });

  it('acks immediately after an anonymous RATE_LIMITED, since acks have a budget of their own on the cell', async () => {
    const { transport, clock, errors } = await connected();
    const connection = transport.last;
    connection.push(msg(CONV, 1));
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 1 }]);
    connection.push({ t: 'error', code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 100 });
    expect(errors.at(-1)?.code).toBe('RATE_LIMITED');
    connection.push(msg(CONV, 2));
    clock.advance(20);
    expect(connection.ops('ack')).toEqual([
      { op: 'ack', conv: CONV, seq: 1 },
      { op: 'ack', conv: CONV, seq: 2 },
    ]);
  });

  it('fetches the predecessors of an own message that do not arrive within gapWaitMs after synced', async () => {
    const { client, transport, clock, messages } = await connected({ initialCursors: { [CONV]: 1 }, gapWaitMs: 1_000 });
    const connection = transport.last;
    connection.push({ t: 'synced' });
    void client.send(CONV, 'mine');
    const [frame] = connection.ops('send');
    connection.push({ t: 'sent', id: frame?.id ?? '', conv: CONV, cmid: frame?.cmid ?? '', seq: 3, ts: 60 });
    clock.advance(999);
    expect(connection.ops('history')).toEqual([]);
    clock.advance(1);
    const [request] = connection.ops('history');
    expect(request).toMatchObject({ conv: CONV, before: 3, limit: 1 });
    connection.push({ t: 'history', id: request?.id ?? '', conv: CONV, messages: [chat(CONV, 2)], hasMore: true });
    await until(() => messages.length >= 2, 'the predecessor and the own message delivered');
    expect(messages.map((message) => message.seq)).toEqual([2, 3]);
  });

  it('passes receipts, delivery receipts and device changes through', async () => {
    const { client, transport } = await connected();
    const receipts: unknown[] = [];
    const delivered: unknown[] = [];
    const devices: unknown[] = [];
    client.on('receipt', (receipt) => receipts.push(receipt));
    client.on('delivered', (receipt) => delivered.push(receipt));
    client.on('devices', (change) => devices.push(change));
    transport.last.push({ t: 'receipt', conv: CONV, user: 'shop1-agent', role: 'agent', seq: 4 });
    transport.last.push({ t: 'delivered', conv: CONV, role: 'agent', seq: 5 });
    transport.last.push({ t: 'devices', user: 'alice', devices: [{ device: 'phone', sinceMs: 1 }] });
    expect(receipts).toEqual([{ conv: CONV, user: 'shop1-agent', role: 'agent', seq: 4 }]);
    expect(delivered).toEqual([{ conv: CONV, role: 'agent', seq: 5 }]);
    expect(devices).toEqual([{ user: 'alice', devices: [{ device: 'phone', sinceMs: 1 }] }]);
  });
});

describe('CellmeshClient requests', () => {
  it('asks for inbox pages one after the other while the cell says there are more', async () => {
    const { client, transport } = await connected();
    const summary = (conv: string) => ({ conv, merchant: 'm1', customer: conv.slice(3), lastSeq: 1, deliveredSeq: 1, readSeq: 1, unread: 0, reads: [] });
    const inbox = client.inbox();
    const first = transport.last.ops('inbox').at(-1);
    expect(first).toEqual({ op: 'inbox', id: expect.any(String) });
    transport.last.push({ t: 'inbox', id: first?.id ?? '', conversations: [summary('m1:a'), summary('m1:b')], hasMore: true });
    await until(() => transport.last.ops('inbox').length === 2, 'the second inbox page is asked for');
    const second = transport.last.ops('inbox').at(-1);
    expect(second).toMatchObject({ op: 'inbox', after: 'm1:b' });
    transport.last.push({ t: 'inbox', id: second?.id ?? '', conversations: [summary('m1:c')], hasMore: false });
    expect((await inbox).map((conversation) => conversation.conv)).toEqual(['m1:a', 'm1:b', 'm1:c']);
  });

  it('answers requests by id, including ones made before the connection opened', async () => {
    const { client, transport } = setup();
    const inbox = client.inbox();
    const opened = client.connect();
    transport.last.open();
    await opened;
    const [request] = transport.last.ops('inbox');
    expect(request).toBeDefined();
    transport.last.push({ t: 'inbox', id: request?.id ?? '', conversations: [], hasMore: false });
    await expect(inbox).resolves.toEqual([]);

    const read = client.read(CONV, 3);
    const [readFrame] = transport.last.ops('read');
    expect(readFrame).toMatchObject({ conv: CONV, seq: 3 });
    transport.last.push({ t: 'ok', id: readFrame?.id ?? '' });
    await expect(read).resolves.toBeUndefined();
  });

  it('times requests out with REQUEST_TIMEOUT', async () => {
    const { client, clock } = await connected({ requestTimeoutMs: 2_000 });
    const pending = client.history(CONV, { before: 10, limit: 5 });
    clock.advance(1_999);
    clock.advance(1);
    const error = await rejection(pending);
    expect(error.code).toBe('REQUEST_TIMEOUT');
  });

  it('retransmits an unanswered request after a reconnect', async () => {
    const { client, transport, clock, lastState } = await connected();
    const presence = client.presence({ merchants: ['shop1'] });
    transport.last.serverClose(1006);
    clock.advance(lastState().delayMs ?? 0);
    transport.last.open();
    const [request] = transport.last.ops('presence');
    expect(request).toMatchObject({ merchants: ['shop1'] });
    transport.last.push({ t: 'presence', id: request?.id ?? '', users: [], merchants: [{ merchant: 'shop1', agentsOnline: 2 }] });
    await expect(presence).resolves.toEqual({ users: [], merchants: [{ merchant: 'shop1', agentsOnline: 2 }] });
  });
});

describe('CellmeshClient close', () => {
  it('flushes acks, closes normally, rejects pending work and stops reconnecting', async () => {
    const { client, transport, clock, states } = await connected();
    const connection = transport.last;
    connection.push(msg(CONV, 1));
    const inbox = client.inbox();
    const send = client.send(CONV, 'late');
    await client.close();
    expect(connection.ops('ack')).toEqual([{ op: 'ack', conv: CONV, seq: 1 }]);
    expect(connection.closedByClient?.code).toBe(1000);
    expect((await rejection(inbox)).code).toBe('CLIENT_CLOSED');
    expect((await rejection(send)).code).toBe('CLIENT_CLOSED');
    expect(client.state).toBe('closed');
    expect(states.at(-1)?.error).toBeUndefined();
    clock.advance(600_000);
    expect(transport.connections).toHaveLength(1);
    expect((await rejection(client.ping())).code).toBe('CLIENT_CLOSED');
  });

  it('aborts a pending token request when closed while connecting', async () => {
    let seen: AbortSignal | undefined;
    const { client } = setup({
      token: (signal) => {
        seen = signal;
        return new Promise<string>(() => {});
      },
    });
    const opened = client.connect();
    await client.close();
    expect(seen?.aborted).toBe(true);
    expect((await rejection(opened)).code).toBe('CLIENT_CLOSED');
  });
});

function jwtWithExp(expSeconds: number): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode({ sub: 'alice', exp: Math.floor(expSeconds) })}.signature`;
}

describe('CellmeshClient routing', () => {
  const HOME_A = { cellId: 'cell-a', ws: 'ws://a.test:1/v1/ws', http: 'http://a.test:1', epoch: 0 };
  const HOME_B = { cellId: 'cell-b', ws: 'ws://b.test:2/v1/ws', http: 'http://b.test:2', epoch: 1 };

  /** A route endpoint that answers `homes()` and records what was asked. */
  function routeServer(homes: () => { ws: string }) {
    const asked: string[] = [];
    const fetch: CellmeshClientOptions['fetch'] = async (url) => {
      asked.push(url);
      return { status: 200, text: async () => JSON.stringify(homes()) };
    };
    return { asked, fetch };
  }

  const routed = (fetch: CellmeshClientOptions['fetch']): Partial<CellmeshClientOptions> => ({
    url: undefined,
    route: { url: 'http://router.test:9', tenant: 'mall', merchant: 'shop1' },
    ...(fetch === undefined ? {} : { fetch }),
  });

  /** The cell moves the merchant: the redirect frame, then 4307. */
  function redirect(connection: ScriptedConnection, home: typeof HOME_B): void {
    connection.push({ t: 'error', code: 'MERCHANT_ELSEWHERE', message: `merchant shop1 lives in cell ${home.cellId}`, home });
    connection.serverClose(4307, 'MERCHANT_ELSEWHERE');
  }

  it('routes before connecting, follows a redirect at once with its sends, and routes again after a drop', async () => {
    let home = HOME_A;
    const route = routeServer(() => home);
    const { client, transport, clock, states, lastState } = setup(routed(route.fetch));
    const opened = client.connect();
    await until(() => transport.connections.length === 1, 'the client dials the routed cell');
    expect(route.asked).toEqual(['http://router.test:9/v1/route?tenant=mall&merchant=shop1']);
    expect(transport.last.url).toBe('ws://a.test:1/v1/ws?merchant=shop1&token=token-1');
    transport.last.open();
    await opened;
    const one = client.send(CONV, 'one');
    const first = transport.last;
    const [unacked] = first.ops('send');
    if (unacked === undefined) throw new Error('a send expected');

    // The merchant moved: the client goes to the named home in the same turn's timer, no backoff, no route request.
    home = HOME_B;
    redirect(first, HOME_B);
    expect(lastState()).toMatchObject({ state: 'reconnecting', delayMs: 0, closeCode: 4307 });
    clock.advance(0);
    await until(() => transport.connections.length === 2, 'the client dials the new home');
    expect(route.asked).toHaveLength(1);
    const second = transport.last;
    expect(second.url).toBe('ws://b.test:2/v1/ws?merchant=shop1&token=token-1');
    second.open({ cell: 'cell-b' });
    const [resent] = second.ops('send');
    expect(resent).toMatchObject({ cmid: unacked.cmid, body: 'one' });
    second.push({ t: 'sent', id: idOf(resent!), conv: CONV, cmid: unacked.cmid, seq: 1, ts: 10 });
    await expect(one).resolves.toMatchObject({ cmid: unacked.cmid, seq: 1 });

    // A plain drop: the next attempt asks the route again.
    second.serverClose(1001, 'draining');
    clock.advance(lastState().delayMs ?? 0);
    await until(() => transport.connections.length === 3, 'the client dials after routing again');
    expect(route.asked).toHaveLength(2);
    expect(transport.last.url).toBe('ws://b.test:2/v1/ws?merchant=shop1&token=token-1');
    expect(states.filter((change) => change.state === 'closed')).toEqual([]);
  });

  it('routes again after the backoff when the routed cell says it does not host the merchant (a move or restart under way)', async () => {
    const route = routeServer(() => HOME_A);
    const { client, transport, clock, lastState } = setup(routed(route.fetch));
    void client.connect();
    await until(() => transport.connections.length === 1, 'the client dials the routed cell');
    transport.last.rejectUpgrade(404, 'MERCHANT_NOT_HOSTED');
    await until(() => lastState().state === 'reconnecting', 'the client waits to route again');
    expect(lastState().error?.code).toBe('MERCHANT_NOT_HOSTED');
    clock.advance(lastState().delayMs ?? 0);
    await until(() => transport.connections.length === 2, 'the client dials after routing again');
    expect(route.asked).toHaveLength(2);
  });

  it("connects to the fallback a route answer names while the home is down, and says so until the cell sends it home", async () => {
    let answer: Record<string, unknown> = { ...HOME_B, mode: 'leave-a-message', home: { cellId: 'cell-a', epoch: 0, liveness: 'dead' } };
    const route = routeServer(() => answer as { ws: string });
    const { client, transport, clock } = setup(routed(route.fetch));
    const opened = client.connect();
    await until(() => transport.connections.length === 1, 'the client dials the fallback');
    expect(transport.last.url).toBe('ws://b.test:2/v1/ws?merchant=shop1&token=token-1');
    transport.last.open({ cell: 'cell-b' });
    await opened;
    expect(client.homeDown).toEqual({ cellId: 'cell-a', epoch: 0, liveness: 'dead' });
    // The home serves again: the fallback sends the device there.
    answer = HOME_A;
    redirect(transport.last, HOME_A);
    clock.advance(0);
    await until(() => transport.connections.length === 2, 'the client dials the home');
    expect(client.homeDown).toBeUndefined();
  });

  it('stops with TOO_MANY_REDIRECTS after maxRedirects redirects without a session', async () => {
    const route = routeServer(() => HOME_A);
    const { client, transport, clock, lastState } = setup({ ...routed(route.fetch), maxRedirects: 2 });
    const opened = client.connect();
    for (let attempt = 1; attempt <= 3; attempt++) {
      await until(() => transport.connections.length === attempt, `attempt ${attempt}`);
      // Two cells that each believe the other is home, refusing in band.
      transport.last.listenerOpen();
      redirect(transport.last, attempt % 2 === 1 ? HOME_B : HOME_A);
      clock.advance(0);
    }
    const error = await rejection(opened);
    expect(error.code).toBe('TOO_MANY_REDIRECTS');
    expect(lastState()).toMatchObject({ state: 'closed' });
    expect(transport.connections).toHaveLength(3);
    expect(route.asked).toHaveLength(1);
  });

  it('does not follow a redirect with a fixed url: it stops with MERCHANT_ELSEWHERE and the home', async () => {
    const { client, transport } = await connected();
    const pending = client.send(CONV, 'one');
    redirect(transport.last, HOME_B);
    const error = await rejection(pending);
    expect(error.code).toBe('MERCHANT_ELSEWHERE');
    expect(error.details).toMatchObject({ closeCode: 4307, home: HOME_B });
    expect(client.state).toBe('closed');
  });

  it('retries the route with backoff when it fails, and takes either url or route', async () => {
    let answers = 0;
    const fetch: CellmeshClientOptions['fetch'] = async () => {
      answers++;
      return answers === 1
        ? { status: 404, text: async () => JSON.stringify({ error: { code: 'MERCHANT_UNKNOWN', message: 'no serving cell hosts merchant shop1' } }) }
        : { status: 200, text: async () => JSON.stringify(HOME_A) };
    };
    const { client, transport, clock, lastState } = setup(routed(fetch));
    const opened = client.connect();
    await until(() => lastState().state === 'reconnecting', 'the failed route to end the attempt');
    expect(lastState().error?.code).toBe('MERCHANT_UNKNOWN');
    clock.advance(lastState().delayMs ?? 0);
    await until(() => transport.connections.length === 1, 'the client dials once routed');
    transport.last.open();
    await opened;
    expect(() => setup({ route: { url: 'http://router.test:9', tenant: 'mall', merchant: 'shop1' } })).toThrow(TypeError);
  });
});
