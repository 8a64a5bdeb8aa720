/**
 * What cross-cell conversations are configured with (CrossCellSettings and their defaults), what
 * they need of the cell's core (CrossCellHost) and what they count (CrossCellStats): shared by
 * CrossCellRelay and the parts it composes.
 */
import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { Store } from '../../platform/store/store.js';
import type { ChatMessage, Role, ServerFrame } from '../protocol/frames.js';
import type { ClusterPort } from './cluster-port.js';
import type { ConversationLog } from './conversation-log.js';
import type { RelayedSend } from './relayed-sends.js';
import type { RelayedDeskAction } from './cross-cell-wire.js';
import type { DeviceConnection } from './device.js';
import type { RemoteFanOutStats } from './remote-fan-out.js';

/** Settings of cross-cell conversations; defaults in CROSS_CELL_DEFAULTS, quoted by docs/architecture.md. */
export interface CrossCellSettings {
  /** Messages asked per history page when a mirror backfills (at most 200). */
  historyPageMessages: number;
  /** Timeout of one history request to a home cell. */
  historyTimeoutMs: number;
  /** Most bytes of messages a history page this cell serves carries (at least one message goes). */
  historyPageBytes: number;
  /** How long an HTTP send to another cell's conversation waits for its seq before FORWARD_PENDING. */
  relayWaitMs: number;
  /** Relayed sends whose seq is awaited, over all devices; the oldest is forgotten beyond. */
  maxRelayedSends: number;
  /** Mirror operations, and separately fan-outs to other cells, waiting or running at once. */
  maxQueuedTasks: number;
  /** Mirrored conversations refreshed from their home cells when a customer's first device connects. */
  maxRefreshConversations: number;
  /** Of those, refreshed at once. */
  refreshParallelism: number;
  /** Users for whom a `gone` was sent and not yet taken back by a connect (bounds the memory of it). */
  maxGoneHints: number;
  /** How long a home cell keeps sending a user's entries to a cell without confirming it (RemoteFanOut). */
  followTtlMs: number;
  /** Users whose following cells a home cell remembers. */
  maxFollowedUsers: number;
  /**
   * How often the mirrors of customers with a device here are caught up with their home cells
   * (and the home cells told to follow this cell again). The repair for whatever the home cells'
   * pushes missed: a home that restarted and forgot its followers, a locate whose answer was
   * lost, a merchant moved to a cell that never followed this one, a refresh that failed.
   */
  mirrorRepairIntervalMs: number;
}

export const CROSS_CELL_DEFAULTS: CrossCellSettings = {
  historyPageMessages: 100,
  historyTimeoutMs: 2_000,
  historyPageBytes: 1024 * 1024,
  relayWaitMs: 5_000,
  maxRelayedSends: 10_000,
  maxQueuedTasks: 10_000,
  maxRefreshConversations: 256,
  refreshParallelism: 8,
  maxGoneHints: 10_000,
  followTtlMs: 10 * 60_000,
  maxFollowedUsers: 100_000,
  mirrorRepairIntervalMs: 30_000,
};

/** What the relay needs of the cell's core; the core implements it. */
export interface CrossCellHost {
  isDraining(): boolean;
  /** Whether this cell serves the tenant and hosts the merchant itself (its configuration). */
  hosts(tenant: string, merchant: string): boolean;
  /** Resolves once no move of the merchant out of this cell is under way (writes wait for it). */
  whenSettled(tenant: string, merchant: string): Promise<void>;
  /** Whether the customer (never an agent of the same id) has a device connected here. */
  customerHasDevices(tenant: string, customer: string): boolean;
  /** Pushes a durable message to this cell's devices of its conversation; `sender`'s device gets `sent`. */
  deliver(tenant: string, message: ChatMessage, sender: RelayedSend | undefined): void;
  /** Pushes a receipt (`party`, a party id of the conversation, read up to `seq`) to this cell's devices of the conversation. */
  deliverReceipt(tenant: string, conv: string, party: string, seq: number): void;
  /** Moves `party`'s read cursor of a conversation this cell hosts, with its receipts everywhere. */
  markRead(tenant: string, conv: string, party: string, seq: number): Promise<void>;
  /** `user` (with `role`) is typing in `conv`, as another cell relays: the other party's devices here hear it. */
  tellTyping(tenant: string, conv: string, user: string, role: Role): void;
  /** Sends a frame (a `consultation` frame from the merchant's desk, a refusal) to the customer's devices here. */
  tellCustomer(tenant: string, customer: string, frame: ServerFrame): void;
  /** Sends a frame to one device here (the answer of a relayed request). */
  answer(connection: DeviceConnection, frame: ServerFrame): void;
  /**
   * Applies a customer's `close` or `rate` that another cell relayed, at the desk of a merchant
   * hosted here, as if its device were here; rejects with the desk's refusal (a CellError).
   */
  applyDeskAction(tenant: string, conv: string, customer: string, action: RelayedDeskAction): Promise<void>;
  /** Undefined when the customer of `conv` may send to its merchant; throws CUSTOMER_BLOCKED, or a promise doing either (CustomerBlocks.whenAllowed). */
  whenAllowed(tenant: string, conv: string): Promise<void> | undefined;
}

export interface CrossCellStats extends RemoteFanOutStats {
  /** Sends this (access) cell forwarded to home cells. */
  relayedSends: number;
  /** Messages written into mirrors (forwarded or backfilled). */
  mirroredMessages: number;
  /** History pages this (home) cell served. */
  historyPagesServed: number;
  /** Forwarded entries dropped: malformed, or for the wrong cell. */
  entriesDropped: number;
  /** `gone` hints sent to home cells. */
  goneHints: number;
  /** Mirror refreshes (or backfills) that failed; the mirror stays as it was. */
  refreshFailures: number;
  /** Messages the repair pass found missing from mirrors (pushes that never came). */
  repairedMessages: number;
}

/** What the relay and each of its parts work with. */
export interface CrossCellParts {
  readonly cluster: ClusterPort;
  readonly log: ConversationLog;
  readonly store: Store;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly host: CrossCellHost;
}
