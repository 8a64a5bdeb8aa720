// The agents of the merchants with a desk (the scenario's `desk`): they go busy, away and offline
// (every device gone, back before or after the grace period), close the consultations they get
// after a while or transfer some, answer only their own customers; and the record the desk's
// checks (sim/desk-checks.ts) set the system messages against: each agent's presence and the
// times each desk ran, sampled as the run goes.
import type { ChatMessage } from '../cell/protocol/frames.js';
import type { Random } from '../platform/random.js';
import { uniformMs, type DeviceActor } from './actors.js';
import type { Cluster } from './cluster.js';
import { checkDesks, type AgentPresence, type DeskRunning } from './desk-checks.js';
import type { MerchantMoves } from './merchant-moves.js';
import type { MerchantPlan } from './population.js';
import { exponential, pickIndex, stream, stringHash } from './rng.js';
import type { Scenario } from './scenario.js';
import { TENANT, type SimWorld } from './sim-world.js';

type DeskScenario = NonNullable<Scenario['desk']>;

/** How often presence and the desks' running are sampled (virtual ms); the checks' slack covers it. */
const SAMPLE_EVERY_MS = 200;

interface DeskAgent {
  readonly merchant: MerchantPlan;
  readonly device: DeviceActor;
  /** Conversation to the consultation this agent holds there, as its system messages say. */
  readonly holding: Map<string, string>;
  /** Its status as last confirmed by the cell; undefined while a change is unanswered or failed. */
  status: 'online' | 'busy' | 'away' | undefined;
  /** The agent took its devices away on purpose. */
  away: boolean;
  sampled: { present: boolean; online: boolean } | undefined;
}

export interface DeskFigures {
  readonly merchantsWithDesk: number;
  readonly deskAgents: number;
  readonly notices: Record<string, number>;
  readonly closesAsked: number;
  readonly transfersAsked: number;
  readonly statusChanges: number;
  readonly disconnects: number;
}

export class DeskAgents {
  readonly presence: AgentPresence[] = [];
  readonly running: DeskRunning[] = [];
  private readonly agents = new Map<string, DeskAgent>();
  private readonly runningNow = new Map<string, boolean>();
  private readonly random: Random;
  private closesAsked = 0;
  private transfersAsked = 0;
  private statusChanges = 0;
  private disconnects = 0;

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: Cluster,
    private readonly moves: MerchantMoves,
    private readonly settings: DeskScenario,
    /** Whether a merchant's conversations ended (its cell left): its agents stay away then. */
    private readonly ended: (merchant: string) => boolean,
  ) {
    this.random = stream(world.seed, 'desk-agents');
    // A move is over in a few ms: its start and end are recorded as they happen.
    moves.onMove = () => this.record();
    world.clock.setTimer(SAMPLE_EVERY_MS, () => this.sample());
  }

  /** An agent of a merchant with a desk connected for the first time: it starts its routine. */
  add(device: DeviceActor, merchant: MerchantPlan): void {
    const agent: DeskAgent = { merchant, device, holding: new Map(), status: 'online', away: false, sampled: undefined };
    this.agents.set(device.identity.user, agent);
    this.scheduleChange(agent);
  }

  /** Whether `agent` holds the consultation of `conv` (it answers only its own customers). */
  holds(agent: string, conv: string): boolean {
    return this.agents.get(agent)?.holding.has(conv) === true;
  }

  /** The group a conversation's customer names, the same in every message (from the page it came from); undefined: none. */
  groupOf(conv: string): string | undefined {
    const { namedGroupShare, groups } = this.settings;
    if ((stringHash(`${this.world.seed}/${conv}`) % 1_000) / 1_000 >= namedGroupShare) return undefined;
    return groups[stringHash(`${conv}/group`) % groups.length];
  }

  /** A system message reached an agent's device: what it holds, and what it will do with a new one. */
  heard(device: DeviceActor, message: ChatMessage): void {
    const agent = this.agents.get(device.identity.user);
    const event = message.event;
    if (agent === undefined || event === undefined) return;
    const me = device.identity.user;
    if ((event.type === 'assigned' || event.type === 'transferred') && event.agent === me) {
      agent.holding.set(message.conv, event.consultation);
      this.scheduleFinish(agent, message.conv, event.consultation);
    } else if (agent.holding.get(message.conv) === event.consultation && event.type !== 'rated') {
      agent.holding.delete(message.conv);
    }
  }

  /** Judges the desks' invariants over the run; their violations go to the history. */
  check(namedGroup: (conv: string, afterSeq: number) => { group: string; certain: boolean } | undefined, excluded: ReadonlySet<string>): void {
    const { world, settings } = this;
    this.record();
    const desks = new Map(world.population.merchants.filter((merchant) => merchant.desk !== undefined).map((merchant) => [merchant.id, merchant.desk!]));
    const violations = checkDesks({
      desks,
      notices: world.history.noticesByConversation(),
      namedGroup,
      presence: this.presence,
      running: this.running,
      excluded,
      graceMs: world.deskConfig.graceMs,
      graceSlackMs: settings.invariants.graceSlack,
      assignWithinMs: settings.invariants.assignWithin,
      orderToleranceMs: settings.invariants.orderTolerance,
      endMs: world.clock.now(),
    });
    for (const violation of violations) world.history.violation(violation.kind, violation.message, violation.atMs);
  }

  figures(): DeskFigures {
    const notices = new Map<string, number>();
    for (const list of this.world.history.noticesByConversation().values()) for (const notice of list) notices.set(notice.event.type, (notices.get(notice.event.type) ?? 0) + 1);
    return {
      merchantsWithDesk: this.world.population.merchants.filter((merchant) => merchant.desk !== undefined).length,
      deskAgents: this.agents.size,
      notices: Object.fromEntries([...notices].sort(([a], [b]) => (a < b ? -1 : 1))),
      closesAsked: this.closesAsked,
      transfersAsked: this.transfersAsked,
      statusChanges: this.statusChanges,
      disconnects: this.disconnects,
    };
  }

  /** Some time after getting a consultation, the agent closes it, or hands it on. */
  private scheduleFinish(agent: DeskAgent, conv: string, consultation: string): void {
    const { closeAfter, transferProbability } = this.settings.agents;
    this.world.clock.setTimer(uniformMs(this.random, closeAfter.min, closeAfter.max), () => {
      const client = agent.device.client;
      if (agent.holding.get(conv) !== consultation || client === undefined || this.world.phase === 'done') return;
      if (this.random.next() >= transferProbability) {
        this.closesAsked++;
        client.closeConsultation(conv, consultation).catch(() => undefined);
        return;
      }
      this.transfersAsked++;
      const others = agent.merchant.agents.filter((id) => id !== agent.device.identity.user);
      const groups = this.settings.groups;
      // To another agent (refused unless online with free capacity), or to a group.
      const to = others.length > 0 && this.random.next() < 0.5 ? { agent: others[pickIndex(this.random, others.length)]! } : { group: groups[pickIndex(this.random, groups.length)]! };
      client.transfer(conv, to, { note: 'over to you', consultation }).catch(() => undefined);
    });
  }

  /** Now and then the agent goes busy or away for a while, or takes every device away. */
  private scheduleChange(agent: DeskAgent): void {
    const { world } = this;
    const { changeEvery, offlineShare } = this.settings.agents;
    world.clock.setTimer(Math.max(1, Math.round(exponential(this.random, changeEvery))), () => {
      if (world.phase === 'done' || world.phase === 'settle') return;
      const graceMs = world.deskConfig.graceMs;
      const forMs = uniformMs(this.random, Math.round(graceMs / 10), graceMs * 3);
      if (world.trafficOn && !agent.away && agent.device.isOpen) {
        if (this.random.next() < offlineShare) this.goAway(agent, forMs);
        else this.changeStatus(agent, this.random.next() < 0.5 ? 'busy' : 'away', forMs);
      }
      this.scheduleChange(agent);
    });
  }

  private goAway(agent: DeskAgent, forMs: number): void {
    this.disconnects++;
    agent.away = true;
    void agent.device.close();
    this.world.clock.setTimer(forMs, () => {
      agent.away = false;
      const merchant = agent.merchant;
      if (this.ended(merchant.id) || this.moves.homeless.has(merchant.id)) return;
      agent.device.connect();
    });
  }

  private changeStatus(agent: DeskAgent, status: 'busy' | 'away', forMs: number): void {
    this.setStatus(agent, status);
    this.world.clock.setTimer(forMs, () => this.setStatus(agent, 'online'));
  }

  /** Asks the cell; only a confirmed `online` counts as online for the checks (anything else as not). */
  private setStatus(agent: DeskAgent, status: 'online' | 'busy' | 'away'): void {
    const client = agent.device.client;
    if (client === undefined) return;
    this.statusChanges++;
    agent.status = undefined;
    client.setStatus(status).then(
      () => {
        if (agent.device.client === client) agent.status = status;
      },
      () => {
        // Unknown whether it took; a later change settles it. Back online is retried.
        if (status === 'online') this.world.clock.setTimer(1_000, () => this.setStatus(agent, 'online'));
      },
    );
  }

  private sample(): void {
    this.record();
    if (this.world.phase !== 'done') this.world.clock.setTimer(SAMPLE_EVERY_MS, () => this.sample());
  }

  /** Records changes of presence (a device open on the merchant's home cell) and of the desks' running. */
  private record(): void {
    const { world, cluster, moves } = this;
    const atMs = world.clock.now();
    for (const merchant of world.population.merchants) {
      if (merchant.desk === undefined) continue;
      const slot = cluster.slots.get(merchant.cellId);
      // A desk whose disk refuses writes cannot record its changes (they wait for the disk): it is
      // judged again once the disk works.
      const diskFailing = slot?.diskFaultIntervals.some(([, endMs]) => endMs === undefined) === true;
      const running = slot?.status === 'up' && slot.incarnation?.status === 'running' && slot.incarnation.deskRuns(TENANT, merchant.id) && !moves.moving.has(merchant.id) && !diskFailing;
      if (this.runningNow.get(merchant.id) !== running) {
        this.runningNow.set(merchant.id, running);
        this.running.push({ merchant: merchant.id, atMs, running });
      }
    }
    for (const [id, agent] of this.agents) {
      const present = agent.device.isOpen && agent.device.cellId === agent.merchant.cellId;
      const online = present && agent.status === 'online';
      if (agent.sampled?.present === present && agent.sampled.online === online) continue;
      agent.sampled = { present, online };
      this.presence.push({ merchant: agent.merchant.id, agent: id, atMs, present, online });
    }
  }
}
