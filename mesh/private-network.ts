/**
 * The cluster's private network: the libp2p connection protector that lets in only nodes holding
 * an accepted cluster secret, and keeps outsiders from crowding them out.
 *
 * The wire is libp2p's private network (pnet, what `@libp2p/pnet` speaks): each side sends a
 * random 24-byte nonce, then everything it sends is XORed with the XSalsa20 key stream of its
 * own nonce and the 32-byte network key. Outbound connections use `@libp2p/pnet` itself with the
 * key of the current secret. Inbound connections are handled here, for two reasons:
 *
 * - Several keys may be accepted (a secret rotation: docs/operations.md). The listener cannot
 *   tell which key the dialer uses from the nonces, but the first bytes a libp2p dialer sends
 *   through the private network are known: multistream-select's header, `0x13` followed by
 *   `/multistream/1.0.0\n` (the dialer is always the initiator of the encrypter negotiation and
 *   writes first, the listener reads first). So the listener decrypts those 20 bytes with each
 *   accepted key and continues with the one that yields the header. The key stream is
 *   positional, so the chosen key's stream, already advanced by 20 bytes, decrypts the rest;
 *   the dialer's key never changes (pnet uses one key both ways), so the listener also
 *   encrypts with it.
 * - Admission: until those 20 bytes decrypt, a connection proves nothing (anyone can send a
 *   nonce). Such unauthenticated connections get `handshakeTimeoutMs` and at most
 *   `maxUnauthenticatedInbound` of them exist at once: a new one evicts the oldest. libp2p
 *   refuses any inbound connection beyond its pending limit before the protector sees it, so the
 *   transport sets that limit above this share, and a dialer with the secret always finds a slot
 *   and proves itself within a round trip, long before enough newcomers arrive to evict it.
 *   Authenticated connections leave the share at once; nothing here limits them.
 *
 * Which connections are inbound: libp2p's protector interface does not say, so the transport's
 * connection gater calls `expectInbound` from `denyInboundConnection`, which libp2p runs for
 * every inbound connection just before protecting that same connection object.
 */
import { randomBytes } from 'node:crypto';
import type { ComponentLogger, ConnectionProtector, MultiaddrConnection } from '@libp2p/interface';
import { preSharedKey } from '@libp2p/pnet';
import xsalsa20 from 'xsalsa20';
import { untilAborted } from '../platform/abortable.js';

const NONCE_BYTES = 24;
const NETWORK_KEY_BYTES = 32;
/** multistream-select's header as the dialer writes it: varint length 19, then the protocol id. */
const MULTISTREAM_HEADER = new Uint8Array([19, ...new TextEncoder().encode('/multistream/1.0.0\n')]);

export interface PrivateNetworkInit {
  /** The network key this node dials with (32 bytes); it is always accepted inbound as well. */
  readonly dialKey: Uint8Array;
  /** Further network keys accepted from dialers (a rotation's other secret); may be empty. */
  readonly acceptKeys: readonly Uint8Array[];
  /** An inbound connection must prove its key within this; outbound nonce exchanges too. */
  readonly handshakeTimeoutMs: number;
  /** Inbound connections that have not proven a key yet, at most; a new one evicts the oldest. */
  readonly maxUnauthenticatedInbound: number;
}

/** Why an inbound connection was refused before it proved an accepted key. */
export type PrivateNetworkRefusal = 'timeout' | 'evicted' | 'unknown-key' | 'closed';

export class PrivateNetworkRefusedError extends Error {
  override readonly name = 'PrivateNetworkRefusedError';

  constructor(readonly reason: PrivateNetworkRefusal, message: string) {
    super(message);
  }
}

/** The v1 swarm-key file `@libp2p/pnet` reads, holding a raw 32-byte network key. */
function swarmKeyFile(networkKey: Uint8Array): Uint8Array {
  return new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${Buffer.from(networkKey).toString('hex')}`);
}

export class ClusterPrivateNetwork {
  /** Connections the gater announced as inbound and the protector has not taken yet. */
  private readonly expectedInbound = new WeakSet<MultiaddrConnection>();
  /** Unauthenticated inbound connections, oldest first (a Map iterates in insertion order). */
  private readonly unauthenticated = new Map<MultiaddrConnection, AbortController>();
  private readonly acceptedKeys: readonly Uint8Array[];
  private evictedTotal = 0;

  constructor(private readonly init: PrivateNetworkInit) {
    for (const key of [init.dialKey, ...init.acceptKeys]) {
      if (key.byteLength !== NETWORK_KEY_BYTES) throw new RangeError(`a network key has ${NETWORK_KEY_BYTES} bytes, got ${key.byteLength}`);
    }
    if (!Number.isInteger(init.maxUnauthenticatedInbound) || init.maxUnauthenticatedInbound < 1) {
      throw new RangeError(`maxUnauthenticatedInbound must be a positive integer, got ${init.maxUnauthenticatedInbound}`);
    }
    const distinct = new Map<string, Uint8Array>();
    for (const key of [init.dialKey, ...init.acceptKeys]) distinct.set(Buffer.from(key).toString('hex'), key);
    this.acceptedKeys = [...distinct.values()];
  }

  /** Inbound connections waiting to prove a key right now. */
  get unauthenticatedInbound(): number {
    return this.unauthenticated.size;
  }

  /** Unauthenticated inbound connections evicted by newer ones since the start. */
  get evictions(): number {
    return this.evictedTotal;
  }

  /** Called by the connection gater for every inbound connection before it is protected. */
  expectInbound(connection: MultiaddrConnection): void {
    this.expectedInbound.add(connection);
  }

  /** The libp2p `connectionProtector` factory. */
  protector(components: { logger: ComponentLogger }): ConnectionProtector {
    const outbound = preSharedKey({ psk: swarmKeyFile(this.init.dialKey), timeout: this.init.handshakeTimeoutMs })(components);
    return {
      protect: (connection, options) => {
        if (!this.expectedInbound.has(connection)) return outbound.protect(connection, options);
        this.expectedInbound.delete(connection);
        return this.protectInbound(connection, options?.signal);
      },
    };
  }

  private async protectInbound(connection: MultiaddrConnection, upgradeSignal: AbortSignal | undefined): Promise<MultiaddrConnection> {
    const admission = this.admit(connection);
    const deadline = AbortSignal.timeout(this.init.handshakeTimeoutMs); // real-clock-ok: adapter
    const signals = [admission.signal, deadline, ...(upgradeSignal === undefined ? [] : [upgradeSignal])];
    const signal = AbortSignal.any(signals);
    const localNonce = randomBytes(NONCE_BYTES);
    const outgoing = new Outgoing(localNonce);
    const sinkDone = Promise.resolve(connection.sink(outgoing.source())).catch((error: unknown) => {
      connection.log('private network sink ended: %s', error instanceof Error ? error.message : String(error));
    });
    const incoming = connection.source[Symbol.asyncIterator]();
    try {
      const opening = await readAtLeast(incoming, NONCE_BYTES + MULTISTREAM_HEADER.byteLength, signal);
      const remoteNonce = opening.subarray(0, NONCE_BYTES);
      const unbox = this.keyStreamOf(remoteNonce, opening.subarray(NONCE_BYTES, NONCE_BYTES + MULTISTREAM_HEADER.byteLength));
      if (unbox === undefined) {
        throw new PrivateNetworkRefusedError('unknown-key', 'the dialer does not hold an accepted cluster secret');
      }
      outgoing.encryptWith(xsalsa20(localNonce, unbox.key));
      const rest = opening.subarray(NONCE_BYTES + MULTISTREAM_HEADER.byteLength);
      const prefix = Buffer.concat([MULTISTREAM_HEADER, unbox.stream.update(rest)]);
      return {
        ...connection,
        source: decrypted(prefix, incoming, unbox.stream),
        sink: async (source) => {
          outgoing.forward(source);
          await sinkDone;
        },
      };
    } catch (error) {
      outgoing.end();
      throw refusal(error, { admission: admission.signal, deadline, upgrade: upgradeSignal });
    } finally {
      this.unauthenticated.delete(connection);
    }
  }

  /** Counts a new unauthenticated connection in, evicting the oldest when the share is full. */
  private admit(connection: MultiaddrConnection): AbortController {
    while (this.unauthenticated.size >= this.init.maxUnauthenticatedInbound) {
      const [oldest, controller] = this.unauthenticated.entries().next().value as [MultiaddrConnection, AbortController];
      this.unauthenticated.delete(oldest);
      this.evictedTotal += 1;
      controller.abort();
    }
    const controller = new AbortController();
    this.unauthenticated.set(connection, controller);
    return controller;
  }

  /** The accepted key whose stream turns the dialer's first bytes into the header, advanced past them. */
  private keyStreamOf(remoteNonce: Uint8Array, encryptedHeader: Uint8Array): { key: Uint8Array; stream: ReturnType<typeof xsalsa20> } | undefined {
    for (const key of this.acceptedKeys) {
      const stream = xsalsa20(remoteNonce, key);
      if (Buffer.from(stream.update(encryptedHeader)).equals(MULTISTREAM_HEADER)) return { key, stream };
      stream.finalize();
    }
    return undefined;
  }
}

type Chunk = Uint8Array | { subarray(): Uint8Array };

/**
 * What this side sends on an inbound connection: its nonce at once (the dialer waits for it before
 * it writes anything), then, once a key is chosen and libp2p hands over its outgoing data, that
 * data encrypted.
 */
class Outgoing {
  private box: ReturnType<typeof xsalsa20> | undefined;
  private release!: (source: AsyncIterable<Chunk> | undefined) => void;
  private readonly upstream = new Promise<AsyncIterable<Chunk> | undefined>((resolve) => (this.release = resolve));

  constructor(private readonly nonce: Uint8Array) {}

  encryptWith(box: ReturnType<typeof xsalsa20>): void {
    this.box = box;
  }

  forward(source: AsyncIterable<Chunk>): void {
    this.release(source);
  }

  /** Ends the outgoing side after the nonce (the handshake failed). */
  end(): void {
    this.release(undefined);
  }

  async *source(): AsyncGenerator<Uint8Array> {
    yield this.nonce;
    const source = await this.upstream;
    const box = this.box;
    if (source === undefined || box === undefined) return;
    try {
      for await (const chunk of source) yield box.update(chunk.subarray());
    } finally {
      box.finalize();
    }
  }
}

/** The decrypted inbound stream: the bytes already read, then the rest as it arrives. */
async function* decrypted(
  prefix: Uint8Array,
  incoming: AsyncIterator<Chunk>,
  unbox: ReturnType<typeof xsalsa20>,
): AsyncGenerator<Uint8Array> {
  try {
    yield prefix;
    for (;;) {
      const next = await incoming.next();
      if (next.done === true) return;
      yield unbox.update(next.value.subarray());
    }
  } finally {
    unbox.finalize();
  }
}

/** Reads chunks until at least `byteCount` bytes have arrived; all of them are returned. */
async function readAtLeast(incoming: AsyncIterator<Chunk>, byteCount: number, signal: AbortSignal): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  let received = 0;
  while (received < byteCount) {
    const next = await untilAborted(incoming.next(), signal);
    if (next.done === true) throw new PrivateNetworkRefusedError('closed', 'the dialer closed the connection during the private network handshake');
    const bytes = next.value.subarray();
    parts.push(bytes);
    received += bytes.byteLength;
  }
  return Buffer.concat(parts);
}

/** Names the cause of a failed inbound handshake. */
function refusal(error: unknown, signals: { admission: AbortSignal; deadline: AbortSignal; upgrade: AbortSignal | undefined }): Error {
  if (error instanceof PrivateNetworkRefusedError) return error;
  if (signals.admission.aborted) {
    return new PrivateNetworkRefusedError('evicted', 'evicted by newer unauthenticated connections before proving the cluster secret');
  }
  if (signals.deadline.aborted) {
    return new PrivateNetworkRefusedError('timeout', 'the private network handshake did not finish in time');
  }
  if (signals.upgrade?.aborted === true) return signals.upgrade.reason instanceof Error ? signals.upgrade.reason : new Error('upgrade aborted');
  return error instanceof Error ? error : new Error(String(error));
}
