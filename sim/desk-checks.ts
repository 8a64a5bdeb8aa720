/**
 * The desk's invariants (docs/simulation.md, "The desk's invariants"), judged after a run from
 * what the devices saw: every change of a consultation is a system message in its conversation,
 * gap-free and in order, so the messages the devices got are the desk's record. Each merchant's
 * desk is rebuilt from them, in the cells' time (a message's `ts`, when it became durable), and
 * set against the agents' presence as the workload made and saw it. Each conversation's messages
 * become durable on their own, so across conversations the record is ordered only up to
 * `orderToleranceMs`:
 *
 * - desk-over-capacity: no agent holds more consultations than its capacity for longer than the
 *   tolerance;
 * - desk-grace: an agent whose devices are all gone holds no consultation longer than the grace
 *   period (plus a slack for latencies) after it left, or after its desk last came back (a
 *   restart or a move loads the desk and starts the grace period over), judged while the desk runs;
 * - desk-fifo: a consultation taken from its group's queue (or assigned at once while others
 *   wait in its group) passes nobody who joined the queue more than the tolerance before it, the
 *   sticky rule excepted; a consultation put back by a release counts from its opening, ahead of
 *   those queued later (passed ones that joined the queue, or started waiting, within the
 *   tolerance of it may belong to the same decision, which the messages' times cannot order);
 * - desk-idle-capacity: no consultation waits in a group for longer than a bound while an agent
 *   of the group is online (connected to the merchant's cell, status online) with free capacity
 *   and the desk runs;
 * - desk-open-span: a conversation has at most one open consultation; nothing happens to one
 *   that is not open (closed, or never opened).
 */
import { DEFAULT_GROUP } from '../cell/desk/desk-service.js';
import type { DeskNotice } from '../cell/protocol/frames.js';
import type { NoticeSeen, ViolationKind } from './history.js';
import type { DeskAgentPlan } from './population.js';

export type DeskViolationKind = Extract<ViolationKind, `desk-${string}`>;

export interface DeskViolation {
  readonly kind: DeskViolationKind;
  readonly message: string;
  readonly atMs: number;
}

/** An agent's presence changed as the workload saw it. */
export interface AgentPresence {
  readonly merchant: string;
  readonly agent: string;
  readonly atMs: number;
  /** A device of the agent is connected to the merchant's home cell. */
  readonly present: boolean;
  /** Present, and its last status change to online was confirmed (busy, away, unknown: not). */
  readonly online: boolean;
}

/** Whether a merchant's desk runs: its home cell is up and hosts it, and no move is under way. */
export interface DeskRunning {
  readonly merchant: string;
  readonly atMs: number;
  readonly running: boolean;
}

export interface DeskCheckInput {
  /** The agents of each merchant with a desk. */
  readonly desks: ReadonlyMap<string, readonly DeskAgentPlan[]>;
  /** Every system message seen, by conversation in seq order. */
  readonly notices: ReadonlyMap<string, readonly NoticeSeen[]>;
  /**
   * The group a conversation's customer named (the same in every message, as from the page it
   * came from), and whether the send that opened the consultation after `afterSeq` reached the
   * desk with it; undefined when it named none.
   */
  readonly namedGroup: (conv: string, afterSeq: number) => { group: string; certain: boolean } | undefined;
  /** Presence changes and desk run changes, in time order. */
  readonly presence: readonly AgentPresence[];
  readonly running: readonly DeskRunning[];
  /** Conversations left out (their merchant's cell left). */
  readonly excluded: ReadonlySet<string>;
  readonly graceMs: number;
  readonly graceSlackMs: number;
  readonly assignWithinMs: number;
  /**
   * How far the cells' times of the system messages of one decision may lie apart: each
   * conversation's append becomes durable on its own (a cold conversation head is read first,
   * a slow disk holds writes back), so changes across conversations are ordered only up to this.
   */
  readonly orderToleranceMs: number;
  /** The end of the run: pending stalls and absences are judged then. */
  readonly endMs: number;
}

export function checkDesks(input: DeskCheckInput): DeskViolation[] {
  const violations: DeskViolation[] = [];
  const byMerchant = new Map<string, Array<{ atMs: number; apply: () => void }>>();
  const models = new Map<string, DeskModel>();
  for (const [merchant, agents] of input.desks) {
    models.set(merchant, new DeskModel(merchant, agents, input, violations));
    byMerchant.set(merchant, []);
  }
  for (const [conv, notices] of input.notices) {
    const merchant = conv.slice(0, conv.indexOf(':'));
    const model = models.get(merchant);
    if (model === undefined || input.excluded.has(conv)) continue;
    for (const notice of notices) byMerchant.get(merchant)!.push({ atMs: notice.ts, apply: () => model.notice(notice) });
  }
  for (const change of input.presence) {
    const model = models.get(change.merchant);
    if (model !== undefined) byMerchant.get(change.merchant)!.push({ atMs: change.atMs, apply: () => model.presence(change) });
  }
  for (const change of input.running) {
    const model = models.get(change.merchant);
    if (model !== undefined) byMerchant.get(change.merchant)!.push({ atMs: change.atMs, apply: () => model.setRunning(change.running, change.atMs) });
  }
  for (const [merchant, steps] of byMerchant) {
    const model = models.get(merchant)!;
    // Stable: the notices of one conversation keep their seq order within one ms.
    steps.sort((a, b) => a.atMs - b.atMs);
    for (let at = 0; at < steps.length; ) {
      const atMs = steps[at]!.atMs;
      model.beginMs(atMs);
      while (at < steps.length && steps[at]!.atMs === atMs) steps[at++]!.apply();
      model.endMs(atMs);
    }
    model.beginMs(input.endMs);
  }
  return violations;
}

interface ModelAgent {
  readonly plan: DeskAgentPlan;
  readonly holding: Set<string>;
  present: boolean;
  online: boolean;
  /** When its devices were all gone (undefined while present), and whether that absence was reported. */
  absentSinceMs: number | undefined;
  graceReported: boolean;
  /** Since when it holds more than its capacity, and whether that was reported. */
  overSinceMs: number | undefined;
  overReported: boolean;
}

interface ModelConsultation {
  readonly id: string;
  readonly conv: string;
  state: 'waiting' | 'assigned';
  agent: string | undefined;
  /** Undefined when the record does not say and the opening cannot tell. */
  group: string | undefined;
  readonly openedAtMs: number;
  /** Its place in the queue: when it was queued, or its opening once released. */
  queueKeyMs: number;
  released: boolean;
  /** Since when it waits (this time). */
  waitingSinceMs: number;
  /** Bumped at every change: a pass is judged only on consultations that did not move since. */
  version: number;
}

/** A consultation taken while others that came first waited in its group: a pass unless they follow soon. */
interface PendingPass {
  readonly taken: ModelConsultation;
  readonly atMs: number;
  readonly ahead: ReadonlyArray<{ consultation: ModelConsultation; version: number }>;
}

class DeskModel {
  private readonly agents = new Map<string, ModelAgent>();
  private readonly consultations = new Map<string, ModelConsultation>();
  private readonly openOf = new Map<string, string>();
  private readonly closed = new Set<string>();
  /** The seq of the last close of each conversation (the next customer message opens). */
  private readonly closedAtSeq = new Map<string, number>();
  private readonly groups: Set<string>;
  private running = true;
  private runningSinceMs = Number.NEGATIVE_INFINITY;
  /** Per group: since when a customer waits while an agent of the group could take it. */
  private readonly stalledSince = new Map<string, { sinceMs: number; reported: boolean }>();
  /** Consultations assigned from the queue in the current ms, and those waiting at its start. */
  private pulled: ModelConsultation[] = [];
  private passes: PendingPass[] = [];
  private nowMs = 0;

  constructor(
    readonly merchant: string,
    agents: readonly DeskAgentPlan[],
    private readonly input: DeskCheckInput,
    private readonly violations: DeskViolation[],
  ) {
    for (const plan of agents) this.agents.set(plan.id, { plan, holding: new Set(), present: false, online: false, absentSinceMs: undefined, graceReported: false, overSinceMs: undefined, overReported: false });
    this.groups = new Set(agents.flatMap((agent) => agent.groups));
  }

  beginMs(atMs: number): void {
    this.nowMs = atMs;
    this.pulled = [];
    this.judgeGrace(atMs);
    this.judgeStalls(atMs);
    this.judgePasses(atMs);
    this.judgeCapacity(atMs);
  }

  endMs(atMs: number): void {
    for (const agent of this.agents.values()) {
      if (agent.holding.size <= agent.plan.capacity) {
        agent.overSinceMs = undefined;
        agent.overReported = false;
      } else agent.overSinceMs ??= atMs;
    }
    for (const taken of this.pulled) this.notePass(taken, atMs);
    this.updateStalls(atMs);
  }

  setRunning(running: boolean, atMs: number): void {
    if (running && !this.running) this.runningSinceMs = atMs;
    this.running = running;
    if (!running) this.stalledSince.clear();
  }

  presence(change: AgentPresence): void {
    const agent = this.agents.get(change.agent);
    if (agent === undefined) return;
    if (change.present && !agent.present) {
      // Judged up to its return: a release due before it must have come.
      this.judgeGrace(change.atMs);
      agent.absentSinceMs = undefined;
    } else if (!change.present && agent.present) {
      agent.absentSinceMs = change.atMs;
      agent.graceReported = false;
    }
    agent.present = change.present;
    agent.online = change.online;
  }

  notice(notice: NoticeSeen): void {
    const event = notice.event;
    const { conv } = notice;
    if (event.type === 'rated') return;
    const known = this.consultations.get(event.consultation);
    if (known === undefined && (event.type === 'queued' || event.type === 'assigned')) {
      this.open(notice, event);
      return;
    }
    if (known === undefined || known.conv !== conv) {
      const why = this.closed.has(event.consultation) ? 'after it closed' : 'that never opened';
      this.report('desk-open-span', `${conv} seq ${notice.seq}: ${event.type} of consultation ${event.consultation} ${why}`, notice.ts);
      return;
    }
    switch (event.type) {
      case 'queued':
        this.report('desk-open-span', `${conv} seq ${notice.seq}: consultation ${event.consultation} queued again while ${known.state}`, notice.ts);
        return;
      case 'assigned':
        if (known.state !== 'waiting') {
          this.report('desk-open-span', `${conv} seq ${notice.seq}: consultation ${event.consultation} assigned to ${event.agent} while assigned to ${known.agent}`, notice.ts);
          this.detach(known);
        }
        this.assign(known, event.agent);
        if (!event.sticky) this.pulled.push(known);
        return;
      case 'transferred':
        this.detach(known);
        if (event.agent !== undefined) {
          // To an agent, or to a group whose agent took it at once: the desk names the group the
          // consultation is in afterwards (the new one, or the one it kept); without it, unknown.
          known.group = event.group;
          this.assign(known, event.agent);
        } else {
          known.group = event.group;
          known.queueKeyMs = notice.ts;
          known.waitingSinceMs = notice.ts;
          known.released = false;
        }
        return;
      case 'released':
        if (known.state !== 'assigned' || known.agent !== event.agent) {
          this.report('desk-open-span', `${conv} seq ${notice.seq}: consultation ${event.consultation} released from ${event.agent} while ${known.state === 'assigned' ? `assigned to ${known.agent}` : 'waiting'}`, notice.ts);
        }
        this.detach(known);
        known.queueKeyMs = known.openedAtMs;
        known.waitingSinceMs = notice.ts;
        known.released = true;
        return;
      case 'closed':
        this.detach(known);
        this.consultations.delete(known.id);
        this.openOf.delete(conv);
        this.closed.add(known.id);
        this.closedAtSeq.set(conv, notice.seq);
    }
  }

  private open(notice: NoticeSeen, event: Extract<DeskNotice, { type: 'queued' | 'assigned' }>): void {
    const { conv } = notice;
    const already = this.openOf.get(conv);
    if (this.closed.has(event.consultation)) {
      this.report('desk-open-span', `${conv} seq ${notice.seq}: ${event.type} of consultation ${event.consultation} after it closed`, notice.ts);
      return;
    }
    if (already !== undefined) {
      this.report('desk-open-span', `${conv} seq ${notice.seq}: consultation ${event.consultation} opened while ${already} is open`, notice.ts);
      this.closeQuietly(already);
    }
    const group = event.type === 'queued' ? event.group : this.openingGroup(conv);
    const consultation: ModelConsultation = { id: event.consultation, conv, state: 'waiting', agent: undefined, group, openedAtMs: notice.ts, queueKeyMs: notice.ts, released: false, waitingSinceMs: notice.ts, version: 0 };
    this.consultations.set(consultation.id, consultation);
    this.openOf.set(conv, consultation.id);
    if (event.type === 'assigned') {
      this.assign(consultation, event.agent);
      if (!event.sticky) this.pulled.push(consultation);
    }
  }

  /** The group the desk put a consultation in that was assigned at once, when the opening tells. */
  private openingGroup(conv: string): string | undefined {
    const named = this.input.namedGroup(conv, this.closedAtSeq.get(conv) ?? 0);
    if (named !== undefined && this.groups.has(named.group)) return named.certain ? named.group : undefined;
    // No group, or one no agent has: what the desk falls back to (DeskService.groupFor).
    return this.groups.has(DEFAULT_GROUP) || this.groups.size === 0 ? DEFAULT_GROUP : [...this.groups].sort()[0];
  }

  private assign(consultation: ModelConsultation, agentId: string): void {
    consultation.version++;
    consultation.state = 'assigned';
    consultation.agent = agentId;
    const agent = this.agents.get(agentId);
    if (agent === undefined) {
      this.report('desk-open-span', `${consultation.conv}: consultation ${consultation.id} assigned to ${agentId}, who is no agent of ${this.merchant}`, this.nowMs);
      return;
    }
    agent.holding.add(consultation.id);
    // The desk gives consultations to connected agents only: it saw this one back (the
    // workload's sample may lag), and a new absence counts from here.
    if (agent.absentSinceMs !== undefined) agent.absentSinceMs = Math.max(agent.absentSinceMs, this.nowMs);
  }

  private detach(consultation: ModelConsultation): void {
    consultation.version++;
    if (consultation.agent !== undefined) this.agents.get(consultation.agent)?.holding.delete(consultation.id);
    consultation.state = 'waiting';
    consultation.agent = undefined;
  }

  private closeQuietly(id: string): void {
    const consultation = this.consultations.get(id);
    if (consultation === undefined) return;
    this.detach(consultation);
    this.consultations.delete(id);
    this.closed.add(id);
  }

  /** A consultation taken in this ms: those of its group who came first and still wait must follow within the tolerance. */
  private notePass(taken: ModelConsultation, atMs: number): void {
    if (taken.group === undefined || taken.state !== 'assigned') return;
    const ahead: Array<{ consultation: ModelConsultation; version: number }> = [];
    for (const other of this.consultations.values()) {
      if (other === taken || other.state !== 'waiting' || other.group !== taken.group) continue;
      // A released one goes ahead of those queued normally. A restart restores a queue by the
      // keys alone, so only a pass that both orders forbid counts.
      if (taken.released && !other.released) continue;
      // Queued within the tolerance of the taken one: one decision may queue several customers at
      // once (their messages became durable together), and their `queued` messages, each durable
      // on its own, may then lie in either order; only an earlier one beyond it is passed.
      if (other.queueKeyMs >= taken.queueKeyMs - this.input.orderToleranceMs) continue;
      // Only one that waited already when the taken one was assigned (the decision's other
      // messages may lie on either side within the tolerance).
      if (other.waitingSinceMs >= atMs - this.input.orderToleranceMs) continue;
      ahead.push({ consultation: other, version: other.version });
    }
    if (ahead.length > 0) this.passes.push({ taken, atMs, ahead });
  }

  private judgePasses(atMs: number): void {
    this.passes = this.passes.filter((pass) => {
      if (atMs - pass.atMs <= this.input.orderToleranceMs) return true;
      const passed = pass.ahead.find(({ consultation, version }) => consultation.version === version && this.consultations.get(consultation.id) === consultation);
      if (passed !== undefined) {
        const { taken } = pass;
        const other = passed.consultation;
        this.report('desk-fifo', `${taken.conv} (consultation ${taken.id}, in line since ${Math.round(taken.queueKeyMs)}) was assigned in ${taken.group} while ${other.conv} (in line since ${Math.round(other.queueKeyMs)}${other.released ? ', released' : ''}) kept waiting`, pass.atMs);
      }
      return false;
    });
  }

  private judgeCapacity(atMs: number): void {
    for (const agent of this.agents.values()) {
      if (agent.overSinceMs === undefined || agent.overReported || atMs - agent.overSinceMs <= this.input.orderToleranceMs) continue;
      agent.overReported = true;
      this.report('desk-over-capacity', `${agent.plan.id} of ${this.merchant} holds ${agent.holding.size} consultations (${[...agent.holding].join(', ')}) with capacity ${agent.plan.capacity}`, agent.overSinceMs);
    }
  }

  /** Agents absent past the grace period, while the desk ran, still holding consultations. */
  private judgeGrace(atMs: number): void {
    if (!this.running) return;
    for (const agent of this.agents.values()) {
      if (agent.absentSinceMs === undefined || agent.graceReported || agent.holding.size === 0) continue;
      const fromMs = Math.max(agent.absentSinceMs, this.runningSinceMs);
      if (atMs - fromMs <= this.input.graceMs + this.input.graceSlackMs) continue;
      agent.graceReported = true;
      this.report('desk-grace', `${agent.plan.id} of ${this.merchant} still holds ${[...agent.holding].join(', ')} ${Math.round(atMs - fromMs)} ms after its devices left (grace ${this.input.graceMs} ms)`, atMs);
    }
  }

  private judgeStalls(atMs: number): void {
    for (const [group, stall] of this.stalledSince) {
      if (stall.reported || atMs - stall.sinceMs <= this.input.assignWithinMs) continue;
      stall.reported = true;
      const waiting = [...this.consultations.values()].filter((consultation) => consultation.state === 'waiting' && consultation.group === group);
      const free = [...this.agents.values()].filter((agent) => this.canTake(agent, group)).map((agent) => `${agent.plan.id} (${agent.holding.size}/${agent.plan.capacity})`);
      this.report('desk-idle-capacity', `${this.merchant} group ${group}: ${waiting.map((consultation) => consultation.conv).join(', ')} waited ${Math.round(atMs - stall.sinceMs)} ms while ${free.join(', ')} could take them`, atMs);
    }
  }

  /** Starts or ends the stall of each group after the changes of `atMs`. */
  private updateStalls(atMs: number): void {
    for (const group of this.groups) {
      const stalled = this.running && [...this.consultations.values()].some((consultation) => consultation.state === 'waiting' && consultation.group === group) && [...this.agents.values()].some((agent) => this.canTake(agent, group));
      if (!stalled) this.stalledSince.delete(group);
      else if (!this.stalledSince.has(group)) this.stalledSince.set(group, { sinceMs: atMs, reported: false });
    }
  }

  private canTake(agent: ModelAgent, group: string): boolean {
    return agent.online && agent.holding.size < agent.plan.capacity && agent.plan.groups.includes(group);
  }

  private report(kind: DeskViolationKind, message: string, atMs: number): void {
    this.violations.push({ kind, message, atMs });
  }
}
