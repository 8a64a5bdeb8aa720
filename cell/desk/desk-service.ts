import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import { randomId, type Random } from '../../platform/random.js';
import { readAll } from '../../platform/store/scan.js';
import type { Store, StoreOp } from '../../platform/store/store.js';
import type { Identity } from '../access/tokens.js';
import type { AppendRequest, AppendResult } from '../messaging/conversation-log.js';
import type { DeviceConnection } from '../messaging/device.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { conversationIdOf, parseConversationId, type AgentStatus, type ChatMessage, type ConsultationView, type DeskNotice, type ServerFrame } from '../protocol/frames.js';
import {
  ConsultationRecord,
  LastConsultation,
  deleteRecord,
  deskKeys,
  parseChosenStatus,
  parseStored,
  putLast,
  putRecord,
} from './desk-records.js';
import { deskSnapshot, type DeskMetrics, type DeskSnapshot } from './desk-metrics.js';
import { deskOverview, type DeskOverview } from './desk-overview.js';
import { OpenDesk } from './open-desk.js';
import { MAX_STORE_RETRY_MS, MIN_STORE_RETRY_MS, SystemMessages } from './system-messages.js';
import { DeskError, type DeskEvent, type DeskSettings as RuleSettings } from './merchant-desk.js';

/** An agent as the desk needs it (the people directory holds the rest). */
export interface DeskPerson {
  readonly id: string;
  readonly name: string;
  readonly capacity: number;
  readonly groups: readonly string[];
  readonly supervisor: boolean;
}

/** The merchant's people: a merchant with at least one agent has a desk. */
export interface DeskPeople {
  list(tenant: string, merchant: string): readonly DeskPerson[];
  get(tenant: string, merchant: string, agent: string): DeskPerson | undefined;
}

/** No merchant has people: every desk is open (a cell that does not use the desk, the messaging core's tests). */
export const NO_PEOPLE: DeskPeople = { list: () => [], get: () => undefined };

/** What the desk may do to its cell. */
export interface DeskHost {
  /** Appends to a conversation this cell hosts (the desk's system messages). */
  append(request: AppendRequest): Promise<AppendResult>;
  /** The connected devices of one agent of a merchant. */
  agentDevices(tenant: string, merchant: string, agent: string): Iterable<DeviceConnection>;
  customerDevices(tenant: string, customer: string): Iterable<DeviceConnection>;
  follow(connection: DeviceConnection, conv: string): void;
  unfollow(connection: DeviceConnection, conv: string): void;
  send(connection: DeviceConnection, frame: ServerFrame): void;
  /** Sends one frame to many devices, serialised once. */
  broadcast(connections: Iterable<DeviceConnection>, frame: ServerFrame): void;
  /** Passes a consultation's new state to the customer's devices on other cells (a cell in a cluster). */
  tellElsewhere(tenant: string, view: ConsultationView): void;
  /** Passes a waiting customer's new queue position (no change of state) to its devices on other cells. */
  tellPositionElsewhere(tenant: string, view: ConsultationView): void;
  /** Closes a device whose agent was removed (close code 4403). */
  closeDevice(connection: DeviceConnection, reason: string): void;
}

export interface DeskSettings extends RuleSettings {
  /** How long an agent whose devices all left keeps its consultations before they are reassigned. */
  readonly graceMs: number;
  /** An assigned consultation without a message for this long is closed. */
  readonly inactivityCloseMs: number;
}

/** The group of a consultation that names none (or one that no agent of the merchant is in). */
export const DEFAULT_GROUP = 'default';
/**
 * Positions are told to a group's waiting customers at most this often: a busy queue moves many
 * times a second, and each move would otherwise cost a frame per waiting customer.
 */
export const QUEUE_TELL_INTERVAL_MS = 250;
/** How often each desk looks for inactive consultations, at most. */
const MAX_SWEEP_INTERVAL_MS = 60_000;


/** Why the events of one desk call happened: it shapes the system messages that announce them. */
interface Cause {
  transferFrom?: string | undefined;
  note?: string | undefined;
  closedBy?: 'customer' | 'agent' | 'inactivity';
  released?: boolean;
}

/**
 * The service desks of the merchants this cell hosts (docs/desk.md). The rules decide in memory
 * (MerchantDesk); this class turns their decisions into durable records and system messages,
 * tells devices (who follows which conversation, queue positions), and runs the timers: the
 * grace period of an agent whose devices left, and the close of inactive consultations.
 *
 * A merchant without agents in the people directory has no desk: every agent token of it sees
 * every conversation, as before the desk existed (an open desk).
 */
export class DeskService {
  private readonly desks = new Map<string, OpenDesk>();
  private readonly systemMessages: SystemMessages;
  /** Desks to open whose state could not be read yet (the store failed): retried until they open. */
  private readonly pending = new Map<string, { backoffMs: number; timer: TimerHandle | undefined; reading: Promise<void> | undefined }>();

  constructor(
    private readonly options: {
      store: Store;
      clock: Clock;
      random: Random;
      logger: Logger;
      people: DeskPeople;
      host: DeskHost;
      settings: DeskSettings;
      /** Absent: nothing is counted (unit tests). */
      metrics?: DeskMetrics | undefined;
    },
  ) {
    this.systemMessages = new SystemMessages({
      clock: options.clock,
      random: options.random,
      logger: options.logger,
      append: (request) => options.host.append(request),
      runs: (open) => this.desks.get(deskKey(open.tenant, open.merchant)) === open,
    });
  }

  /** What the desks hold now, for the metrics read at scrape time. */
  snapshot(): DeskSnapshot {
    return deskSnapshot(this.desks.values(), this.options.clock.now());
  }

  /** The open desks' agents, queues and consultations now, for the cell console (`GET /v1/admin/desks`). */
  overview(): DeskOverview[] {
    return deskOverview(this.desks.values(), this.options.clock.now(), (open, agent) => this.options.people.get(open.tenant, open.merchant, agent)?.name);
  }

  /**
   * Opens a hosted merchant's desk (at start, when the merchant moves in, at its first agent).
   * Until its state is read, the desk is loading: its conversations' writes are refused as
   * STORE_UNAVAILABLE (clients retry) and agents get none of them, rather than everyone seeing
   * everything as at an open desk. A read that fails is tried again, backing off, until it works
   * or the merchant leaves.
   */
  openMerchant(tenant: string, merchant: string): Promise<void> {
    const key = deskKey(tenant, merchant);
    if (this.desks.has(key) || this.options.people.list(tenant, merchant).length === 0) return Promise.resolve();
    const attempt = this.pending.get(key) ?? { backoffMs: MIN_STORE_RETRY_MS, timer: undefined, reading: undefined };
    this.pending.set(key, attempt);
    // One read at a time: a second would open a second desk over the first.
    if (attempt.reading !== undefined) return attempt.reading;
    attempt.reading = this.loadMerchant(tenant, merchant).then(
      () => {
        if (this.pending.get(key) === attempt) this.pending.delete(key);
      },
      (error: unknown) => {
        attempt.reading = undefined;
        if (this.pending.get(key) !== attempt) return;
        this.options.logger.warn({ err: error, tenant, merchant, retryInMs: attempt.backoffMs }, 'could not read the desk of a merchant; trying again');
        attempt.timer = this.options.clock.setTimer(attempt.backoffMs, () => {
          attempt.timer = undefined;
          if (this.pending.get(key) === attempt) void this.openMerchant(tenant, merchant);
        });
        attempt.backoffMs = Math.min(attempt.backoffMs * 2, MAX_STORE_RETRY_MS);
      },
    );
    return attempt.reading;
  }

  /** Whether the merchant's desk is still being read (see openMerchant). */
  private isLoading(tenant: string, merchant: string): boolean {
    return this.pending.has(deskKey(tenant, merchant)) && !this.desks.has(deskKey(tenant, merchant));
  }

  /** Throws STORE_UNAVAILABLE (retry shortly) while the merchant's desk is being read. */
  requireOpen(tenant: string, merchant: string): void {
    if (this.isLoading(tenant, merchant)) {
      throw new CellError(ErrorCode.StoreUnavailable, `the desk of merchant ${merchant} is being read from the store; retry shortly`, { retryAfterMs: 500 });
    }
  }

  /** Reads a merchant's desk from the store; throws when the store fails. */
  private async loadMerchant(tenant: string, merchant: string): Promise<void> {
    const people = this.options.people.list(tenant, merchant);
    if (people.length === 0 || this.desks.has(deskKey(tenant, merchant))) return;
    const { store, clock } = this.options;
    const open = new OpenDesk(tenant, merchant, this.options.settings);
    const nowMs = clock.now();
    for (const person of people) open.rules.upsertAgent(person, nowMs);
    this.knowPeople(open);
    const [records, lasts, statuses] = await Promise.all([
      readAll(store, deskKeys.consultations(tenant, merchant)),
      readAll(store, deskKeys.lasts(tenant, merchant)),
      readAll(store, deskKeys.statuses(tenant, merchant)),
    ]);
    for (const [key, value] of lasts) {
      const last = parseStored(LastConsultation, key, value);
      if (last.agent !== undefined) open.rules.restoreLastAgent(key.slice(key.lastIndexOf('/') + 1), last.agent, last.closedAtMs);
    }
    for (const [key, value] of statuses) open.chosen.set(key.slice(key.lastIndexOf('/') + 1), parseChosenStatus(key, value));
    // Queued in one decision (same time): in the order they opened, as the desk met them.
    const restored = records.map(([key, value]) => parseStored(ConsultationRecord, key, value)).sort((a, b) => a.queuedAtMs - b.queuedAtMs || a.openedAtMs - b.openedAtMs || a.id.localeCompare(b.id));
    for (const record of restored) {
      open.rules.restore(record);
      open.records.set(record.customer, record);
      open.customerOf.set(record.id, record.customer);
      if (record.state === 'assigned') open.lastActivityMs.set(record.customer, nowMs);
    }
    // The merchant left (moved away, the cell stops) while its desk was being read.
    if (!this.pending.has(deskKey(tenant, merchant))) return;
    this.desks.set(deskKey(tenant, merchant), open);
    // Every agent is offline after a restart or a move: those holding consultations get the grace
    // period to come back. Agents already connected (the desk opened at its first agent) are here.
    for (const agent of open.rules.allAgents()) {
      const devices = this.devicesOfAgent(open, agent.id);
      if (devices.length > 0) {
        // Its devices attached while the desk was being read, following nothing: now they follow theirs.
        const followed = this.isSupervisor(open, agent.id) ? [...open.records.keys()] : open.rules.consultationsOf(agent.id).map((id) => open.customerOf.get(id)!);
        for (const customer of followed) for (const device of devices) this.options.host.follow(device, conversationIdOf(merchant, customer));
        const status = open.chosen.get(agent.id) ?? 'online';
        this.apply(open, open.rules.setStatus(agent.id, status === 'offline' ? 'online' : status, nowMs), {});
      } else if (agent.open > 0) this.startGrace(open, agent.id);
    }
    this.scheduleSweep(open);
  }

  /** The merchant moved away: its desk state went with it; stop the timers here. */
  unloadMerchant(tenant: string, merchant: string): void {
    this.pending.get(deskKey(tenant, merchant))?.timer?.cancel();
    this.pending.delete(deskKey(tenant, merchant));
    const open = this.desks.get(deskKey(tenant, merchant));
    if (open === undefined) return;
    for (const timer of open.graceTimers.values()) timer.cancel();
    open.sweep?.cancel();
    open.queueTellTimer?.cancel();
    this.desks.delete(deskKey(tenant, merchant));
  }

  /** Stops every timer (the cell stops). */
  stop(): void {
    for (const attempt of this.pending.values()) attempt.timer?.cancel();
    this.pending.clear();
    for (const open of [...this.desks.values()]) this.unloadMerchant(open.tenant, open.merchant);
  }

  /**
   * Refuses an agent token for an agent its merchant does not have (never registered, or
   * removed): at a desk, the people directory says who works there. An open desk takes any.
   */
  requireKnownAgent(identity: Identity): void {
    if (identity.role !== 'agent' || identity.merchant === undefined) return;
    const { people } = this.options;
    if (people.get(identity.tenant, identity.merchant, identity.user) !== undefined || people.list(identity.tenant, identity.merchant).length === 0) return;
    throw new CellError(ErrorCode.AgentUnknown, `merchant ${identity.merchant} has no agent ${identity.user}`);
  }

  hasDesk(tenant: string, merchant: string): boolean {
    return this.desks.has(deskKey(tenant, merchant));
  }

  /**
   * The conversations an agent's device follows, when the merchant has a desk and the agent is
   * no supervisor: those of its open consultations. Undefined: all of the merchant's.
   */
  followedBy(identity: Identity): string[] | undefined {
    if (identity.merchant !== undefined && this.isLoading(identity.tenant, identity.merchant)) return [];
    const open = this.agentDesk(identity);
    if (open === undefined || this.isSupervisor(open, identity.user)) return undefined;
    return open.rules.consultationsOf(identity.user).map((id) => conversationIdOf(open.merchant, open.customerOf.get(id)!));
  }

  /** Throws NOT_ASSIGNED unless `identity` may read and write `conv` (customers always may; agents at a desk only their own). */
  authorize(identity: Identity, conv: string): void {
    this.requireOpen(identity.tenant, parseConversationId(conv)!.merchant);
    const open = this.agentDesk(identity);
    if (open === undefined || this.isSupervisor(open, identity.user)) return;
    const customer = parseConversationId(conv)!.customer;
    if (open.records.get(customer)?.agent !== identity.user) {
      throw new CellError(ErrorCode.NotAssigned, `the consultation of ${conv} is not assigned to you`);
    }
  }

  /**
   * The devices here that get a message (or receipt) of the customer's conversation at a desk:
   * the customer's, the assigned agent's, the supervisors', and those of the agents a system
   * message names (the one a transfer or a close takes it from). Undefined without a desk: then
   * every agent of the merchant does.
   */
  participantsOf(tenant: string, merchant: string, customer: string, message?: ChatMessage): DeviceConnection[] | undefined {
    const open = this.desks.get(deskKey(tenant, merchant));
    // While the desk is being read, agents wait: they follow their consultations once it opens.
    if (open === undefined) return this.isLoading(tenant, merchant) ? [...this.options.host.customerDevices(tenant, customer)] : undefined;
    const event = message?.event;
    const named = event === undefined ? [] : [('agent' in event ? event.agent : undefined), ('from' in event ? event.from : undefined)];
    return this.devicesOf(open, customer, open.records.get(customer)?.agent, ...named);
  }

  /** The devices here of `customer`, of the supervisors, and of the named agents, each once (on every message: no sets). */
  private devicesOf(open: OpenDesk, customer: string, ...agents: Array<string | undefined>): DeviceConnection[] {
    const { host } = this.options;
    const devices = [...host.customerDevices(open.tenant, customer)];
    for (const supervisor of open.supervisors) devices.push(...host.agentDevices(open.tenant, open.merchant, supervisor));
    agents.forEach((agent, index) => {
      if (agent === undefined || open.supervisors.has(agent) || agents.indexOf(agent) !== index) return;
      devices.push(...host.agentDevices(open.tenant, open.merchant, agent));
    });
    return devices;
  }

  /**
   * A customer's message is about to be appended. At a desk with no open consultation for the
   * customer, it opens one: the record (waiting) is written in the same batch as the message, and
   * the rules decide once it is durable (`messageDurable`). `settle` must follow the append.
   */
  opening(tenant: string, conv: string, group: string | undefined): { alsoWrite: StoreOp[] | undefined; settle: () => void } {
    const { merchant, customer } = parseConversationId(conv)!;
    const open = this.desks.get(deskKey(tenant, merchant));
    if (open === undefined || open.records.has(customer)) return { alsoWrite: undefined, settle: () => undefined };
    const nowMs = this.options.clock.now();
    const record = { id: randomId(this.options.random), customer, group: this.groupFor(open, group), state: 'waiting' as const, openedAtMs: nowMs, queuedAtMs: nowMs, opening: true };
    open.records.set(customer, record);
    open.customerOf.set(record.id, customer);
    const { opening: _opening, ...stored } = record;
    return {
      alsoWrite: [putRecord(tenant, merchant, stored)],
      // A failed or duplicate append opened nothing: forget the record unless the rules took it.
      settle: () => {
        if (open.records.get(customer) === record && record.opening) {
          open.records.delete(customer);
          open.customerOf.delete(record.id);
        }
      },
    };
  }

  /** A message of a conversation hosted here became durable. */
  messageDurable(tenant: string, message: ChatMessage): void {
    if (message.role === 'system') return;
    const { merchant, customer } = parseConversationId(message.conv)!;
    const open = this.desks.get(deskKey(tenant, merchant));
    if (open === undefined) return;
    const nowMs = this.options.clock.now();
    const record = open.records.get(customer);
    if (record !== undefined && record.state === 'assigned') open.lastActivityMs.set(customer, nowMs);
    if (message.role !== 'customer') return;
    if (record === undefined) {
      // Appended without `opening` (relayed from another cell, or raced a failed opening): open it now.
      const fresh = { id: randomId(this.options.random), customer, group: this.groupFor(open, undefined), state: 'waiting' as const, openedAtMs: nowMs, queuedAtMs: nowMs };
      open.records.set(customer, fresh);
      open.customerOf.set(fresh.id, customer);
      this.apply(open, open.rules.open(fresh.id, customer, fresh.group, nowMs), {});
    } else if (record.opening === true) {
      delete record.opening;
      this.apply(open, open.rules.open(record.id, customer, record.group, nowMs), {});
    }
  }

  /** An agent's device connected: it is back from its grace period, in the status it chose. */
  agentConnected(identity: Identity): void {
    const open = this.agentDesk(identity);
    if (open === undefined || open.rules.agent(identity.user) === undefined) return;
    open.graceTimers.get(identity.user)?.cancel();
    open.graceTimers.delete(identity.user);
    if (open.rules.agent(identity.user)!.status === 'offline') {
      const status = open.chosen.get(identity.user) ?? 'online';
      this.apply(open, open.rules.setStatus(identity.user, status === 'offline' ? 'online' : status, this.options.clock.now()), {});
    }
  }

  /** An agent's last device left: no new consultations; its own wait for the grace period. */
  agentLeft(identity: Identity): void {
    const open = this.agentDesk(identity);
    if (open === undefined || open.rules.agent(identity.user) === undefined) return;
    this.apply(open, open.rules.setStatus(identity.user, 'offline', this.options.clock.now()), {});
    if (open.rules.agent(identity.user)!.open > 0) this.startGrace(open, identity.user);
  }

  /** The agent sets its status; it is kept across restarts and applied when it connects. */
  async setStatus(identity: Identity, status: AgentStatus): Promise<void> {
    const open = this.requireAgentDesk(identity);
    await this.options.store.write([{ type: 'put', key: deskKeys.status(open.tenant, open.merchant, identity.user), value: JSON.stringify(status) }]);
    open.chosen.set(identity.user, status);
    // Its last device may have left while the status was written: it stays offline (its grace
    // period runs) and gets the status it chose when it connects again.
    if (this.desks.get(deskKey(open.tenant, open.merchant)) !== open || this.devicesOfAgent(open, identity.user).length === 0) return;
    await this.apply(open, this.decide(() => open.rules.setStatus(identity.user, status, this.options.clock.now())), {});
  }

  /** Closes the open consultation of `conv`: by its customer, its agent, or a supervisor. */
  /** Resolves once the system messages of what changed are written (a `rate` right after finds the close). */
  close(identity: Identity, conv: string, consultation?: string): Promise<void> {
    const { merchant, customer } = parseConversationId(conv)!;
    const open = this.requireDesk(identity.tenant, merchant);
    const record = this.requireOpenRecord(open, conv, customer, consultation);
    if (identity.role === 'agent') this.authorize(identity, conv);
    const by = identity.role === 'customer' ? 'customer' : 'agent';
    return this.apply(open, this.decide(() => open.rules.close(record.id, this.options.clock.now())), { closedBy: by });
  }

  /** Closes the open consultation of `conv`, if any, on the merchant's decision (its customer was blocked): announced as closed by its agent. */
  closeIfOpen(tenant: string, conv: string): void {
    const { merchant, customer } = parseConversationId(conv)!;
    const open = this.desks.get(deskKey(tenant, merchant));
    const record = open?.records.get(customer);
    if (open === undefined || record === undefined || record.opening === true) return;
    this.apply(open, open.rules.close(record.id, this.options.clock.now()), { closedBy: 'agent' });
  }

  /** Hands the consultation of `conv` to an agent (online with free capacity) or a group. */
  transfer(identity: Identity, conv: string, to: { agent?: string | undefined; group?: string | undefined }, note: string | undefined, consultation?: string): Promise<void> {
    const { merchant, customer } = parseConversationId(conv)!;
    const open = this.requireDesk(identity.tenant, merchant);
    this.authorize(identity, conv);
    const record = this.requireOpenRecord(open, conv, customer, consultation);
    const nowMs = this.options.clock.now();
    const events = this.decide(() => (to.agent !== undefined ? open.rules.transferToAgent(record.id, to.agent, nowMs) : open.rules.transferToGroup(record.id, to.group!, nowMs)));
    return this.apply(open, events, { transferFrom: record.agent, note });
  }

  /** The customer rates its last closed consultation of `conv` (once). */
  async rate(identity: Identity, conv: string, score: number, comment: string | undefined): Promise<void> {
    const { merchant, customer } = parseConversationId(conv)!;
    const open = this.requireDesk(identity.tenant, merchant);
    const key = deskKeys.last(open.tenant, merchant, customer);
    const stored = await this.options.store.get(key);
    if (stored === undefined) throw new CellError(ErrorCode.ConsultationUnknown, `${conv} has no closed consultation to rate`);
    const last = parseStored(LastConsultation, key, stored);
    if (last.rated) throw new CellError(ErrorCode.ConsultationRated, `consultation ${last.consultation} was rated already`);
    const rating = { consultation: last.consultation, customer, agent: last.agent, score, comment, atMs: this.options.clock.now() };
    const notice: DeskNotice = comment === undefined ? { type: 'rated', consultation: last.consultation, score } : { type: 'rated', consultation: last.consultation, score, comment };
    await this.systemMessages.announce(open, customer, notice, [
      { type: 'put', key: deskKeys.rating(open.tenant, merchant, last.consultation), value: JSON.stringify(rating) },
      putLast(open.tenant, merchant, customer, { ...last, rated: true }),
    ]);
    this.options.metrics?.countRating(score);
  }

  /** The merchant's desk as an agent's workbench shows it: agents, and every open consultation. */
  view(identity: Identity): Extract<ServerFrame, { t: 'desk' }>['agents'] extends infer Agents ? { agents: Agents; consultations: ConsultationView[] } : never {
    const open = this.requireAgentDesk(identity);
    const agents = open.rules.allAgents().map((agent) => ({
      id: agent.id,
      name: this.options.people.get(open.tenant, open.merchant, agent.id)?.name ?? agent.id,
      status: agent.status,
      capacity: agent.capacity,
      open: agent.open,
      groups: [...agent.groups],
    }));
    const consultations = [...open.records.values()].filter((record) => record.opening !== true).map((record) => this.viewOf(open, record));
    return { agents, consultations } as never;
  }

  /** The people directory changed an agent of a merchant this cell hosts. */
  peopleChanged(tenant: string, merchant: string, agentId: string, after: DeskPerson | undefined): void {
    const open = this.desks.get(deskKey(tenant, merchant));
    if (open === undefined) {
      if (after !== undefined) void this.openMerchant(tenant, merchant);
      return;
    }
    const nowMs = this.options.clock.now();
    this.knowPeople(open);
    if (after === undefined) {
      // Its devices go at once: their tokens are refused from now on (requireKnownAgent).
      for (const device of this.devicesOfAgent(open, agentId)) this.options.host.closeDevice(device, `agent ${agentId} was removed from merchant ${merchant}`);
      if (open.rules.agent(agentId) !== undefined) this.apply(open, open.rules.removeAgent(agentId, nowMs), { released: true });
      return;
    }
    this.apply(open, open.rules.upsertAgent(after, nowMs), {});
  }

  /** Turns the rules' decisions into records, system messages and frames, in order. */
  private apply(open: OpenDesk, events: readonly DeskEvent[], cause: Cause): Promise<void> {
    const { tenant, merchant } = open;
    const written: Array<Promise<void>> = [];
    const nowMs = this.options.clock.now();
    const queuesMoved = new Set<string>();
    for (const event of events) {
      const customer = open.customerOf.get(event.consultation);
      const record = customer === undefined ? undefined : open.records.get(customer);
      if (customer === undefined || record === undefined) continue;
      const conv = conversationIdOf(merchant, customer);
      const previousAgent = record.agent;
      if (event.kind === 'assigned') {
        if (record.state === 'waiting') queuesMoved.add(record.group);
        const name = this.options.people.get(tenant, merchant, event.agent)?.name ?? event.agent;
        const { putBack: _putBack, ...taken } = withoutOpening(record);
        const next: ConsultationRecord = {
          ...taken,
          state: 'assigned',
          agent: event.agent,
          assignedAtMs: nowMs,
          firstAssignedAtMs: record.firstAssignedAtMs ?? nowMs,
          group: open.rules.consultation(event.consultation)?.group ?? record.group,
        };
        if (record.firstAssignedAtMs === undefined) this.options.metrics?.firstAssignment.observe((nowMs - record.openedAtMs) / 1000);
        open.records.set(customer, next);
        open.lastActivityMs.set(customer, nowMs);
        for (const device of this.devicesOfAgent(open, event.agent)) this.options.host.follow(device, conv);
        const notice: DeskNotice =
          cause.transferFrom !== undefined
            ? dropUndefined({ type: 'transferred', consultation: record.id, from: cause.transferFrom, agent: event.agent, name, group: next.group, note: cause.note })
            : { type: 'assigned', consultation: record.id, agent: event.agent, name, sticky: event.sticky };
        written.push(this.systemMessages.announce(open, customer, notice, [putRecord(tenant, merchant, next)]).then(() => this.stopFollowing(open, conv, previousAgent, event.agent)));
        this.tell(open, next, previousAgent);
      } else if (event.kind === 'queued') {
        const group = open.rules.consultation(event.consultation)?.group ?? record.group;
        const next: ConsultationRecord = dropUndefined({
          id: record.id,
          customer,
          group,
          state: 'waiting' as const,
          openedAtMs: record.openedAtMs,
          queuedAtMs: cause.released === true ? record.openedAtMs : nowMs,
          putBack: cause.released === true ? (true as const) : undefined,
          firstAssignedAtMs: record.firstAssignedAtMs,
        });
        open.records.set(customer, next);
        open.lastActivityMs.delete(customer);
        queuesMoved.add(group);
        let notice: DeskNotice = { type: 'queued', consultation: record.id, group };
        if (cause.transferFrom !== undefined) notice = dropUndefined({ type: 'transferred', consultation: record.id, from: cause.transferFrom, group, note: cause.note });
        else if (previousAgent !== undefined) notice = { type: 'released', consultation: record.id, agent: previousAgent };
        written.push(this.systemMessages.announce(open, customer, notice, [putRecord(tenant, merchant, next)]).then(() => this.stopFollowing(open, conv, previousAgent, undefined)));
        // It learns where it stands at once; the others behind it with the next queue update.
        this.tell(open, next, previousAgent, event.position);
      } else {
        open.records.delete(customer);
        open.customerOf.delete(record.id);
        open.lastActivityMs.delete(customer);
        if (record.state === 'waiting') queuesMoved.add(record.group);
        const last = dropUndefined({ consultation: record.id, agent: event.agent, closedAtMs: nowMs, rated: false });
        const notice: DeskNotice = dropUndefined({ type: 'closed', consultation: record.id, by: cause.closedBy ?? 'agent', agent: event.agent });
        this.options.metrics?.countClosed(notice.by);
        written.push(this.systemMessages.announce(open, customer, notice, [deleteRecord(tenant, merchant, customer), putLast(tenant, merchant, customer, last)]).then(() => this.stopFollowing(open, conv, event.agent, undefined)));
        this.tell(open, { ...withoutOpening(record), state: 'closed' });
      }
    }
    for (const group of queuesMoved) open.queuesToTell.add(group);
    if (open.queuesToTell.size > 0) open.queueTellTimer ??= this.options.clock.setTimer(QUEUE_TELL_INTERVAL_MS, () => this.tellQueues(open));
    return Promise.all(written).then(() => undefined);
  }

  /** Appends a system message (with the records it carries); failures are logged, the next change rewrites the record. */
  /** After the system message that took a consultation from `agent` is durable, its devices stop following it. */
  private stopFollowing(open: OpenDesk, conv: string, agent: string | undefined, keep: string | undefined): void {
    if (agent === undefined || agent === keep || this.isSupervisor(open, agent)) return;
    for (const device of this.devicesOfAgent(open, agent)) this.options.host.unfollow(device, conv);
  }

  /** The consultation's state, to its customer's devices here, its agent's (and the one it left) and the supervisors'. */
  private tell(open: OpenDesk, record: ConsultationRecord | (Omit<ConsultationRecord, 'state'> & { state: 'closed' }), previousAgent?: string, position?: number): void {
    const view = this.viewOf(open, record, position);
    this.options.host.broadcast(this.devicesOf(open, record.customer, record.agent, previousAgent), { t: 'consultation', ...view });
    this.options.host.tellElsewhere(open.tenant, view);
  }

  /** Everyone waiting in the groups whose queues moved learns its new position and estimate: one pass per queue. */
  private tellQueues(open: OpenDesk): void {
    open.queueTellTimer = undefined;
    if (this.desks.get(deskKey(open.tenant, open.merchant)) !== open) return;
    const groups = [...open.queuesToTell];
    open.queuesToTell.clear();
    for (const group of groups) {
      for (const waiting of open.rules.waitingIn(group)) {
        const customer = open.customerOf.get(waiting.id);
        const record = customer === undefined ? undefined : open.records.get(customer);
        if (record === undefined) continue;
        const devices = [...this.options.host.customerDevices(open.tenant, record.customer)];
        const view: ConsultationView = { conv: conversationIdOf(open.merchant, record.customer), consultation: record.id, state: 'waiting', group, position: waiting.position, openedAtMs: record.openedAtMs };
        if (waiting.estimatedWaitMs !== undefined) view.estimatedWaitMs = waiting.estimatedWaitMs;
        if (devices.length > 0) this.options.host.broadcast(devices, { t: 'consultation', ...view });
        this.options.host.tellPositionElsewhere(open.tenant, view);
      }
    }
  }

  /** `knownPosition`: the waiting consultation's position, when the caller has it (the queue is walked otherwise). */
  private viewOf(open: OpenDesk, record: Pick<ConsultationRecord, 'id' | 'customer' | 'group' | 'agent' | 'openedAtMs'> & { state: ConsultationView['state'] }, knownPosition?: number): ConsultationView {
    const view: ConsultationView = { conv: conversationIdOf(open.merchant, record.customer), consultation: record.id, state: record.state, group: record.group, openedAtMs: record.openedAtMs };
    if (record.agent !== undefined && record.state === 'assigned') {
      view.agent = record.agent;
      view.agentName = this.options.people.get(open.tenant, open.merchant, record.agent)?.name ?? record.agent;
    }
    const position = record.state === 'waiting' ? (knownPosition ?? open.rules.position(record.id)) : undefined;
    if (position !== undefined) view.position = position;
    const estimate = position === undefined ? undefined : open.rules.estimatedWaitMs(record.id, position);
    if (estimate !== undefined) view.estimatedWaitMs = estimate;
    return view;
  }

  private startGrace(open: OpenDesk, agent: string): void {
    open.graceTimers.get(agent)?.cancel();
    open.graceTimers.set(
      agent,
      this.options.clock.setTimer(this.options.settings.graceMs, () => {
        open.graceTimers.delete(agent);
        if (this.desks.get(deskKey(open.tenant, open.merchant)) !== open || open.rules.agent(agent)?.status !== 'offline') return;
        this.apply(open, open.rules.releaseAgent(agent, this.options.clock.now()), { released: true });
      }),
    );
  }

  /** Closes assigned consultations without a message for `inactivityCloseMs`, checking a few times per period. */
  private scheduleSweep(open: OpenDesk): void {
    const { inactivityCloseMs } = this.options.settings;
    open.sweep = this.options.clock.setTimer(Math.min(MAX_SWEEP_INTERVAL_MS, Math.max(1, Math.floor(inactivityCloseMs / 4))), () => {
      if (this.desks.get(deskKey(open.tenant, open.merchant)) !== open) return;
      const nowMs = this.options.clock.now();
      for (const [customer, atMs] of [...open.lastActivityMs]) {
        const record = open.records.get(customer);
        if (record === undefined || nowMs - atMs < inactivityCloseMs) continue;
        this.apply(open, open.rules.close(record.id, nowMs), { closedBy: 'inactivity' });
      }
      this.scheduleSweep(open);
    });
  }

  /** The named group if an agent of the merchant is in it; else `default`, or the first group any agent has. */
  private groupFor(open: OpenDesk, named: string | undefined): string {
    const { groups } = open;
    if (named !== undefined && groups.has(named)) return named;
    if (groups.has(DEFAULT_GROUP) || groups.size === 0) return DEFAULT_GROUP;
    return [...groups].sort()[0]!;
  }

  private devicesOfAgent(open: OpenDesk, agent: string): DeviceConnection[] {
    return [...this.options.host.agentDevices(open.tenant, open.merchant, agent)];
  }

  private isSupervisor(open: OpenDesk, agent: string): boolean {
    return open.supervisors.has(agent);
  }

  /** Refreshes what the desk keeps of its people: supervisors and groups. */
  private knowPeople(open: OpenDesk): void {
    open.supervisors.clear();
    open.groups.clear();
    for (const person of this.options.people.list(open.tenant, open.merchant)) {
      if (person.supervisor) open.supervisors.add(person.id);
      for (const group of person.groups) open.groups.add(group);
    }
  }

  private agentDesk(identity: Identity): OpenDesk | undefined {
    return identity.role === 'agent' && identity.merchant !== undefined ? this.desks.get(deskKey(identity.tenant, identity.merchant)) : undefined;
  }

  private requireAgentDesk(identity: Identity): OpenDesk {
    if (identity.role !== 'agent' || identity.merchant === undefined) throw new CellError(ErrorCode.ConversationForbidden, 'only agents work at a desk');
    return this.requireDesk(identity.tenant, identity.merchant);
  }

  private requireDesk(tenant: string, merchant: string): OpenDesk {
    const open = this.desks.get(deskKey(tenant, merchant));
    if (open === undefined) throw new CellError(ErrorCode.NoDesk, `merchant ${merchant} has no desk: its agents are not registered (docs/desk.md)`);
    return open;
  }

  /** The open consultation of `conv`; `consultation`, when given, must be its id. */
  private requireOpenRecord(open: OpenDesk, conv: string, customer: string, consultation?: string): ConsultationRecord {
    const record = open.records.get(customer);
    if (record === undefined || record.opening === true) throw new CellError(ErrorCode.ConsultationUnknown, `${conv} has no open consultation`);
    if (consultation !== undefined && consultation !== record.id) throw new CellError(ErrorCode.ConsultationUnknown, `consultation ${consultation} of ${conv} is not open (${record.id} is)`);
    return record;
  }

  /** Runs a rule; its refusal becomes the matching protocol error. */
  private decide(rule: () => DeskEvent[]): DeskEvent[] {
    try {
      return rule();
    } catch (error) {
      if (!(error instanceof DeskError)) throw error;
      const code = error.code === 'CONSULTATION_UNKNOWN' ? ErrorCode.ConsultationUnknown : error.code === 'BAD_AGENT' ? ErrorCode.BadFrame : ErrorCode.AgentUnavailable;
      throw new CellError(code, error.message);
    }
  }
}

function deskKey(tenant: string, merchant: string): string {
  return `${tenant}/${merchant}`;
}

function withoutOpening(record: ConsultationRecord & { opening?: boolean }): ConsultationRecord {
  const { opening: _opening, ...rest } = record;
  return rest;
}

/** Drops keys whose value is undefined (optional fields are absent, never undefined, on the wire). */
function dropUndefined<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as never;
}
