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
 * Its parts: settings and the network key (libp2p-settings.ts), topics (libp2p-gossip.ts),
 * requests (libp2p-requests.ts), call deadlines and failures (libp2p-calls.ts), the peer key
 * file (peer-key-file.ts). This file builds the node and composes the adapter.
 *
 * What it deliberately leaves out: mDNS, the DHT, circuit relay, UPnP, AutoNAT and bootstrap
 * lists. Cells learn each other from configuration and the gossiped directory; libp2p itself
 * never dials a peer that the mesh core did not name.
 */
import { gossipsub, type GossipsubEvents } from '@chainsafe/libp2p-gossipsub';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify, type Identify } from '@libp2p/identify';
import { StrictSign, type ConnectionGater, type Libp2p, type PeerId as Libp2pPeerId, type PubSub } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { tcp } from '@libp2p/tcp';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { combine, Deadline, errorMessage, failure, type CallSignals } from './libp2p-calls.js';
import { Libp2pGossip } from './libp2p-gossip.js';
import { Libp2pRequests } from './libp2p-requests.js';
import { deriveNetworkKey, fastMessageId, GOSSIPSUB_PARAMETERS, resolveSettings, silentTransportLogger, type Libp2pSettings, type Libp2pTransportInit, type TransportLogger } from './libp2p-settings.js';
import { ClusterPrivateNetwork } from './private-network.js';
import {
  MeshTransportError,
  type MeshTransport,
  type MessageHandler,
  type MessageValidator,
  type PeerEvents,
  type PeerId,
  type RequestHandler,
  type RequestOptions,
} from './transport.js';

type MeshServices = { pubsub: PubSub<GossipsubEvents>; identify: Identify };
type MeshNode = Libp2p<MeshServices>;

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
        // Mesh degree, gossip and message cache for this traffic (docs/mesh.md, "Gossipsub").
        heartbeatInterval: settings.heartbeatIntervalMs,
        ...GOSSIPSUB_PARAMETERS,
        // Duplicates are dropped before their signature is verified again.
        fastMsgIdFn: fastMessageId,
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


/**
 * The libp2p adapter of the MeshTransport port. Besides the port it offers `blockPeers` and
 * `unblockPeers`, an operator and test tool that simulates a partition by blocking the libp2p
 * connections to chosen peers.
 */
export class Libp2pMeshTransport implements MeshTransport {
  readonly self: PeerId;
  private readonly gossip: Libp2pGossip;
  private readonly requests: Libp2pRequests;
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
    private readonly settings: Libp2pSettings,
    private readonly logger: TransportLogger,
  ) {
    this.self = node.peerId.toString();
    node.addEventListener('peer:connect', (event) => this.notifyPeer('onPeerConnected', event.detail));
    node.addEventListener('peer:disconnect', (event) => this.notifyPeer('onPeerDisconnected', event.detail));
    this.gossip = new Libp2pGossip(node.services.pubsub, settings, logger, () => this.running);
    this.requests = new Libp2pRequests(node, settings, logger, () => this.stopController.signal);
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
    this.gossip.subscribe(topic, handler, validator);
  }

  unsubscribe(topic: string): void {
    this.gossip.unsubscribe(topic);
  }

  /** Copies `data`, so the caller may reuse its buffer once the call returns. */
  async publish(topic: string, data: Uint8Array): Promise<void> {
    this.assertRunning('publish');
    await this.gossip.publish(topic, data);
  }

  /** A later call for the same protocol replaces the handler. */
  handle(protocol: string, handler: RequestHandler): void {
    this.requests.handle(protocol, handler, this.running);
  }

  async request(peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    this.assertRunning('request');
    return this.requests.request(peer, protocol, data, options, this.peerStoreWrites);
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
    this.gossip.subscribeAll();
    this.requests.registerAll();
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

  private notifyPeer(event: keyof PeerEvents, peer: Libp2pPeerId): void {
    try {
      this.peerEvents[event]?.(peer.toString());
    } catch (error) {
      this.logger.warn({ event, peer: peer.toString(), error: errorMessage(error) }, 'peer event handler threw');
    }
  }
}
