import { z } from 'zod';
import type { TenantConfig } from './config.js';
import type { CellMesh } from '../mesh/cell-mesh.js';
import type { MerchantClaims } from './merchant-move.js';
import type { Store } from './store/store.js';

/**
 * Which merchants this cell hosts, as moves changed it: the config names the merchants a cell
 * starts with, and a move hands one over at runtime. The outcome is kept in the cell's store, so
 * a restart does not undo a move (a moved-out merchant still listed in the old cell's config
 * must not come back there with stale data).
 */
const CLAIMS_KEY = 'mesh/merchant-claims';

const StoredClaims = z.record(z.string(), z.object({ epoch: z.number().int().min(0), hosted: z.boolean() }));
type StoredClaims = z.infer<typeof StoredClaims>;

export interface HostedMerchant {
  tenant: string;
  merchant: string;
  epoch: number;
}

export class MerchantClaimsStore {
  private claims: StoredClaims = {};

  constructor(private readonly store: Store) {}

  async load(): Promise<void> {
    const raw = await this.store.get(CLAIMS_KEY);
    this.claims = raw === undefined ? {} : StoredClaims.parse(JSON.parse(raw));
  }

  /** The merchants to host: the config's, minus those moved out, plus those moved in, with epochs. */
  hosted(tenants: readonly TenantConfig[]): HostedMerchant[] {
    const hosted = new Map<string, HostedMerchant>();
    for (const tenant of tenants) {
      for (const merchant of tenant.merchants) hosted.set(`${tenant.id}/${merchant.id}`, { tenant: tenant.id, merchant: merchant.id, epoch: 0 });
    }
    for (const [key, claim] of Object.entries(this.claims)) {
      const [tenant = '', merchant = ''] = key.split('/');
      if (claim.hosted) hosted.set(key, { tenant, merchant, epoch: claim.epoch });
      else hosted.delete(key);
    }
    return [...hosted.values()];
  }

  /** Merchants the config lists that a move took away (worth a warning at start). */
  movedOut(tenants: readonly TenantConfig[]): string[] {
    return tenants.flatMap((tenant) =>
      tenant.merchants.filter((merchant) => this.claims[`${tenant.id}/${merchant.id}`]?.hosted === false).map((merchant) => `${tenant.id}/${merchant.id}`),
    );
  }

  async record(tenant: string, merchant: string, epoch: number, hosted: boolean): Promise<void> {
    this.claims = { ...this.claims, [`${tenant}/${merchant}`]: { epoch, hosted } };
    await this.store.write([{ type: 'put', key: CLAIMS_KEY, value: JSON.stringify(this.claims) }]);
  }
}

/** The config's tenants with their merchant lists replaced by what this cell hosts now. */
export function tenantsHosting(tenants: readonly TenantConfig[], hosted: readonly HostedMerchant[]): TenantConfig[] {
  return tenants.map((tenant) => {
    const named = new Map(tenant.merchants.map((merchant) => [merchant.id, merchant]));
    return {
      ...tenant,
      merchants: hosted.filter((claim) => claim.tenant === tenant.id).map((claim) => named.get(claim.merchant) ?? { id: claim.merchant }),
    };
  });
}

/** A move's view of this cell's claims: its record (gossiped) and the claims store (persisted first). */
export function meshMerchantClaims(mesh: CellMesh, store: MerchantClaimsStore): MerchantClaims {
  const others = (tenant: string, merchant: string) =>
    mesh.ownRecord().merchants.filter((claim) => claim.tenant !== tenant || claim.merchant !== merchant);
  return {
    epochOf: (tenant, merchant) => mesh.ownRecord().merchants.find((claim) => claim.tenant === tenant && claim.merchant === merchant)?.epoch,
    claim: async (tenant, merchant, epoch) => {
      await store.record(tenant, merchant, epoch, true);
      await mesh.updateOwnRecord({ merchants: [...others(tenant, merchant), { tenant, merchant, epoch }] });
    },
    release: async (tenant, merchant, epoch) => {
      await store.record(tenant, merchant, epoch, false);
      await mesh.updateOwnRecord({ merchants: others(tenant, merchant) });
    },
    homeOf: (tenant, merchant) => mesh.homeCellOf(tenant, merchant),
  };
}
