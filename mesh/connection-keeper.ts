/**
 * The connection keeper: keeps this cell connected to enough of the cells it knows, dialling the
 * missing ones with per-peer backoff, rejoining through the bootstrap list when isolated, and
 * expiring tombstones.
 */
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import type { CellRecord } from './cell-record.js';
import { backoffMs, dialWithTimeout } from './dialling.js';
import type { Directory } from './directory.js';
import type { MembershipOptions } from './membership-config.js';
import type { MeshTransport, PeerId } from './transport.js';

export interface ConnectionKeeperInit {
  readonly directory: Directory;
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  readonly options: MembershipOptions;
  /** Whether the mesh is running or leaving. */
  readonly isActive: () => boolean;
  /** The cell has no connection at all: go back to the bootstrap list. */
  readonly isolated: (nowMs: number) => void;
}

interface RedialState {
  readonly attempts: number;
  readonly nextAtMs: number;
}

/**
 * Every `connectionMaintenanceIntervalMs` it dials known live cells it is not connected to, at
 * most `maxConcurrentDials` at once, until `maxConnections` connections are open; when more cells
 * are known than that, which ones is drawn at random (so cells do not all pick the same ones, and
 * gossip still reaches everyone through the overlay). Failed dials back off per peer; a dead cell
 * is dialled every `deadRedialIntervalMs`. A cell left with no connection goes back to its
 * bootstrap list. It also expires tombstones.
 */
export class ConnectionKeeper {
  private timer: TimerHandle | undefined;
  private readonly dialing = new Set<PeerId>();
  private readonly redial = new Map<PeerId, RedialState>();
  /** When each dead cell was last dialled (bounded by maxTombstones). */
  private readonly deadDialedAtMs = new Map<PeerId, number>();

  constructor(private readonly init: ConnectionKeeperInit) {}

  start(): void {
    this.timer = this.init.clock.setTimer(this.init.options.connectionMaintenanceIntervalMs, () => {
      if (!this.init.isActive()) return;
      this.maintain();
      this.start();
    });
  }

  stop(): void {
    this.timer?.cancel();
  }

  /** `peer` connected: its backoff is over. */
  connected(peer: PeerId): void {
    this.redial.delete(peer);
  }

  /** The keeper's round: expire tombstones, rejoin when isolated, dial missing cells. */
  private maintain(): void {
    const { directory, transport, clock, random, options } = this.init;
    const nowMs = clock.now();
    directory.sweep(nowMs);
    for (const peer of this.redial.keys()) if (directory.cellOfPeer(peer) === undefined) this.redial.delete(peer);
    const connected = new Set(transport.connectedPeers());
    if (connected.size === 0) this.init.isolated(nowMs);
    if (connected.size >= options.maxConnections) return;
    const candidates: CellRecord[] = [];
    for (const entry of directory.values()) {
      const { record } = entry;
      if (record.cellId === directory.selfCellId || record.endpoints.p2p.length === 0) continue;
      if (connected.has(record.peerId) || this.dialing.has(record.peerId)) continue;
      const backoff = this.redial.get(record.peerId);
      if (backoff !== undefined && backoff.nextAtMs > nowMs) continue;
      if (entry.liveness === 'alive') candidates.push(record);
      else if (entry.liveness === 'dead' && this.deadDialDue(record.peerId, nowMs)) candidates.push(record);
    }
    const room = Math.min(options.maxConnections - connected.size, options.maxConcurrentDials - this.dialing.size);
    for (let picked = 0; picked < room && candidates.length > 0; picked++) {
      const index = Math.floor(random.next() * candidates.length);
      const [record] = candidates.splice(index, 1);
      if (record !== undefined) void this.dialCell(record);
    }
  }

  /** Whether a dead cell is due for its occasional dial; records the attempt when it is. */
  private deadDialDue(peer: PeerId, nowMs: number): boolean {
    const lastMs = this.deadDialedAtMs.get(peer);
    if (lastMs !== undefined && nowMs - lastMs < this.init.options.deadRedialIntervalMs) return false;
    if (this.deadDialedAtMs.size >= this.init.options.maxTombstones) this.deadDialedAtMs.clear();
    this.deadDialedAtMs.set(peer, nowMs);
    return true;
  }

  private async dialCell(record: CellRecord): Promise<void> {
    const { transport, clock, random, options } = this.init;
    const peer = record.peerId;
    this.dialing.add(peer);
    transport.addPeerAddresses(peer, record.endpoints.p2p);
    try {
      for (const address of record.endpoints.p2p) {
        try {
          await dialWithTimeout(transport, clock, address, options.dialTimeoutMs);
          this.redial.delete(peer);
          return;
        } catch {
          // Try the next address.
        }
      }
      const attempts = (this.redial.get(peer)?.attempts ?? 0) + 1;
      const delayMs = backoffMs(random, attempts - 1, options.redialBackoffBaseMs, options.redialBackoffMaxMs);
      this.redial.set(peer, { attempts, nextAtMs: clock.now() + delayMs });
    } finally {
      this.dialing.delete(peer);
    }
  }
}
