import { eraseAtSibling } from '../access/sibling-erasure.js';
import type { SiblingAccess, SiblingServer } from '../access/sibling-relay.js';
import type { ErasureProcesses } from '../customer-erasure.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { ProcessCoordinator } from './process-coordinator.js';

/** How soon a device refused for want of an owner should try again: about one renewal. */
const OWNER_RETRY_MS = 1_000;

/**
 * The access layer's view of who serves a merchant's devices, from the coordinator's last round.
 * `catalogueApplier` says which process applies changes of the cell's tenants and merchants: by
 * default the one reached (a standalone cell); in a mesh, the speaker.
 */
export function siblingAccessOf(coordinator: ProcessCoordinator, catalogueApplier: () => SiblingServer = () => ({ here: true })): SiblingAccess {
  return {
    processId: coordinator.processId,
    catalogueApplier,
    serverOf: (tenant, merchant) => {
      const placement = coordinator.placement(tenant, merchant);
      if (placement === undefined) {
        throw new CellError(ErrorCode.OwnerUnavailable, `no process of this cell owns merchant ${merchant} right now (failing over); retry`, { retryAfterMs: OWNER_RETRY_MS });
      }
      return placement.here ? { here: true } : { here: false, ws: placement.owner.ws, http: placement.owner.http };
    },
  };
}

/** The processes an erasure reaches (cell/customer-erasure.ts), from the coordinator's last round. */
export function erasureProcessesOf(coordinator: ProcessCoordinator): ErasureProcesses {
  return {
    serverOf: siblingAccessOf(coordinator).serverOf,
    siblings: () => coordinator.liveSiblings().map((process) => process.http),
    eraseAt: (http, tenant, customer, merchants, adminToken) => eraseAtSibling(coordinator.processId, http, tenant, customer, merchants, adminToken),
  };
}
