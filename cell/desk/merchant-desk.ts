import { CodedError } from '../../platform/coded-error.js';
import { invariant } from '../../platform/invariant.js';
import { AgentPool, type PooledAgent } from './agent-pool.js';
import { GroupQueue } from './group-queue.js';

/**
 * The service desk of one merchant, in memory: its agents, their consultations and the queues
 * of waiting customers, and the rules that assign them (docs/desk.md). Every call decides at
 * once and returns what it decided, in order; persisting those decisions and telling devices
 * is the caller's job. Single-threaded and deterministic: the same calls give the same result.
 *
 * Assignment, in order: the agent who served the customer last, if online with free capacity
 * and within `stickyWindowMs`; else the available agent of the group with the lowest load
 * (open consultations divided by capacity), the longest idle first among equals; else the
 * customer waits in the group's FIFO queue. Capacity freed anywhere (a close, an agent online,
 * a higher capacity, a transfer, a release) pulls from the queues at once, the longest waiting
 * first.
 */

export type AgentStatus = 'online' | 'busy' | 'away' | 'offline';

export interface AgentSpec {
  readonly id: string;
  /** Consultations the agent handles at once. */
  readonly capacity: number;
  readonly groups: readonly string[];
}

export type ConsultationState = 'waiting' | 'assigned' | 'closed';

export interface Consultation {
  readonly id: string;
  readonly customer: string;
  group: string;
  state: ConsultationState;
  agent: string | undefined;
  readonly openedAtMs: number;
  assignedAtMs: number | undefined;
}

export type DeskEvent =
  | { readonly kind: 'assigned'; readonly consultation: string; readonly agent: string; readonly sticky: boolean; readonly waitedMs: number }
  | { readonly kind: 'queued'; readonly consultation: string; readonly group: string; readonly position: number }
  | { readonly kind: 'closed'; readonly consultation: string; readonly agent: string | undefined };

export type DeskErrorCode = 'AGENT_UNKNOWN' | 'CONSULTATION_UNKNOWN' | 'CONSULTATION_EXISTS' | 'AGENT_UNAVAILABLE' | 'BAD_AGENT';

/** A desk call that cannot be carried out; nothing changed. */
export class DeskError extends CodedError<DeskErrorCode> {}

export interface DeskSettings {
  /** How long after a consultation the customer goes back to the same agent, if that agent can take it. */
  readonly stickyWindowMs: number;
  /** Handling time assumed for a group before any consultation of it closed, for the estimated wait. */
  readonly initialHandlingMs: number;
}

export const DESK_DEFAULTS: DeskSettings = { stickyWindowMs: 24 * 3_600_000, initialHandlingMs: 5 * 60_000 };

/** The weight of the newest handling time in a group's moving average. */
const HANDLING_SMOOTHING = 0.2;

class DeskAgent implements PooledAgent {
  version = 0;
  open = 0;
  lastAssignedAtMs = 0;
  status: AgentStatus = 'offline';
  readonly consultations = new Set<string>();

  constructor(
    readonly id: string,
    public capacity: number,
    public groups: readonly string[],
  ) {}

  get available(): boolean {
    return this.status === 'online' && this.open < this.capacity;
  }
}

interface Group {
  readonly pool: AgentPool;
  readonly queue: GroupQueue;
  /** Moving average of handling times (assigned to closed) in this group. */
  handlingMs: number;
  /** Capacity of the group's online agents. */
  onlineCapacity: number;
}

export class MerchantDesk {
  private readonly agents = new Map<string, DeskAgent>();
  private readonly groups = new Map<string, Group>();
  private readonly consultations = new Map<string, Consultation>();
  /** The agent who last served each customer, and when that consultation was assigned or closed. */
  private readonly lastAgent = new Map<string, { agent: string; atMs: number }>();
  private readonly settings: DeskSettings;

  constructor(settings: Partial<DeskSettings> = {}) {
    this.settings = { ...DESK_DEFAULTS, ...settings };
  }

  agent(id: string): Readonly<{ id: string; status: AgentStatus; capacity: number; open: number; groups: readonly string[] }> | undefined {
    return this.agents.get(id);
  }

  consultation(id: string): Readonly<Consultation> | undefined {
    return this.consultations.get(id);
  }

  /** Adds an agent (offline) or changes its capacity and groups; raised capacity pulls from the queues. */
  upsertAgent(spec: AgentSpec, nowMs: number): DeskEvent[] {
    if (!Number.isInteger(spec.capacity) || spec.capacity < 1) throw new DeskError('BAD_AGENT', `capacity of agent ${spec.id} must be a positive integer`);
    if (spec.groups.length === 0) throw new DeskError('BAD_AGENT', `agent ${spec.id} needs at least one group`);
    let agent = this.agents.get(spec.id);
    if (agent === undefined) {
      agent = new DeskAgent(spec.id, spec.capacity, [...new Set(spec.groups)]);
      this.agents.set(agent.id, agent);
      for (const group of agent.groups) this.groupOf(group).pool.join(agent);
      return [];
    }
    const online = agent.status === 'online';
    for (const group of agent.groups) {
      this.groupOf(group).pool.leave(agent);
      if (online) this.groupOf(group).onlineCapacity -= agent.capacity;
    }
    agent.capacity = spec.capacity;
    agent.groups = [...new Set(spec.groups)];
    for (const group of agent.groups) {
      this.groupOf(group).pool.join(agent);
      if (online) this.groupOf(group).onlineCapacity += agent.capacity;
    }
    this.changed(agent);
    return this.pull(agent, nowMs);
  }

  /** Removes an agent; its consultations go back to the head of their queues (and may be assigned at once). */
  removeAgent(id: string, nowMs: number): DeskEvent[] {
    const agent = this.requireAgent(id);
    const events = this.release(agent);
    for (const group of agent.groups) this.groupOf(group).pool.leave(agent);
    this.agents.delete(id);
    return [...events, ...this.drainGroupsOf(events, nowMs)];
  }

  /** Online takes consultations; busy keeps its own but gets no new one; away and offline too. */
  setStatus(id: string, status: AgentStatus, nowMs: number): DeskEvent[] {
    const agent = this.requireAgent(id);
    this.setStatusOf(agent, status);
    return this.pull(agent, nowMs);
  }

  /**
   * Takes the agent's consultations away (its devices stayed away past the grace period): the
   * agent goes offline, and they go back to the head of their group's queue, ahead of everyone
   * who came later, to be assigned again as capacity allows.
   */
  releaseAgent(id: string, nowMs: number): DeskEvent[] {
    const events = this.release(this.requireAgent(id));
    return [...events, ...this.drainGroupsOf(events, nowMs)];
  }

  /**
   * Puts back a consultation the store holds (after a restart or a move), deciding nothing: a
   * waiting one joins the back of its group's queue (restore them in queue order), or its head
   * when it was put back by a release (`putBack`); an assigned one stays on its agent whatever
   * the agent's status (the grace period decides later). One whose agent is gone waits at the
   * head instead. Call `settle` once everything is restored.
   */
  restore(record: { id: string; customer: string; group: string; openedAtMs: number; agent?: string | undefined; assignedAtMs?: number | undefined; putBack?: boolean | undefined }): void {
    if (this.consultations.has(record.id)) throw new DeskError('CONSULTATION_EXISTS', `consultation ${record.id} exists`);
    const consultation: Consultation = { id: record.id, customer: record.customer, group: record.group, state: 'waiting', agent: undefined, openedAtMs: record.openedAtMs, assignedAtMs: undefined };
    this.consultations.set(record.id, consultation);
    const agent = record.agent === undefined ? undefined : this.agents.get(record.agent);
    if (agent === undefined) {
      if (record.agent === undefined && record.putBack !== true) this.groupOf(record.group).queue.enqueue(record.id);
      else this.groupOf(record.group).queue.requeueAtHead(record.id, record.openedAtMs);
      return;
    }
    consultation.state = 'assigned';
    consultation.agent = agent.id;
    consultation.assignedAtMs = record.assignedAtMs ?? record.openedAtMs;
    agent.open++;
    agent.consultations.add(record.id);
    this.changed(agent);
  }

  /** Restores who last served a customer, for the sticky rule. */
  restoreLastAgent(customer: string, agent: string, atMs: number): void {
    this.lastAgent.set(customer, { agent, atMs });
  }

  /** The agent who last served `customer`, and when. */
  lastAgentOf(customer: string): Readonly<{ agent: string; atMs: number }> | undefined {
    return this.lastAgent.get(customer);
  }

  /** Every agent of the desk. */
  allAgents(): Array<Readonly<{ id: string; status: AgentStatus; capacity: number; open: number; groups: readonly string[] }>> {
    return [...this.agents.values()];
  }

  /** Every open consultation (waiting or assigned). */
  openConsultations(): Array<Readonly<Consultation>> {
    return [...this.consultations.values()];
  }

  /** The consultations an agent holds. */
  consultationsOf(agent: string): string[] {
    return [...(this.agents.get(agent)?.consultations ?? [])];
  }

  /** A customer's first message opened a consultation in `group`: assign it, or queue it. */
  open(id: string, customer: string, group: string, nowMs: number): DeskEvent[] {
    if (this.consultations.has(id)) throw new DeskError('CONSULTATION_EXISTS', `consultation ${id} exists`);
    const consultation: Consultation = { id, customer, group, state: 'waiting', agent: undefined, openedAtMs: nowMs, assignedAtMs: undefined };
    this.consultations.set(id, consultation);
    const sticky = this.stickyAgentFor(customer, nowMs);
    if (sticky !== undefined) return [this.assign(consultation, sticky, true, nowMs)];
    const best = this.groupOf(group).pool.best();
    if (best !== undefined) return [this.assign(consultation, this.agents.get(best.id) as DeskAgent, false, nowMs)];
    return [this.enqueue(consultation)];
  }

  /** Closes a consultation (by its agent, its customer, or for inactivity); the freed capacity pulls from the queues. */
  close(id: string, nowMs: number): DeskEvent[] {
    const consultation = this.requireOpen(id);
    const agent = consultation.agent === undefined ? undefined : this.agents.get(consultation.agent);
    if (consultation.state === 'waiting') this.groupOf(consultation.group).queue.remove(id);
    consultation.state = 'closed';
    this.consultations.delete(id);
    const events: DeskEvent[] = [{ kind: 'closed', consultation: id, agent: consultation.agent }];
    if (agent === undefined) return events;
    const group = this.groupOf(consultation.group);
    if (consultation.assignedAtMs !== undefined) {
      group.handlingMs += HANDLING_SMOOTHING * (nowMs - consultation.assignedAtMs - group.handlingMs);
    }
    this.lastAgent.set(consultation.customer, { agent: agent.id, atMs: nowMs });
    this.unassign(agent, id);
    return [...events, ...this.pull(agent, nowMs)];
  }

  /** Moves a consultation to another agent, who must be online with free capacity. */
  transferToAgent(id: string, to: string, nowMs: number): DeskEvent[] {
    const consultation = this.requireOpen(id);
    const target = this.requireAgent(to);
    if (!target.available) throw new DeskError('AGENT_UNAVAILABLE', `agent ${to} is not online with free capacity`);
    const previous = this.detach(consultation);
    const events: DeskEvent[] = [this.assign(consultation, target, false, nowMs)];
    return previous === undefined ? events : [...events, ...this.pull(previous, nowMs)];
  }

  /** Moves a consultation to another group: its least-loaded agent takes it, or it waits at the back of that group's queue. */
  transferToGroup(id: string, group: string, nowMs: number): DeskEvent[] {
    const consultation = this.requireOpen(id);
    const previous = this.detach(consultation);
    consultation.group = group;
    const best = this.groupOf(group).pool.best();
    const events = [best === undefined ? this.enqueue(consultation) : this.assign(consultation, this.agents.get(best.id) as DeskAgent, false, nowMs)];
    return previous === undefined ? events : [...events, ...this.pull(previous, nowMs)];
  }

  /** 1 for the next to be served; undefined unless the consultation waits. */
  position(id: string): number | undefined {
    const consultation = this.consultations.get(id);
    return consultation?.state === 'waiting' ? this.groupOf(consultation.group).queue.position(id) : undefined;
  }

  /**
   * How long the consultation may still wait (`knownPosition` saves the walk of the queue when the
   * caller knows it): the slots ahead of it divided by the group's
   * online capacity, times its recent handling time. Undefined when nobody of the group is
   * online (no estimate can be honest then) or when it does not wait.
   */
  estimatedWaitMs(id: string, knownPosition?: number): number | undefined {
    const position = knownPosition ?? this.position(id);
    const consultation = this.consultations.get(id);
    if (position === undefined || consultation === undefined) return undefined;
    const group = this.groupOf(consultation.group);
    if (group.onlineCapacity <= 0) return undefined;
    return Math.round((position / group.onlineCapacity) * group.handlingMs);
  }

  /** Customers waiting in `group`. */
  queueLength(group: string): number {
    return this.groups.get(group)?.queue.length ?? 0;
  }

  /**
   * The waiting consultations of `group`, next first, each with its position and estimated
   * wait: one pass over the queue, for telling all of them at once.
   */
  *waitingIn(group: string): Generator<{ id: string; position: number; estimatedWaitMs: number | undefined }> {
    const state = this.groups.get(group);
    if (state === undefined) return;
    let position = 0;
    for (const id of state.queue.inOrder()) {
      position++;
      yield { id, position, estimatedWaitMs: state.onlineCapacity > 0 ? Math.round((position / state.onlineCapacity) * state.handlingMs) : undefined };
    }
  }

  private stickyAgentFor(customer: string, nowMs: number): DeskAgent | undefined {
    const last = this.lastAgent.get(customer);
    if (last === undefined || nowMs - last.atMs > this.settings.stickyWindowMs) return undefined;
    const agent = this.agents.get(last.agent);
    return agent?.available === true ? agent : undefined;
  }

  private assign(consultation: Consultation, agent: DeskAgent, sticky: boolean, nowMs: number): DeskEvent {
    invariant(agent.available, () => `agent ${agent.id} took ${consultation.id} at ${agent.open}/${agent.capacity} (${agent.status})`);
    consultation.state = 'assigned';
    consultation.agent = agent.id;
    consultation.assignedAtMs = nowMs;
    agent.open++;
    agent.consultations.add(consultation.id);
    agent.lastAssignedAtMs = nowMs;
    this.lastAgent.set(consultation.customer, { agent: agent.id, atMs: nowMs });
    this.changed(agent);
    return { kind: 'assigned', consultation: consultation.id, agent: agent.id, sticky, waitedMs: nowMs - consultation.openedAtMs };
  }

  private enqueue(consultation: Consultation): DeskEvent {
    const queue = this.groupOf(consultation.group).queue;
    queue.enqueue(consultation.id);
    return { kind: 'queued', consultation: consultation.id, group: consultation.group, position: queue.length };
  }

  /** Takes a consultation off its agent or out of its queue; returns the agent it had. */
  private detach(consultation: Consultation): DeskAgent | undefined {
    if (consultation.state === 'waiting') {
      this.groupOf(consultation.group).queue.remove(consultation.id);
      return undefined;
    }
    const agent = consultation.agent === undefined ? undefined : this.agents.get(consultation.agent);
    if (agent !== undefined) this.unassign(agent, consultation.id);
    consultation.state = 'waiting';
    consultation.agent = undefined;
    consultation.assignedAtMs = undefined;
    return agent;
  }

  private unassign(agent: DeskAgent, consultation: string): void {
    invariant(agent.consultations.delete(consultation), () => `agent ${agent.id} did not hold ${consultation}`);
    agent.open--;
    this.changed(agent);
  }

  /** Sets the agent offline and puts its consultations back at the heads of their queues. */
  private release(agent: DeskAgent): DeskEvent[] {
    this.setStatusOf(agent, 'offline');
    const held = [...agent.consultations].map((id) => this.consultations.get(id) as Consultation);
    for (const consultation of held) {
      this.detach(consultation);
      this.groupOf(consultation.group).queue.requeueAtHead(consultation.id, consultation.openedAtMs);
    }
    const events = held.map((consultation): DeskEvent & { kind: 'queued' } => ({ kind: 'queued', consultation: consultation.id, group: consultation.group, position: this.position(consultation.id) as number }));
    return events.sort((a, b) => a.position - b.position);
  }

  /** After consultations went back to queues: whoever is free in those groups takes them. */
  private drainGroupsOf(events: readonly DeskEvent[], nowMs: number): DeskEvent[] {
    const groups = new Set(events.flatMap((event) => (event.kind === 'queued' ? [event.group] : [])));
    const assigned: DeskEvent[] = [];
    for (const name of groups) {
      const group = this.groupOf(name);
      for (let best = group.pool.best(); best !== undefined && group.queue.length > 0; best = group.pool.best()) {
        assigned.push(this.assignHead(group, this.agents.get(best.id) as DeskAgent, nowMs));
      }
    }
    return assigned;
  }

  /** While the agent can take more, serves the longest-waiting head among its groups' queues. */
  private pull(agent: DeskAgent, nowMs: number): DeskEvent[] {
    const events: DeskEvent[] = [];
    while (agent.available) {
      let oldest: Group | undefined;
      let oldestAtMs = Number.POSITIVE_INFINITY;
      for (const name of agent.groups) {
        const group = this.groupOf(name);
        const head = group.queue.peek();
        if (head === undefined) continue;
        const openedAtMs = (this.consultations.get(head) as Consultation).openedAtMs;
        if (openedAtMs < oldestAtMs) {
          oldest = group;
          oldestAtMs = openedAtMs;
        }
      }
      if (oldest === undefined) break;
      // The freed agent is not always the least loaded of that group: the group's best takes it.
      const best = oldest.pool.best() as PooledAgent;
      events.push(this.assignHead(oldest, this.agents.get(best.id) as DeskAgent, nowMs));
    }
    return events;
  }

  private assignHead(group: Group, agent: DeskAgent, nowMs: number): DeskEvent {
    const id = group.queue.shift() as string;
    return this.assign(this.consultations.get(id) as Consultation, agent, false, nowMs);
  }

  private setStatusOf(agent: DeskAgent, status: AgentStatus): void {
    if (agent.status === status) return;
    const delta = (status === 'online' ? agent.capacity : 0) - (agent.status === 'online' ? agent.capacity : 0);
    for (const group of agent.groups) this.groupOf(group).onlineCapacity += delta;
    agent.status = status;
    this.changed(agent);
  }

  private changed(agent: DeskAgent): void {
    agent.version++;
    for (const group of agent.groups) this.groupOf(group).pool.offer(agent);
  }

  private groupOf(name: string): Group {
    let group = this.groups.get(name);
    if (group === undefined) {
      group = { pool: new AgentPool(), queue: new GroupQueue(), handlingMs: this.settings.initialHandlingMs, onlineCapacity: 0 };
      this.groups.set(name, group);
    }
    return group;
  }

  private requireAgent(id: string): DeskAgent {
    const agent = this.agents.get(id);
    if (agent === undefined) throw new DeskError('AGENT_UNKNOWN', `no agent ${id} at this desk`);
    return agent;
  }

  private requireOpen(id: string): Consultation {
    const consultation = this.consultations.get(id);
    if (consultation === undefined) throw new DeskError('CONSULTATION_UNKNOWN', `no open consultation ${id}`);
    return consultation;
  }
}
