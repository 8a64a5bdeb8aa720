import type { Clock } from '../../platform/clock.js';
import { CellError, CloseCode, ErrorCode } from '../protocol/errors.js';
import { operatingErrorOf } from '../protocol/operating-errors.js';
import { ackEntries, type AckFrame, type ChatMessage, type ServerFrame } from '../protocol/frames.js';
import type { Store } from '../../platform/store/store.js';
import type { CellMetrics } from '../metrics.js';
import type { Logger } from '../../platform/logger.js';
import { InvariantError, invariant } from '../../platform/invariant.js';
import { CoalescingWriter } from './coalescing-writer.js';
import type { ConversationLog, ConversationState } from './conversation-log.js';
import type { DeviceConnection, DeviceCursor } from './device.js';
import { keys, lastField } from './keys.js';
import { merchantConversations } from './merchant-conversations.js';
import { partyId } from './principal.js';

export interface DeliveryLimits {
  /** Messages pushed and unacknowledged per device before pushing waits for acks. */
  deliveryWindow: number;
  /** Messages read from the store per catch-up page. */
  syncPageSize: number;
  /** A device with more bytes queued than this is closed (4008) and resyncs later. */
  maxBackpressureBytes: number;
  /** Delivery cursors are written at most this often (see CoalescingWriter). */
  cursorWriteIntervalMs: number;
}

/** A device follows at most this many conversations; older ones are reachable through history. */
export const MAX_CONVERSATIONS_PER_DEVICE = 10_000;
/** Conversation heads loaded at once while a device attaches. */
const ATTACH_LOAD_PARALLELISM = 32;
/** Acks one device may have waiting for its cursors to load (right after connecting). */
export const MAX_ACKS_WAITING_FOR_CURSORS = 4 * 1024;

/**
 * Delivers each conversation to each device in seq order, gap-free, from the device's cursor.
 *
 * One mechanism serves live delivery, offline sync and paging: a device's cursor per
 * conversation says what it has; whatever lies between that and the conversation's durable seq
 * is pushed, straight from memory when it is the next message, otherwise read from the store
 * in pages. At most `deliveryWindow` messages are in flight per device, so a device that does
 * not ack stops receiving (and costs nothing) instead of growing a queue.
 */
export class DeliveryService {
  /**
   * The `msg` frame of the message pushed last: a message goes to all its devices in one turn,
   * so one entry serialises it once, and nothing outlives the fan-out (a cache keyed by every
   * message would keep them all reachable for the garbage collector to trace).
   */
  private lastPushed: { message: ChatMessage; text: string } | undefined;
  private readonly cursorWriter: CoalescingWriter;

  constructor(
    private readonly log: ConversationLog,
    private readonly store: Store,
    clock: Clock,
    private readonly metrics: CellMetrics,
    private readonly logger: Logger,
    private readonly limits: DeliveryLimits,
    /** A device's delivery cursor of a conversation moved forward to `seq` (delivered-receipts.ts). */
    private readonly onAcked?: ((connection: DeviceConnection, state: ConversationState, seq: number) => void) | undefined,
  ) {
    this.cursorWriter = new CoalescingWriter(store, clock, limits.cursorWriteIntervalMs, logger);
  }

  /** Resolves once every acknowledged cursor is written (for graceful shutdown). */
  cursorsFlushed(): Promise<void> {
    return this.cursorWriter.flushed();
  }

  /**
   * Loads the device's conversations and cursors, then starts catching it up. `only` names the
   * conversations the device follows when they are not all of its user's (an agent at a desk
   * follows its own consultations); otherwise they come from the user's index.
   */
  async attach(connection: DeviceConnection, only?: readonly string[]): Promise<void> {
    const { tenant, user, role, merchant, device } = connection.identity;
    const party = partyId(connection.identity);
    const index =
      role === 'agent' && merchant !== undefined
        ? keys.merchantConversations(tenant, merchant)
        : keys.customerConversations(tenant, user);
    // A device that acked and reconnected at once may be faster than its cursor's write. Taken
    // before the store read: a write that lands during the read leaves the writer's list but
    // may be missing from what the read saw.
    const cursorRange = keys.deliveryCursors(tenant, party, device);
    const unwritten = this.cursorWriter.unwritten(cursorRange.gte);
    const [conversationEntries, cursorEntries] = await Promise.all([
      only === undefined ? this.store.range({ ...index, limit: MAX_CONVERSATIONS_PER_DEVICE }) : Promise.resolve(only.map((conv): [string, string] => [`/${conv}`, ''])),
      this.store.range({ ...cursorRange, limit: MAX_CONVERSATIONS_PER_DEVICE }),
    ]);
    const ackedByConversation = new Map(cursorEntries.map(([key, value]) => [lastField(key), Number(value)]));
    // Written only from acks (applyAck), which are whole seqs above 0. A stored cursor beyond
    // the conversation's head is clamped to it below.
    for (const [conv, acked] of ackedByConversation) {
      invariant(Number.isSafeInteger(acked) && acked >= 0, () => `stored delivery cursor of ${party}/${device} in ${conv} is ${acked}`);
    }
    for (const [key, value] of unwritten) {
      const conv = lastField(key);
      ackedByConversation.set(conv, Math.max(ackedByConversation.get(conv) ?? 0, Number(value)));
    }
    const conversations = conversationEntries.map(([key]) => lastField(key));
    for (let start = 0; start < conversations.length; start += ATTACH_LOAD_PARALLELISM) {
      const chunk = conversations.slice(start, start + ATTACH_LOAD_PARALLELISM);
      const states = await Promise.all(chunk.map((conv) => this.log.conversation(tenant, conv)));
      for (const state of states) {
        const ackedSeq = Math.min(ackedByConversation.get(state.conv) ?? 0, state.durableSeq);
        const cursor: DeviceCursor = { sentSeq: ackedSeq, ackedSeq, pumping: false, syncTargetSeq: state.durableSeq };
        if (ackedSeq < state.durableSeq) connection.unsyncedConversations++;
        else cursor.syncTargetSeq = 0;
        connection.cursors.set(state.conv, cursor);
      }
    }
    for (const conv of connection.notifiedWhileLoading) {
      if (connection.cursors.has(conv)) continue;
      const ackedSeq = ackedByConversation.get(conv) ?? 0;
      connection.cursors.set(conv, { sentSeq: ackedSeq, ackedSeq, pumping: false, syncTargetSeq: 0 });
    }
    connection.notifiedWhileLoading.clear();
    connection.markLoaded();
    if (connection.closed) return;
    if (connection.unsyncedConversations === 0) this.sendSynced(connection);
    for (const conv of connection.cursors.keys()) this.pump(connection, conv);
  }

  /** A message became durable: offer it to one of the conversation's devices. */
  offer(connection: DeviceConnection, message: ChatMessage): void {
    if (connection.closed) return;
    if (!connection.loaded) {
      connection.notifiedWhileLoading.add(message.conv);
      return;
    }
    let cursor = connection.cursors.get(message.conv);
    if (cursor === undefined) {
      // A conversation that started after the device attached: it has seen nothing of it.
      cursor = { sentSeq: 0, ackedSeq: 0, pumping: false, syncTargetSeq: 0 };
      connection.cursors.set(message.conv, cursor);
    }
    if (cursor.paused === true) return;
    if (cursor.sentSeq === message.seq - 1 && !cursor.pumping && this.hasRoom(connection)) {
      this.push(connection, cursor, message);
    } else if (cursor.sentSeq < message.seq) {
      this.pump(connection, message.conv);
    }
  }

  /**
   * A merchant moved in: the devices here that followed its conversations through mirrors may
   * lack messages the old home wrote and never pushed here; the copied log has them.
   * `devicesOf` names the devices of one customer's conversation.
   */
  async resumeMerchant(tenant: string, merchant: string, devicesOf: (customer: string) => Iterable<DeviceConnection>): Promise<void> {
    try {
      for await (const { conv, customer } of merchantConversations(this.store, tenant, merchant)) {
        for (const device of devicesOf(customer)) this.resume(device, conv);
      }
    } catch (error) {
      // Those devices get the messages at their next one in the conversation, or at a reconnect.
      this.logger.warn({ err: error, merchant }, 'could not list the conversations of a merchant that moved in');
    }
  }

  /**
   * The device now follows `conv` (its agent was assigned the consultation): it gets what it
   * lacks from its stored cursor on, which for an agent new to the customer is the whole history.
   */
  follow(connection: DeviceConnection, conv: string): void {
    if (connection.closed) return;
    if (!connection.loaded) {
      connection.notifiedWhileLoading.add(conv);
      return;
    }
    const cursor = connection.cursors.get(conv);
    if (cursor !== undefined) {
      cursor.paused = false;
      this.pump(connection, conv);
      return;
    }
    const { tenant, device } = connection.identity;
    const key = keys.deliveryCursor(tenant, partyId(connection.identity), device, conv);
    const unwritten = this.cursorWriter.unwrittenValue(key);
    const start = (stored: string | undefined, durableSeq: number): void => {
      if (connection.closed) return;
      // A message offered meanwhile made a cursor from nothing; the push goes on from it.
      if (!connection.cursors.has(conv)) {
        const ackedSeq = Math.min(Math.max(Number(stored ?? 0), Number(unwritten ?? 0)), durableSeq);
        connection.cursors.set(conv, { sentSeq: ackedSeq, ackedSeq, pumping: false, syncTargetSeq: 0 });
      }
      this.pump(connection, conv);
    };
    // A local store answers at once (memtable, block cache, bloom filter): an assignment then
    // costs no thread-pool round trip and no promise.
    const state = this.log.cached(tenant, conv);
    if (state !== undefined && this.store.getManySync !== undefined) {
      let stored: string | undefined;
      let readNow = true;
      try {
        stored = this.store.getManySync([key])[0];
      } catch {
        // The disk failed the read at once: the asynchronous read below says how it stands.
        readNow = false;
      }
      if (readNow) {
        start(stored, state.durableSeq);
        return;
      }
    }
    Promise.all([this.store.get(key), this.log.conversation(tenant, conv)])
      .then(([stored, loaded]) => start(stored, loaded.durableSeq))
      .catch((error: unknown) => {
        this.logger.warn({ err: error, conv, device }, 'could not load a delivery cursor; the device gets the conversation at its next message or reconnect');
      });
  }

  /** The device stops following `conv`: nothing more is pushed to it (its acks still count). */
  unfollow(connection: DeviceConnection, conv: string): void {
    const cursor = connection.cursors.get(conv);
    if (cursor !== undefined) cursor.paused = true;
    connection.stalledConversations.delete(conv);
  }

  /**
   * The conversation's log grew other than by appends here (a merchant moved in, with the log
   * its old home copied): the device gets what it lacks, from its cursor on.
   */
  resume(connection: DeviceConnection, conv: string): void {
    if (connection.closed || !connection.loaded || !connection.cursors.has(conv)) return;
    this.pump(connection, conv);
  }

  /**
   * The sending device learns its own message from the `sent` frame, which therefore counts
   * as its delivery there when it is the next one in order; otherwise it is pushed in turn.
   */
  deliveredBySentFrame(connection: DeviceConnection, message: ChatMessage): void {
    const cursor = connection.loaded ? connection.cursors.get(message.conv) : undefined;
    if (cursor !== undefined && cursor.sentSeq === message.seq - 1 && !cursor.pumping) {
      cursor.sentSeq = message.seq;
      connection.inFlight++;
    } else if (connection.loaded && cursor === undefined && message.seq === 1) {
      // The device just started this conversation: its own first message is all there is.
      connection.cursors.set(message.conv, { sentSeq: 1, ackedSeq: 0, pumping: false, syncTargetSeq: 0 });
      connection.inFlight++;
    } else {
      this.offer(connection, message);
    }
  }

  /**
   * A cumulative delivery ack: the device has everything up to `seq` in `conv`. Applied at
   * once when the device's cursors and the conversation's head are in memory (the usual case);
   * otherwise the returned promise settles once they are loaded and it is applied.
   */
  ack(connection: DeviceConnection, conv: string, seq: number): Promise<void> | undefined {
    if (!connection.loaded) return this.ackOnceLoaded(connection, conv, seq);
    const cursor = connection.cursors.get(conv);
    if (cursor === undefined) throw outOfRange(conv, seq);
    const { tenant } = connection.identity;
    const state = this.log.cached(tenant, conv);
    if (state !== undefined) {
      this.applyAck(connection, cursor, state, seq);
      return undefined;
    }
    return this.log.conversation(tenant, conv).then((loaded) => this.applyAck(connection, cursor, loaded, seq));
  }

  /**
   * An `ack` frame: one conversation, or many at once. Each conversation of a multi-conversation
   * ack stands alone: a refused entry is answered with an error naming it (`refuse`, which counts
   * it as an error of its own), and the others still move their cursors.
   */
  async ackFrame(connection: DeviceConnection, frame: AckFrame, authorize: (conv: string) => void, refuse: (error: unknown, conv: string) => void): Promise<void> {
    if (frame.acks === undefined) {
      authorize(frame.conv!);
      return this.ack(connection, frame.conv!, frame.seq!);
    }
    const loading: Array<Promise<void>> = [];
    for (const [conv, seq] of ackEntries(frame)) {
      if (connection.closed) break;
      try {
        authorize(conv);
        const applied = this.ack(connection, conv, seq);
        if (applied !== undefined) loading.push(applied.catch((error: unknown) => refuse(error, conv)));
      } catch (error) {
        refuse(error, conv);
      }
    }
    if (loading.length > 0) await Promise.all(loading);
  }

  /**
   * An ack that arrives before the device's cursors are loaded (it acked the `sent` of a resend
   * right after connecting) waits for them: judged against cursors not loaded yet, a legal ack
   * would look like one of nothing delivered.
   */
  private async ackOnceLoaded(connection: DeviceConnection, conv: string, seq: number): Promise<void> {
    if (connection.acksWaitingForCursors >= MAX_ACKS_WAITING_FOR_CURSORS) {
      throw new CellError(ErrorCode.RateLimited, 'too many acks before your conversations were loaded; retry in a moment', { retryAfterMs: 100 });
    }
    connection.acksWaitingForCursors++;
    try {
      await connection.whenLoaded;
    } finally {
      connection.acksWaitingForCursors--;
    }
    if (connection.closed) return;
    await this.ack(connection, conv, seq);
  }

  private applyAck(connection: DeviceConnection, cursor: DeviceCursor, state: ConversationState, seq: number): void {
    const conv = state.conv;
    if (seq > state.durableSeq) throw outOfRange(conv, seq);
    if (seq <= cursor.ackedSeq) return;
    connection.inFlight -= Math.max(0, Math.min(seq, cursor.sentSeq) - cursor.ackedSeq);
    // Per ack, so a plain comparison: no closure for the message unless it fails.
    if (connection.inFlight < 0) throw new InvariantError(`${connection.identity.device} has ${connection.inFlight} messages in flight after an ack of ${conv}#${seq}`);
    cursor.ackedSeq = seq;
    if (seq > cursor.sentSeq) cursor.sentSeq = seq;
    this.checkSynced(connection, cursor);
    const { tenant, device } = connection.identity;
    cursor.storeKey ??= keys.deliveryCursor(tenant, partyId(connection.identity), device, conv);
    // Cursors only move forward and the writer writes each key's latest value in order, so the
    // stored cursor never regresses.
    this.cursorWriter.set(cursor.storeKey, String(seq));
    this.resumeStalled(connection);
    this.onAcked?.(connection, state, seq);
  }

  /**
   * The message about to be offered was stored as `storedJson` (JSON.stringify of it): its `msg`
   * frame is that text with the frame's type put first, instead of a second serialisation.
   */
  offering(message: ChatMessage, storedJson: string): void {
    this.lastPushed = { message, text: `{"t":"msg",${storedJson.slice(1)}` };
  }

  /** Serialises and sends any frame, closing a device that stopped reading. */
  sendFrame(connection: DeviceConnection, frame: ServerFrame): void {
    this.sendText(connection, JSON.stringify(frame));
  }

  /** Sends one frame to many devices, serialised once. */
  broadcast(connections: Iterable<DeviceConnection>, frame: ServerFrame): void {
    const text = JSON.stringify(frame);
    for (const connection of connections) this.sendText(connection, text);
  }

  private sendText(connection: DeviceConnection, text: string): void {
    if (connection.closed) return;
    connection.port.send(text);
    if (connection.port.bufferedBytes() > this.limits.maxBackpressureBytes) {
      this.metrics.backpressureCloses.inc();
      connection.port.close(CloseCode.Backpressure, 'device too slow; reconnect to resync');
    }
  }

  private hasRoom(connection: DeviceConnection): boolean {
    return connection.inFlight < this.limits.deliveryWindow;
  }

  /**
   * The messages after the device's cursor were deleted by retention (docs/operations.md,
   * "Retention"): the device goes on from the first one kept. Those it had in flight stay to be
   * acked; the skipped ones count as in flight too, so an ack past them settles the window.
   * Devices that kept their own cursor see a gap, which history cannot fill (the SDK reports
   * GAP_UNFILLED and goes on).
   */
  private skipDeleted(connection: DeviceConnection, cursor: DeviceCursor, skipped: number): void {
    if (cursor.sentSeq === cursor.ackedSeq) cursor.ackedSeq += skipped;
    else connection.inFlight += skipped;
    cursor.sentSeq += skipped;
  }

  private push(connection: DeviceConnection, cursor: DeviceCursor, message: ChatMessage): void {
    // Gap-free and in order: the next seq after what the device has. Per message, so a plain
    // comparison (no closure for the message unless it fails).
    if (message.seq !== cursor.sentSeq + 1) {
      throw new InvariantError(`push of ${message.conv}#${message.seq} to ${connection.identity.device}, whose cursor is at ${cursor.sentSeq}`);
    }
    let text = this.lastPushed?.message === message ? this.lastPushed.text : undefined;
    if (text === undefined) {
      text = JSON.stringify({ t: 'msg', ...message });
      this.lastPushed = { message, text };
    }
    cursor.sentSeq = message.seq;
    connection.inFlight++;
    // Each message pushed earns the device one ack beyond its ack rate (cell-core.ts, receive).
    connection.ackRateLimit.credit(1);
    this.metrics.messagesOut.inc();
    this.sendText(connection, text);
    this.checkSynced(connection, cursor);
  }

  /** Catches one conversation up on one device, page by page, within the window. */
  private pump(connection: DeviceConnection, conv: string): void {
    const cursor = connection.cursors.get(conv);
    if (cursor === undefined || cursor.pumping) return;
    cursor.pumping = true;
    this.catchUp(connection, conv, cursor).catch((error: unknown) => {
      // The device resyncs from its cursor when it reconnects; a store failure is no bug.
      const storeFailed = operatingErrorOf(error)?.code === ErrorCode.StoreUnavailable;
      if (storeFailed) this.sendFrame(connection, { t: 'error', code: ErrorCode.StoreUnavailable, message: 'the store is unavailable; reconnect to resync', conv });
      this.logger[storeFailed ? 'warn' : 'error']({ err: error, conv, device: connection.identity.device }, 'catch-up failed; closing the device');
      connection.port.close(CloseCode.GoingAway, 'delivery failed; reconnect');
    });
  }

  /**
   * Pushes pages until the device has everything, its window is full or its network is
   * saturated (then the conversation waits in `stalledConversations` for an ack or a drain).
   * `pumping` is cleared in this function's own `finally`, which runs synchronously at the
   * return, so a wake-up that comes right after a stall finds the conversation free to pump.
   */
  private async catchUp(connection: DeviceConnection, conv: string, cursor: DeviceCursor): Promise<void> {
    const { tenant } = connection.identity;
    try {
      while (!connection.closed && cursor.paused !== true) {
        const state = this.log.cached(tenant, conv) ?? (await this.log.conversation(tenant, conv));
        const available = state.durableSeq - cursor.sentSeq;
        if (available <= 0) return;
        const room = this.limits.deliveryWindow - connection.inFlight;
        if (room <= 0 || this.saturated(connection)) {
          connection.stalledConversations.add(conv);
          return;
        }
        const page = await this.log.messages(
          tenant,
          conv,
          cursor.sentSeq + 1,
          state.durableSeq + 1,
          Math.min(room, available, this.limits.syncPageSize),
        );
        if (page.length === 0) return;
        const skipped = page[0]!.seq - 1 - cursor.sentSeq;
        if (skipped > 0) this.skipDeleted(connection, cursor, skipped);
        for (const message of page) {
          if (connection.closed) return;
          // The room was judged before the page was read; other conversations may have taken it
          // meanwhile. Catch-up also waits for the device's network to drain instead of piling up bytes.
          if (!this.hasRoom(connection) || this.saturated(connection)) {
            connection.stalledConversations.add(conv);
            return;
          }
          if (message.seq === cursor.sentSeq + 1) this.push(connection, cursor, message);
        }
      }
    } finally {
      cursor.pumping = false;
    }
  }

  /**
   * The device's network took the bytes queued for it (uWS drain, or a flush that left little
   * behind): conversations that waited for bytes go on.
   */
  drained(connection: DeviceConnection): void {
    if (!connection.closed) this.resumeStalled(connection);
  }

  /** Past half the backpressure limit, catch-up stops; only live frames may go beyond. */
  private saturated(connection: DeviceConnection): boolean {
    return connection.port.bufferedBytes() > this.limits.maxBackpressureBytes / 2;
  }

  private resumeStalled(connection: DeviceConnection): void {
    if (connection.stalledConversations.size === 0 || !this.hasRoom(connection) || this.saturated(connection)) return;
    const stalled = [...connection.stalledConversations];
    connection.stalledConversations.clear();
    for (const conv of stalled) this.pump(connection, conv);
  }

  private checkSynced(connection: DeviceConnection, cursor: DeviceCursor): void {
    if (cursor.syncTargetSeq === 0 || cursor.sentSeq < cursor.syncTargetSeq) return;
    cursor.syncTargetSeq = 0;
    connection.unsyncedConversations--;
    if (connection.unsyncedConversations === 0) this.sendSynced(connection);
  }

  private sendSynced(connection: DeviceConnection): void {
    if (connection.syncedSent || !connection.loaded) return;
    connection.syncedSent = true;
    this.sendFrame(connection, { t: 'synced' });
  }
}

function outOfRange(conv: string, seq: number): CellError {
  return new CellError(ErrorCode.SeqOutOfRange, `nothing up to seq ${seq} was delivered in ${conv}`);
}
