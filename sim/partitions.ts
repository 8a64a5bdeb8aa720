// The network partitions in force (two-way and one-way cuts of the mesh network), as the fault
// planner starts them: their blocks on the network, the connections a cut closes once
// keep-alives would fail, and their end (after their duration, at a `heal`, or at the final heal).
import type { Cluster } from './cluster.js';
import { peerOf } from './sim-cell.js';
import type { FaultSpan, SimWorld } from './sim-world.js';

/** Traffic from every cell of the first list to every cell of the second is dropped. */
export type Block = readonly [string[], string[]];

interface ActivePartition {
  readonly blocks: readonly Block[];
  readonly span: FaultSpan;
}

export interface PartitionHooks {
  /** A partition ended on its own (its duration ran out): `what` names it for the heal record. */
  readonly ended: (what: string) => void;
}

export class Partitions {
  private readonly active: ActivePartition[] = [];

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: Cluster,
    private readonly hooks: PartitionHooks,
  ) {}

  /** Whether a partition or a one-way cut is in force. */
  get inForce(): boolean {
    return this.active.length > 0;
  }

  add(kind: string, blocks: readonly Block[], detail: string, durationMs: number | undefined): void {
    const { world } = this;
    const span: FaultSpan = { kind, startS: world.seconds(), endS: undefined, detail };
    world.faultSpans.push(span);
    const partition: ActivePartition = { blocks, span };
    this.active.push(partition);
    for (const [from, to] of blocks) world.network.blockOneWay(from.map(peerOf), to.map(peerOf));
    const timeoutMs = world.scenario.network.mesh.connectionTimeout;
    if (timeoutMs > 0) world.clock.setTimer(timeoutMs, () => this.closeBlockedConnections(partition));
    if (durationMs !== undefined) {
      world.clock.setTimer(durationMs, () => {
        if (world.phase !== 'traffic') return;
        const at = this.active.indexOf(partition);
        if (at < 0) return;
        this.active.splice(at, 1);
        span.endS = world.seconds();
        this.reapplyBlocks();
        this.hooks.ended(`end of ${kind} ${detail}`);
      });
    }
  }

  /** Every partition and one-way cut ends. */
  healAll(): void {
    for (const partition of this.active) partition.span.endS = this.world.seconds();
    this.active.length = 0;
    this.reapplyBlocks();
  }

  /** Keep-alives across a partition failed: the connections it cut close at both ends. */
  private closeBlockedConnections(partition: ActivePartition): void {
    if (!this.active.includes(partition)) return;
    for (const [from, to] of partition.blocks) {
      const targets = new Set(to.map(peerOf));
      for (const cellId of from) {
        const transport = this.cluster.slots.get(cellId)?.incarnation?.transport;
        if (transport === undefined || !transport.isRunning) continue;
        for (const peer of transport.connectedPeers()) if (targets.has(peer)) void transport.hangUp(peer);
      }
    }
  }

  private reapplyBlocks(): void {
    const { network } = this.world;
    network.heal();
    for (const partition of this.active) for (const [from, to] of partition.blocks) network.blockOneWay(from.map(peerOf), to.map(peerOf));
  }
}
