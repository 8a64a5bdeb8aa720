import { placementVerifies, type SignedPlacement } from './claim-proof.js';
import type { DirectoryView } from './directory.js';
import type { Logger } from '../platform/logger.js';
import type { MoveHost } from '../cell/move-host.js';
import type { MerchantClaims } from './merchant-move.js';
import { CellError, ErrorCode } from '../cell/protocol/errors.js';

export interface PlacementComponents {
  readonly cellId: string;
  /** The operator public keys this cell trusts (`mesh.operatorKeys`). */
  readonly operatorKeys: readonly string[];
  readonly directory: DirectoryView;
  readonly host: Pick<MoveHost, 'hostMerchant'>;
  readonly claims: Pick<MerchantClaims, 'claim'>;
  readonly logger: Logger;
}

export interface PlacementResult {
  readonly tenant: string;
  readonly merchant: string;
  readonly cell: string;
  readonly epoch: number;
}

/**
 * Takes a merchant in on an operator's signed placement (docs/mesh.md, "Trust: who may claim a
 * merchant"): this cell hosts it and claims it at the placement's epoch, with the placement as
 * the claim's proof, so every cell configured with the operator's key makes this cell the home.
 * No data moves: a placement is for a merchant whose home is gone or wrong; a live home hands a
 * merchant over with its data by `move-merchant`.
 */
export async function placeMerchant(components: PlacementComponents, placement: SignedPlacement): Promise<PlacementResult> {
  const { cellId, directory, host, claims, logger } = components;
  const { tenant, merchant, epoch } = placement;
  if (placement.cell !== cellId) throw new CellError(ErrorCode.PlacementInvalid, `the placement is for cell ${placement.cell}, not ${cellId}`);
  if (!placementVerifies(placement, components.operatorKeys)) {
    throw new CellError(ErrorCode.PlacementInvalid, 'the placement is not signed by an operator key in this cell\'s mesh.operatorKeys');
  }
  const highest = highestClaimedEpoch(directory, tenant, merchant);
  if (highest !== undefined && epoch <= highest) {
    throw new CellError(ErrorCode.PlacementStale, `merchant ${merchant} is claimed at epoch ${highest} already: sign a placement with a higher epoch`);
  }
  // Claimed durably first (a placement whose write fails leaves the cell as it was), hosted, then gossiped.
  await claims.claim(tenant, merchant, epoch, { kind: 'placement', key: placement.key, signature: placement.signature }, () => host.hostMerchant(tenant, merchant));
  logger.info({ tenant, merchant, epoch, key: placement.key }, 'merchant placed here by an operator');
  return { tenant, merchant, cell: cellId, epoch };
}

/** The highest epoch any record this cell holds claims the merchant at (the home's or not). */
function highestClaimedEpoch(directory: DirectoryView, tenant: string, merchant: string): number | undefined {
  let highest: number | undefined;
  for (const entry of directory.values()) {
    for (const claim of entry.record.merchants) {
      if (claim.tenant === tenant && claim.merchant === merchant && (highest === undefined || claim.epoch > highest)) highest = claim.epoch;
    }
  }
  return highest;
}
