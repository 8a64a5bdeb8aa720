import type { AuditLog } from '../cell/audit-log.js';
import type { CellCore } from '../cell/cell-core.js';
import { CellDrain } from '../mesh/cell-drain.js';
import { liveDrainTargets } from '../mesh/drain-targets.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Metrics } from '../platform/metrics.js';
import type { AssembledMesh } from './assemble-cell.js';

/**
 * The drain of a cell in a cluster (mesh/cell-drain.ts), on the cell's own parts: its directory's
 * live cells as targets, the merchants its core hosts, its merchant mover. While the drain holds,
 * the mover refuses merchants moving in; the admin API refuses creations and placements.
 */
export function cellDrainOf(cluster: AssembledMesh, core: CellCore, parts: { audit: AuditLog; clock: Clock; logger: Logger; metrics: Metrics }): CellDrain {
  const { mesh, mover } = cluster;
  const drain = new CellDrain({
    cellId: mesh.cellId,
    clock: parts.clock,
    logger: parts.logger,
    audit: parts.audit,
    metrics: parts.metrics,
    targets: () => liveDrainTargets(mesh.directory, mesh.cellId),
    hosted: () => core.servedTenants().flatMap((tenant) => tenant.merchants.map((merchant) => ({ tenant: tenant.id, merchant }))),
    devicesOf: (tenant, merchant) => [...core.presence.agentsOf(tenant, merchant)].length,
    move: (tenant, merchant, to) => mover.move(tenant, merchant, to),
  });
  mover.refuseMovesIn(() => drain.merchantIntakeRefusal());
  return drain;
}
