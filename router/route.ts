import { isServing, type DirectoryView, type Liveness } from '../mesh/directory.js';
import { isRouterRecord, type CellRecord } from '../mesh/cell-record.js';
import { fallbackCellOf } from '../mesh/fallback-cell.js';

/**
 * Smart routing: which cell a device should connect to. A customer goes to the home cell of the
 * merchant it wants to talk to, so that the conversation opens and closes inside one cell; the
 * answer comes only from the gossiped directory, so every cell and every router (an observer of
 * the mesh, `cellmesh router`) answers alike without asking anyone.
 */
export interface Route {
  readonly tenant: string;
  readonly merchant: string;
  readonly cellId: string;
  /** The epoch of the home's claim: a device that saw a lower one knows its route is stale. */
  readonly epoch: number;
  /** The WebSocket URL of the cell's `/v1/ws`. */
  readonly ws: string;
  readonly http: string;
  readonly liveness: Liveness;
  /**
   * Present only when the merchant's home is down (dead, or left with its claims): the answer
   * names its fallback cell (`cellId`, `ws`, `http`, `liveness` are the fallback's), where its
   * customers leave messages that wait for the home (docs/routing.md, "A home cell that is down").
   */
  readonly mode?: 'leave-a-message';
  /** With `mode`: the home that is down, the epoch of its claim (also `epoch` above) and its liveness. */
  readonly home?: { readonly cellId: string; readonly epoch: number; readonly liveness: Liveness };
}

/** What a route request names; `customer` and `group` are reserved for placement and change nothing yet. */
export interface RouteRequest {
  readonly tenant: string;
  readonly merchant: string;
  readonly customer?: string | undefined;
  readonly group?: string | undefined;
}

/**
 * The route to a merchant's home cell, or undefined when nothing serving hosts it (unknown
 * tenant, unknown merchant, or a home that is dead or left; routeRequest answers the last with a
 * fallback cell).
 * Synchronous and small: one lookup of the home, one of its record, one object.
 */
export function routeToMerchant(directory: DirectoryView, tenant: string, merchant: string): Route | undefined {
  const home = directory.homeOf(tenant, merchant);
  if (home === undefined) return undefined;
  const entry = directory.get(home.cellId);
  if (entry === undefined || !isServing(entry.liveness)) return undefined;
  const { endpoints } = entry.record;
  return { tenant, merchant, cellId: home.cellId, epoch: home.epoch, ws: endpoints.ws, http: endpoints.http, liveness: entry.liveness };
}

/**
 * The answer to a route request: the merchant's serving home (routeToMerchant), or, when its
 * home is down (dead, or left holding the merchant: either may come back with its disk), its
 * fallback cell among the live cells (mesh/fallback-cell.ts) in leave-a-message mode; undefined
 * for an unknown tenant or merchant, and when no live cell can take the customers.
 */
export function routeRequest(directory: DirectoryView, request: RouteRequest): Route | undefined {
  const { tenant, merchant } = request;
  const route = routeToMerchant(directory, tenant, merchant);
  if (route !== undefined) return route;
  // Only the rare request for a merchant without a serving home goes on.
  const home = directory.homeOf(tenant, merchant) ?? directory.departedHomeOf(tenant, merchant);
  const homeEntry = home === undefined ? undefined : directory.get(home.cellId);
  if (home === undefined || homeEntry === undefined || isServing(homeEntry.liveness)) return undefined;
  const fallback = fallbackCellOf(directory, tenant, merchant);
  if (fallback === undefined) return undefined;
  const { endpoints } = fallback.record;
  return {
    tenant,
    merchant,
    cellId: fallback.record.cellId,
    epoch: home.epoch,
    ws: endpoints.ws,
    http: endpoints.http,
    liveness: fallback.liveness,
    mode: 'leave-a-message',
    home: { cellId: home.cellId, epoch: home.epoch, liveness: homeEntry.liveness },
  };
}

/** One member as the admin API shows it: a cell, or a router (which hosts nothing). */
export interface CellSummary {
  readonly cellId: string;
  /** `cell` hosts merchants; `router` only answers route requests (never a home or a move target). */
  readonly role: 'cell' | 'router';
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
      role: isRouterRecord(record) ? 'router' : 'cell',
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
