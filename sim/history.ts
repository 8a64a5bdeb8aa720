import type { DeskNotice, MessageRole } from '../cell/protocol/frames.js';

/**
 * What happened in a run, as the checkers need it, and the checkers themselves.
 *
 * The simulator reports every send a device makes, every acknowledgement (the SDK's send()
 * resolving with a seq), every message a device's SDK hands to the application (the `message`
 * event) and every read receipt. Order, duplicates and unexpected messages are checked as they
 * happen; lost messages and the delivery ratio once the run settled. Like Maelstrom's kafka
 * checker and Jepsen's lost set: an acknowledged message must reach every device of both
 * parties, once, in conversation order, with the content it was sent with.
 */

export type ViolationKind =
  /** An acknowledged message never reached a device of one of its parties. */
  | 'lost'
  /** A device got a conversation seq it already had (a repeat, or one going backwards). */
  | 'duplicate'
  /** A device skipped seqs of a conversation. */
  | 'gap'
  /** A device got a message nobody sent, or with other content than was sent. */
  | 'unexpected'
  /** Two devices got different messages under the same conversation seq. */
  | 'divergent'
  /** One send (conversation, sender, client message id) was stored under two seqs. */
  | 'double-stored'
  /** A send was acknowledged with a seq under which another message was delivered. */
  | 'ack-mismatch'
  /** A device saw a user's read cursor of a conversation move backwards. */
  | 'cursor-backwards'
  /** After the heal, live cells disagree on membership, or the merchant homes are wrong. */
  | 'membership'
  | 'merchant-home'
  /** In-cell conversations did not keep flowing during partitions. */
  | 'in-cell-delivery'
  /** A promise rejection nobody handled: a crash in production. */
  | 'unhandled-rejection'
  /** A device's client stopped for good (closed or replaced) without the scenario asking. */
  | 'device-stopped'
  /** A cell answered a device INTERNAL: a bug, since every operating error (a failing disk too) has its own code. */
  | 'internal-error'
  // Sends made while the merchant's home was down (sim/outage-checks.ts):
  /** Neither queued nor acknowledged within the bound: nobody took the customer's message while the home was down. */
  | 'outage-unserved'
  /** Never acknowledged with a seq by the end of the run (after the heal and the settle). */
  | 'outage-lost'
  /** Stored out of the order its device sent it in, among that device's sends to the conversation. */
  | 'outage-order'
  // The desk's invariants (sim/desk-checks.ts):
  /** An agent held more consultations than its capacity. */
  | 'desk-over-capacity'
  /** A consultation stayed with an agent whose devices were all gone longer than the grace period. */
  | 'desk-grace'
  /** A customer was assigned before one who waited longer in the same group (not by the sticky rule). */
  | 'desk-fifo'
  /** A customer kept waiting while an agent of its group was online with free capacity. */
  | 'desk-idle-capacity'
  /** A conversation's consultations overlapped, or a change came to a consultation not open. */
  | 'desk-open-span';

export interface Violation {
  readonly kind: ViolationKind;
  readonly message: string;
  /** Virtual ms since the start of the run. */
  readonly atMs?: number;
}

export interface MessageSeen {
  readonly conv: string;
  readonly seq: number;
  readonly from: string;
  readonly cmid: string;
  readonly body: string;
  /** `system` for the desk's messages, which nobody of the simulation sent. */
  readonly role?: MessageRole;
  readonly event?: DeskNotice | undefined;
  /** The cell's time when the message became durable. */
  readonly ts?: number;
}

/** A system message of the desk as some device saw it: the record of the desk's changes. */
export interface NoticeSeen {
  readonly conv: string;
  readonly seq: number;
  readonly cmid: string;
  readonly ts: number;
  readonly event: DeskNotice;
}

export interface DeviceRegistration {
  readonly user: string;
  readonly role: 'customer' | 'agent';
  /** The merchant of an agent. */
  readonly merchant?: string;
}

export interface SendContext {
  readonly device: string;
  readonly conv: string;
  readonly from: string;
  readonly cmid: string;
  readonly body: string;
  readonly atMs: number;
  /** The conversation's merchant is hosted by the cell the sending device is connected to. */
  readonly inCell: boolean;
  /** A partition was in force when the send was made. */
  readonly duringPartition: boolean;
  /** The sending device's connection was open (its send could go out at once). */
  readonly senderOpen: boolean;
  /** The cell the sending device used. */
  readonly cellId: string;
  /** The desk group a customer's send named. */
  readonly group?: string | undefined;
  /** The merchant's home cell, when it was down (crashed, not restarted yet) as the customer sent. */
  readonly outageOf?: string | undefined;
}

/** What the checks read of one send. */
export interface SendView extends Readonly<SendRecord> {}

interface SendRecord extends Omit<SendContext, 'inCell'> {
  /** As sent; cleared when the conversation's merchant starts moving before the send is answered. */
  inCell: boolean;
  /** The seq it was stored under, from its ack or its first delivery. */
  seq: number | undefined;
  ackedSeq: number | undefined;
  ackedAtMs: number | undefined;
  /** When the connected cell answered `queued` (durable there, waiting for the conversation's home). */
  queuedAtMs: number | undefined;
  failedCode: string | undefined;
}

interface DeviceState {
  readonly registration: DeviceRegistration;
  /** Conversation to the highest seq delivered (gap-free below, or a gap was reported). */
  readonly lastSeq: Map<string, number>;
  readonly receipts: Map<string, number>;
}

const EXAMPLES_PER_KIND = 20;

export interface InCellStats {
  /** In-cell sends made during a partition by an open device to a cell up for the whole bound. */
  readonly eligible: number;
  readonly ackedWithinBound: number;
  /** ackedWithinBound / eligible; 1 when none were eligible. */
  readonly ratio: number;
}

export interface LatencySummary {
  readonly count: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export class History {
  private readonly sends = new Map<string, SendRecord>();
  /** Per conversation, the send stored under each seq (index = seq). */
  private readonly truth = new Map<string, Array<SendRecord | undefined>>();
  private readonly devices = new Map<string, DeviceState>();
  private readonly violationCounts = new Map<ViolationKind, number>();
  private readonly examples: Violation[] = [];
  private readonly sendFailures = new Map<string, number>();
  /** The same, for sends made while a partition was in force. */
  private readonly sendFailuresInPartitions = new Map<string, number>();
  private sentCount = 0;
  /** Sends neither acknowledged nor failed yet. */
  /** Keys of the sends whose outcome is unknown. */
  private readonly openSends = new Set<string>();
  private ackedCount = 0;
  private deliveredCount = 0;
  private receiptCount = 0;
  /** The desk's system messages by conversation and seq, as first seen. */
  private readonly notices = new Map<string, Map<number, NoticeSeen>>();

  /**
   * `hasDesk` says whether a merchant has a desk: its agents get only the conversations of their
   * own consultations, so the lost set asks every acknowledged message of the customer's devices
   * only (and the desk's checks judge who served whom).
   */
  constructor(
    readonly startMs = 0,
    private readonly hasDesk: (merchant: string) => boolean = () => false,
  ) {}

  get messagesSent(): number {
    return this.sentCount;
  }

  /** Sends whose outcome (ack or failure) is still unknown. */
  get pendingSends(): number {
    return this.openSends.size;
  }

  /**
   * Of those, the sends to conversations not in `ended`: a send into a conversation whose
   * merchant's cell left may wait in an outbox for good, as nobody hosts it any more.
   */
  pendingSendsOutside(ended: ReadonlySet<string>): number {
    let count = 0;
    for (const key of this.openSends) if (!ended.has(this.sends.get(key)!.conv)) count++;
    return count;
  }

  get messagesAcked(): number {
    return this.ackedCount;
  }

  get deliveries(): number {
    return this.deliveredCount;
  }

  get receipts(): number {
    return this.receiptCount;
  }

  registerDevice(key: string, registration: DeviceRegistration): void {
    if (this.devices.has(key)) return;
    this.devices.set(key, { registration, lastSeq: new Map(), receipts: new Map() });
  }

  /** A device called send(); returns the key under which its outcome is reported. */
  sendCalled(context: SendContext): string {
    const key = sendKey(context.conv, context.from, context.cmid);
    this.sentCount++;
    this.openSends.add(key);
    this.sends.set(key, { ...context, seq: undefined, ackedSeq: undefined, ackedAtMs: undefined, queuedAtMs: undefined, failedCode: undefined });
    return key;
  }

  /** The cell a device is connected to answered `queued` for one of its sends (the first time counts). */
  queued(conv: string, from: string, cmid: string, atMs: number): void {
    const send = this.sends.get(sendKey(conv, from, cmid));
    if (send !== undefined && send.queuedAtMs === undefined) send.queuedAtMs = atMs;
  }

  /** Every send of the run, in the order they were made. */
  allSends(): Iterable<SendView> {
    return this.sends.values();
  }

  acked(key: string, seq: number, atMs: number): void {
    const send = this.sends.get(key);
    if (send === undefined) throw new Error(`ack of an unknown send ${key}`);
    if (send.ackedSeq !== undefined) return;
    this.openSends.delete(key);
    this.ackedCount++;
    send.ackedSeq = seq;
    send.ackedAtMs = atMs;
    this.place(send, seq, atMs, 'ack');
  }

  sendFailed(key: string, code: string): void {
    const send = this.sends.get(key);
    if (send !== undefined && send.failedCode === undefined && send.ackedSeq === undefined) {
      send.failedCode = code;
      this.openSends.delete(key);
    }
    this.sendFailures.set(code, (this.sendFailures.get(code) ?? 0) + 1);
    if (send?.duringPartition === true) this.sendFailuresInPartitions.set(code, (this.sendFailuresInPartitions.get(code) ?? 0) + 1);
  }

  delivered(deviceKey: string, message: MessageSeen, atMs: number): void {
    this.deliveredCount++;
    const device = this.devices.get(deviceKey);
    if (device === undefined) throw new Error(`delivery to an unregistered device ${deviceKey}`);
    const last = device.lastSeq.get(message.conv) ?? 0;
    if (message.seq <= last) {
      this.violation('duplicate', `${deviceKey} got ${message.conv} seq ${message.seq} after seq ${last}`, atMs);
    } else {
      if (message.seq > last + 1) this.violation('gap', `${deviceKey} got ${message.conv} seq ${message.seq} after seq ${last} (skipped ${last + 1}-${message.seq - 1})`, atMs);
      device.lastSeq.set(message.conv, message.seq);
    }
    if (message.role === 'system') {
      this.noticeSeen(deviceKey, message, atMs);
      return;
    }
    const send = this.sends.get(sendKey(message.conv, message.from, message.cmid));
    if (send === undefined) {
      this.violation('unexpected', `${deviceKey} got ${message.conv} seq ${message.seq} from ${message.from} (cmid ${message.cmid}), which nobody sent`, atMs);
      return;
    }
    if (send.body !== message.body) {
      this.violation('unexpected', `${deviceKey} got ${message.conv} seq ${message.seq} with body ${JSON.stringify(message.body.slice(0, 40))}; it was sent as ${JSON.stringify(send.body.slice(0, 40))}`, atMs);
    }
    this.place(send, message.seq, atMs, deviceKey);
  }

  /** Every system message of the desk some device saw, by conversation in seq order. */
  noticesByConversation(): Map<string, NoticeSeen[]> {
    const byConv = new Map<string, NoticeSeen[]>();
    for (const [conv, bySeq] of this.notices) byConv.set(conv, [...bySeq.values()].sort((a, b) => a.seq - b.seq));
    return byConv;
  }

  /** The acknowledged or delivered sends of `from` in `conv`, by seq, with the group each named. */
  sendsOf(conv: string, from: string): Array<{ seq: number; group: string | undefined; inCell: boolean }> {
    const placed = this.truth.get(conv) ?? [];
    const found: Array<{ seq: number; group: string | undefined; inCell: boolean }> = [];
    placed.forEach((send, seq) => {
      if (send !== undefined && send.from === from) found.push({ seq, group: send.group, inCell: send.inCell });
    });
    return found;
  }

  private noticeSeen(deviceKey: string, message: MessageSeen, atMs: number): void {
    let bySeq = this.notices.get(message.conv);
    if (bySeq === undefined) this.notices.set(message.conv, (bySeq = new Map()));
    const known = bySeq.get(message.seq);
    if (known !== undefined) {
      if (known.cmid !== message.cmid) this.violation('divergent', `${message.conv} seq ${message.seq} is system message ${known.cmid} and ${message.cmid} (${deviceKey})`, atMs);
      return;
    }
    if (this.truth.get(message.conv)?.[message.seq] !== undefined) {
      this.violation('divergent', `${message.conv} seq ${message.seq} is a chat message and system message ${message.cmid} (${deviceKey})`, atMs);
      return;
    }
    if (message.event === undefined || message.ts === undefined) {
      this.violation('unexpected', `${deviceKey} got system message ${message.conv} seq ${message.seq} without its event`, atMs);
      return;
    }
    bySeq.set(message.seq, { conv: message.conv, seq: message.seq, cmid: message.cmid, ts: message.ts, event: message.event });
  }

  receipt(deviceKey: string, receipt: { conv: string; user: string; role?: string; seq: number }, atMs: number): void {
    this.receiptCount++;
    const device = this.devices.get(deviceKey);
    if (device === undefined) throw new Error(`receipt to an unregistered device ${deviceKey}`);
    // A customer and an agent may share an id: their read cursors are different ones.
    const key = `${receipt.conv}\u0000${receipt.role ?? ''}\u0000${receipt.user}`;
    const previous = device.receipts.get(key) ?? 0;
    if (receipt.seq < previous) {
      this.violation('cursor-backwards', `${deviceKey} saw ${receipt.user}'s read cursor of ${receipt.conv} go from ${previous} back to ${receipt.seq}`, atMs);
      return;
    }
    device.receipts.set(key, receipt.seq);
  }

  violation(kind: ViolationKind, message: string, atMs?: number): void {
    const count = (this.violationCounts.get(kind) ?? 0) + 1;
    this.violationCounts.set(kind, count);
    if (count <= EXAMPLES_PER_KIND) this.examples.push(atMs === undefined ? { kind, message } : { kind, message, atMs: atMs - this.startMs });
  }

  /** Violations by kind, in a stable order. */
  violationSummary(): Record<string, number> {
    return Object.fromEntries([...this.violationCounts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  get violationTotal(): number {
    let total = 0;
    for (const count of this.violationCounts.values()) total += count;
    return total;
  }

  /** Up to 20 examples per kind, in the order they were found. */
  violationExamples(): readonly Violation[] {
    return this.examples;
  }

  /** Sends refused for good, by error code: all of them, and those made during partitions. */
  failuresByCode(): Record<string, number> {
    return sortedCounts(this.sendFailures);
  }

  failuresDuringPartitionsByCode(): Record<string, number> {
    return sortedCounts(this.sendFailuresInPartitions);
  }

  /**
   * The lost set: every acknowledged message of a conversation not in `excluded` must have
   * reached every device of its customer and every agent device of its merchant (at a merchant
   * with a desk, its customer's devices: agents get their own consultations only), and every
   * system message of the desk every device of its customer. Reports each missing (message,
   * device) pair as a violation; returns how many there were.
   */
  checkLost(excluded: ReadonlySet<string> = new Set()): number {
    const deviceKeys = new Map<DeviceState, string>();
    for (const [key, device] of this.devices) deviceKeys.set(device, key);
    let lost = 0;
    for (const expected of this.mustReach(excluded)) {
      for (const device of expected.devices) {
        if ((device.lastSeq.get(expected.conv) ?? 0) >= expected.seq) continue;
        lost++;
        this.violation('lost', `${expected.conv} seq ${expected.seq} (${expected.what}) never reached ${deviceKeys.get(device)}`);
      }
    }
    return lost;
  }

  /** Acknowledged messages some party's device still lacks (for the settle phase's "done yet?"). */
  undelivered(excluded: ReadonlySet<string> = new Set(), limit = 1): number {
    let missing = 0;
    for (const expected of this.mustReach(excluded)) {
      for (const device of expected.devices) {
        if ((device.lastSeq.get(expected.conv) ?? 0) < expected.seq) {
          missing++;
          if (missing >= limit) return missing;
        }
      }
    }
    return missing;
  }

  /** Every message that must reach devices, with the devices it must reach. */
  private *mustReach(excluded: ReadonlySet<string>): Generator<{ conv: string; seq: number; what: string; devices: DeviceState[] }> {
    const byOwner = this.ownerIndex();
    for (const send of this.sends.values()) {
      if (send.ackedSeq === undefined || excluded.has(send.conv)) continue;
      const separator = send.conv.indexOf(':');
      const merchant = send.conv.slice(0, separator);
      const customers = byOwner.customers.get(send.conv.slice(separator + 1)) ?? [];
      const devices = this.hasDesk(merchant) ? customers : [...customers, ...(byOwner.agents.get(merchant) ?? [])];
      yield { conv: send.conv, seq: send.ackedSeq, what: `cmid ${send.cmid}, acked at ${Math.round((send.ackedAtMs ?? 0) - this.startMs)} ms`, devices };
    }
    for (const [conv, bySeq] of this.notices) {
      if (excluded.has(conv)) continue;
      const devices = byOwner.customers.get(conv.slice(conv.indexOf(':') + 1)) ?? [];
      for (const notice of bySeq.values()) yield { conv, seq: notice.seq, what: `system message ${notice.event.type}`, devices };
    }
  }

  /**
   * The merchant of these conversations starts moving to another cell: sends not answered yet
   * no longer count as in-cell (the move changes the conversation's cell, and an agent's send is
   * refused once the merchant left), for the autonomy check.
   */
  merchantMoving(merchant: string): void {
    const prefix = `${merchant}:`;
    for (const key of this.openSends) {
      const send = this.sends.get(key)!;
      if (send.conv.startsWith(prefix)) send.inCell = false;
    }
  }

  /**
   * A device's session opened on another cell (the cells redirected it, or it routed again): its
   * sends not answered yet no longer count as in-cell, as for a move. Its customer left the
   * merchant's cell, and the send is resent where the device went, across whatever partition
   * lies between (a fallback sending a customer home found it: desk.yaml seed 94).
   */
  deviceSwitchedCell(deviceKey: string): void {
    for (const key of this.openSends) {
      const send = this.sends.get(key)!;
      if (send.device === deviceKey) send.inCell = false;
    }
  }

  /**
   * Cell autonomy: of the in-cell sends made during partitions by an open device to a cell that
   * stayed up for `boundMs` after, the share acknowledged within `boundMs`.
   */
  inCellDelivery(boundMs: number, cellWasDown: (cellId: string, fromMs: number, toMs: number) => boolean): InCellStats {
    let eligible = 0;
    let acked = 0;
    for (const send of this.sends.values()) {
      if (!send.inCell || !send.duringPartition || !send.senderOpen) continue;
      // The desk refused it: the consultation had left the agent (nothing to deliver).
      if (send.failedCode === 'NOT_ASSIGNED') continue;
      // The scenario closed the client before the answer came (a desk agent going offline): its
      // outcome is unknown to the device, whatever the cell did (desk.yaml seed 256: stored in 30 ms).
      if (send.failedCode === 'CLIENT_CLOSED') continue;
      if (cellWasDown(send.cellId, send.atMs, send.atMs + boundMs)) continue;
      eligible++;
      if (send.ackedAtMs !== undefined && send.ackedAtMs - send.atMs <= boundMs) acked++;
    }
    return { eligible, ackedWithinBound: acked, ratio: eligible === 0 ? 1 : acked / eligible };
  }

  /** Send-to-ack latency of acknowledged sends, in-cell and cross-cell. */
  ackLatency(): { inCell: LatencySummary; crossCell: LatencySummary } {
    const inCell: number[] = [];
    const crossCell: number[] = [];
    for (const send of this.sends.values()) {
      if (send.ackedAtMs === undefined) continue;
      (send.inCell ? inCell : crossCell).push(send.ackedAtMs - send.atMs);
    }
    return { inCell: summarize(inCell), crossCell: summarize(crossCell) };
  }

  private ownerIndex(): { customers: Map<string, DeviceState[]>; agents: Map<string, DeviceState[]> } {
    const customers = new Map<string, DeviceState[]>();
    const agents = new Map<string, DeviceState[]>();
    for (const device of this.devices.values()) {
      const { role, user, merchant } = device.registration;
      const index = role === 'agent' ? agents : customers;
      const owner = role === 'agent' ? (merchant ?? '') : user;
      const list = index.get(owner);
      if (list === undefined) index.set(owner, [device]);
      else list.push(device);
    }
    return { customers, agents };
  }

  /** Records that `send` was stored under `seq`, as seen by `witness`, and checks it against what others saw. */
  private place(send: SendRecord, seq: number, atMs: number, witness: string): void {
    if (send.seq !== undefined && send.seq !== seq) {
      this.violation(witness === 'ack' ? 'ack-mismatch' : 'double-stored', `${send.conv} message ${send.cmid} from ${send.from} seen under seq ${send.seq} and seq ${seq} (${witness})`, atMs);
      return;
    }
    send.seq = seq;
    let seqs = this.truth.get(send.conv);
    if (seqs === undefined) {
      seqs = [];
      this.truth.set(send.conv, seqs);
    }
    const holder = seqs[seq];
    if (this.notices.get(send.conv)?.has(seq) === true) {
      this.violation('divergent', `${send.conv} seq ${seq} is system message ${this.notices.get(send.conv)!.get(seq)!.cmid} and ${send.cmid} from ${send.from} (${witness})`, atMs);
    } else if (holder === undefined) seqs[seq] = send;
    else if (holder !== send) {
      this.violation(witness === 'ack' ? 'ack-mismatch' : 'divergent', `${send.conv} seq ${seq} is ${holder.cmid} from ${holder.from} and ${send.cmid} from ${send.from} (${witness})`, atMs);
    }
  }
}

function sortedCounts(counts: ReadonlyMap<string, number>): Record<string, number> {
  return Object.fromEntries([...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function sendKey(conv: string, from: string, cmid: string): string {
  return `${conv}\u0000${from}\u0000${cmid}`;
}

function summarize(values: number[]): LatencySummary {
  if (values.length === 0) return { count: 0, p50Ms: 0, p99Ms: 0, maxMs: 0 };
  values.sort((a, b) => a - b);
  const at = (quantile: number): number => Math.round(values[Math.min(values.length - 1, Math.floor(quantile * values.length))]!);
  return { count: values.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: Math.round(values[values.length - 1]!) };
}
