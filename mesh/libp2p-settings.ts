/**
 * The libp2p transport's settings: every default in one place, what an operator may set
 * (Libp2pTransportInit), their resolution, and the private network key derived from the cluster
 * secret.
 */
import { createHash } from 'node:crypto';
import type { PrivateKey } from '@libp2p/interface';

const MEBIBYTE = 1024 * 1024;

/** Every default of the adapter in one place; those an operator may need to tune are in `Libp2pTransportInit`. */
export const LIBP2P_TRANSPORT_DEFAULTS = {
  /** Loopback unless the operator says otherwise: a cell never listens on every interface by accident. */
  listenHost: '127.0.0.1',
  /** 0 lets the operating system pick a free port (tests, one-off runs). */
  listenPort: 0,
  /**
   * Gossipsub's heartbeat (its default is 1 s; not the membership heartbeat of
   * mesh/membership-config.ts). Each one maintains the topic meshes (graft below Dlo, prune
   * above Dhi), sends IHAVE gossip (GOSSIPSUB_PARAMETERS) and decays the peer scores. A cell's own
   * messages go straight to every connected peer (flood publish), and below `maxConnections`
   * cells every cell is connected to every other, so the mesh only relays and repairs: 1 s is
   * often enough (docs/mesh.md, "Gossipsub").
   */
  heartbeatIntervalMs: 1_000,
  /**
   * How long opening a connection may take (TCP, pnet, noise, yamux), dialling out or accepting
   * in; libp2p's default is 10 s. It also bounds a request's connecting phase. A cell dialling
   * a cell with another cluster secret is refused once its first bytes arrive there.
   */
  dialTimeoutMs: 5_000,
  /** Largest request body a peer accepts; larger requests are refused before the handler runs. */
  maxRequestBytes: 1 * MEBIBYTE,
  /** Largest response body; a handler's larger answer is turned into a handler error. */
  maxResponseBytes: 4 * MEBIBYTE,
  /** Largest published message; gossipsub's own inbound RPC limit is 4 MiB per frame. */
  maxPublishBytes: 1 * MEBIBYTE,
  /** Concurrent request streams per protocol per connection, in each direction. */
  maxConcurrentRequestsPerPeer: 64,
  /** An inbound request whose frame has not fully arrived after this long is dropped. */
  inboundRequestReadTimeoutMs: 10_000,
  /** Bound on writing a response and closing the stream gracefully. */
  streamCloseTimeoutMs: 5_000,
  /**
   * New inbound connections accepted per second from one IP address (libp2p's default is 5).
   * Several cells may share a host (a demo, tests, a machine running a few cells), and after a
   * partition heals they all redial at once; 50 still stops a connection flood from one host.
   */
  inboundConnectionsPerHostPerSecond: 50,
  /** Bytes gossipsub may queue for one slow peer before it drops further RPCs to it. */
  maxOutboundBufferBytes: 16 * MEBIBYTE,
  /**
   * An inbound connection must prove the cluster secret within this (the nonce exchange and the
   * dialer's first encrypted bytes: one and a half round trips); an outbound one must finish the
   * nonce exchange within it.
   */
  privateNetworkHandshakeTimeoutMs: 3_000,
  /**
   * Inbound connections that have not proven the cluster secret yet, at most; a new one evicts
   * the oldest. An outsider can hold this many slots, never more, and only until newer
   * connections (the next dial of a cell among them) push its connections out.
   */
  maxUnauthenticatedInbound: 16,
  /**
   * Inbound connections that have proven the secret and are still being upgraded (noise, yamux),
   * at most; libp2p's pending inbound limit is this plus maxUnauthenticatedInbound, so outsiders
   * never take these slots. 16 is more than libp2p's whole default (10), which cells redialling
   * together after a partition already shared.
   */
  maxAuthenticatedPendingInbound: 16,
  /** The shortest cluster secret accepted: the secret is the cluster's only admission control. */
  minClusterSecretBytes: 16,
} as const;

/**
 * Gossipsub's parameters for cellmesh's traffic: small messages (heartbeats, records, claims,
 * locate queries), each published by flood to every connected cell (every cell, up to
 * `maxConnections`), so that the gossipsub mesh relays only what a direct send missed: a cell not
 * connected to the publisher (past `maxConnections` cells, or a broken link), a message lost in a
 * closing connection. Every message a mesh peer relays to a cell that had it from the publisher
 * is a duplicate it receives, decodes and drops: with libp2p's defaults (D = 6) a cell of a
 * 10-cell cluster received each message about 6 times, from the publisher and from its mesh
 * peers. Measured one by one with `npm run bench -- mesh` (docs/mesh.md, "Gossipsub";
 * docs/benchmarks.md, mesh section).
 */
export const GOSSIPSUB_PARAMETERS = {
  /**
   * Mesh degree: the peers a cell relays others' messages to, per topic (gossipsub's default is 6,
   * within 4..12). 3 (within 2..4) still gives every cell two or more relay paths and keeps the mesh
   * of a partly connected cluster connected, at half the duplicates.
   */
  D: 3,
  Dlo: 2,
  Dhi: 4,
  /** Of the mesh peers kept when pruning, at least this many by score (default 4; at most D). */
  Dscore: 1,
  /** Of the mesh peers, at least this many outbound (default 2; below Dlo and at most D / 2). */
  Dout: 1,
  /**
   * IHAVE gossip goes to max(Dlazy, gossipFactor x non-mesh peers) peers outside the mesh each
   * heartbeat (defaults 6 and 0.25), listing every message id of the last `mcacheGossip`
   * heartbeats. A connected cell had every one from the publisher, so past the mesh size this was
   * a growing list sent to a growing number of peers only to be found known. 2 peers keep the
   * repair path of a cell a relay missed.
   */
  Dlazy: 2,
  gossipFactor: 0,
  /** Heartbeats a message stays in the cache that answers IWANT (default 5). */
  mcacheLength: 5,
  /** Heartbeats of message ids listed in IHAVE (default 3). */
  mcacheGossip: 2,
} as const;

/**
 * Gossipsub's fast message id: the publisher's peer id and sequence number, the pair the message
 * id is made of under StrictSign, read from the frame before anything is checked. Without it,
 * gossipsub verifies the signature of every copy it receives before finding the copy in its seen
 * cache: each duplicate a mesh peer relayed cost an Ed25519 verification. Only a copy that passed
 * the checks is cached under its fast id, so a forged copy cannot shadow the real message.
 */
export function fastMessageId(message: { from?: Uint8Array | undefined; seqno?: Uint8Array | undefined }): string {
  const hex = (bytes: Uint8Array | undefined): string =>
    bytes === undefined ? '' : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
  return `${hex(message.from)}/${hex(message.seqno)}`;
}

/** The structured logger the adapter reports to (pino's signature; a pino logger fits). */
export interface TransportLogger {
  debug(fields: object, message?: string): void;
  warn(fields: object, message?: string): void;
}

export const silentTransportLogger: TransportLogger = { debug: () => {}, warn: () => {} };

export interface Libp2pTransportInit {
  /**
   * The secret shared by every cell of the cluster (at least 16 bytes, ideally 32 random bytes,
   * e.g. `openssl rand -hex 32`). The private network key is derived from it; see `deriveNetworkKey`.
   */
  readonly clusterSecret: string | Uint8Array;
  /**
   * Further cluster secrets accepted from dialling cells (not used to dial): the other secret of
   * a rotation (docs/operations.md). Same length rule as clusterSecret.
   */
  readonly acceptClusterSecrets?: readonly (string | Uint8Array)[];
  readonly privateNetworkHandshakeTimeoutMs?: number;
  readonly maxUnauthenticatedInbound?: number;
  /** The key behind the peer id; keep it in a file (`loadOrCreatePeerKey`) for a stable id. */
  readonly privateKey?: PrivateKey;
  readonly listenHost?: string;
  readonly listenPort?: number;
  readonly heartbeatIntervalMs?: number;
  readonly dialTimeoutMs?: number;
  readonly maxRequestBytes?: number;
  readonly maxResponseBytes?: number;
  readonly maxPublishBytes?: number;
  readonly maxConcurrentRequestsPerPeer?: number;
  readonly inboundRequestReadTimeoutMs?: number;
  readonly inboundConnectionsPerHostPerSecond?: number;
  readonly logger?: TransportLogger;
}

/** The resolved settings: every default, with what the init sets. */
export type Libp2pSettings = {
  -readonly [Key in keyof typeof LIBP2P_TRANSPORT_DEFAULTS]: (typeof LIBP2P_TRANSPORT_DEFAULTS)[Key] extends string
    ? string
    : number;
};

const PSK_DOMAIN_SEPARATOR = 'cellmesh/pnet-psk/v1\n';

/**
 * Derives the 32-byte private network key (pnet's pre-shared key) from a cluster secret.
 *
 * Why hashing a configured secret is defensible: the key must be 32 bytes that every cell agrees
 * on, and SHA-256 of a high-entropy secret is as good as 32 random bytes while letting operators
 * configure one string instead of distributing a key file. The domain separator keeps the key
 * distinct from any other use of the same secret (for example signing tokens). What hashing
 * cannot do is add entropy: a guessable secret can be tried offline against a captured
 * handshake, which is why short secrets are refused and 32 random bytes are recommended.
 */
export function deriveNetworkKey(clusterSecret: string | Uint8Array): Uint8Array {
  const secretBytes = typeof clusterSecret === 'string' ? Buffer.from(clusterSecret, 'utf8') : clusterSecret;
  if (secretBytes.byteLength < LIBP2P_TRANSPORT_DEFAULTS.minClusterSecretBytes) {
    throw new RangeError(
      `the cluster secret has ${secretBytes.byteLength} bytes; at least ` +
        `${LIBP2P_TRANSPORT_DEFAULTS.minClusterSecretBytes} are required (use 32 random bytes, e.g. openssl rand -hex 32)`,
    );
  }
  return new Uint8Array(createHash('sha256').update(PSK_DOMAIN_SEPARATOR).update(secretBytes).digest());
}

/** The settings of `init`, defaults filled in; throws RangeError on a listen port out of range. */
export function resolveSettings(init: Libp2pTransportInit): Libp2pSettings {
  const defaults = LIBP2P_TRANSPORT_DEFAULTS;
  const settings: Libp2pSettings = {
    ...defaults,
    listenHost: init.listenHost ?? defaults.listenHost,
    listenPort: init.listenPort ?? defaults.listenPort,
    heartbeatIntervalMs: init.heartbeatIntervalMs ?? defaults.heartbeatIntervalMs,
    dialTimeoutMs: init.dialTimeoutMs ?? defaults.dialTimeoutMs,
    maxRequestBytes: init.maxRequestBytes ?? defaults.maxRequestBytes,
    maxResponseBytes: init.maxResponseBytes ?? defaults.maxResponseBytes,
    maxPublishBytes: init.maxPublishBytes ?? defaults.maxPublishBytes,
    maxConcurrentRequestsPerPeer: init.maxConcurrentRequestsPerPeer ?? defaults.maxConcurrentRequestsPerPeer,
    inboundRequestReadTimeoutMs: init.inboundRequestReadTimeoutMs ?? defaults.inboundRequestReadTimeoutMs,
    inboundConnectionsPerHostPerSecond:
      init.inboundConnectionsPerHostPerSecond ?? defaults.inboundConnectionsPerHostPerSecond,
    privateNetworkHandshakeTimeoutMs: init.privateNetworkHandshakeTimeoutMs ?? defaults.privateNetworkHandshakeTimeoutMs,
    maxUnauthenticatedInbound: init.maxUnauthenticatedInbound ?? defaults.maxUnauthenticatedInbound,
  };
  if (!Number.isInteger(settings.listenPort) || settings.listenPort < 0 || settings.listenPort > 65_535) {
    throw new RangeError(`listenPort must be an integer in 0..65535, got ${settings.listenPort}`);
  }
  return settings;
}
