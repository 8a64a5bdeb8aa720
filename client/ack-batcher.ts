// Acknowledgements: one cumulative ack per conversation, batched over `ackDelayMs` so that a
// burst of messages costs one frame, sent at once when half the cell's delivery window is
// unacknowledged, and only for what the cell delivered in this session.
import type { Clock, TimerHandle } from '../platform/clock.js';
import { cancelTimer } from './cancel-timer.js';
import type { SessionLink } from './session-link.js';

export interface AckBatcherPorts {
  readonly clock: Clock;
  /** How long acks wait to be batched. */
  readonly ackDelayMs: number;
  readonly link: Pick<SessionLink, 'session' | 'transmit'>;
  /** The conversation's cursor (highest seq delivered with everything before it). */
  cursorOf(conv: string): number | undefined;
}

/** What the cell knows of a conversation's deliveries in this session. */
interface SessionAcks {
  /** Lowest seq the cell delivered in this session (pushed or confirmed as own); 0 for none. */
  deliveredLowSeq: number;
  /**
   * Whether the cell tracks this conversation for this connection, so that an ack is welcome:
   * it does for conversations that existed when the connection attached and for any it pushed;
   * it does not for one this device started in this session until the cell pushes something.
   */
  ackable: boolean;
  /** Highest seq acknowledged in this session. */
  ackedSeq: number;
}

export class AckBatcher {
  /** Per conversation, for the current session only (a session starts with none). */
  private readonly acks = new Map<string, SessionAcks>();
  private readonly dirty = new Set<string>();
  /** Deliveries (pushes and own confirmations) since the last flush. */
  private unackedDeliveries = 0;
  private timer: TimerHandle | undefined;

  constructor(private readonly ports: AckBatcherPorts) {}

  /**
   * A session opened. `known` are the conversations this client had a cursor of before: they
   * existed before the connection attached, so the cell tracks them for it.
   */
  beginSession(known: Iterable<string>): void {
    for (const conv of known) this.of(conv).ackable = true;
  }

  endSession(): void {
    this.timer = cancelTimer(this.timer);
    this.acks.clear();
    this.dirty.clear();
    this.unackedDeliveries = 0;
  }

  /** The cell pushed message `seq` of `conv`, so it tracks the conversation for this connection. */
  notePushed(conv: string, seq: number): void {
    const acks = this.of(conv);
    acks.ackable = true;
    this.noteDelivered(acks, seq);
  }

  /** The cell confirmed this device's send as `seq` of `conv` (which it counts as a delivery). */
  noteOwnSent(conv: string, seq: number): void {
    const acks = this.of(conv);
    // The first delivery of a conversation in this session being this device's own seq 1 means
    // this device just started it, and the cell does not track it for this connection yet.
    // Anything later existed when the connection attached.
    if (acks.deliveredLowSeq === 0 && !acks.ackable) acks.ackable = seq > 1;
    this.noteDelivered(acks, seq);
  }

  /** The conversation's cursor may have moved: schedules an ack if one is due. */
  noteCursor(conv: string): void {
    const acks = this.acks.get(conv);
    if (this.ports.link.session === undefined || acks === undefined || this.target(conv, acks) <= acks.ackedSeq) return;
    this.dirty.add(conv);
    this.timer ??= this.ports.clock.setTimer(this.ports.ackDelayMs, () => {
      this.timer = undefined;
      this.flush();
    });
  }

  /**
   * The cell stops pushing when a window of deliveries is unacknowledged, so acks go out at once
   * when half of it is used.
   */
  flushIfWindowHalfUsed(): void {
    const session = this.ports.link.session;
    if (session !== undefined && this.unackedDeliveries >= Math.max(1, Math.floor(session.limits.deliveryWindow / 2))) {
      this.flush();
    }
  }

  /**
   * One cumulative ack per conversation with news, at most one flush per delivery (the cell's
   * ack budget grows by one per delivery, docs/protocol.md "Limits of a connection"). A cell
   * that announces `limits.maxAcksPerFrame` gets them together, that many conversations per
   * frame; an older cell one frame per conversation.
   */
  flush(): void {
    this.timer = cancelTimer(this.timer);
    this.unackedDeliveries = 0;
    const session = this.ports.link.session;
    if (session === undefined) {
      this.dirty.clear();
      return;
    }
    const perFrame = session.limits.maxAcksPerFrame;
    let batch: Record<string, number> = {};
    let inFrame = 0;
    for (const conv of this.dirty) {
      this.dirty.delete(conv);
      const acks = this.acks.get(conv);
      const target = acks === undefined ? 0 : this.target(conv, acks);
      if (acks === undefined || target <= acks.ackedSeq) continue;
      acks.ackedSeq = target;
      if (perFrame === undefined) {
        this.ports.link.transmit({ op: 'ack', conv, seq: target });
        continue;
      }
      batch[conv] = target;
      if (++inFrame === perFrame) {
        this.ports.link.transmit({ op: 'ack', acks: batch });
        batch = {};
        inFrame = 0;
      }
    }
    if (inFrame > 0) this.ports.link.transmit({ op: 'ack', acks: batch });
  }

  private of(conv: string): SessionAcks {
    let acks = this.acks.get(conv);
    if (acks === undefined) {
      acks = { deliveredLowSeq: 0, ackable: false, ackedSeq: 0 };
      this.acks.set(conv, acks);
    }
    return acks;
  }

  /** Counts a delivery toward the cell's window. */
  private noteDelivered(acks: SessionAcks, seq: number): void {
    acks.deliveredLowSeq = acks.deliveredLowSeq === 0 ? seq : Math.min(acks.deliveredLowSeq, seq);
    this.unackedDeliveries++;
  }

  /**
   * What an ack of the conversation would say now, or 0 when none is due: the cursor, once the
   * cell delivered something in this session that the cursor covers. (Below the first delivery
   * of the session the cell already knows this device has everything.)
   */
  private target(conv: string, acks: SessionAcks): number {
    const cursor = this.ports.cursorOf(conv) ?? 0;
    if (!acks.ackable || acks.deliveredLowSeq === 0 || cursor < acks.deliveredLowSeq) return 0;
    return cursor;
  }
}
