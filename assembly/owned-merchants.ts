import type { CellCore } from '../cell/cell-core.js';
import type { MoveHost } from '../cell/move-host.js';
import type { OwnedMerchantsHost } from '../cell/processes/process-coordinator.js';
import { CloseCode } from '../cell/protocol/errors.js';
import type { TenantCatalogue } from '../cell/tenant-catalogue.js';
import type { MerchantRef } from '../cell/processes/coordination-port.js';

/**
 * What a process of a cell of several processes does when it gains or loses a merchant: the
 * core's moves (with the merchant's people and blocks following), and on a loss its devices
 * here are closed with 1001, so they reconnect and reach the new owner.
 */
export function ownedMerchantsHost(core: CellCore, host: MoveHost): OwnedMerchantsHost {
  return {
    hostMerchant: async (tenant, merchant) => {
      await host.hostMerchant(tenant, merchant);
    },
    dropMerchant: (tenant, merchant) => {
      for (const connection of [...core.presence.all()]) {
        if (connection.identity.tenant === tenant && connection.routedFor === merchant) {
          connection.port.close(CloseCode.GoingAway, `merchant ${merchant} moved to another process of this cell; reconnect`);
        }
      }
      host.releaseMerchant(tenant, merchant, undefined);
    },
    fence: (tenant, merchant) => host.fence(tenant, merchant),
    whenMerchantIdle: (tenant, merchant) => host.whenMerchantIdle(tenant, merchant),
    cursorsFlushed: () => host.cursorsFlushed(),
  };
}

/** Every merchant of every tenant the cell serves, of the config and of the admin API. */
export function merchantsOf(catalogue: TenantCatalogue): MerchantRef[] {
  return catalogue.tenants().flatMap((tenant) => tenant.merchants.map((merchant) => ({ tenant: tenant.id, merchant: merchant.id })));
}
