import { isServing, type DirectoryView, type Liveness } from '../mesh/directory.js';
import type { CellRecord } from '../mesh/cell-record.js';

/**
 * Smart routing: which cell a device should connect to. A customer goes to the home cell of the
 * merchant it wants to talk to, so that the conversation opens and closes inside one cell; the
 * answer comes only from the gossiped directory, so every cell (and an edge router that joins
 * the mesh as an observer) answers alike without asking anyone.
 */
export interface Route {
  readonly tenant: string;
  readonly merchant: string;
  readonly cellId: string;
  /** The WebSocket URL of the cell's `/v1/ws`. */
  readonly ws: string;
  readonly http: string;
  readonly liveness: Liveness;
}

export function routeToMerchant(directory: DirectoryView, tenant: string, merchant: string): Route | undefined {
  const cellId = directory.homeCellOf(tenant, merchant);
  if (cellId === undefined) return undefined;
  const entry = directory.get(cellId);
  if (entry === undefined || !isServing(entry.liveness)) return undefined;
  return { tenant, merchant, cellId, ws: entry.record.endpoints.ws, http: entry.record.endpoints.http, liveness: entry.liveness };
}

/** One cell as the admin API shows it. */
export interface CellSummary {
  readonly cellId: string;
  readonly liveness: Liveness;
  readonly incarnation: number;
  readonly version: number;
  readonly endpoints: CellRecord['endpoints'];
  readonly tenants: readonly string[];
  readonly merchants: CellRecord['merchants'];
  readonly load: CellRecord['load'];
  readonly capacity: CellRecord['capacity'];
  /** How long ago this cell last heard from that one (0 for itself). */
  readonly lastHeardAgoMs: number;
}

export function summarizeDirectory(directory: DirectoryView, selfCellId: string, nowMs: number): CellSummary[] {
  const cells: CellSummary[] = [];
  for (const entry of directory.values()) {
    const { record } = entry;
    cells.push({
      cellId: record.cellId,
      liveness: entry.liveness,
      incarnation: record.incarnation,
      version: record.version,
      endpoints: record.endpoints,
      tenants: record.tenants,
      merchants: record.merchants,
      load: record.load,
      capacity: record.capacity,
      lastHeardAgoMs: record.cellId === selfCellId ? 0 : Math.max(0, nowMs - entry.lastHeardMs),
    });
  }
  return cells.sort((left, right) => (left.cellId < right.cellId ? -1 : left.cellId > right.cellId ? 1 : 0));
}
