/**
 * The mesh transport port: how one cell talks to the other cells of its cluster.
 *
 * Production wires libp2p (TCP, noise, yamux, a private-network key, gossipsub with StrictSign);
 * tests and the simulator wire an in-memory network on a virtual clock. The mesh core (directory,
 * membership, location, forwarding) sees only this interface, never a libp2p type.
 *
 * Semantics, which every implementation keeps and the compliance suite checks:
 * - `publish` is best effort: it reaches the subscribed peers that are reachable now, at most
 *   once each, possibly in a different order for different receivers; it never reaches the
 *   publisher itself and never throws because nobody listens.
 * - `request` is reliable while the peer is reachable: the handler on the peer runs once per
 *   call and its answer comes back, or the call rejects (timeout, unreachable, handler failed,
 *   aborted). A rejected request may still have run on the peer: callers make requests
 *   idempotent.
 * - Inbound handlers must not block; a handler that throws answers the request with an error.
 * - Buffers handed to handlers belong to the handler; the transport does not reuse them.
 */

import { CodedError } from '../platform/coded-error.js';

/** The identity of a cell's transport endpoint (a libp2p peer id string in production). */
export type PeerId = string;

export interface MeshMessage {
  /** The peer that published (signed) the message; not necessarily the one that relayed it. */
  readonly from: PeerId;
  readonly topic: string;
  readonly data: Uint8Array;
}

/**
 * A topic validator runs before a message is delivered or relayed: `reject` drops it and
 * penalises the peer that relayed it, `ignore` drops it quietly, `accept` delivers and relays.
 */
export type ValidationResult = 'accept' | 'reject' | 'ignore';

export type MessageHandler = (message: MeshMessage) => void;
export type MessageValidator = (message: MeshMessage) => ValidationResult;
export type RequestHandler = (from: PeerId, request: Uint8Array) => Promise<Uint8Array>;

export interface RequestOptions {
  /** The call rejects with MeshTransportError `REQUEST_TIMEOUT` after this long. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export interface PeerEvents {
  onPeerConnected?(peer: PeerId): void;
  onPeerDisconnected?(peer: PeerId): void;
}

export interface MeshTransport {
  /** This endpoint's identity; stable across restarts when the adapter is given the same key. */
  readonly self: PeerId;
  /** Addresses other cells can dial to reach this one (each ends with `/p2p/<self>`). */
  addresses(): string[];

  start(): Promise<void>;
  /** Closes every connection; pending requests reject. Idempotent. */
  stop(): Promise<void>;

  /** Connects to a cell at `address`; resolves with its peer id once the connection is up. */
  dial(address: string, options?: { signal?: AbortSignal }): Promise<PeerId>;
  /** Records addresses at which `peer` can be reached, for later requests and redials. */
  addPeerAddresses(peer: PeerId, addresses: readonly string[]): void;
  /** Closes the connections to `peer` (it may dial back). */
  hangUp(peer: PeerId): Promise<void>;
  /** Peers with an open connection now. */
  connectedPeers(): PeerId[];
  setPeerEvents(events: PeerEvents): void;

  subscribe(topic: string, handler: MessageHandler, validator?: MessageValidator): void;
  unsubscribe(topic: string): void;
  publish(topic: string, data: Uint8Array): Promise<void>;

  /** Serves `protocol` (for example `/cellmesh/anti-entropy/1.0.0`); one handler per protocol. */
  handle(protocol: string, handler: RequestHandler): void;
  request(peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions): Promise<Uint8Array>;
}

export type MeshTransportErrorCode =
  | 'REQUEST_TIMEOUT'
  | 'PEER_UNREACHABLE'
  | 'PROTOCOL_UNSUPPORTED'
  | 'REMOTE_HANDLER_FAILED'
  | 'ABORTED'
  | 'NOT_STARTED';

/** A typed transport failure with a stable code; tests and callers match on `code`. */
export class MeshTransportError extends CodedError<MeshTransportErrorCode> {}
