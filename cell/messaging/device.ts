import type { TimerHandle } from '../../platform/clock.js';
import type { Identity } from '../access/tokens.js';
import type { CloseCode } from '../protocol/errors.js';
import { TokenBucket } from '../../platform/token-bucket.js';

/**
 * The access port: what the core needs from one client connection. The WebSocket adapter
 * implements it over uWS and the simulator over its virtual network; the core never sees a socket.
 */
export interface DevicePort {
  /** Queues a text frame; must not block. Calls after `close` are ignored. */
  send(text: string): void;
  /** Bytes queued for this device and not yet taken by its network. */
  bufferedBytes(): number;
  /** Closes with a WebSocket close code; the core's `disconnect` follows. */
  close(code: CloseCode, reason: string): void;
  /**
   * Set by the core: the adapter calls it when bytes queued for the device have drained (its
   * network took them), so delivery that paused for bytes can go on.
   */
  onDrained?: (() => void) | undefined;
}

/** Delivery state of one conversation on one device. */
export interface DeviceCursor {
  /** Highest seq pushed to this connection (or that it told us it has). */
  sentSeq: number;
  /** Highest seq the device acknowledged; persisted as its delivery cursor. */
  ackedSeq: number;
  /** A catch-up read from the store is under way for this conversation. */
  pumping: boolean;
  /** The conversation's last seq when the device connected; `synced` is due once reached. */
  syncTargetSeq: number;
  /** The store key of this cursor, made at its first ack (an agent acks every few ms). */
  storeKey?: string;
  /**
   * The device no longer follows the conversation (its agent's consultation closed or moved to
   * another agent): nothing more is pushed; acks of what it was sent still count.
   */
  paused?: boolean;
}

/** One connected device as the core tracks it. */
export class DeviceConnection {
  readonly cursors = new Map<string, DeviceCursor>();
  /** Conversations that changed while the cursors were still loading. */
  readonly notifiedWhileLoading = new Set<string>();
  /** Conversations whose push waits for the window to open. */
  readonly stalledConversations = new Set<string>();
  /** Messages pushed and not yet acknowledged, over all conversations. */
  inFlight = 0;
  /** When this device last said it was typing, per conversation (typing frames are rate-limited). */
  readonly lastTypingAtMs = new Map<string, number>();
  /** The cursors are loaded (`markLoaded`); before, acks wait for `whenLoaded`. */
  loaded = false;
  readonly whenLoaded: Promise<void>;
  /** Acks waiting for the cursors to load; bounded by MAX_ACKS_WAITING_FOR_CURSORS. */
  acksWaitingForCursors = 0;
  private resolveLoaded!: () => void;
  closed = false;
  syncedSent = false;
  /** Conversations still short of their sync target. */
  unsyncedConversations = 0;
  /** Frames of every op but `ack` (and frames that could not be parsed). */
  readonly rateLimit: TokenBucket;
  /** `ack` frames; credited with every message pushed to the device. */
  readonly ackRateLimit: TokenBucket;
  /** Errors the device may still cause before it is closed (4429); grows back with time. */
  readonly errorAllowance: TokenBucket;
  expiryTimer: TimerHandle | undefined;
  /**
   * The merchant this connection was routed for: an agent's own, or the one a customer's
   * WebSocket URL names (`merchant`); when it moves away, the connection is redirected (docs/routing.md).
   */
  routedFor: string | undefined;

  constructor(
    readonly identity: Identity,
    readonly session: string,
    readonly port: DevicePort,
    readonly connectedAtMs: number,
    limits: ConnectionLimits,
  ) {
    this.rateLimit = new TokenBucket(limits.ratePerSecond, limits.burst, connectedAtMs);
    this.ackRateLimit = new TokenBucket(limits.ackRatePerSecond, limits.ackBurst, connectedAtMs);
    this.errorAllowance = new TokenBucket(limits.errorRecoveryPerSecond, limits.maxErrors, connectedAtMs);
    this.whenLoaded = new Promise<void>((resolve) => (this.resolveLoaded = resolve));
  }

  markLoaded(): void {
    this.loaded = true;
    this.resolveLoaded();
  }
}

/** The budgets of one connection (docs/protocol.md, "Limits"). */
export interface ConnectionLimits {
  ratePerSecond: number;
  burst: number;
  ackRatePerSecond: number;
  ackBurst: number;
  maxErrors: number;
  errorRecoveryPerSecond: number;
}
