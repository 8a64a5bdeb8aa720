import type { CellCore } from '../cell/cell-core.js';
import { AttachmentStore } from '../cell/attachments/index.js';
import { CustomerErasure } from '../cell/customer-erasure.js';
import type { ClusterPort } from '../cell/messaging/cluster-port.js';
import { createClusterPort, type ClusterDirectory } from '../mesh/cluster-port-adapter.js';
import { LocationService, type LocationInit } from '../mesh/location.js';
import { Inbox } from '../mesh/inbox.js';
import { Outbox, type OutboxInit } from '../mesh/outbox.js';
import type { MeshTransport } from '../mesh/transport.js';
import type { Clock } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import type { Store } from '../platform/store/store.js';
import type { Metrics } from '../platform/metrics.js';

/**
 * The services through which a cell's core reaches other cells (location, outbox, inbox, behind
 * one ClusterPort), started in one order and stopped in its reverse. assembleCell starts them on
 * the cell's mesh directory; tests of cross-cell messaging start them on a directory of their
 * own making, to hold a stale home on purpose.
 */
export interface CrossCellServicesInit {
  readonly cellId: string;
  readonly core: CellCore;
  /** Started already. */
  readonly transport: MeshTransport;
  readonly directory: ClusterDirectory;
  readonly clock: Clock;
  readonly random: Random;
  /** Open already. */
  readonly store: Store;
  /** Largest client frame: a relayed send carries one, so outbox entries and batches hold it with room for the envelope. */
  readonly maxFrameBytes: number;
  readonly metrics?: Metrics | undefined;
  readonly location?: LocationInit | undefined;
  /** Tuning of the outbox; its entry and batch bounds follow the frame limit. */
  readonly outbox?: Omit<OutboxInit, 'maxEntryBytes' | 'maxBatchBytes'> | undefined;
  /**
   * Erasures of customers, which reach the other cells through the outbox. Without one (tests of
   * messaging), one is made that records nothing in an audit log, on an attachment store of its own.
   */
  readonly erasure?: CustomerErasure | undefined;
  /**
   * What is done with the cluster port once the services run; by default the core attaches to it
   * (through the erasure). A process of a cell of several processes hands it to its own port instead.
   */
  readonly attach?: ((clusterPort: ClusterPort) => void) | undefined;
  /** Who answers other cells' location questions; by default the core. */
  readonly localUsers?: ((tenant: string, users: readonly string[], askerCellId: string) => Promise<readonly string[]>) | undefined;
}

export interface CrossCellServices {
  readonly location: LocationService;
  readonly outbox: Outbox;
  readonly inbox: Inbox;
  readonly clusterPort: ClusterPort;
  /** Stops the services in the reverse of their start. Idempotent. */
  stop(): Promise<void>;
}

/** Starts location, outbox and inbox, then attaches the core to them through the cluster port. */
export async function startCrossCellServices(init: CrossCellServicesInit): Promise<CrossCellServices> {
  const { cellId, core, transport, directory, clock, random, store, metrics } = init;
  const cellOfPeer = (peer: string): string | undefined => directory.cellOfPeer(peer);
  const location = new LocationService(
    { transport, clock, random, cellId, cellOfPeer, localUsers: init.localUsers ?? ((tenant, users, asker) => core.localUsers(tenant, users, asker)), metrics },
    init.location,
  );
  const maxEntryBytes = 2 * init.maxFrameBytes;
  const outbox = new Outbox(
    { store, transport, clock, random, cellId, resolvePeer: (target) => directory.peerOf(target), metrics },
    { ...init.outbox, maxEntryBytes, maxBatchBytes: Math.max(256 * 1024, 4 * maxEntryBytes) },
  );
  const inbox = new Inbox({ store, transport, cellOfPeer, metrics });
  const started: Array<() => Promise<void> | void> = [];
  const stop = async (): Promise<void> => {
    for (const step of started.splice(0).reverse()) await step();
  };
  try {
    location.start();
    started.push(() => location.stop());
    await outbox.start();
    started.push(() => outbox.stop());
    await inbox.start();
    started.push(() => inbox.stop());
  } catch (error) {
    await stop();
    throw error;
  }
  const clusterPort = createClusterPort({ cellId, directory, location, outbox, inbox, transport });
  if (init.attach !== undefined) {
    init.attach(clusterPort);
    return { location, outbox, inbox, clusterPort, stop };
  }
  // Erasures of customers reach every cell that has not left for good: one down now applies it when it is back.
  const otherCells = (): string[] => [...directory.values()].filter((entry) => entry.record.cellId !== cellId && entry.liveness !== 'left').map((entry) => entry.record.cellId);
  const erasure = init.erasure ?? new CustomerErasure({ store, core, attachments: new AttachmentStore(store, clock) });
  // From here on, conversations of merchants homed on other cells are served cross-cell.
  core.attachCluster(erasure.attach(clusterPort, otherCells));
  return { location, outbox, inbox, clusterPort, stop };
}
