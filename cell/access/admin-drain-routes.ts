import { z } from 'zod';
import { recordOutcome, type AuditLog } from '../audit-log.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseJsonBody, parseWith, requireAdmin } from './http-router.js';
import type { RouteModule } from './uws-server.js';

/**
 * The drain of a cell through the admin API (docs/protocol.md, "HTTP API"; `cellmesh drain`):
 * `POST /v1/admin/drain` starts moving every merchant to the other live cells (or answers the
 * drain under way), `GET` reports its progress, `DELETE` cancels it. The start and a cancel are
 * recorded in the audit log; the drain records each move and its end (mesh/cell-drain.ts).
 */

/** The drain as the access layer sees it: plain JSON-able answers, no mesh type. */
export interface DrainControl {
  start(options: { parallelism?: number | undefined }): object;
  cancel(): object;
  progress(): object;
}

export interface AdminDrainComponents {
  /** The cell's drain; undefined for a standalone cell, and until the cell joined its cluster. */
  drain: () => DrainControl | undefined;
  /** A cell without a mesh section in its config: nothing to drain to. */
  standalone: boolean;
  audit: AuditLog;
  /** The admin token and those accepted during a rotation; empty: the admin API is disabled. */
  adminTokens: readonly string[];
}

export const DRAIN_PATH = '/v1/admin/drain';

const DrainBody = z
  .object({
    /** Moves at once, 1-8 (default 1): each fences its merchant's writes while it copies. */
    parallelism: z.number().int().min(1).max(8).optional(),
  })
  .strict();

export function adminDrainRoutes(components: AdminDrainComponents): RouteModule {
  const drainOf = (): DrainControl => {
    const drain = components.drain();
    if (drain !== undefined) return drain;
    if (components.standalone) throw new CellError(ErrorCode.MeshDisabled, 'this cell runs standalone (no mesh section in its config): there is no other cell to drain its merchants to');
    throw new CellError(ErrorCode.CellStarting, 'the cell is still joining its cluster; retry in a moment');
  };
  return (router) => {
    router.handle('get', DRAIN_PATH, async (request) => {
      requireAdmin(request.token, components.adminTokens);
      return { status: 200, body: drainOf().progress() };
    });
    router.handle('post', DRAIN_PATH, async (request) => {
      requireAdmin(request.token, components.adminTokens);
      const body = parseWith(DrainBody, request.body.trim() === '' ? {} : parseJsonBody(request.body));
      return recordOutcome(components.audit, { actor: 'admin', action: 'drain.start', details: body }, async () => ({ status: 202, body: drainOf().start(body) }));
    });
    router.handle('del', DRAIN_PATH, async (request) => {
      requireAdmin(request.token, components.adminTokens);
      return recordOutcome(components.audit, { actor: 'admin', action: 'drain.cancel' }, async () => ({ status: 200, body: drainOf().cancel() }));
    });
  };
}
