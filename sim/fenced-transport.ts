import type {
  MeshMessage,
  MeshTransport,
  MessageHandler,
  MessageValidator,
  PeerEvents,
  PeerId,
  RequestHandler,
  RequestOptions,
} from '../mesh/transport.js';
import { never, type Life } from './sim-clock.js';

/**
 * A cell incarnation's view of its MemoryTransport. While the incarnation lives it is the
 * transport itself; once it died, nothing reaches its handlers and its own pending calls never
 * settle (the process that made them is gone), while the transport underneath is stopped so the
 * other cells see the connections close, as they would after a kill -9.
 */
export class FencedTransport implements MeshTransport {
  constructor(
    readonly inner: MeshTransport,
    private readonly life: Life,
  ) {}

  get self(): PeerId {
    return this.inner.self;
  }

  addresses(): string[] {
    return this.inner.addresses();
  }

  start(): Promise<void> {
    return this.fence(() => this.inner.start());
  }

  stop(): Promise<void> {
    return this.fence(() => this.inner.stop());
  }

  dial(address: string, options?: { signal?: AbortSignal }): Promise<PeerId> {
    return this.fence(() => this.inner.dial(address, options));
  }

  addPeerAddresses(peer: PeerId, addresses: readonly string[]): void {
    if (this.life.alive) this.inner.addPeerAddresses(peer, addresses);
  }

  hangUp(peer: PeerId): Promise<void> {
    return this.fence(() => this.inner.hangUp(peer));
  }

  connectedPeers(): PeerId[] {
    return this.life.alive ? this.inner.connectedPeers() : [];
  }

  setPeerEvents(events: PeerEvents): void {
    const life = this.life;
    this.inner.setPeerEvents({
      onPeerConnected: (peer) => {
        if (life.alive) events.onPeerConnected?.(peer);
      },
      onPeerDisconnected: (peer) => {
        if (life.alive) events.onPeerDisconnected?.(peer);
      },
    });
  }

  subscribe(topic: string, handler: MessageHandler, validator?: MessageValidator): void {
    if (!this.life.alive) return;
    const life = this.life;
    const fencedHandler = (message: MeshMessage): void => {
      if (life.alive) handler(message);
    };
    if (validator === undefined) this.inner.subscribe(topic, fencedHandler);
    else this.inner.subscribe(topic, fencedHandler, (message) => (life.alive ? validator(message) : 'ignore'));
  }

  unsubscribe(topic: string): void {
    if (this.life.alive) this.inner.unsubscribe(topic);
  }

  publish(topic: string, data: Uint8Array): Promise<void> {
    return this.fence(() => this.inner.publish(topic, data));
  }

  handle(protocol: string, handler: RequestHandler): void {
    if (!this.life.alive) return;
    const life = this.life;
    this.inner.handle(protocol, (from, request) => (life.alive ? this.fence(() => handler(from, request)) : never()));
  }

  request(peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    return this.fence(() => this.inner.request(peer, protocol, data, options));
  }

  /** Runs `operation` if alive, and passes its outcome on only while still alive. */
  private fence<T>(operation: () => Promise<T>): Promise<T> {
    const life = this.life;
    if (!life.alive) return never();
    return new Promise<T>((resolve, reject) => {
      let pending: Promise<T>;
      try {
        pending = operation();
      } catch (error) {
        pending = Promise.reject(error);
      }
      pending.then(
        (value) => {
          if (life.alive) resolve(value);
        },
        (error: unknown) => {
          if (life.alive) reject(error);
        },
      );
    });
  }
}
