import type { Clock } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import {
  MeshTransportError,
  type MeshMessage,
  type MeshTransport,
  type MessageHandler,
  type MessageValidator,
  type PeerEvents,
  type PeerId,
  type RequestHandler,
  type RequestOptions,
} from './transport.js';

/**
 * An in-memory network of MeshTransports on an injected clock and random source: what unit
 * tests and the simulator use instead of libp2p. Every delivery is a clock timer, so runs on a
 * ManualClock with a SeededRandom are exactly reproducible.
 *
 * What it models, and how it maps to the libp2p cluster:
 * - Connections are explicit (`dial`), like TCP connections between cells.
 * - A publish travels hop by hop over open, unblocked links, as gossipsub relays it: each peer
 *   that gets it first validates it, and only a subscribed peer that accepts it delivers it and
 *   passes it on; every peer gets one copy at most.
 * - Links can be blocked one way or both ways (a partition): published messages and requests
 *   across a blocked link are dropped silently, so requests time out, as with a firewall that
 *   drops packets. Connections stay "open", as TCP connections do until keep-alives fail.
 * - Latency is drawn per delivery from `latencyMs`; loss drops a delivery with `lossRate`.
 * - Duplication delivers a copy twice, each with its own latency (a retransmission, or a
 *   gossip message seen again after the seen-cache forgot it): handlers must be idempotent.
 *   Reordering holds a delivery back by up to `reorderDelayMs` more, so later ones overtake it
 *   (messages and requests between two cells travel on independent streams).
 */
export interface MemoryNetworkOptions {
  readonly clock: Clock;
  readonly random: Random;
  /** Latency of one delivery (one way); defaults to 1 ms. */
  readonly latencyMs?: (from: PeerId, to: PeerId, random: Random) => number;
  /**
   * Hand every subscriber of a publish the same bytes instead of a copy each (default false).
   * Only for handlers that never write to a message's data; it saves an allocation per delivery.
   */
  readonly shareDeliveredBytes?: boolean;
}

export interface LinkFaults {
  /** Probability in [0, 1] that one delivery (a message or one leg of a request) is lost. */
  readonly lossRate: number;
  /** Probability in [0, 1] that one delivery arrives twice. */
  readonly duplicateRate?: number;
  /** Probability in [0, 1] that one delivery is held back by up to `reorderDelayMs` more than its latency. */
  readonly reorderRate?: number;
  readonly reorderDelayMs?: number;
}

export class MemoryNetwork {
  private readonly endpoints = new Map<PeerId, MemoryTransport>();
  /** Directed blocked links, as `from\0to`. */
  private readonly blocked = new Set<string>();
  private faults: LinkFaults = { lossRate: 0 };

  constructor(private readonly options: MemoryNetworkOptions) {}

  get clock(): Clock {
    return this.options.clock;
  }

  get sharesDeliveredBytes(): boolean {
    return this.options.shareDeliveredBytes === true;
  }

  /** A transport for `peer` on this network; its address is `/memory/<peer>/p2p/<peer>`. */
  createTransport(peer: PeerId): MemoryTransport {
    if (this.endpoints.has(peer)) throw new Error(`peer ${peer} already exists on this network`);
    const transport = new MemoryTransport(this, peer);
    this.endpoints.set(peer, transport);
    return transport;
  }

  /** Removes a stopped peer so the id can be used again (a cell restarting). */
  forget(peer: PeerId): void {
    const endpoint = this.endpoints.get(peer);
    if (endpoint?.isRunning === true) throw new Error(`peer ${peer} is still running`);
    this.endpoints.delete(peer);
  }

  /** Blocks traffic from every peer of `from` to every peer of `to` (one way). */
  blockOneWay(from: readonly PeerId[], to: readonly PeerId[]): void {
    for (const source of from) for (const target of to) if (source !== target) this.blocked.add(linkKey(source, target));
  }

  /** A full partition between two groups: nothing crosses either way. */
  partition(groupA: readonly PeerId[], groupB: readonly PeerId[]): void {
    this.blockOneWay(groupA, groupB);
    this.blockOneWay(groupB, groupA);
  }

  /** Removes every block. */
  heal(): void {
    this.blocked.clear();
  }

  setFaults(faults: LinkFaults): void {
    this.faults = faults;
  }

  isBlocked(from: PeerId, to: PeerId): boolean {
    return this.blocked.has(linkKey(from, to));
  }

  endpoint(peer: PeerId): MemoryTransport | undefined {
    return this.endpoints.get(peer);
  }

  /** The peers of this network, running or stopped (until forgotten). */
  peers(): IterableIterator<MemoryTransport> {
    return this.endpoints.values();
  }

  /** @internal A connection between `a` and `b` opened; for subclasses that keep a view of the connection graph. */
  connectionOpened(_a: PeerId, _b: PeerId): void {}

  /** @internal A connection between `a` and `b` closed (ditto). */
  connectionClosed(_a: PeerId, _b: PeerId): void {}

  /**
   * @internal Passes a published message on from `relay` to its connected peers that have not
   * had it yet (`seen`, shared by every hop of one publish).
   */
  relay(relay: MemoryTransport, message: MeshMessage, seen: Set<PeerId>): void {
    for (const next of relay.connections) {
      if (seen.has(next) || this.isBlocked(relay.self, next)) continue;
      seen.add(next);
      this.schedule(relay.self, next, (target) => target.receive(message, seen));
    }
  }

  /**
   * Schedules one delivery from `from` to `to` after a drawn latency, unless the link is
   * blocked or the delivery is lost; `deliver` runs only if `to` is still running then.
   */
  schedule(from: PeerId, to: PeerId, deliver: (target: MemoryTransport) => void): void {
    if (this.isBlocked(from, to)) return;
    const { faults } = this;
    const { random } = this.options;
    // Each fault draws only when it is on, so a run without it keeps the same random sequence.
    if (faults.lossRate > 0 && random.next() < faults.lossRate) return;
    const duplicateRate = faults.duplicateRate ?? 0;
    const copies = duplicateRate > 0 && random.next() < duplicateRate ? 2 : 1;
    for (let copy = 0; copy < copies; copy++) {
      let latencyMs = this.options.latencyMs?.(from, to, random) ?? 1;
      const reorderRate = faults.reorderRate ?? 0;
      if (reorderRate > 0 && random.next() < reorderRate) latencyMs += Math.floor(random.next() * ((faults.reorderDelayMs ?? 0) + 1));
      this.options.clock.setTimer(latencyMs, () => {
        const target = this.endpoints.get(to);
        if (target?.isRunning === true) deliver(target);
      });
    }
  }
}

function linkKey(from: PeerId, to: PeerId): string {
  return `${from}\0${to}`;
}

interface Subscription {
  readonly handler: MessageHandler;
  readonly validator?: MessageValidator;
}

/** One peer of a MemoryNetwork. */
export class MemoryTransport implements MeshTransport {
  /** @internal Peers this one holds a connection with (symmetric). */
  readonly connections = new Set<PeerId>();
  private running = false;
  private events: PeerEvents = {};
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly handlers = new Map<string, RequestHandler>();
  /** Rejecters of this transport's requests still waiting for an answer, so stop() can fail them. */
  private readonly pendingRequests = new Set<(error: MeshTransportError) => void>();

  constructor(
    private readonly network: MemoryNetwork,
    readonly self: PeerId,
  ) {}

  get isRunning(): boolean {
    return this.running;
  }

  addresses(): string[] {
    return [memoryAddress(this.self)];
  }

  async start(): Promise<void> {
    this.running = true;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    for (const peer of [...this.connections]) this.disconnect(peer);
    for (const reject of [...this.pendingRequests]) reject(new MeshTransportError('NOT_STARTED', `${this.self} stopped`));
  }

  async dial(address: string): Promise<PeerId> {
    this.assertRunning();
    const peer = peerOfMemoryAddress(address);
    const target = this.network.endpoint(peer);
    if (target === undefined || !target.running || peer === this.self || this.network.isBlocked(this.self, peer) || this.network.isBlocked(peer, this.self)) {
      throw new MeshTransportError('PEER_UNREACHABLE', `cannot reach ${address}`);
    }
    if (!this.connections.has(peer)) {
      this.connections.add(peer);
      target.connections.add(this.self);
      this.network.connectionOpened(this.self, peer);
      this.events.onPeerConnected?.(peer);
      target.events.onPeerConnected?.(this.self);
    }
    return peer;
  }

  addPeerAddresses(): void {
    // Addresses on this network are the peer ids themselves; nothing to remember.
  }

  async hangUp(peer: PeerId): Promise<void> {
    this.disconnect(peer);
  }

  connectedPeers(): PeerId[] {
    return [...this.connections];
  }

  setPeerEvents(events: PeerEvents): void {
    this.events = events;
  }

  subscribe(topic: string, handler: MessageHandler, validator?: MessageValidator): void {
    this.subscriptions.set(topic, validator === undefined ? { handler } : { handler, validator });
  }

  unsubscribe(topic: string): void {
    this.subscriptions.delete(topic);
  }

  async publish(topic: string, data: Uint8Array): Promise<void> {
    this.assertRunning();
    this.network.relay(this, { from: this.self, topic, data: data.slice() }, new Set([this.self]));
  }

  handle(protocol: string, handler: RequestHandler): void {
    this.handlers.set(protocol, handler);
  }

  request(peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    if (!this.running) return Promise.reject(new MeshTransportError('NOT_STARTED', 'transport is not started'));
    let resolve!: (value: Uint8Array) => void;
    let reject!: (reason: MeshTransportError) => void;
    const promise = new Promise<Uint8Array>((resolvePromise, rejectPromise) => {
      resolve = resolvePromise;
      reject = rejectPromise;
    });
    let settled = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      this.pendingRequests.delete(failOnStop);
      timer.cancel();
      options.signal?.removeEventListener('abort', onAbort);
      outcome();
    };
    const timer = this.network.clock.setTimer(options.timeoutMs, () =>
      settle(() => reject(new MeshTransportError('REQUEST_TIMEOUT', `${protocol} to ${peer} timed out after ${options.timeoutMs} ms`))),
    );
    const onAbort = (): void => settle(() => reject(new MeshTransportError('ABORTED', `${protocol} to ${peer} aborted`)));
    const failOnStop = (error: MeshTransportError): void => settle(() => reject(error));
    this.pendingRequests.add(failOnStop);
    if (options.signal?.aborted === true) onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });

    const target = this.network.endpoint(peer);
    if (target === undefined || !target.running) {
      // A refused connection is answered quickly, like a TCP reset.
      this.network.clock.setTimer(1, () => settle(() => reject(new MeshTransportError('PEER_UNREACHABLE', `${peer} is not reachable`))));
      return promise;
    }
    const copy = data.slice();
    this.network.schedule(this.self, peer, (server) => {
      // A duplicated request runs the handler twice; the first answer back settles the request.
      void server.serve(this.self, protocol, copy.slice()).then((answer) => {
        this.network.schedule(peer, this.self, () => settle(() => (answer.ok ? resolve(answer.data) : reject(answer.error))));
      });
    });
    return promise;
  }

  /** @internal A relayed copy arrives: validate, deliver, pass on (gossipsub's order). */
  receive(message: MeshMessage, seen: Set<PeerId>): void {
    const subscription = this.subscriptions.get(message.topic);
    if (subscription === undefined) return;
    if (subscription.validator !== undefined && subscription.validator(message) !== 'accept') return;
    const copy: MeshMessage = { from: message.from, topic: message.topic, data: this.network.sharesDeliveredBytes ? message.data : message.data.slice() };
    this.network.relay(this, message, seen);
    subscription.handler(copy);
  }

  /** @internal Runs the handler of `protocol` for a request from `from`. */
  async serve(from: PeerId, protocol: string, data: Uint8Array): Promise<{ ok: true; data: Uint8Array } | { ok: false; error: MeshTransportError }> {
    const handler = this.handlers.get(protocol);
    if (handler === undefined) {
      return { ok: false, error: new MeshTransportError('PROTOCOL_UNSUPPORTED', `${this.self} does not serve ${protocol}`) };
    }
    try {
      return { ok: true, data: (await handler(from, data)).slice() };
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return { ok: false, error: new MeshTransportError('REMOTE_HANDLER_FAILED', `${protocol} failed on ${this.self}: ${reason}`) };
    }
  }

  private disconnect(peer: PeerId): void {
    if (!this.connections.delete(peer)) return;
    const target = this.network.endpoint(peer);
    target?.connections.delete(this.self);
    this.network.connectionClosed(this.self, peer);
    this.events.onPeerDisconnected?.(peer);
    if (target?.running === true) target.events.onPeerDisconnected?.(this.self);
  }

  private assertRunning(): void {
    if (!this.running) throw new MeshTransportError('NOT_STARTED', 'transport is not started');
  }
}

export function memoryAddress(peer: PeerId): string {
  return `/memory/${peer}/p2p/${peer}`;
}

function peerOfMemoryAddress(address: string): PeerId {
  const match = /^\/memory\/([^/]+)\/p2p\/([^/]+)$/.exec(address);
  if (match === null || match[1] !== match[2]) throw new MeshTransportError('PEER_UNREACHABLE', `not a memory address: ${address}`);
  return match[1] as PeerId;
}
