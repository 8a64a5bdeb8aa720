import type { SiblingAccess } from '../access/sibling-relay.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { ProcessCoordinator } from './process-coordinator.js';

/** How soon a device refused for want of an owner should try again: about one renewal. */
const OWNER_RETRY_MS = 1_000;

/** The access layer's view of who serves a merchant's devices, from the coordinator's last round. */
export function siblingAccessOf(coordinator: ProcessCoordinator): SiblingAccess {
  return {
    processId: coordinator.processId,
    serverOf: (tenant, merchant) => {
      const placement = coordinator.placement(tenant, merchant);
      if (placement === undefined) {
        throw new CellError(ErrorCode.OwnerUnavailable, `no process of this cell owns merchant ${merchant} right now (failing over); retry`, { retryAfterMs: OWNER_RETRY_MS });
      }
      return placement.here ? { here: true } : { here: false, ws: placement.owner.ws, http: placement.owner.http };
    },
  };
}
