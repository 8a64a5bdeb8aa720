// The workload: the simulated devices (one SDK client each, in route mode) of agents and
// customers, the conversations between them, and what they do: customers send as Poisson
// processes, the agent in charge answers some messages, devices mark conversations read, and the
// customers of a merchant whose cell leaves turn to their other merchant or stop. Moves and
// outages are followed by the SDK alone: it routes before every attempt and follows redirects.
import type { ChatMessage } from '../cell/protocol/frames.js';
import { conversationIdOf } from '../cell/protocol/frames.js';
import type { Random } from '../platform/random.js';
import { DeviceActor, uniformMs, type ActorHost } from './actors.js';
import type { Cluster } from './cluster.js';
import type { DeviceNetwork } from './device-link.js';
import type { MerchantMoves } from './merchant-moves.js';
import type { Partitions } from './partitions.js';
import { DeskAgents } from './desk-agents.js';
import type { CustomerPlan, MerchantPlan } from './population.js';
import { exponential, pickIndex, stream, stringHash } from './rng.js';
import { SimHttp } from './sim-http.js';
import { TENANT, TENANT_SECRET, type SimWorld } from './sim-world.js';

export class Workload implements ActorHost {
  readonly tenant = TENANT;
  readonly secret = TENANT_SECRET;
  readonly tokenTtlSeconds: number;
  readonly clientErrors = new Map<string, number>();
  readonly deviceNetwork: DeviceNetwork;
  readonly devices: DeviceActor[] = [];
  /** Every `error` frame the cells sent to devices, by code. */
  readonly errorAnswers = new Map<string, number>();
  /** Conversations that ended when their merchant's cell left: excluded from the checks from then on. */
  readonly orphaned = new Set<string>();
  /** Route requests over the simulated network, to the front door and the cells. */
  readonly http: SimHttp;
  /** Agents' sessions that opened on another cell than their last (they followed their merchant). */
  agentReroutes = 0;
  /** The same for customers' devices. */
  customerReroutes = 0;
  /** The agents of the merchants with a desk, when the scenario has desks. */
  readonly desk: DeskAgents | undefined;
  /** Merchants whose cell left: their conversations ended. */
  private readonly endedMerchants = new Set<string>();
  private readonly workloadRandom: Random;
  private readonly customerDevices = new Map<string, DeviceActor[]>();
  private readonly merchantConvs = new Map<string, string[]>();
  private readonly activeCustomers = new Set<string>();
  private readonly pendingReads = new Set<string>();
  private deviceSerial = 0;
  private bodyCount = 0;

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: Cluster,
    private readonly moves: MerchantMoves,
    private readonly partitions: Partitions,
  ) {
    const { scenario } = world;
    const totalMs = scenario.warmup + world.durationMs + scenario.settle;
    this.tokenTtlSeconds = Math.ceil(totalMs / 1000) + 86_400;
    this.workloadRandom = stream(world.seed, 'workload');
    const deviceRandom = stream(world.seed, 'device-network');
    this.deviceNetwork = {
      clock: world.clock,
      errorAnswered: (code) => {
        this.errorAnswers.set(code, (this.errorAnswers.get(code) ?? 0) + 1);
        // INTERNAL is a bug of the cell: every operating error (a failing disk among them) has its own code.
        if (code === 'INTERNAL') world.history.violation('internal-error', 'a cell answered a device INTERNAL', world.clock.now());
      },
      latencyMs: () => world.deviceLatency(deviceRandom),
      endpointOf: (cellId) => cluster.deviceEndpointOf(cellId),
    };
    this.http = new SimHttp({
      network: this.deviceNetwork,
      incarnationOf: (cellId) => {
        const incarnation = cluster.slots.get(cellId)?.incarnation;
        return incarnation?.acceptsDevices === true ? incarnation : undefined;
      },
      // The front door's health checks pass for cells that joined the mesh and accept devices.
      servingCells: () => cluster.upSlots().filter((slot) => slot.incarnation?.status === 'running' && slot.incarnation.acceptsDevices).map((slot) => slot.id),
      random: stream(world.seed, 'front-door'),
    });
    this.desk = scenario.desk === undefined ? undefined : new DeskAgents(world, cluster, moves, scenario.desk, (merchant) => this.endedMerchants.has(merchant));
  }

  get clock(): SimWorld['clock'] {
    return this.world.clock;
  }

  get seed(): number {
    return this.world.seed;
  }

  get history(): SimWorld['history'] {
    return this.world.history;
  }

  addAgents(merchant: MerchantPlan): void {
    merchant.agents.forEach((agent) => {
      const device = new DeviceActor(this, { user: agent, role: 'agent', merchant: merchant.id, device: 'd0' }, this.deviceSerial++, merchant.id, merchant.cellId);
      device.onMessage = (actor, message) => this.agentHeard(actor, merchant, message);
      this.devices.push(device);
      device.connect();
      if (merchant.desk !== undefined) this.desk?.add(device, merchant);
    });
  }

  addCustomer(customer: CustomerPlan): void {
    const devices: DeviceActor[] = [];
    for (let index = 0; index < customer.devices; index++) {
      // Routed for the merchant it came for; its other conversation (if any) goes cross-cell.
      const device = new DeviceActor(this, { user: customer.id, role: 'customer', device: `d${index}` }, this.deviceSerial++, customer.primary.id, customer.primary.cellId);
      device.onMessage = (actor, message) => this.maybeRead(actor, message);
      devices.push(device);
      this.devices.push(device);
      device.connect();
    }
    this.customerDevices.set(customer.id, devices);
    for (const merchant of [customer.primary, customer.secondary]) {
      if (merchant === undefined) continue;
      const convs = this.merchantConvs.get(merchant.id) ?? [];
      convs.push(conversationIdOf(merchant.id, customer.id));
      this.merchantConvs.set(merchant.id, convs);
    }
    this.activeCustomers.add(customer.id);
    this.scheduleCustomerSend(customer);
  }

  deviceStopped(device: DeviceActor, reason: string): void {
    // Route mode follows moves and outages by itself: no stop is expected.
    this.world.history.violation('device-stopped', `${device.key} on ${device.cellId}: ${reason}`, this.world.clock.now());
  }

  deviceSwitchedCell(device: DeviceActor): void {
    if (device.identity.role === 'agent') this.agentReroutes++;
    else this.customerReroutes++;
    this.world.history.deviceSwitchedCell(device.key);
  }

  /**
   * A cell leaves, and the merchants of `leaving` with it: their conversations end and their
   * agents go; customers routed for them turn to their other merchant.
   */
  cellLeaving(leaving: ReadonlySet<string>): void {
    const { world } = this;
    for (const merchant of leaving) for (const conv of this.merchantConvs.get(merchant) ?? []) this.orphaned.add(conv);
    for (const merchant of leaving) this.endedMerchants.add(merchant);
    for (const device of this.devices) {
      if (device.identity.role === 'agent' && leaving.has(device.identity.merchant ?? '')) void device.close();
    }
    // Customers routed for a merchant that leaves turn to their other merchant, if it stays (a
    // move may have taken it elsewhere: routing finds it), or stop. The others' devices connected
    // there route again when the cell drains them.
    for (const customer of world.population.customers) {
      const devices = this.customerDevices.get(customer.id);
      if (devices === undefined || !leaving.has(devices[0]?.routedFor ?? '')) continue;
      const staying = [customer.primary, customer.secondary].find(
        (merchant) => merchant !== undefined && !leaving.has(merchant.id) && !this.endedMerchants.has(merchant.id) && this.cluster.slots.get(merchant.cellId)?.status !== 'left',
      );
      if (staying === undefined) {
        this.activeCustomers.delete(customer.id);
        for (const device of devices) void device.close();
        continue;
      }
      for (const device of devices) world.clock.setTimer(1_000, () => device.routeFor(staying.id));
    }
  }

  private scheduleCustomerSend(customer: CustomerPlan): void {
    const { world } = this;
    const rate = world.scenario.traffic.customerMessagesPerMinute;
    if (rate <= 0) return;
    const delayMs = Math.max(1, Math.round(exponential(this.workloadRandom, 60_000 / rate)));
    world.clock.setTimer(delayMs, () => {
      if (!this.activeCustomers.has(customer.id)) return;
      if (world.trafficOn) this.customerSends(customer);
      if (world.phase === 'warmup' || world.phase === 'traffic') this.scheduleCustomerSend(customer);
    });
  }

  private customerSends(customer: CustomerPlan): void {
    const merchants = [customer.primary, customer.secondary].filter(
      (merchant): merchant is MerchantPlan => merchant !== undefined && !this.orphaned.has(conversationIdOf(merchant.id, customer.id)),
    );
    const devices = this.customerDevices.get(customer.id) ?? [];
    if (merchants.length === 0 || devices.length === 0) return;
    // Most messages go to the merchant the customer came for.
    const merchant = merchants.length > 1 && this.workloadRandom.next() < 0.3 ? merchants[1]! : merchants[0]!;
    const device = devices[pickIndex(this.workloadRandom, devices.length)]!;
    const conv = conversationIdOf(merchant.id, customer.id);
    // At a desk, the conversation with the merchant the customer came for may name a group (a
    // relayed send from another cell would not carry it: those name none).
    const group = merchant === customer.primary && merchant.desk !== undefined ? this.desk?.groupOf(conv) : undefined;
    // A send while the merchant's home is down: the outage checks judge it (sim/outage-checks.ts).
    const outageOf = this.cluster.slots.get(merchant.cellId)?.status === 'crashed' ? merchant.cellId : undefined;
    device.send(conv, this.nextBody(), { inCell: device.cellId === merchant.cellId && !this.moves.moving.has(merchant.id), duringPartition: this.partitions.inForce, group, outageOf });
  }

  /** The agent in charge of a conversation answers some customer messages after a while. */
  private agentHeard(device: DeviceActor, merchant: MerchantPlan, message: ChatMessage): void {
    const { world } = this;
    if (message.from === device.identity.user) return;
    if (message.role === 'system') this.desk?.heard(device, message);
    this.maybeRead(device, message);
    if (message.role !== 'customer' || !world.trafficOn) return;
    // At a desk, the agent holding the consultation answers; without, one agent per conversation.
    const agents = merchant.agents;
    const inCharge = merchant.desk !== undefined ? this.desk?.holds(device.identity.user, message.conv) === true : agents[stringHash(message.conv) % agents.length] === device.identity.user;
    if (!inCharge) return;
    const { traffic } = world.scenario;
    if (this.workloadRandom.next() >= traffic.agentReplyProbability) return;
    const delayMs = uniformMs(this.workloadRandom, traffic.agentReplyDelay.min, traffic.agentReplyDelay.max);
    world.clock.setTimer(delayMs, () => {
      if (!world.trafficOn || this.orphaned.has(message.conv)) return;
      // The consultation may have left the agent meanwhile (its send would be NOT_ASSIGNED).
      if (merchant.desk !== undefined && this.desk?.holds(device.identity.user, message.conv) !== true) return;
      const customer = message.conv.slice(message.conv.indexOf(':') + 1);
      const customerCell = this.customerDevices.get(customer)?.[0]?.cellId;
      device.send(message.conv, this.nextBody(), { inCell: customerCell === merchant.cellId && !this.moves.moving.has(merchant.id), duringPartition: this.partitions.inForce });
    });
  }

  /** Judges the desks' invariants once the run settled (their violations go to the history). */
  checkDesks(): void {
    this.desk?.check((conv, afterSeq) => {
      const customer = conv.slice(conv.indexOf(':') + 1);
      const opening = this.world.history.sendsOf(conv, customer).find((send) => send.seq > afterSeq);
      return opening?.group === undefined ? undefined : { group: opening.group, certain: opening.inCell };
    }, this.orphaned);
  }

  private maybeRead(device: DeviceActor, message: ChatMessage): void {
    const { world } = this;
    if (message.from === device.identity.user || !world.trafficOn) return;
    const { traffic } = world.scenario;
    if (this.workloadRandom.next() >= traffic.readProbability) return;
    const key = `${device.key}\u0000${message.conv}`;
    if (this.pendingReads.has(key)) return;
    this.pendingReads.add(key);
    world.clock.setTimer(uniformMs(this.workloadRandom, traffic.readDelay.min, traffic.readDelay.max), () => {
      this.pendingReads.delete(key);
      if (world.trafficOn) device.read(message.conv);
    });
  }

  private nextBody(): string {
    return `m${(this.bodyCount++).toString(36)}`;
  }
}
