import { eraseAtSibling } from '../access/sibling-erasure.js';
import type { SiblingAccess, SiblingServer } from '../access/sibling-relay.js';
import type { ErasureProcesses } from '../customer-erasure.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { ProcessRecord } from './coordination-port.js';
import type { ProcessCoordinator } from './process-coordinator.js';
import type { OwnerChannel } from './speaker-channel.js';

/** How soon a device refused for want of an owner should try again: about one renewal. */
const OWNER_RETRY_MS = 1_000;

/**
 * Where the speaker of a cell in a mesh is: this process, another (as of the last round), or
 * none right now (failing over).
 */
export type SpeakerLookup = () => 'self' | ProcessRecord | undefined;

/**
 * The access layer's view of who serves a merchant's devices, from the coordinator's last round.
 * In a mesh (`speaker` given), a merchant the cell does not have, whose conversations here are
 * mirrors of another cell's, is served by the speaker: it holds the mirrors and the mesh. The
 * speaker also applies changes of the cell's tenants and merchants (it claims and withdraws
 * them in the mesh); in a standalone cell the process reached applies them, under the cell's
 * catalogue lock.
 */
export function siblingAccessOf(coordinator: ProcessCoordinator, speaker?: SpeakerLookup): SiblingAccess {
  const atSpeaker = (merchant: string | undefined): SiblingServer => {
    const current = speaker?.();
    if (speaker === undefined || current === 'self') return { here: true };
    if (current === undefined) {
      const about = merchant === undefined ? 'what it serves (the mesh, customers not routed for a merchant) waits' : `merchant ${merchant} lives in another cell`;
      throw new CellError(ErrorCode.OwnerUnavailable, `no process speaks for this cell right now (failing over), and ${about}; retry`, { retryAfterMs: OWNER_RETRY_MS });
    }
    return { here: false, ws: current.ws, http: current.http };
  };
  return {
    processId: coordinator.processId,
    speakerServer: () => atSpeaker(undefined),
    catalogueApplier: () => atSpeaker(undefined),
    serverOf: (tenant, merchant) => {
      const placement = coordinator.placement(tenant, merchant);
      if (placement === undefined) {
        throw new CellError(ErrorCode.OwnerUnavailable, `no process of this cell owns merchant ${merchant} right now (failing over); retry`, { retryAfterMs: OWNER_RETRY_MS });
      }
      if (!placement.here) return { here: false, ws: placement.owner.ws, http: placement.owner.http };
      return coordinator.isCellMerchant(tenant, merchant) ? { here: true } : atSpeaker(merchant);
    },
  };
}

/**
 * The processes an erasure reaches (cell/customer-erasure.ts), from the coordinator's last round.
 * In a mesh (`owners` given) a share is asked over the internal channel, under the cell's secret,
 * so that the speaker can apply an erasure another cell asked; in a standalone cell, over the
 * admin API with the admin's token (only an admin asks there).
 */
export function erasureProcessesOf(coordinator: ProcessCoordinator, owners?: OwnerChannel): ErasureProcesses {
  return {
    serverOf: siblingAccessOf(coordinator).serverOf,
    siblings: () => coordinator.liveSiblings().map((process) => process.http),
    eraseAt: (http, tenant, customer, merchants, adminToken) => {
      if (owners !== undefined) return owners.eraseShare(http, tenant, customer, merchants);
      if (adminToken === undefined) throw new CellError(ErrorCode.Internal, 'a cell outside a mesh erases only at the request of an admin');
      return eraseAtSibling(coordinator.processId, http, tenant, customer, merchants, adminToken);
    },
  };
}
