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
 * During a partition a flood cannot reach every endpoint, so that test never passes and every
 * relay walks all its connections (at 1,000 cells in a full mesh, about a million checks per
 * publish). Then the bound is the publisher's component instead: the peers linked to it by
 * connections open in at least one direction, computed once per change of the graph (blocks,
 * connections, endpoints). That is an upper bound of what a flood reaches, and a copy only ever
 * travels such links, so while the graph has not changed since the publish, a `seen` set as
 * large as the component holds all of it and the walk would schedule nothing. A flood published
 * before the last change is walked as before, so deliveries are exactly the base class's.
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
  /** The graph's version when each flood in flight was published during a partition. */
  private readonly floodVersions = new WeakMap<Set<PeerId>, number>();
  /** Size of each peer's component, as of `componentsVersion`. */
  private componentSizes = new Map<PeerId, number>();
  private componentsVersion = -1;

  constructor(options: MemoryNetworkOptions) {
    super({ ...options, shareDeliveredBytes: true });
  }

  override createTransport(peer: PeerId): MemoryTransport {
    const transport = super.createTransport(peer);
    this.endpointCount++;
    this.topologyChanged();
    return transport;
  }

  override forget(peer: PeerId): void {
    const known = this.endpoint(peer) !== undefined;
    super.forget(peer);
    if (known) {
      this.endpointCount--;
      this.topologyChanged();
    }
  }

  override relay(relay: MemoryTransport, message: MeshMessage, seen: Set<PeerId>): void {
    // The publisher's own relay (the first hop) notes the graph's version during a partition.
    const publishing = seen.size === 1 && relay.self === message.from;
    if (publishing && this.blockedLinks > 0) this.floodVersions.set(seen, this.topologyVersion);
    // Every endpoint has been scheduled a copy: the base loop would find all connections seen.
    if (seen.size >= this.endpointCount) return;
    // Every peer the flood can reach has been, on an unchanged graph (see the class comment). A
    // flood published with no block in place has no version and is walked as before.
    if (this.blockedLinks > 0 && !publishing && this.floodVersions.get(seen) === this.topologyVersion && seen.size >= this.componentSize(relay.self)) return;
    super.relay(relay, message, seen);
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
    this.topologyChanged();
  }

  override heal(): void {
    this.blockedTo.clear();
    this.blockedLinks = 0;
    this.topologyChanged();
  }

  override isBlocked(from: PeerId, to: PeerId): boolean {
    if (this.blockedLinks === 0) return false;
    return this.blockedTo.get(from)?.has(to) === true;
  }

  private componentSize(peer: PeerId): number {
    if (this.componentsVersion !== this.topologyVersion) {
      this.componentSizes = this.computeComponentSizes();
      this.componentsVersion = this.topologyVersion;
    }
    return this.componentSizes.get(peer) ?? 1;
  }

  /** Union-find over the connections not blocked both ways; every peer to the size of its component. */
  private computeComponentSizes(): Map<PeerId, number> {
    const parent = new Map<PeerId, PeerId>();
    const root = (peer: PeerId): PeerId => {
      let top = peer;
      for (let up = parent.get(top); up !== undefined && up !== top; up = parent.get(top)) top = up;
      // Path compression: later finds of the same peers take one step.
      for (let at = peer; at !== top; ) {
        const up = parent.get(at) as PeerId;
        parent.set(at, top);
        at = up;
      }
      return top;
    };
    for (const transport of this.peers()) parent.set(transport.self, transport.self);
    for (const transport of this.peers()) {
      const self = transport.self;
      for (const next of transport.connections) {
        if (next <= self || !parent.has(next)) continue;
        if (this.isBlocked(self, next) && this.isBlocked(next, self)) continue;
        const a = root(self);
        const b = root(next);
        if (a !== b) parent.set(a, b);
      }
    }
    const sizes = new Map<PeerId, number>();
    for (const peer of parent.keys()) sizes.set(root(peer), (sizes.get(root(peer)) ?? 0) + 1);
    const byPeer = new Map<PeerId, number>();
    for (const peer of parent.keys()) byPeer.set(peer, sizes.get(root(peer)) as number);
    return byPeer;
  }
}
