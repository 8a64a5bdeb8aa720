/**
 * The one compliance suite that every MeshTransport implementation passes (libp2p, the in-memory
 * network of the simulator, any future one). It checks the semantics stated in transport.ts
 * through the port alone: it never looks inside an implementation.
 *
 * Usage, in an implementation's test file:
 *
 *     describeMeshTransportCompliance('libp2p on 127.0.0.1', async (count) => {
 *       const transports = ...create and start `count` transports...;
 *       return { transports, teardown: async () => { ...stop them... } };
 *     });
 *
 * The factory returns started, unconnected transports; the suite connects them itself with
 * `dial(other.addresses()[0])`, so each test chooses its topology (a pair, a line A-B-C).
 *
 * Waiting: the suite never sleeps and then asserts. It polls a condition in small steps of the
 * network's own time (`pause`), up to a budget, and fails with what it was waiting for. A network
 * on a virtual clock implements `pause` by advancing its clock; a real one omits it and the suite
 * sleeps for real. Checks that something did NOT happen wait for a later event that proves enough
 * traffic has passed (a later message arriving) rather than for a fixed time.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  MeshTransportError,
  type MeshMessage,
  type MeshTransport,
  type MeshTransportErrorCode,
  type MessageHandler,
  type PeerId,
} from '../mesh/transport.js';

export interface MeshTransportTestNetwork {
  /** Started transports, not yet connected to each other. */
  readonly transports: readonly MeshTransport[];
  /**
   * Lets `ms` of the network's time pass, then resolves. A network on a virtual clock advances
   * its clock (and lets due deliveries run); without `pause` the suite sleeps for real.
   */
  pause?(ms: number): Promise<void>;
  /** Stops every transport (some may already be stopped) and releases what the network holds. */
  teardown(): Promise<void>;
}

/** Creates `count` started transports on a fresh network. */
export type MeshTransportFactory = (count: number) => Promise<MeshTransportTestNetwork>;

export interface MeshTransportComplianceOptions {
  /**
   * Budget, in the network's time, for a message to be delivered along a relay path; it covers
   * mesh formation (gossipsub needs a heartbeat or two, about 1-2 s). Default 10 s.
   */
  readonly deliveryBudgetMs?: number;
  /** Budget for a connection to be established and seen on both sides. Default 5 s. */
  readonly connectBudgetMs?: number;
}

const POLL_STEP_MS = 20;
const REPUBLISH_EVERY_MS = 250;
const TOPIC = 'cellmesh/compliance';
const ECHO_PROTOCOL = '/cellmesh/compliance/echo/1.0.0';
const FAILING_PROTOCOL = '/cellmesh/compliance/failing/1.0.0';
const HANGING_PROTOCOL = '/cellmesh/compliance/hanging/1.0.0';
const UNKNOWN_PROTOCOL = '/cellmesh/compliance/nobody-serves-this/1.0.0';
const REQUEST_TIMEOUT_MS = 5_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

export function text(data: Uint8Array): string {
  return decoder.decode(data);
}

/** Collects what a subscription receives. */
export interface Inbox {
  readonly messages: MeshMessage[];
  readonly handler: MessageHandler;
  texts(): string[];
}

export function inbox(): Inbox {
  const messages: MeshMessage[] = [];
  return {
    messages,
    handler: (message) => messages.push(message),
    texts: () => messages.map((message) => text(message.data)),
  };
}

/** Polling and driving helpers over one test network, in the network's own time. */
export class TestNetworkDriver {
  constructor(
    readonly network: MeshTransportTestNetwork,
    private readonly budgets: Required<MeshTransportComplianceOptions>,
  ) {}

  get transports(): readonly MeshTransport[] {
    return this.network.transports;
  }

  transport(index: number): MeshTransport {
    const transport = this.network.transports[index];
    if (transport === undefined) throw new Error(`the network has no transport #${index}`);
    return transport;
  }

  async pause(ms: number): Promise<void> {
    if (this.network.pause !== undefined) return this.network.pause(ms);
    await new Promise((resolve) => setTimeout(resolve, ms)); // real-clock-ok: test driver of a real network
  }

  /** Polls `condition` every step until it holds; returns false once `budgetMs` has passed. */
  async poll(condition: () => boolean, budgetMs: number): Promise<boolean> {
    for (let waitedMs = 0; ; waitedMs += POLL_STEP_MS) {
      if (condition()) return true;
      if (waitedMs >= budgetMs) return false;
      await this.pause(POLL_STEP_MS);
    }
  }

  /** Like `poll`, but fails the test with `what` when the budget runs out. */
  async waitFor(condition: () => boolean, what: string, budgetMs = this.budgets.deliveryBudgetMs): Promise<void> {
    if (!(await this.poll(condition, budgetMs))) throw new Error(`gave up after ${budgetMs} ms waiting for ${what}`);
  }

  /** Awaits `promise` while letting the network's time pass (needed on a virtual clock). */
  async settle<T>(promise: Promise<T>, what: string, budgetMs = this.budgets.deliveryBudgetMs + REQUEST_TIMEOUT_MS): Promise<T> {
    let settled = false;
    const observed = promise.then(
      (value) => {
        settled = true;
        return value;
      },
      (error: unknown) => {
        settled = true;
        throw error;
      },
    );
    observed.catch(() => undefined);
    await this.waitFor(() => settled, what, budgetMs);
    return observed;
  }

  /** Settles `promise` and returns its MeshTransportError; fails if it resolves or throws another error. */
  async failureOf(promise: Promise<unknown>, what: string): Promise<MeshTransportError> {
    let outcome: unknown;
    try {
      await this.settle(promise, what);
      outcome = 'resolved';
    } catch (error) {
      outcome = error;
    }
    expect(outcome, `${what} should reject with a MeshTransportError`).toBeInstanceOf(MeshTransportError);
    return outcome as MeshTransportError;
  }

  async expectFailure(promise: Promise<unknown>, code: MeshTransportErrorCode, what: string): Promise<MeshTransportError> {
    const error = await this.failureOf(promise, what);
    expect(error.code, `${what}: ${error.message}`).toBe(code);
    return error;
  }

  /** Transport `from` dials `to`; resolves once each lists the other as connected. */
  async link(from: number, to: number): Promise<void> {
    const dialer = this.transport(from);
    const target = this.transport(to);
    const address = target.addresses()[0];
    expect(address, `transport #${to} has an address`).toBeDefined();
    const peer = await this.settle(dialer.dial(address as string), `#${from} to dial #${to}`);
    expect(peer).toBe(target.self);
    await this.waitFor(
      () => dialer.connectedPeers().includes(target.self) && target.connectedPeers().includes(dialer.self),
      `#${from} and #${to} to see each other connected`,
      this.budgets.connectBudgetMs,
    );
  }

  /**
   * Publishes fresh payloads from `publisher` until `done` holds. Best-effort delivery and mesh
   * formation mean an early message may reach nobody; each round's payloads are new, so a
   * receiver can tell them apart and duplicates stay detectable.
   */
  async publishUntil(
    publisher: MeshTransport,
    topic: string,
    payloads: (round: number) => readonly string[],
    done: () => boolean,
    what: string,
  ): Promise<void> {
    const rounds = Math.ceil(this.budgets.deliveryBudgetMs / REPUBLISH_EVERY_MS);
    for (let round = 0; round < rounds; round += 1) {
      for (const payload of payloads(round)) await this.settle(publisher.publish(topic, bytes(payload)), `publish ${payload}`);
      if (await this.poll(done, REPUBLISH_EVERY_MS)) return;
    }
    throw new Error(`gave up after ${this.budgets.deliveryBudgetMs} ms publishing until ${what}`);
  }
}

function duplicates(values: readonly string[]): string[] {
  const seen = new Set<string>();
  return values.filter((value) => {
    if (seen.has(value)) return true;
    seen.add(value);
    return false;
  });
}

function serveEcho(transport: MeshTransport, calls: PeerId[] = []): PeerId[] {
  transport.handle(ECHO_PROTOCOL, async (from, request) => {
    calls.push(from);
    return bytes(`echo:${text(request)}`);
  });
  return calls;
}

/**
 * Registers the MeshTransport compliance tests for one implementation as a vitest `describe`
 * block named after `name`.
 */
export function describeMeshTransportCompliance(
  name: string,
  factory: MeshTransportFactory,
  options: MeshTransportComplianceOptions = {},
): void {
  const budgets: Required<MeshTransportComplianceOptions> = {
    deliveryBudgetMs: options.deliveryBudgetMs ?? 10_000,
    connectBudgetMs: options.connectBudgetMs ?? 5_000,
  };

  describe(`MeshTransport compliance: ${name}`, () => {
    let opened: MeshTransportTestNetwork[] = [];

    async function open(count: number): Promise<TestNetworkDriver> {
      const network = await factory(count);
      opened.push(network);
      expect(network.transports).toHaveLength(count);
      return new TestNetworkDriver(network, budgets);
    }

    afterEach(async () => {
      const networks = opened;
      opened = [];
      await Promise.all(networks.map((network) => network.teardown()));
    });

    describe('publish and subscribe', () => {
      it('reaches every other subscriber of a line A-B-C, relayed by B, with from = the publisher', async () => {
        const network = await open(3);
        const [a, b, c] = [network.transport(0), network.transport(1), network.transport(2)];
        await network.link(0, 1);
        await network.link(1, 2);
        const boxes = [inbox(), inbox(), inbox()] as const;
        a.subscribe(TOPIC, boxes[0].handler);
        b.subscribe(TOPIC, boxes[1].handler);
        c.subscribe(TOPIC, boxes[2].handler);

        await network.publishUntil(
          a,
          TOPIC,
          (round) => [`line-${round}`],
          () => boxes[1].messages.length > 0 && boxes[2].messages.length > 0,
          'B and C receive a message of A',
        );

        expect(a.connectedPeers(), 'A and C are not connected: C got it through B').not.toContain(c.self);
        for (const box of [boxes[1], boxes[2]]) {
          for (const message of box.messages) {
            expect(message.from).toBe(a.self);
            expect(message.topic).toBe(TOPIC);
            expect(text(message.data)).toMatch(/^line-\d+$/);
          }
          expect(duplicates(box.texts()), 'at most once per receiver').toEqual([]);
        }
        expect(boxes[0].messages, 'the publisher never receives its own message').toEqual([]);
      });

      it('does not throw when nobody listens', async () => {
        const network = await open(2);
        await network.settle(network.transport(0).publish(TOPIC, bytes('alone')), 'publish with no peer at all');
        await network.link(0, 1);
        await network.settle(network.transport(0).publish(TOPIC, bytes('unheard')), 'publish with a peer that is not subscribed');
      });

      it('never hands the publisher its own message', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        const [boxA, boxB] = [inbox(), inbox()];
        a.subscribe(TOPIC, boxA.handler);
        b.subscribe(TOPIC, boxB.handler);

        await network.publishUntil(a, TOPIC, (round) => [`from-a-${round}`], () => boxB.messages.length > 0, 'B receives from A');
        // A message from B reaching A proves A's inbound path ran after A's own publishes.
        await network.publishUntil(b, TOPIC, (round) => [`from-b-${round}`], () => boxA.messages.length > 0, 'A receives from B');

        expect(boxA.messages.every((message) => message.from === b.self)).toBe(true);
        expect(boxA.texts().every((payload) => payload.startsWith('from-b-'))).toBe(true);
        expect(boxB.messages.every((message) => message.from === a.self)).toBe(true);
      });

      it('stops delivery and relay when a validator rejects, and drops quietly when it ignores', async () => {
        const network = await open(3);
        const [a, b, c] = [network.transport(0), network.transport(1), network.transport(2)];
        await network.link(0, 1);
        await network.link(1, 2);
        const [boxA, boxB, boxC] = [inbox(), inbox(), inbox()];
        const rejectedAtB: PeerId[] = [];
        a.subscribe(TOPIC, boxA.handler);
        b.subscribe(TOPIC, boxB.handler, (message) => {
          if (!text(message.data).startsWith('bad-')) return 'accept';
          rejectedAtB.push(message.from);
          return 'reject';
        });
        c.subscribe(TOPIC, boxC.handler, (message) => (text(message.data).startsWith('quiet-') ? 'ignore' : 'accept'));

        // In every round `bad-` and `quiet-` are published before `good-`, so once C has a
        // `good-` message the others of that round have had their chance.
        await network.publishUntil(
          a,
          TOPIC,
          (round) => [`bad-${round}`, `quiet-${round}`, `good-${round}`],
          () => boxC.texts().some((payload) => payload.startsWith('good-')) && rejectedAtB.length > 0,
          'C receives a good message and B has rejected a bad one',
        );
        await network.waitFor(() => boxB.texts().some((payload) => payload.startsWith('quiet-')), 'B to accept a quiet message');

        expect(rejectedAtB.every((from) => from === a.self), 'validators see the publisher as from').toBe(true);
        expect(boxB.texts().filter((payload) => payload.startsWith('bad-')), 'a rejected message is not delivered').toEqual([]);
        expect(boxC.texts().filter((payload) => payload.startsWith('bad-')), 'nor relayed').toEqual([]);
        expect(boxC.texts().filter((payload) => payload.startsWith('quiet-')), 'an ignored message is not delivered').toEqual([]);
      });
    });

    describe('request and response', () => {
      it('answers a request with the handler result, naming the caller', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        const callers = serveEcho(b);

        const answers = await network.settle(
          Promise.all(
            Array.from({ length: 10 }, (_, index) =>
              a.request(b.self, ECHO_PROTOCOL, bytes(`ping-${index}`), { timeoutMs: REQUEST_TIMEOUT_MS }),
            ),
          ),
          'ten concurrent requests',
        );

        expect(answers.map(text)).toEqual(Array.from({ length: 10 }, (_, index) => `echo:ping-${index}`));
        expect(callers).toHaveLength(10);
        expect(callers.every((caller) => caller === a.self)).toBe(true);
      });

      it('rejects with REMOTE_HANDLER_FAILED when the handler throws, and keeps serving', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        let calls = 0;
        b.handle(FAILING_PROTOCOL, async () => {
          calls += 1;
          if (calls === 1) throw new Error('the store is on fire');
          return bytes('recovered');
        });

        const request = () => a.request(b.self, FAILING_PROTOCOL, bytes('x'), { timeoutMs: REQUEST_TIMEOUT_MS });
        await network.expectFailure(request(), 'REMOTE_HANDLER_FAILED', 'a request whose handler throws');
        expect(text(await network.settle(request(), 'the next request'))).toBe('recovered');
      });

      it('rejects with PROTOCOL_UNSUPPORTED when the peer serves no such protocol', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        serveEcho(b);

        await network.expectFailure(
          a.request(b.self, UNKNOWN_PROTOCOL, bytes('x'), { timeoutMs: REQUEST_TIMEOUT_MS }),
          'PROTOCOL_UNSUPPORTED',
          'a request for an unserved protocol',
        );
      });

      it('rejects with REQUEST_TIMEOUT when the answer takes longer than timeoutMs', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        b.handle(HANGING_PROTOCOL, () => new Promise<Uint8Array>(() => {}));

        await network.expectFailure(
          a.request(b.self, HANGING_PROTOCOL, bytes('x'), { timeoutMs: 300 }),
          'REQUEST_TIMEOUT',
          'a request to a handler that never answers',
        );
      });

      it('rejects with ABORTED when the caller aborts, before or during the call', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        let served = 0;
        b.handle(HANGING_PROTOCOL, () => {
          served += 1;
          return new Promise<Uint8Array>(() => {});
        });

        const early = new AbortController();
        early.abort();
        await network.expectFailure(
          a.request(b.self, HANGING_PROTOCOL, bytes('x'), { timeoutMs: REQUEST_TIMEOUT_MS, signal: early.signal }),
          'ABORTED',
          'a request with an aborted signal',
        );

        const servedBefore = served;
        const late = new AbortController();
        const pending = a.request(b.self, HANGING_PROTOCOL, bytes('x'), { timeoutMs: REQUEST_TIMEOUT_MS, signal: late.signal });
        pending.catch(() => undefined);
        await network.waitFor(() => served > servedBefore, 'B to be serving the request');
        late.abort();
        await network.expectFailure(pending, 'ABORTED', 'a request aborted while pending');
      });

      it('rejects with PEER_UNREACHABLE when the peer has stopped', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        serveEcho(b);
        await network.settle(a.request(b.self, ECHO_PROTOCOL, bytes('before'), { timeoutMs: REQUEST_TIMEOUT_MS }), 'a first request');

        await network.settle(b.stop(), 'B to stop');
        await network.waitFor(() => !a.connectedPeers().includes(b.self), 'A to notice that B is gone', budgets.connectBudgetMs);

        await network.expectFailure(
          a.request(b.self, ECHO_PROTOCOL, bytes('after'), { timeoutMs: REQUEST_TIMEOUT_MS }),
          'PEER_UNREACHABLE',
          'a request to a stopped peer',
        );
      });
    });

    describe('connections and lifecycle', () => {
      it('reports peers connecting and disconnecting on both sides', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        const events: string[] = [];
        for (const [label, transport] of [['A', a], ['B', b]] as const) {
          transport.setPeerEvents({
            onPeerConnected: (peer) => events.push(`${label} connected ${peer}`),
            onPeerDisconnected: (peer) => events.push(`${label} disconnected ${peer}`),
          });
        }

        await network.link(0, 1);
        await network.waitFor(
          () => events.includes(`A connected ${b.self}`) && events.includes(`B connected ${a.self}`),
          'both connect events',
          budgets.connectBudgetMs,
        );

        await network.settle(a.hangUp(b.self), 'A to hang up on B');
        await network.waitFor(
          () => events.includes(`A disconnected ${b.self}`) && events.includes(`B disconnected ${a.self}`),
          'both disconnect events',
          budgets.connectBudgetMs,
        );
        expect(a.connectedPeers()).not.toContain(b.self);
        expect(b.connectedPeers()).not.toContain(a.self);
      });

      it('rejects pending requests when stopping, and stop is idempotent', async () => {
        const network = await open(2);
        const [a, b] = [network.transport(0), network.transport(1)];
        await network.link(0, 1);
        let served = false;
        b.handle(HANGING_PROTOCOL, () => {
          served = true;
          return new Promise<Uint8Array>(() => {});
        });
        const pending = a.request(b.self, HANGING_PROTOCOL, bytes('x'), { timeoutMs: 60_000 });
        pending.catch(() => undefined);
        await network.waitFor(() => served, 'B to be serving the request');

        await network.settle(Promise.all([a.stop(), a.stop()]), 'two concurrent stops');
        await network.settle(a.stop(), 'a third stop');
        await network.failureOf(pending, 'a request pending when its transport stopped');

        expect(a.connectedPeers()).toEqual([]);
        await network.waitFor(() => !b.connectedPeers().includes(a.self), 'B to notice that A stopped', budgets.connectBudgetMs);
        await network.expectFailure(
          a.request(b.self, ECHO_PROTOCOL, bytes('x'), { timeoutMs: REQUEST_TIMEOUT_MS }),
          'NOT_STARTED',
          'a request on a stopped transport',
        );
      });
    });
  });
}
