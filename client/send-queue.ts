// The outbox: sends not yet confirmed with a seq. They go out in the order of the `send` calls,
// paced to the cell's rate limit, at most `maxInFlightSends` at once, and are transmitted again
// with their cmids after every reconnect and after a transient refusal, until each is confirmed.
import type { ChatMessage, MessageAttachment } from '../cell/protocol/frames.js';
import { ErrorCode } from '../cell/protocol/errors.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { abortedError, onAbort } from './abort.js';
import { backoffDelayMs } from './backoff.js';
import { cancelTimer } from './cancel-timer.js';
import type { ClientEvents, SendOptions, SendResult } from './client-types.js';
import type { BackoffSettings } from './defaults.js';
import type { TypedEmitter } from './emitter.js';
import { ClientError, ClientErrorCode, isTransient } from './errors.js';
import type { SessionLink } from './session-link.js';
import type { ClientSettings } from './settings.js';
import { invalidFrame } from './validate-frame.js';

const CMID_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';
/** 20 characters of 36 symbols: about 103 random bits, so two devices never pick the same cmid. */
const CMID_LENGTH = 20;

export interface SendQueuePorts {
  readonly clock: Clock;
  readonly random: Random;
  readonly backoff: BackoffSettings;
  readonly settings: Pick<ClientSettings, 'maxPendingSends' | 'maxInFlightSends'>;
  readonly link: SessionLink;
  /** Where `sent` and `queued` events go. */
  readonly events: TypedEmitter<ClientEvents>;
  /** A request id unique within the client (shared with requests). */
  nextId(prefix: string): string;
}

/** A send the cell confirmed: the outbox entry's content, which the sequencer delivers as the own message. */
export interface ConfirmedSend {
  readonly cmid: string;
  readonly body: string;
  readonly attachments: readonly MessageAttachment[] | undefined;
}

interface OutboxEntry {
  readonly id: string;
  readonly conv: string;
  readonly cmid: string;
  readonly body: string;
  readonly attachments: readonly MessageAttachment[] | undefined;
  readonly group: string | undefined;
  /**
   * `waiting` to be transmitted on the current or next connection, `inflight` on it, or
   * `queued`: durable in the access cell named by `queuedAt`, which forwards it to the
   * conversation's home cell; only `sent` (or the own message pushed back) is awaited then.
   */
  phase: 'waiting' | 'inflight' | 'queued';
  /** With `queued`: the cell that holds the send. */
  queuedAt: string | undefined;
  /** The caller aborted after the send went on the wire; its confirmation is still awaited. */
  abandoned: boolean;
  transientFailures: number;
  readonly resolve: (result: SendResult) => void;
  readonly reject: (error: ClientError) => void;
  detachSignal: () => void;
}

export class SendQueue {
  /** Insertion-ordered: the order of `send` calls is the order of transmission. */
  private readonly outbox = new Map<string, OutboxEntry>();
  private inFlightSends = 0;
  private sendsPausedUntilMs = 0;
  private resumeSendsTimer: TimerHandle | undefined;

  constructor(private readonly ports: SendQueuePorts) {}

  /** Queues a send (the caller checked that the client runs); see `CellmeshClient.send`. */
  send(conv: string, body: string, options: SendOptions): Promise<SendResult> {
    if (this.outbox.size >= this.ports.settings.maxPendingSends) {
      return Promise.reject(
        new ClientError(ClientErrorCode.OutboxFull, `${this.outbox.size} sends already wait for confirmation`, { conv }),
      );
    }
    const id = this.ports.nextId('s');
    const cmid = options.cmid ?? this.newCmid();
    const attachments = options.attachments;
    const invalid = invalidFrame({ op: 'send', id, conv, cmid, body, ...attachmentIdsOf(attachments), ...groupOf(options.group) });
    if (invalid !== undefined) return Promise.reject(invalid);
    return new Promise<SendResult>((resolve, reject) => {
      const entry: OutboxEntry = {
        id,
        conv,
        cmid,
        body,
        attachments,
        group: options.group,
        phase: 'waiting',
        queuedAt: undefined,
        abandoned: false,
        transientFailures: 0,
        resolve,
        reject,
        detachSignal: () => {},
      };
      entry.detachSignal = onAbort(options.signal, () => this.abandon(entry));
      this.outbox.set(id, entry);
      this.pump();
    });
  }

  /** Transmits waiting sends while the session, the in-flight bound and the pacer allow. */
  pump(): void {
    const pacer = this.ports.link.pacer;
    if (this.ports.link.session === undefined || pacer === undefined) return;
    const nowMs = this.ports.clock.now();
    if (nowMs < this.sendsPausedUntilMs) {
      this.resumeAfter(this.sendsPausedUntilMs - nowMs);
      return;
    }
    for (const entry of this.outbox.values()) {
      if (this.inFlightSends >= this.ports.settings.maxInFlightSends) return;
      if (entry.phase !== 'waiting') continue;
      // Sends leave a quarter of the burst for requests. A send the cell refused already waited
      // what it asked; it need not wait for the reserve.
      const reserve = entry.transientFailures > 0 ? 0 : Math.floor(pacer.burst / 4);
      if (!pacer.take(nowMs, reserve)) {
        this.resumeAfter(pacer.waitMs(nowMs, reserve));
        return;
      }
      entry.phase = 'inflight';
      this.inFlightSends++;
      this.ports.link.transmit({ op: 'send', id: entry.id, conv: entry.conv, cmid: entry.cmid, body: entry.body, ...attachmentIdsOf(entry.attachments), ...groupOf(entry.group) });
    }
  }

  /**
   * A new session began in cell `cell`. Sends queued in another cell are sent again through this
   * one (the cmid keeps that safe): the other cell may not come back, and this one answers with
   * the seq once it knows it.
   */
  requeueHeldElsewhere(cell: string): void {
    for (const entry of this.outbox.values()) {
      if (entry.phase === 'queued' && entry.queuedAt !== cell) {
        entry.phase = 'waiting';
        entry.queuedAt = undefined;
      }
    }
  }

  /**
   * The cell stored a send: resolves it and emits `sent`. Returns what was sent, or undefined
   * when the confirmation is not for a send of this client (then it is a repeat).
   */
  onSent(frame: { id?: string | undefined; conv: string; cmid: string; seq: number; ts: number }): ConfirmedSend | undefined {
    const entry = this.entryOf(frame);
    if (entry === undefined) return undefined;
    this.confirm(entry, { conv: frame.conv, cmid: frame.cmid, seq: frame.seq, ts: frame.ts });
    return { cmid: entry.cmid, body: entry.body, attachments: entry.attachments };
  }

  /**
   * The access cell holds the send durably and forwards it; it stops counting as in flight (a
   * partition between the cells must not stall this device's other sends) and waits for `sent`.
   */
  onQueued(frame: { id?: string | undefined; conv: string; cmid: string }): void {
    const entry = this.entryOf(frame);
    if (entry === undefined || entry.phase !== 'inflight') return;
    entry.phase = 'queued';
    entry.queuedAt = this.ports.link.session?.cell;
    this.inFlightSends--;
    this.ports.events.emit('queued', { conv: entry.conv, cmid: entry.cmid });
    this.pump();
  }

  /**
   * A pushed message of `user` (this session's user) that is one of this client's sends still
   * waiting for `sent`: the confirmation that a restarted access cell can no longer give (or
   * that went to an earlier connection). The message itself is delivered by the push.
   */
  confirmOwnPush(message: ChatMessage, user: string | undefined): void {
    if (message.from !== user) return;
    for (const entry of this.outbox.values()) {
      if (entry.conv === message.conv && entry.cmid === message.cmid) {
        this.confirm(entry, { conv: message.conv, cmid: message.cmid, seq: message.seq, ts: message.ts });
        // It may have been in flight: its `sent` will come as a repeat, so the sends waiting
        // behind it go now (after a reconnect the catch-up can confirm a whole window this way).
        this.pump();
        return;
      }
    }
  }

  /** The cell refused the send with request id `id`; returns whether there was one. */
  failById(id: string, error: ClientError): boolean {
    const entry = this.outbox.get(id);
    if (entry === undefined) return false;
    this.fail(entry, error);
    return true;
  }

  /**
   * A relayed send's home cell refused it after the connection that sent it ended, so the
   * refusal names the send by conversation and cmid; returns whether it was one of these.
   */
  failByCmid(conv: string, cmid: string, error: ClientError): boolean {
    const entry = this.entryOf({ conv, cmid });
    if (entry === undefined) return false;
    this.fail(entry, error);
    return true;
  }

  /** The connection ended: what was on the wire waits to go again, abandoned sends are dropped. */
  onSessionEnd(): void {
    this.resumeSendsTimer = cancelTimer(this.resumeSendsTimer);
    for (const entry of this.outbox.values()) {
      if (entry.phase === 'waiting') continue;
      // An abandoned send is not retransmitted; if it was stored, the catch-up brings it.
      if (entry.abandoned) this.outbox.delete(entry.id);
      // A queued send needs no retransmission to the cell that holds it (see requeueHeldElsewhere).
      else if (entry.phase === 'inflight') entry.phase = 'waiting';
    }
    this.inFlightSends = 0;
  }

  /** The client stopped: every send still pending is rejected with `rejection`. */
  rejectAll(rejection: ClientError): void {
    const entries = [...this.outbox.values()];
    this.outbox.clear();
    for (const entry of entries) {
      entry.detachSignal();
      if (!entry.abandoned) entry.reject(rejection);
    }
  }

  private resumeAfter(delayMs: number): void {
    this.resumeSendsTimer ??= this.ports.clock.setTimer(delayMs, () => {
      this.resumeSendsTimer = undefined;
      this.pump();
    });
  }

  private pause(delayMs: number): void {
    const untilMs = this.ports.clock.now() + Math.max(0, delayMs);
    if (untilMs <= this.sendsPausedUntilMs) return;
    this.sendsPausedUntilMs = untilMs;
    this.resumeSendsTimer = cancelTimer(this.resumeSendsTimer);
    this.pump();
  }

  private confirm(entry: OutboxEntry, result: SendResult): void {
    this.remove(entry);
    if (!entry.abandoned) entry.resolve(result);
    this.ports.events.emit('sent', result);
  }

  /** The send a frame answers: by request id, else by conversation and cmid among those on the wire or queued. */
  private entryOf(frame: { id?: string | undefined; conv: string; cmid: string }): OutboxEntry | undefined {
    if (frame.id !== undefined) {
      const entry = this.outbox.get(frame.id);
      if (entry !== undefined) return entry;
    }
    for (const entry of this.outbox.values()) {
      if (entry.phase !== 'waiting' && entry.conv === frame.conv && entry.cmid === frame.cmid) return entry;
    }
    return undefined;
  }

  private fail(entry: OutboxEntry, error: ClientError): void {
    if (entry.phase === 'inflight') this.inFlightSends--;
    entry.phase = 'waiting';
    entry.queuedAt = undefined;
    if (isTransient(error) && !entry.abandoned) {
      // Later sends wait too: sending them now would likely be refused as well, and overtaking
      // this one would store the user's messages out of the order they were written.
      entry.transientFailures++;
      if (error.code === ErrorCode.RateLimited) this.ports.link.pacer?.drain(this.ports.clock.now());
      this.pause(error.details.retryAfterMs ?? backoffDelayMs(this.ports.backoff, entry.transientFailures, this.ports.random));
      return;
    }
    this.remove(entry);
    if (!entry.abandoned) entry.reject(new ClientError(error.code, error.message, { ...error.details, conv: entry.conv }));
    this.pump();
  }

  private abandon(entry: OutboxEntry): void {
    if (this.outbox.get(entry.id) !== entry || entry.abandoned) return;
    entry.abandoned = true;
    entry.detachSignal();
    entry.reject(abortedError());
    // One already on the wire may still be stored; its confirmation is awaited so that the
    // message still joins the conversation's stream in order.
    if (entry.phase === 'waiting') this.outbox.delete(entry.id);
  }

  private remove(entry: OutboxEntry): void {
    this.outbox.delete(entry.id);
    if (entry.phase === 'inflight') this.inFlightSends--;
    entry.detachSignal();
  }

  private newCmid(): string {
    let cmid = '';
    for (let index = 0; index < CMID_LENGTH; index++) {
      cmid += CMID_ALPHABET[Math.floor(this.ports.random.next() * CMID_ALPHABET.length)];
    }
    return cmid;
  }
}

/** The `attachments` field of a send frame: the ids, absent without attachments. */
function attachmentIdsOf(attachments: readonly MessageAttachment[] | undefined): { attachments?: string[] } {
  return attachments === undefined ? {} : { attachments: attachments.map((attachment) => attachment.id) };
}

/** The desk group a send names, when it names one (a send frame carries `group` only then). */
function groupOf(group: string | undefined): { group?: string } {
  return group === undefined ? {} : { group };
}
