import { CodedError } from '../platform/coded-error.js';
import type { ClusterPort } from '../cell/messaging/cluster-port.js';
import type { LocationService } from './location.js';
import type { Inbox } from './inbox.js';
import type { Outbox } from './outbox.js';
import type { Liveness } from './directory.js';
import type { MeshTransport, PeerId } from './transport.js';

/** What the adapter reads of the cluster's directory (CellMesh's `directory` view fits). */
export interface ClusterDirectory {
  homeCellOf(tenant: string, merchant: string): string | undefined;
  peerOf(cellId: string): PeerId | undefined;
  cellOfPeer(peer: PeerId): string | undefined;
  /** Every cell of the directory (this one included), with its liveness. */
  values(): Iterable<{ readonly record: { readonly cellId: string }; readonly liveness: Liveness }>;
  /** Calls `listener` with each cell whose entry changed, and its liveness after; returns the unsubscribe. */
  onChange(listener: (cellId: string, before: { liveness: Liveness } | undefined, after: { liveness: Liveness } | undefined) => void): () => void;
}

export interface ClusterPortComponents {
  readonly cellId: string;
  readonly directory: ClusterDirectory;
  readonly location: Pick<LocationService, 'locate' | 'forget' | 'remember' | 'invalidate' | 'forgetCell' | 'userArrived'>;
  readonly outbox: Pick<Outbox, 'enqueue'>;
  readonly inbox: Pick<Inbox, 'onForward'>;
  readonly transport: Pick<MeshTransport, 'request' | 'handle'>;
}

export type ClusterPortErrorCode = 'CLUSTER_UNKNOWN_CELL' | 'CLUSTER_UNKNOWN_PEER';

/** A cell or peer the directory does not know; typed so callers can match on `code`. */
export class ClusterPortError extends CodedError<ClusterPortErrorCode> {}

/**
 * The production ClusterPort of a cell: the mesh services behind the one interface the cell's
 * core knows. Cell ids are translated to peers (and back) through the directory at every call,
 * since addresses change. The services keep their own lifecycles: build the port, hand it to
 * the CellCore (which registers its handlers), then start the inbox and the location service.
 */
export function createClusterPort(components: ClusterPortComponents): ClusterPort {
  const { cellId, directory, location, outbox, inbox, transport } = components;
  const goneListeners: Array<(cellId: string) => void> = [];
  // A cell that left is gone for good: cached locations and followers naming it would keep
  // sending users' entries into an outbox nobody drains, instead of finding where they went.
  directory.onChange((changed, before, after) => {
    if (after?.liveness !== 'left' || before?.liveness === 'left') return;
    location.forgetCell(changed);
    for (const listener of goneListeners) listener(changed);
  });
  return {
    selfCellId: cellId,
    homeCellOf: (tenant, merchant) => directory.homeCellOf(tenant, merchant),
    locate: (tenant, user, options) => location.locate(tenant, user, options),
    forget: (tenant, user, cell) => location.forget(tenant, user, cell),
    remember: (tenant, user, cell) => location.remember(tenant, user, cell),
    invalidate: (tenant, user) => location.invalidate(tenant, user),
    userArrived: (tenant, user) => location.userArrived(tenant, user),
    enqueue: (destination, entries) => outbox.enqueue(destination, entries),
    onForward: (handler) => inbox.onForward(handler),
    onCellGone: (listener) => void goneListeners.push(listener),
    request: (cell, protocol, data, options) => {
      const peer = directory.peerOf(cell);
      if (peer === undefined) return Promise.reject(new ClusterPortError('CLUSTER_UNKNOWN_CELL', `cell ${cell} is not in the directory`));
      return transport.request(peer, protocol, data, options);
    },
    handle: (protocol, handler) =>
      transport.handle(protocol, async (peer, data) => {
        const from = directory.cellOfPeer(peer);
        // Only cells of the directory are served; the transport answers the asker with an error.
        if (from === undefined) throw new ClusterPortError('CLUSTER_UNKNOWN_PEER', `peer ${peer} is not a known cell`);
        return handler(from, data);
      }),
  };
}
