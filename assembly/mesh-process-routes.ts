import { internalRoutes } from '../cell/access/internal-routes.js';
import type { RouteModule } from '../cell/access/uws-server.js';
import type { CellCore } from '../cell/cell-core.js';
import type { CustomerErasure } from '../cell/customer-erasure.js';
import type { ProcessClusterPort } from '../cell/processes/process-cluster-port.js';
import type { ProcessCoordinator } from '../cell/processes/process-coordinator.js';
import { homesSnapshotOf } from '../mesh/homes-snapshot.js';
import type { AssembledMesh } from './assemble-cell.js';
import type { MeshProcess } from './scaled-process.js';

/**
 * The internal channel's routes of a process of a cell in a mesh (cell/access/internal-routes.ts):
 * the speaker's side answers from `speaking()` (the mesh services, once this process speaks); the
 * owner's side from this process's port, coordinator and erasure.
 */
export function meshProcessRoutes(coordinator: ProcessCoordinator, mesh: MeshProcess, port: ProcessClusterPort, core: CellCore, erasure: CustomerErasure, speaking: () => AssembledMesh | undefined): RouteModule {
  return internalRoutes({
    secret: mesh.secret,
    isLive: (processId, token) => mesh.isLive(processId, token),
    port,
    speaker: () => {
      const cluster = speaking();
      if (cluster === undefined || !mesh.lease.isSpeaker()) return undefined;
      const meshPort = port.meshPort();
      return meshPort === undefined ? undefined : { port: meshPort, homes: () => homesSnapshotOf(cluster.mesh.directory) };
    },
    // A merchant of the cell is served by its owner; one of another cell (a mirror) by the speaker.
    servesHere: (tenant, merchant) => coordinator.placement(tenant, merchant)?.here === true && (coordinator.isCellMerchant(tenant, merchant) || port.isSpeaking()),
    localUsers: (tenant, users, asker) => core.localUsers(tenant, users, asker),
    eraseShare: (tenant, customer, merchants) => erasure.eraseShare(tenant, customer, merchants),
  });
}
