// The fault planner: what each fault of the timeline does when its time comes (partitions, link
// faults, latency, disk faults, crashes and restarts, joins and leaves, merchant moves, device
// flaps), the cells its selectors name, and the final heal that ends them all.
import type { LinkFaults } from '../mesh/memory-network.js';
import type { Random } from '../platform/random.js';
import { cellIdOf, type Cluster, type CellSlot } from './cluster.js';
import type { Convergence } from './convergence.js';
import { describeLatency, latencySampler } from './latency.js';
import type { MerchantMoves } from './merchant-moves.js';
import type { Block, Partitions } from './partitions.js';
import type { MerchantPlan } from './population.js';
import { pickIndex, sampleIndexes, stream } from './rng.js';
import type { Scenario, TimelineEvent } from './scenario.js';
import type { DiskFaults } from './sim-store.js';
import type { FaultSpan, SimWorld } from './sim-world.js';
import type { Workload } from './workload.js';

const LINK_FAULT_KINDS = ['loss', 'duplicate', 'reorder'] as const;
type LinkFaultKind = (typeof LINK_FAULT_KINDS)[number];

export class FaultPlanner {
  /** Picks the cells of disk faults, apart from the world's fault stream, so they leave the other faults' picks as they were. */
  private readonly diskFaultRandom: Random;
  /** The mesh link faults in force, and the span of each in the report. */
  private linkFaults: Required<LinkFaults> = { lossRate: 0, duplicateRate: 0, reorderRate: 0, reorderDelayMs: 0 };
  private readonly linkFaultSpans = new Map<LinkFaultKind, FaultSpan>();
  private latencySpan: FaultSpan | undefined;
  /** Disk faults in force, oldest first (a later one on the same disk overrides). */
  private readonly diskFaultSpans: Array<{ readonly span: FaultSpan; readonly cells: readonly string[]; readonly faults: DiskFaults }> = [];

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: Cluster,
    private readonly partitions: Partitions,
    private readonly moves: MerchantMoves,
    private readonly workload: Workload,
    private readonly convergence: Convergence,
  ) {
    this.diskFaultRandom = stream(world.seed, 'disk-faults');
  }

  apply(event: TimelineEvent): void {
    const { world } = this;
    if (world.phase !== 'traffic') return;
    const { action } = event;
    switch (action.kind) {
      case 'partition': {
        const groups = this.resolveGroups(action.groups);
        const blocks: Block[] = [];
        for (let a = 0; a < groups.length; a++) {
          for (let b = a + 1; b < groups.length; b++) {
            blocks.push([groups[a]!, groups[b]!], [groups[b]!, groups[a]!]);
          }
        }
        this.partitions.add('partition', blocks, groups.map((group) => describeCells(group)).join(' | '), action.duration);
        return;
      }
      case 'oneWay': {
        const [from, to] = this.resolveGroups([action.from, action.to]);
        this.partitions.add('oneWay', [[from!, to!]], `${describeCells(from!)} -> ${describeCells(to!)}`, action.duration);
        return;
      }
      case 'heal':
        this.partitions.healAll();
        this.convergence.watch('heal');
        return;
      case 'loss':
      case 'duplicate':
      case 'reorder': {
        const delayMs = action.kind === 'reorder' ? action.maxDelay : 0;
        this.setLinkFault(action.kind, action.rate, delayMs);
        if (action.duration !== undefined) world.clock.setTimer(action.duration, () => world.phase === 'traffic' && this.setLinkFault(action.kind, 0, 0));
        return;
      }
      case 'latency': {
        this.setLatency(action.mesh, action.devices);
        if (action.duration !== undefined) world.clock.setTimer(action.duration, () => world.phase === 'traffic' && this.setLatency(undefined, undefined));
        return;
      }
      case 'crash': {
        const [cells] = this.resolveGroups([action.cells]);
        for (const cellId of cells!) {
          const slot = this.cluster.slots.get(cellId)!;
          this.cluster.crash(slot);
          if (action.restartAfter !== undefined) world.clock.setTimer(action.restartAfter, () => this.cluster.restart(slot));
        }
        return;
      }
      case 'restart': {
        const [cells] = this.resolveGroups([action.cells], 'crashed');
        for (const cellId of cells!) this.cluster.restart(this.cluster.slots.get(cellId)!);
        return;
      }
      case 'join':
        this.join(action.cells, action.merchantsPerCell ?? world.scenario.merchantsPerCell, action.customers ?? 0);
        return;
      case 'leave': {
        const [cells] = this.resolveGroups([action.cells]);
        for (const cellId of cells!) this.leave(this.cluster.slots.get(cellId)!);
        return;
      }
      case 'move': {
        const [sources, targets] = this.resolveGroups([action.from, action.to]);
        this.moves.moveMerchants(action.merchants, sources!, targets!);
        return;
      }
      case 'disk': {
        const [cells] = this.resolveGroups([action.cells], 'up', this.diskFaultRandom);
        const faults: DiskFaults = { readErrorRate: action.readErrorRate, writeErrorRate: action.writeErrorRate, spikeRate: action.spikeRate, spikeMs: action.spike };
        const span: FaultSpan = {
          kind: 'disk',
          startS: world.seconds(),
          endS: undefined,
          detail: `${describeCells(cells!)}: read errors ${faults.readErrorRate}, write errors ${faults.writeErrorRate}, spikes ${faults.spikeRate} x ${faults.spikeMs} ms`,
        };
        world.faultSpans.push(span);
        for (const cellId of cells!) {
          const slot = this.cluster.slots.get(cellId)!;
          slot.disk.setFaults(faults);
          slot.diskFaultIntervals.push([world.clock.now(), undefined]);
        }
        this.diskFaultSpans.push({ span, cells: cells!, faults });
        if (action.duration !== undefined) world.clock.setTimer(action.duration, () => world.phase === 'traffic' && this.endDiskFault(span));
        return;
      }
      case 'deviceFlap': {
        const open = this.workload.devices.filter((device) => device.isOpen);
        const picked = sampleIndexes(world.faultRandom, open.length, Math.round(open.length * action.fraction));
        for (const at of picked) open[at]!.flap();
        world.faultSpans.push({ kind: 'deviceFlap', startS: world.seconds(), endS: world.seconds(), detail: `${picked.length} devices` });
        return;
      }
    }
  }

  /** The end of traffic and faults: heal everything, restart crashed cells. */
  finalHeal(): void {
    this.world.phase = 'settle';
    this.partitions.healAll();
    for (const kind of LINK_FAULT_KINDS) this.setLinkFault(kind, 0, 0);
    this.setLatency(undefined, undefined);
    for (const { span } of [...this.diskFaultSpans]) this.endDiskFault(span);
    for (const slot of this.cluster.slots.values()) if (slot.status === 'crashed') this.cluster.restart(slot);
    this.convergence.watchFinalHeal();
  }

  /** The disk fault of `span` ends: its disks work again, unless a later fault took them over. */
  private endDiskFault(span: FaultSpan): void {
    const at = this.diskFaultSpans.findIndex((entry) => entry.span === span);
    if (at < 0) return;
    const [ended] = this.diskFaultSpans.splice(at, 1);
    span.endS = this.world.seconds();
    for (const cellId of ended!.cells) {
      const slot = this.cluster.slots.get(cellId)!;
      const later = this.diskFaultSpans.findLast((entry) => entry.cells.includes(cellId));
      slot.disk.setFaults(later?.faults);
      const open = slot.diskFaultIntervals.find((interval) => interval[1] === undefined);
      if (open !== undefined) open[1] = this.world.clock.now();
    }
  }

  /** Resolves each group's selectors to cell ids; `rest` is every candidate no other group named. */
  private resolveGroups(groups: ReadonlyArray<readonly string[]>, among: 'up' | 'crashed' = 'up', random: Random = this.world.faultRandom): string[][] {
    const candidates = [...this.cluster.slots.values()].filter((slot) => slot.status === among).map((slot) => slot.id);
    const taken = new Set<string>();
    const resolved = groups.map((group) => {
      const cells = new Set<string>();
      for (const selector of group) {
        if (selector === 'rest') continue;
        // A cell belongs to one group of an event: later groups draw from what is left.
        const free = candidates.filter((cellId) => !taken.has(cellId) && !cells.has(cellId));
        for (const cellId of resolveSelector(selector, free, candidates.length, random)) cells.add(cellId);
      }
      for (const cellId of cells) taken.add(cellId);
      return cells;
    });
    groups.forEach((group, index) => {
      if (group.includes('rest')) for (const cellId of candidates) if (!taken.has(cellId)) resolved[index]!.add(cellId);
    });
    return resolved.map((cells) => [...cells].sort());
  }

  /** Sets one kind of mesh link fault (0: off), ending the span of the one it replaces. */
  private setLinkFault(kind: LinkFaultKind, rate: number, reorderDelayMs: number): void {
    const { world } = this;
    const faults = this.linkFaults;
    this.linkFaults =
      kind === 'loss' ? { ...faults, lossRate: rate } : kind === 'duplicate' ? { ...faults, duplicateRate: rate } : { ...faults, reorderRate: rate, reorderDelayMs };
    world.network.setFaults(this.linkFaults);
    const previous = this.linkFaultSpans.get(kind);
    if (previous !== undefined) previous.endS = world.seconds();
    this.linkFaultSpans.delete(kind);
    if (rate > 0) {
      const percent = `${Math.round(rate * 1000) / 10}%`;
      const detail =
        kind === 'loss' ? `${percent} of mesh deliveries lost` : kind === 'duplicate' ? `${percent} of mesh deliveries twice` : `${percent} of mesh deliveries up to ${reorderDelayMs} ms late`;
      const span: FaultSpan = { kind, startS: world.seconds(), endS: undefined, detail };
      this.linkFaultSpans.set(kind, span);
      world.faultSpans.push(span);
    }
  }

  private setLatency(mesh: Scenario['network']['mesh']['latency'] | undefined, devices: Scenario['network']['devices']['latency'] | undefined): void {
    const { world } = this;
    world.meshLatency = latencySampler(mesh ?? world.scenario.network.mesh.latency);
    world.deviceLatency = latencySampler(devices ?? world.scenario.network.devices.latency);
    if (this.latencySpan !== undefined) this.latencySpan.endS = world.seconds();
    this.latencySpan = undefined;
    if (mesh !== undefined || devices !== undefined) {
      const parts = [mesh === undefined ? '' : `mesh ${describeLatency(mesh)}`, devices === undefined ? '' : `devices ${describeLatency(devices)}`].filter((part) => part !== '');
      this.latencySpan = { kind: 'latency', startS: world.seconds(), endS: undefined, detail: parts.join(', ') };
      world.faultSpans.push(this.latencySpan);
    }
  }

  /** New cells with merchants of their own; their agents connect after 2 s, new customers for them after 3 s. */
  private join(cells: number, merchantsPerCell: number, customerCount: number): void {
    const { world, cluster, workload } = this;
    const added: CellSlot[] = [];
    const newMerchants: MerchantPlan[] = [];
    for (let count = 0; count < cells; count++) {
      const slot = cluster.addSlot(cluster.slots.size, merchantsPerCell);
      added.push(slot);
      newMerchants.push(...slot.merchants);
      cluster.startCell(slot);
    }
    world.faultSpans.push({ kind: 'join', startS: world.seconds(), endS: world.seconds(), detail: added.map((slot) => slot.id).join(', ') });
    world.clock.setTimer(2_000, () => {
      for (const merchant of newMerchants) workload.addAgents(merchant);
    });
    if (customerCount > 0 && newMerchants.length > 0) {
      const customers = world.population.addCustomers(customerCount, newMerchants);
      customers.forEach((customer, index) => world.clock.setTimer(3_000 + Math.floor((index * 2_000) / customers.length), () => workload.addCustomer(customer)));
    }
  }

  /** A graceful leave: the cell drains and leaves; its merchants' conversations end; its customers move. */
  private leave(slot: CellSlot): void {
    this.cluster.leave(slot, () => {
      const hosted = this.moves.markHomeless(slot);
      this.workload.cellLeaving(new Set(hosted.map((merchant) => merchant.id)));
    });
  }
}

/** `total`: the number of candidates before earlier groups took theirs (what a share is of). */
function resolveSelector(selector: string, candidates: readonly string[], total: number, random: Random): string[] {
  const isCandidate = (cellId: string): boolean => candidates.includes(cellId);
  if (selector === 'random') return candidates.length === 0 ? [] : [candidates[pickIndex(random, candidates.length)]!];
  if (selector.endsWith('%')) {
    const count = Math.round((total * Number(selector.slice(0, -1))) / 100);
    return sampleIndexes(random, candidates.length, Math.max(1, Math.min(candidates.length - 1, count))).map((at) => candidates[at]!);
  }
  if (selector.startsWith('cell-')) return isCandidate(selector) ? [selector] : [];
  const range = /^(\d+)-(\d+)$/.exec(selector);
  const [from, to] = range === null ? [Number(selector), Number(selector)] : [Number(range[1]), Number(range[2])];
  const cells: string[] = [];
  for (let index = from; index <= to; index++) if (isCandidate(cellIdOf(index))) cells.push(cellIdOf(index));
  return cells;
}

function describeCells(cells: readonly string[]): string {
  if (cells.length <= 4) return cells.join(',');
  return `${cells.slice(0, 3).join(',')},… (${cells.length} cells)`;
}
