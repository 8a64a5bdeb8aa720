import { MemoryNetwork, type MemoryNetworkOptions } from '../mesh/memory-network.js';
import type { MemoryTransport } from '../mesh/memory-network.js';
import type { MeshMessage, PeerId } from '../mesh/transport.js';

/**
 * mesh/memory-network.ts with a faster record of blocked links and cheaper floods; deliveries are the same.
 * MemoryNetwork checks `isBlocked(from, to)` for every connection of every peer a published
 * message reaches (gossipsub's relay: N peers times their connections per publish) and builds a
 * fresh `from\0to` string for each check; at 100 cells that was a quarter of the simulator's
 * time. Here blocks are a map of sets keyed by the peer ids themselves, and the common case (no
 * partition at all) answers without a lookup. And a relay stops at once when every endpoint of
 * the network has the message already (typically after the first hop or two of a publish), where
 * the base class would walk the connections only to find each of them seen. Relay, latency,
 * loss, delivery order, random draws and timers are otherwise the base class's.
 *
 * When a flood cannot reach every endpoint (during a partition, and after a heal until the
 * connections across are dialed again), that test never passes and every relay walks all its
 * connections (at 1,000 cells, a few tens of thousands of checks per publish, a fifth of a heal's
 * time). Then the bound is the publisher's component instead: the peers linked to it by
 * connections open in at least one direction (a union-find, joined as connections open and
 * rebuilt after anything that can split a component: a connection closing, a block, a peer
 * leaving). That is an upper bound of what a flood reaches, and a copy only ever travels such
 * links, so a `seen` set as large as the component holds all of it and the walk would schedule
 * nothing. This holds while no component has split since the publish (joins only grow the
 * component around `seen`); a flood published before a split is walked as before, so deliveries
 * are exactly the base class's.
 *
 * The subscribers of a publish share its bytes (`shareDeliveredBytes`): the cells run the
 * production handlers, which only read them, and a copy per delivery was about a fifth of the
 * simulator's steady-state CPU at 200 cells (an allocation outside the heap, freed by the GC).
 *
 * The simulator forgets a peer as soon as its transport stops (a crash or a leave): a stopped and
 * an unknown peer are the same to the network (refused dials, dropped deliveries), and the count
 * of endpoints then stays the count of running ones.
 */
export class SimNetwork extends MemoryNetwork {
  private readonly blockedTo = new Map<PeerId, Set<PeerId>>();
  private blockedLinks = 0;
  private endpointCount = 0;
  /** Counts what can split a component (see the class comment); floods note it when published. */
  private splits = 0;
  private readonly floodSplits = new WeakMap<Set<PeerId>, number>();
  /** Union-find over the peers by open connections: parent links, and sizes at the roots. */
  private readonly parent = new Map<PeerId, PeerId>();
  private readonly size = new Map<PeerId, number>();
  /** Whether `parent` must be rebuilt before it is read (after a split, or a heal). */
  private componentsStale = true;

  constructor(options: MemoryNetworkOptions) {
    super({ ...options, shareDeliveredBytes: true });
  }

  override createTransport(peer: PeerId): MemoryTransport {
    const transport = super.createTransport(peer);
    this.endpointCount++;
    if (!this.componentsStale) {
      this.parent.set(peer, peer);
      this.size.set(peer, 1);
    }
    return transport;
  }

  override forget(peer: PeerId): void {
    const known = this.endpoint(peer) !== undefined;
    super.forget(peer);
    if (known) {
      this.endpointCount--;
      this.split();
    }
  }

  override relay(relay: MemoryTransport, message: MeshMessage, seen: Set<PeerId>): void {
    // The publisher's own relay (the first hop) notes the splits so far.
    const publishing = seen.size === 1 && relay.self === message.from;
    if (publishing) this.floodSplits.set(seen, this.splits);
    // Every endpoint has been scheduled a copy: the base loop would find all connections seen.
    if (seen.size >= this.endpointCount) return;
    // Every peer the flood can reach has been (see the class comment).
    if (!publishing && this.floodSplits.get(seen) === this.splits && seen.size >= this.componentSize(relay.self)) return;
    super.relay(relay, message, seen);
  }

  override connectionOpened(a: PeerId, b: PeerId): void {
    if (!this.componentsStale && (!this.isBlocked(a, b) || !this.isBlocked(b, a))) this.union(a, b);
  }

  override connectionClosed(): void {
    this.split();
  }

  override blockOneWay(from: readonly PeerId[], to: readonly PeerId[]): void {
    for (const source of from) {
      let targets = this.blockedTo.get(source);
      for (const target of to) {
        if (source === target) continue;
        if (targets === undefined) {
          targets = new Set();
          this.blockedTo.set(source, targets);
        }
        if (!targets.has(target)) {
          targets.add(target);
          this.blockedLinks++;
        }
      }
    }
    this.split();
  }

  override heal(): void {
    this.blockedTo.clear();
    this.blockedLinks = 0;
    // Components only join: floods under way stay bounded by theirs.
    this.componentsStale = true;
  }

  override isBlocked(from: PeerId, to: PeerId): boolean {
    if (this.blockedLinks === 0) return false;
    return this.blockedTo.get(from)?.has(to) === true;
  }

  private split(): void {
    this.splits++;
    this.componentsStale = true;
  }

  private componentSize(peer: PeerId): number {
    if (this.componentsStale) this.rebuildComponents();
    return this.size.get(this.root(peer)) ?? 1;
  }

  /** The union-find from scratch: every peer, joined over the connections not blocked both ways. */
  private rebuildComponents(): void {
    this.parent.clear();
    this.size.clear();
    for (const transport of this.peers()) {
      this.parent.set(transport.self, transport.self);
      this.size.set(transport.self, 1);
    }
    for (const transport of this.peers()) {
      const self = transport.self;
      for (const next of transport.connections) {
        if (next <= self || !this.parent.has(next)) continue;
        if (!this.isBlocked(self, next) || !this.isBlocked(next, self)) this.union(self, next);
      }
    }
    this.componentsStale = false;
  }

  private union(a: PeerId, b: PeerId): void {
    const rootA = this.root(a);
    const rootB = this.root(b);
    if (rootA === rootB) return;
    const sizeA = this.size.get(rootA) ?? 1;
    const sizeB = this.size.get(rootB) ?? 1;
    // The smaller tree goes under the larger, so paths stay short.
    const [small, large] = sizeA < sizeB ? [rootA, rootB] : [rootB, rootA];
    this.parent.set(small, large);
    this.size.set(large, sizeA + sizeB);
    this.size.delete(small);
  }

  private root(peer: PeerId): PeerId {
    let top = peer;
    for (let up = this.parent.get(top); up !== undefined && up !== top; up = this.parent.get(top)) top = up;
    // Path compression: later finds of the same peers take one step.
    for (let at = peer; at !== top; ) {
      const up = this.parent.get(at) as PeerId;
      this.parent.set(at, top);
      at = up;
    }
    return top;
  }
}
