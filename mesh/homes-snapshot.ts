import type { HomesSnapshot, HomesView } from '../cell/processes/speaker-channel.js';
import type { DirectoryView } from './directory.js';
import { homeDirectoryOf, relayDirectoryOf } from './merchant-home.js';

/**
 * The homes of a cell of several processes in a mesh, read at its speaker from the mesh's
 * directory (cell/processes/speaker-channel.ts): live for the speaker's own core, as a snapshot
 * for the other processes, which copy it each round. Both follow the rules of merchant-home.ts.
 */
export function liveHomesView(directory: DirectoryView, selfCellId: string): HomesView {
  const redirects = homeDirectoryOf(directory);
  const relay = relayDirectoryOf(directory);
  return {
    ...redirects,
    relayHomeOf: (tenant, merchant) => relay.homeCellOf(tenant, merchant),
    otherCells: () => [...directory.values()].filter((entry) => entry.record.cellId !== selfCellId && entry.liveness !== 'left').map((entry) => entry.record.cellId),
  };
}

/** Every merchant any cell of the directory claims, with its homes; every cell with its endpoints. */
export function homesSnapshotOf(directory: DirectoryView): HomesSnapshot {
  const view = liveHomesView(directory, '');
  const cells: HomesSnapshot['cells'] = [];
  const merchants = new Map<string, HomesSnapshot['merchants'][number]>();
  for (const entry of directory.values()) {
    const { cellId, endpoints } = entry.record;
    cells.push({ cellId, ws: endpoints.ws, http: endpoints.http, left: entry.liveness === 'left' });
    for (const { tenant, merchant } of entry.record.merchants) {
      const key = `${tenant}/${merchant}`;
      if (merchants.has(key)) continue;
      const relayHome = view.relayHomeOf(tenant, merchant);
      const home = view.homeOf(tenant, merchant);
      merchants.set(key, { tenant, merchant, ...(relayHome === undefined ? {} : { relayHome }), ...(home === undefined ? {} : { home: { cellId: home.cellId, ws: home.ws, http: home.http, epoch: home.epoch } }), homeDown: view.homeIsDown(tenant, merchant) });
    }
  }
  return { cells: cells.sort((a, b) => (a.cellId < b.cellId ? -1 : 1)), merchants: [...merchants.values()] };
}
