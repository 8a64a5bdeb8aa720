import type { ClosureSnapshot } from '../messaging/closure-counts.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { requireAdmin } from './http-router.js';
import type { RouteModule } from './uws-server.js';

/**
 * `GET /v1/admin/closure` (docs/routing.md, "In-cell closure"): how many of the messages this
 * cell made durable as their home since it started, and of their conversations, never crossed a
 * cell boundary. Needs the admin token; a standalone cell answers MESH_DISABLED (nothing of
 * it can cross). `cellmesh closure` sums it over every cell of a cluster.
 */
export interface AdminClosureComponents {
  cellId: string;
  /** CellCore.closure: undefined until the cell joined its cluster, and for a standalone cell. */
  closure: () => ClosureSnapshot | undefined;
  /** The admin token and those accepted during a rotation; empty: the admin API is disabled. */
  adminTokens: readonly string[];
}

export function adminClosureRoutes(components: AdminClosureComponents): RouteModule {
  return (router) => {
    router.handle('get', '/v1/admin/closure', async (request) => {
      requireAdmin(request.token, components.adminTokens);
      const closure = components.closure();
      if (closure === undefined) throw new CellError(ErrorCode.MeshDisabled, 'this cell runs standalone (no mesh section in its config), or has not joined its cluster yet');
      return { status: 200, body: { cellId: components.cellId, ...closure } };
    });
  };
}
