import { MemoryNetwork, type MemoryNetworkOptions } from '../mesh/memory-network.js';
import type { MemoryTransport } from '../mesh/memory-network.js';
import type { MeshMessage, PeerId } from '../mesh/transport.js';

/**
 * mesh/memory-network.ts with a faster record of blocked links, and nothing else changed.
 * MemoryNetwork checks `isBlocked(from, to)` for every connection of every peer a published
 * message reaches (gossipsub's relay: N peers times their connections per publish) and builds a
 * fresh `from\0to` string for each check; at 100 cells that was a quarter of the simulator's
 * time. Here blocks are a map of sets keyed by the peer ids themselves, and the common case (no
 * partition at all) answers without a lookup. And a relay stops at once when every endpoint of
 * the network has the message already (typically after the first hop or two of a publish), where
 * the base class would walk the connections only to find each of them seen. Relay, latency,
 * loss, delivery order, random draws and timers are otherwise the base class's.
 *
 * The simulator forgets a peer as soon as its transport stops (a crash or a leave): a stopped and
 * an unknown peer are the same to the network (refused dials, dropped deliveries), and the count
 * of endpoints then stays the count of running ones.
 */
export class SimNetwork extends MemoryNetwork {
  private readonly blockedTo = new Map<PeerId, Set<PeerId>>();
  private blockedLinks = 0;
  private endpointCount = 0;

  constructor(options: MemoryNetworkOptions) {
    super(options);
  }

  override createTransport(peer: PeerId): MemoryTransport {
    const transport = super.createTransport(peer);
    this.endpointCount++;
    return transport;
  }

  override forget(peer: PeerId): void {
    const known = this.endpoint(peer) !== undefined;
    super.forget(peer);
    if (known) this.endpointCount--;
  }

  override relay(relay: MemoryTransport, message: MeshMessage, seen: Set<PeerId>): void {
    // Every endpoint has been scheduled a copy: the base loop would find all connections seen.
    if (seen.size >= this.endpointCount) return;
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
  }

  override heal(): void {
    this.blockedTo.clear();
    this.blockedLinks = 0;
  }

  override isBlocked(from: PeerId, to: PeerId): boolean {
    if (this.blockedLinks === 0) return false;
    return this.blockedTo.get(from)?.has(to) === true;
  }
}
