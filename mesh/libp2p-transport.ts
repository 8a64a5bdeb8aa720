/**
 * The production MeshTransport: libp2p 2.x over TCP with a private-network key (pnet), noise,
 * yamux, identify and gossipsub (StrictSign).
 *
 * What a cell gets from it:
 * - `publish`/`subscribe` are gossipsub topics. The cell's own messages go straight to every
 *   connected subscriber (`floodPublish`), so in a fully connected cluster a publish is one hop;
 *   relayed delivery (a line A-B-C) needs the gossipsub mesh, which forms within a heartbeat or
 *   two of the subscriptions being exchanged (about 1-2 s after connecting).
 * - `request` opens one libp2p stream per call: the caller writes one length-prefixed frame, the
 *   peer answers one length-prefixed frame whose first byte is a status (0 ok, 1 the handler
 *   failed, followed by its UTF-8 message).
 * - Only the cells that hold the cluster secret can connect: the private network protector
 *   (private-network.ts: pnet's xsalsa20 with a key derived from the secret) wraps every TCP
 *   connection before noise runs, so a node with another secret is refused after its first
 *   bytes and never reaches noise, identify, gossipsub or a handler. During a rotation a cell
 *   accepts several secrets inbound and dials with one.
 * - Outsiders cannot crowd cells out: inbound connections that have not proven the secret get a
 *   short deadline and a bounded share of libp2p's pending inbound slots (the oldest go first),
 *   and the rest of the slots are kept for connections that have proven it.
 *
 * What it deliberately leaves out: mDNS, the DHT, circuit relay, UPnP, AutoNAT and bootstrap
 * lists. Cells learn each other from configuration and the gossiped directory; libp2p itself
 * never dials a peer that the mesh core did not name.
 */
import { createHash } from 'node:crypto';
import { chmod, link, mkdir, open, readFile, rm, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { gossipsub, type GossipsubEvents } from '@chainsafe/libp2p-gossipsub';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { identify, type Identify } from '@libp2p/identify';
import {
  StrictSign,
  TopicValidatorResult,
  type ConnectionGater,
  type IncomingStreamData,
  type Libp2p,
  type Message,
  type PeerId as Libp2pPeerId,
  type PrivateKey,
  type PubSub,
  type Stream,
} from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { tcp } from '@libp2p/tcp';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { lpStream } from 'it-length-prefixed-stream';
import { createLibp2p } from 'libp2p';
import { ClusterPrivateNetwork } from './private-network.js';
import {
  MeshTransportError,
  type MeshMessage,
  type MeshTransport,
  type MeshTransportErrorCode,
  type MessageHandler,
  type MessageValidator,
  type PeerEvents,
  type PeerId,
  type RequestHandler,
  type RequestOptions,
  type ValidationResult,
} from './transport.js';

const MEBIBYTE = 1024 * 1024;

/** Every default of the adapter in one place; those an operator may need to tune are in `Libp2pTransportInit`. */
export const LIBP2P_TRANSPORT_DEFAULTS = {
  /** Loopback unless the operator says otherwise: a cell never listens on every interface by accident. */
  listenHost: '127.0.0.1',
  /** 0 lets the operating system pick a free port (tests, one-off runs). */
  listenPort: 0,
  /**
   * Gossipsub's heartbeat (its default is 1 s). The heartbeat grafts peers into the mesh, repairs
   * it after a peer leaves and emits IHAVE gossip for messages a peer may have missed. A LAN
   * cluster of tens of cells can afford 700 ms: mesh formation and repair after a partition
   * heals come ~30% sooner, at the price of ~1.4 small control rounds per second per peer.
   * The message cache then covers 5 heartbeats (3.5 s) and gossip the last 3 (2.1 s).
   */
  heartbeatIntervalMs: 700,
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

/** The structured logger the adapter reports to (pino's signature; a pino logger fits). */
export interface TransportLogger {
  debug(fields: object, message?: string): void;
  warn(fields: object, message?: string): void;
}

const silentTransportLogger: TransportLogger = { debug: () => {}, warn: () => {} };

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

type Settings = {
  -readonly [Key in keyof typeof LIBP2P_TRANSPORT_DEFAULTS]: (typeof LIBP2P_TRANSPORT_DEFAULTS)[Key] extends string
    ? string
    : number;
};

/** The signals one call listens to; kept together so a failure is classified by its cause. */
interface CallSignals {
  /** This transport's stop signal as it was when the call began. */
  readonly stop: AbortSignal;
  readonly caller?: AbortSignal | undefined;
  readonly timeout?: AbortSignal | undefined;
}

type MeshServices = { pubsub: PubSub<GossipsubEvents>; identify: Identify };
type MeshNode = Libp2p<MeshServices>;

interface Subscription {
  readonly handler: MessageHandler;
  readonly validator: MessageValidator | undefined;
}

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

/**
 * Loads the Ed25519 key at `keyPath`, or creates it (file mode 0600, parent folders 0700) when
 * the file does not exist, so a cell keeps its peer id across restarts. The file holds libp2p's
 * protobuf encoding of the private key. Creation writes a temporary file and links it into place,
 * so a crash never leaves a half-written key and two processes racing agree on one key.
 * A file with looser permissions is tightened to 0600; a file that does not decode is an error,
 * never silently replaced (that would change the cell's identity).
 */
export async function loadOrCreatePeerKey(keyPath: string): Promise<PrivateKey> {
  const existing = await readKeyFile(keyPath);
  if (existing !== undefined) return existing;
  await mkdir(dirname(keyPath), { recursive: true, mode: 0o700 });
  const key = await generateKeyPair('Ed25519');
  const temporaryPath = `${keyPath}.${process.pid}.tmp`;
  await rm(temporaryPath, { force: true }); // left by a crashed process that had the same pid
  const file = await open(temporaryPath, 'wx', 0o600);
  try {
    await file.writeFile(privateKeyToProtobuf(key));
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await link(temporaryPath, keyPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await unlink(temporaryPath);
  }
  // Another process may have won the race: whatever is at keyPath now is the identity.
  const stored = await readKeyFile(keyPath);
  if (stored === undefined) throw new Error(`peer key file ${keyPath} vanished while it was being created`);
  return stored;
}

async function readKeyFile(keyPath: string): Promise<PrivateKey | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(keyPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const { mode } = await stat(keyPath);
  if ((mode & 0o077) !== 0) await chmod(keyPath, 0o600);
  let key: PrivateKey;
  try {
    key = privateKeyFromProtobuf(bytes);
  } catch (error) {
    throw new Error(`peer key file ${keyPath} is not a libp2p private key`, { cause: error });
  }
  if (key.type !== 'Ed25519') throw new Error(`peer key file ${keyPath} holds a ${key.type} key, not Ed25519`);
  return key;
}

/** Builds the libp2p node (not started) and wraps it; call `start()` before use. */
export async function createLibp2pTransport(init: Libp2pTransportInit): Promise<Libp2pMeshTransport> {
  const settings = resolveSettings(init);
  const blockedPeers = new Set<PeerId>();
  const privateNetwork = new ClusterPrivateNetwork({
    dialKey: deriveNetworkKey(init.clusterSecret),
    acceptKeys: (init.acceptClusterSecrets ?? []).map((secret) => deriveNetworkKey(secret)),
    handshakeTimeoutMs: settings.privateNetworkHandshakeTimeoutMs,
    maxUnauthenticatedInbound: settings.maxUnauthenticatedInbound,
  });
  const node: MeshNode = await createLibp2p({
    start: false,
    ...(init.privateKey === undefined ? {} : { privateKey: init.privateKey }),
    addresses: { listen: [listenAddress(settings.listenHost, settings.listenPort)] },
    transports: [tcp()],
    connectionProtector: (components) => privateNetwork.protector(components),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: blockingGater(blockedPeers, privateNetwork),
    connectionManager: {
      dialTimeout: settings.dialTimeoutMs,
      // libp2p refuses inbound connections beyond this before the protector sees them: the
      // protector keeps unauthenticated ones to their share, the rest is for proven cells.
      maxIncomingPendingConnections: settings.maxUnauthenticatedInbound + settings.maxAuthenticatedPendingInbound,
      // A proven cell whose upgrade stalls holds a pending slot; free it when a dial would give up.
      inboundUpgradeTimeout: settings.dialTimeoutMs,
      inboundConnectionThreshold: settings.inboundConnectionsPerHostPerSecond,
    },
    // No peerDiscovery, peerRouters or contentRouters: libp2p only dials what the mesh core names.
    services: {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: StrictSign,
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        heartbeatInterval: settings.heartbeatIntervalMs,
        // Every cell speaks gossipsub; a floodsub fallback would only widen what peers may send.
        fallbackToFloodsub: false,
        // A cell's own messages go to every subscribed peer it is connected to, not only its mesh.
        floodPublish: true,
        // No peer exchange: cells learn each other from configuration and the directory only.
        doPX: false,
        // Every peer holds the cluster secret, and several cells may share one IP (a host running
        // a few cells, tests on 127.0.0.1): the colocation penalty would only hurt honest cells.
        scoreParams: { IPColocationFactorWeight: 0 },
        maxOutboundBufferSize: settings.maxOutboundBufferBytes,
      }),
    },
  });
  return new Libp2pMeshTransport(node, blockedPeers, privateNetwork, settings, init.logger ?? silentTransportLogger);
}

function resolveSettings(init: Libp2pTransportInit): Settings {
  const defaults = LIBP2P_TRANSPORT_DEFAULTS;
  const settings: Settings = {
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

function listenAddress(host: string, port: number): string {
  const family = host.includes(':') ? 'ip6' : 'ip4';
  return `/${family}/${host}/tcp/${port}`;
}

/**
 * The connection gater behind `blockPeers`: a blocked peer can neither be dialled nor connect in.
 * It also tells the private network which connections are inbound (see private-network.ts).
 * Inbound connections are checked right after the noise handshake, the first point where the
 * remote's peer id is proven.
 */
function blockingGater(blockedPeers: ReadonlySet<PeerId>, privateNetwork: ClusterPrivateNetwork): ConnectionGater {
  const isBlocked = (peer: Libp2pPeerId): boolean => blockedPeers.has(peer.toString());
  return {
    denyInboundConnection: (connection) => {
      privateNetwork.expectInbound(connection);
      return false;
    },
    denyDialPeer: isBlocked,
    denyDialMultiaddr: (address: Multiaddr) => {
      const peer = address.getPeerId();
      return peer !== null && blockedPeers.has(peer);
    },
    denyInboundEncryptedConnection: isBlocked,
    denyOutboundEncryptedConnection: isBlocked,
  };
}

/** Response status byte: the first byte of every response frame. */
const ResponseStatus = { Ok: 0, HandlerFailed: 1 } as const;

/** Longest handler error message sent back to the caller, in characters. */
const MAX_ERROR_MESSAGE_CHARS = 1_000;

function okFrame(body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(body.byteLength + 1);
  frame[0] = ResponseStatus.Ok;
  frame.set(body, 1);
  return frame;
}

function failureFrame(message: string): Uint8Array {
  const text = new TextEncoder().encode(message.slice(0, MAX_ERROR_MESSAGE_CHARS));
  const frame = new Uint8Array(text.byteLength + 1);
  frame[0] = ResponseStatus.HandlerFailed;
  frame.set(text, 1);
  return frame;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Thrown inside `exchange` when the peer answered with a handler failure. */
class RemoteFailure extends Error {}

/** An abort signal that fires after `delayMs` of real time, with a timer that can be released early. */
class Deadline {
  private controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly delayMs: number) {
    this.restart();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Starts the delay again with a fresh signal (the old one never fires). */
  restart(): void {
    this.clear();
    const controller = new AbortController();
    this.controller = controller;
    this.timer = setTimeout(() => controller.abort(), this.delayMs); // real-clock-ok: adapter
    this.timer.unref();
  }

  clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer); // real-clock-ok: adapter
    this.timer = undefined;
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function combine(signals: CallSignals): AbortSignal {
  const list = [signals.stop];
  if (signals.caller !== undefined) list.push(signals.caller);
  if (signals.timeout !== undefined) list.push(signals.timeout);
  return AbortSignal.any(list);
}

/** Maps a libp2p or stream failure to the port's typed error, deciding by cause, not by text. */
function failure(error: unknown, signals: CallSignals, what: string): MeshTransportError {
  const detail = error instanceof RemoteFailure ? `remote handler failed: ${error.message}` : errorMessage(error);
  return new MeshTransportError(failureCode(error, signals), `${what}: ${detail}`, { cause: error });
}

function failureCode(error: unknown, signals: CallSignals): MeshTransportErrorCode {
  if (signals.stop.aborted) return 'NOT_STARTED';
  if (signals.caller?.aborted === true) return 'ABORTED';
  if (signals.timeout?.aborted === true) return 'REQUEST_TIMEOUT';
  if (error instanceof RemoteFailure) return 'REMOTE_HANDLER_FAILED';
  const name = error instanceof Error ? error.name : '';
  if (name === 'UnsupportedProtocolError') return 'PROTOCOL_UNSUPPORTED';
  // The peer answered with more than maxResponseBytes: its handler's answer is unusable here.
  if (name === 'InvalidDataLengthError') return 'REMOTE_HANDLER_FAILED';
  return 'PEER_UNREACHABLE';
}

/**
 * The libp2p adapter of the MeshTransport port. Besides the port it offers `blockPeers` and
 * `unblockPeers`, an operator and test tool that simulates a partition by blocking the libp2p
 * connections to chosen peers.
 */
export class Libp2pMeshTransport implements MeshTransport {
  readonly self: PeerId;
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly handlers = new Map<string, RequestHandler>();
  private readonly registeredProtocols = new Set<string>();
  private peerEvents: PeerEvents = {};
  private running = false;
  private target: 'started' | 'stopped' = 'stopped';
  private lifecycle: Promise<void> = Promise.resolve();
  /** Aborted by `stop()`, so that pending requests reject at once. */
  private stopController = new AbortController();
  /** Peer store writes from `addPeerAddresses`, awaited before any dial so they are visible. */
  private peerStoreWrites: Promise<void> = Promise.resolve();

  constructor(
    private readonly node: MeshNode,
    private readonly blockedPeers: Set<PeerId>,
    private readonly privateNetwork: ClusterPrivateNetwork,
    private readonly settings: Settings,
    private readonly logger: TransportLogger,
  ) {
    this.self = node.peerId.toString();
    node.addEventListener('peer:connect', (event) => this.notifyPeer('onPeerConnected', event.detail));
    node.addEventListener('peer:disconnect', (event) => this.notifyPeer('onPeerDisconnected', event.detail));
    node.services.pubsub.addEventListener('message', (event) => this.deliver(event.detail));
  }

  addresses(): string[] {
    const suffix = `/p2p/${this.self}`;
    return this.node.getMultiaddrs().map((address) => {
      const text = address.toString();
      return text.endsWith(suffix) ? text : `${text}${suffix}`;
    });
  }

  /** Starts listening; subscriptions and handlers registered before take effect now. */
  start(): Promise<void> {
    return this.transition('started', () => this.startNode());
  }

  /** Closes every connection; pending requests reject with NOT_STARTED. Idempotent. */
  stop(): Promise<void> {
    return this.transition('stopped', () => this.stopNode());
  }

  async dial(address: string, options: { signal?: AbortSignal } = {}): Promise<PeerId> {
    this.assertRunning('dial');
    const signals: CallSignals = { stop: this.stopController.signal, caller: options.signal };
    // libp2p applies its own dial timeout only when the caller passes no signal; this one always does.
    const connectDeadline = new Deadline(this.settings.dialTimeoutMs);
    try {
      await this.peerStoreWrites;
      const signal = AbortSignal.any([combine(signals), connectDeadline.signal]);
      const connection = await this.node.dial(multiaddr(address), { signal });
      return connection.remotePeer.toString();
    } catch (error) {
      throw failure(error, signals, `dial ${address}`);
    } finally {
      connectDeadline.clear();
    }
  }

  addPeerAddresses(peer: PeerId, addresses: readonly string[]): void {
    const multiaddrs = addresses.map((address) => multiaddr(address));
    const peerId = peerIdFromString(peer);
    this.peerStoreWrites = this.peerStoreWrites
      .then(() => this.node.peerStore.merge(peerId, { multiaddrs }))
      .then(
        () => undefined,
        (error: unknown) => this.logger.warn({ peer, error: errorMessage(error) }, 'recording peer addresses failed'),
      );
  }

  async hangUp(peer: PeerId): Promise<void> {
    if (!this.running) return;
    await this.node.hangUp(peerIdFromString(peer));
  }

  connectedPeers(): PeerId[] {
    return this.node.getPeers().map((peer) => peer.toString());
  }

  setPeerEvents(events: PeerEvents): void {
    this.peerEvents = events;
  }

  /** A later call for the same topic replaces the handler and the validator. */
  subscribe(topic: string, handler: MessageHandler, validator?: MessageValidator): void {
    this.subscriptions.set(topic, { handler, validator });
    const validators = this.node.services.pubsub.topicValidators;
    if (validator === undefined) validators.delete(topic);
    else validators.set(topic, (_relayer, message) => this.validate(validator, message));
    if (this.running) this.node.services.pubsub.subscribe(topic);
  }

  unsubscribe(topic: string): void {
    this.subscriptions.delete(topic);
    this.node.services.pubsub.topicValidators.delete(topic);
    if (this.running) this.node.services.pubsub.unsubscribe(topic);
  }

  /** Copies `data`, so the caller may reuse its buffer once the call returns. */
  async publish(topic: string, data: Uint8Array): Promise<void> {
    this.assertRunning('publish');
    if (data.byteLength > this.settings.maxPublishBytes) {
      throw new RangeError(`a message of ${data.byteLength} bytes exceeds maxPublishBytes (${this.settings.maxPublishBytes})`);
    }
    await this.node.services.pubsub.publish(topic, data.slice());
  }

  /** A later call for the same protocol replaces the handler. */
  handle(protocol: string, handler: RequestHandler): void {
    this.handlers.set(protocol, handler);
    if (this.running) this.registerProtocol(protocol);
  }

  async request(peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    this.assertRunning('request');
    if (data.byteLength > this.settings.maxRequestBytes) {
      throw new RangeError(`a request of ${data.byteLength} bytes exceeds maxRequestBytes (${this.settings.maxRequestBytes})`);
    }
    const requestDeadline = new Deadline(options.timeoutMs);
    const connectDeadline = new Deadline(this.settings.dialTimeoutMs);
    const signals: CallSignals = { stop: this.stopController.signal, caller: options.signal, timeout: requestDeadline.signal };
    const signal = combine(signals);
    try {
      await this.peerStoreWrites;
      // Opening the stream (connecting first if needed) is bounded by the dial timeout as well:
      // a peer that cannot be reached within it is unreachable, not slow.
      const openSignal = AbortSignal.any([signal, connectDeadline.signal]);
      const stream = await this.node.dialProtocol(peerIdFromString(peer), protocol, { signal: openSignal });
      connectDeadline.clear();
      return await this.exchange(stream, data, signal);
    } catch (error) {
      throw failure(error, signals, `request ${protocol} to ${peer}`);
    } finally {
      requestDeadline.clear();
      connectDeadline.clear();
    }
  }

  /**
   * Simulates a partition by blocking the libp2p connections to `peers`: existing connections are
   * closed, dials to them are refused and their inbound connections are dropped after the
   * handshake. For operators (isolate a misbehaving cell) and tests; a cell never calls it.
   * The block is this side's: a blocked peer that dials in finishes its half of the handshake
   * before this side refuses, so its dial may resolve for an instant before the connection
   * closes (and it sees connect/disconnect events). Block on both sides for a quiet partition.
   */
  async blockPeers(peers: readonly PeerId[]): Promise<void> {
    for (const peer of peers) this.blockedPeers.add(peer);
    await Promise.all(peers.map((peer) => this.hangUp(peer)));
  }

  /**
   * Inbound connections waiting to prove the cluster secret now, and how many such connections
   * newer ones have evicted since the start: how a connection flood looks from this cell.
   */
  unauthenticatedInbound(): { waiting: number; evicted: number } {
    return { waiting: this.privateNetwork.unauthenticatedInbound, evicted: this.privateNetwork.evictions };
  }

  /** Lifts `blockPeers`; connections come back when either side dials again. */
  unblockPeers(peers: readonly PeerId[]): void {
    for (const peer of peers) this.blockedPeers.delete(peer);
  }

  /** Runs lifecycle steps one after another; asking for the state already asked for is a no-op. */
  private transition(target: 'started' | 'stopped', step: () => Promise<void>): Promise<void> {
    if (this.target === target) return this.lifecycle;
    this.target = target;
    this.lifecycle = this.lifecycle.catch(() => undefined).then(step);
    return this.lifecycle;
  }

  private async startNode(): Promise<void> {
    this.stopController = new AbortController();
    try {
      await this.node.start();
    } catch (error) {
      this.target = 'stopped';
      throw error;
    }
    this.running = true;
    for (const topic of this.subscriptions.keys()) this.node.services.pubsub.subscribe(topic);
    for (const protocol of this.handlers.keys()) this.registerProtocol(protocol);
  }

  private async stopNode(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stopController.abort();
    await this.node.stop();
  }

  private assertRunning(operation: string): void {
    if (!this.running) throw new MeshTransportError('NOT_STARTED', `${operation}: the transport is not started`);
  }

  /** Registers one libp2p stream handler per protocol; it looks the current handler up per stream. */
  private registerProtocol(protocol: string): void {
    if (this.registeredProtocols.has(protocol)) return;
    this.registeredProtocols.add(protocol);
    const limit = this.settings.maxConcurrentRequestsPerPeer;
    this.node
      .handle(protocol, (incoming) => this.serve(protocol, incoming), {
        maxInboundStreams: limit,
        maxOutboundStreams: limit,
      })
      .catch((error: unknown) => this.logger.warn({ protocol, error: errorMessage(error) }, 'registering a protocol failed'));
  }

  /** Serves one inbound request stream: read one frame, run the handler, answer one frame. */
  private async serve(protocol: string, { stream, connection }: IncomingStreamData): Promise<void> {
    const from = connection.remotePeer.toString();
    const frames = lpStream(stream, { maxDataLength: this.settings.maxRequestBytes });
    const readDeadline = new Deadline(this.settings.inboundRequestReadTimeoutMs);
    const writeDeadline = new Deadline(this.settings.streamCloseTimeoutMs);
    try {
      let answer: Uint8Array;
      try {
        const readSignal = combine({ stop: this.stopController.signal, timeout: readDeadline.signal });
        const request = (await frames.read({ signal: readSignal })).slice();
        readDeadline.clear();
        answer = await this.answer(protocol, from, request);
      } catch (error) {
        if (!(error instanceof Error) || error.name !== 'InvalidDataLengthError') throw error;
        answer = failureFrame(`request larger than ${this.settings.maxRequestBytes} bytes refused`);
      }
      writeDeadline.restart();
      const writeSignal = combine({ stop: this.stopController.signal, timeout: writeDeadline.signal });
      await frames.write(answer, { signal: writeSignal });
      await stream.close({ signal: writeSignal });
    } catch (error) {
      this.logger.debug({ protocol, from, error: errorMessage(error) }, 'inbound request stream failed');
      stream.abort(asError(error));
    } finally {
      readDeadline.clear();
      writeDeadline.clear();
    }
  }

  /** Runs the handler and turns its outcome (or its failure) into a response frame. */
  private async answer(protocol: string, from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    const handler = this.handlers.get(protocol);
    if (handler === undefined) return failureFrame(`no handler for ${protocol}`);
    try {
      const response = await handler(from, request);
      if (response.byteLength > this.settings.maxResponseBytes) {
        return failureFrame(`response of ${response.byteLength} bytes exceeds ${this.settings.maxResponseBytes}`);
      }
      return okFrame(response);
    } catch (error) {
      return failureFrame(errorMessage(error));
    }
  }

  /** The caller's half of a request: write one frame, read one frame back, close the stream. */
  private async exchange(stream: Stream, data: Uint8Array, signal: AbortSignal): Promise<Uint8Array> {
    const frames = lpStream(stream, { maxDataLength: this.settings.maxResponseBytes + 1 });
    try {
      await frames.write(data, { signal });
      const frame = (await frames.read({ signal })).slice();
      this.closeQuietly(stream);
      if (frame[0] === ResponseStatus.Ok) return frame.subarray(1);
      throw new RemoteFailure(new TextDecoder().decode(frame.subarray(1)));
    } catch (error) {
      if (!(error instanceof RemoteFailure)) stream.abort(asError(error));
      throw error;
    }
  }

  private closeQuietly(stream: Stream): void {
    const closeDeadline = new Deadline(this.settings.streamCloseTimeoutMs);
    stream
      .close({ signal: closeDeadline.signal })
      .catch((error: unknown) => stream.abort(asError(error)))
      .finally(() => closeDeadline.clear());
  }

  /** Runs the topic's validator on a received message; a throwing validator ignores the message. */
  private validate(validator: MessageValidator, message: Message): TopicValidatorResult {
    if (message.type !== 'signed') return TopicValidatorResult.Reject;
    let result: ValidationResult;
    try {
      result = validator({ from: message.from.toString(), topic: message.topic, data: message.data });
    } catch (error) {
      this.logger.warn({ topic: message.topic, error: errorMessage(error) }, 'topic validator threw; message ignored');
      return TopicValidatorResult.Ignore;
    }
    if (result === 'accept') return TopicValidatorResult.Accept;
    if (result === 'reject') return TopicValidatorResult.Reject;
    return TopicValidatorResult.Ignore;
  }

  /** Hands a received message to its topic's handler, with a buffer of the handler's own. */
  private deliver(message: Message): void {
    if (message.type !== 'signed') return;
    const subscription = this.subscriptions.get(message.topic);
    if (subscription === undefined) return;
    const meshMessage: MeshMessage = { from: message.from.toString(), topic: message.topic, data: message.data.slice() };
    try {
      subscription.handler(meshMessage);
    } catch (error) {
      this.logger.warn({ topic: message.topic, error: errorMessage(error) }, 'message handler threw');
    }
  }

  private notifyPeer(event: keyof PeerEvents, peer: Libp2pPeerId): void {
    try {
      this.peerEvents[event]?.(peer.toString());
    } catch (error) {
      this.logger.warn({ event, peer: peer.toString(), error: errorMessage(error) }, 'peer event handler threw');
    }
  }
}
