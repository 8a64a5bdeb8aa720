import type { HomeDirectory } from '../cell/routing/merchant-redirects.js';
import type { ClusterDirectory } from './cluster-port-adapter.js';
import { isServing, type DirectoryView } from './directory.js';

/**
 * The cell core's view of where merchants live (redirects, docs/routing.md), read from this
 * cell's copy of the gossiped directory: the home by the directory's rule, its advertised
 * endpoints and the epoch of its claim. A home that is not serving is no home to redirect to.
 */
export function homeDirectoryOf(directory: Pick<DirectoryView, 'get' | 'homeCellOf' | 'departedHomeOf'>): HomeDirectory {
  return {
    homeOf: (tenant, merchant) => {
      const cellId = directory.homeCellOf(tenant, merchant);
      const entry = cellId === undefined ? undefined : directory.get(cellId);
      if (entry === undefined || !isServing(entry.liveness)) return undefined;
      const claim = entry.record.merchants.find((held) => held.tenant === tenant && held.merchant === merchant);
      if (claim === undefined) return undefined;
      return { cellId: entry.record.cellId, ws: entry.record.endpoints.ws, http: entry.record.endpoints.http, epoch: claim.epoch };
    },
    endpointsOf: (cellId) => {
      const entry = directory.get(cellId);
      return entry === undefined ? undefined : { ws: entry.record.endpoints.ws, http: entry.record.endpoints.http };
    },
    homeIsDown: (tenant, merchant) => {
      const cellId = directory.homeCellOf(tenant, merchant) ?? directory.departedHomeOf(tenant, merchant)?.cellId;
      const entry = cellId === undefined ? undefined : directory.get(cellId);
      return entry !== undefined && !isServing(entry.liveness);
    },
  };
}

/**
 * The directory the cluster port reads for cross-cell relays: the mesh's, except that a merchant
 * whose home left the cluster still holding it keeps that home, so that its customers' sends wait
 * in this cell's outbox until the cell comes back with its disk (leave-a-message mode,
 * docs/routing.md, "A home cell that is down") instead of being refused. A dead home is still
 * the home already: dead cells keep their claims (directory.ts, holdsClaims).
 */
export function relayDirectoryOf(directory: DirectoryView): ClusterDirectory {
  return {
    homeCellOf: (tenant, merchant) => directory.homeCellOf(tenant, merchant) ?? directory.departedHomeOf(tenant, merchant)?.cellId,
    peerOf: (cellId) => directory.peerOf(cellId),
    cellOfPeer: (peer) => directory.cellOfPeer(peer),
    values: () => directory.values(),
    onChange: (listener) => directory.onChange(listener),
  };
}

/**
 * Calls `listener` with the merchants (`tenant/merchant` keys) of another cell that starts to
 * serve them: a cell that becomes serving (it came back, or joined) with its claims, or a serving
 * cell that claims merchants it did not (a placement, a move). Load updates, which are most record
 * changes, compare equal and cost one pass over the claims. Returns the unsubscribe.
 */
export function onHomesServing(directory: Pick<DirectoryView, 'onChange'>, selfCellId: string, listener: (merchants: ReadonlySet<string>) => void): () => void {
  return directory.onChange((cellId, before, after) => {
    if (cellId === selfCellId || after === undefined || !isServing(after.liveness)) return;
    const wasServing = before !== undefined && isServing(before.liveness);
    const held = new Set(wasServing ? before.record.merchants.map((claim) => `${claim.tenant}/${claim.merchant}`) : []);
    const gained = new Set<string>();
    for (const claim of after.record.merchants) {
      const key = `${claim.tenant}/${claim.merchant}`;
      if (!held.has(key)) gained.add(key);
    }
    if (gained.size > 0) listener(gained);
  });
}
