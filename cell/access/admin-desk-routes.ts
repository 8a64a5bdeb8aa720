import { z } from 'zod';
import type { DeskOverview } from '../desk/desk-overview.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { IDENTIFIER_PATTERN } from '../protocol/frames.js';
import { parseWith, requireAdmin } from './http-router.js';
import type { RouteModule } from './uws-server.js';

/**
 * `GET /v1/admin/desks` (docs/protocol.md, "HTTP API"): the desks of the merchants this cell
 * hosts, per merchant its agents (status, load), its queues by group (length, oldest wait) and
 * its open consultations, for the cell console. Read-only, from memory; needs the admin token.
 */
export interface AdminDeskComponents {
  cellId: string;
  /** DeskService.overview. */
  overview: () => DeskOverview[];
  /** The tenants served now (CellCore.servedTenants): a `tenant` filter must name one. */
  servedTenants: () => Array<{ id: string }>;
  /** The admin token and those accepted during a rotation; empty: the admin API is disabled. */
  adminTokens: readonly string[];
}

const id = z.string().regex(IDENTIFIER_PATTERN, 'must be 1-64 characters of [A-Za-z0-9_.-]');
const DesksQuery = z.object({ tenant: id.optional(), merchant: id.optional() }).strict();

export function adminDeskRoutes(components: AdminDeskComponents): RouteModule {
  return (router) => {
    router.handle('get', '/v1/admin/desks', async (request) => {
      requireAdmin(request.token, components.adminTokens);
      const query = parseWith(DesksQuery, Object.fromEntries(request.query));
      if (query.merchant !== undefined && query.tenant === undefined) throw new CellError(ErrorCode.BadFrame, '`merchant` needs `tenant`');
      if (query.tenant !== undefined && !components.servedTenants().some((tenant) => tenant.id === query.tenant)) {
        throw new CellError(ErrorCode.TenantUnknown, `this cell serves no tenant ${query.tenant}`);
      }
      const desks = components.overview().filter((desk) => (query.tenant === undefined || desk.tenant === query.tenant) && (query.merchant === undefined || desk.merchant === query.merchant));
      return { status: 200, body: { cellId: components.cellId, desks } };
    });
  };
}
