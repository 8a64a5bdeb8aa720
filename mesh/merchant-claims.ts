import { z } from 'zod';
import type { TenantConfig } from '../cell/settings.js';
import type { CatalogueClaims } from '../cell/tenant-catalogue.js';
import type { CellMesh } from './cell-mesh.js';
import { CELL_ID_PATTERN, ClaimProofSchema, type ClaimProof, type HandedOver, type MerchantClaim } from './cell-record.js';
import type { MerchantClaims } from './merchant-move.js';
import type { Store } from '../platform/store/store.js';

/**
 * Which merchants this cell hosts, as moves changed it: the config names the merchants a cell
 * starts with, and a move hands one over at runtime. The outcome is kept in the cell's store, so
 * a restart does not undo a move (a moved-out merchant still listed in the old cell's config
 * must not come back there with stale data).
 */
const CLAIMS_KEY = 'mesh/merchant-claims';

/**
 * `proof`: what lets a hosted claim displace the previous home; `to`: the cell a merchant was
 * handed to (at `epoch`). Both are kept so the record says the same after a restart.
 */
const StoredClaims = z.record(
  z.string(),
  z.object({ epoch: z.number().int().min(0), hosted: z.boolean(), proof: ClaimProofSchema.optional(), to: z.string().regex(CELL_ID_PATTERN).optional() }),
);
type StoredClaims = z.infer<typeof StoredClaims>;

export interface HostedMerchant {
  tenant: string;
  merchant: string;
  epoch: number;
  proof?: ClaimProof;
}

export class MerchantClaimsStore {
  private claims: StoredClaims = {};
  /** The last write under way; the next one starts after it. */
  private writing: Promise<void> = Promise.resolve();

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
      if (claim.hosted) hosted.set(key, { tenant, merchant, epoch: claim.epoch, ...(claim.proof === undefined ? {} : { proof: claim.proof }) });
      else hosted.delete(key);
    }
    return [...hosted.values()];
  }

  /** The merchants this cell handed over to another cell, as its record lists them. */
  handedOver(): HandedOver[] {
    const notes: HandedOver[] = [];
    for (const [key, claim] of Object.entries(this.claims)) {
      const [tenant = '', merchant = ''] = key.split('/');
      if (!claim.hosted && claim.to !== undefined) notes.push({ tenant, merchant, toCell: claim.to, epoch: claim.epoch });
    }
    return notes;
  }

  /** The epoch of this cell's last claim or release of the merchant; undefined when it never had it. */
  epochOf(tenant: string, merchant: string): number | undefined {
    return this.claims[`${tenant}/${merchant}`]?.epoch;
  }

  /** Merchants the config lists that a move took away (worth a warning at start). */
  movedOut(tenants: readonly TenantConfig[]): string[] {
    return tenants.flatMap((tenant) =>
      tenant.merchants.filter((merchant) => this.claims[`${tenant.id}/${merchant.id}`]?.hosted === false).map((merchant) => `${tenant.id}/${merchant.id}`),
    );
  }

  /**
   * Records a claim or a release, durably before anything reads it: a write that fails leaves
   * the claims as they were, so a failed commit cannot reach the record (or the next write of
   * another merchant's claim). Writes are serialized, each on top of the last one that succeeded.
   */
  record(tenant: string, merchant: string, epoch: number, change: { hosted: true; proof?: ClaimProof } | { hosted: false; to?: string }): Promise<void> {
    const write = this.writing.then(async () => {
      const next = { ...this.claims, [`${tenant}/${merchant}`]: { epoch, ...change } };
      await this.store.write([{ type: 'put', key: CLAIMS_KEY, value: JSON.stringify(next) }]);
      this.claims = next;
    });
    this.writing = write.catch(() => undefined);
    return write;
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

/** The merchant claims of a cell's record: what it hosts (with the proofs of moves in) and what it handed over. */
export function recordClaims(hosted: readonly HostedMerchant[], store: MerchantClaimsStore): { merchants: MerchantClaim[]; handedOver: HandedOver[] } {
  return {
    merchants: hosted.map(({ tenant, merchant, epoch, proof }) => ({ tenant, merchant, epoch, ...(proof === undefined ? {} : { proof }) })),
    handedOver: store.handedOver(),
  };
}

/** A move's view of this cell's claims: its record (gossiped) and the claims store (persisted first). */
export function meshMerchantClaims(mesh: CellMesh, store: MerchantClaimsStore): MerchantClaims {
  const isOther = (tenant: string, merchant: string) => (entry: { tenant: string; merchant: string }) => entry.tenant !== tenant || entry.merchant !== merchant;
  const others = (tenant: string, merchant: string) => mesh.ownRecord().merchants.filter(isOther(tenant, merchant));
  const otherNotes = (tenant: string, merchant: string) => (mesh.ownRecord().handedOver ?? []).filter(isOther(tenant, merchant));
  return {
    epochOf: (tenant, merchant) => mesh.ownRecord().merchants.find((claim) => claim.tenant === tenant && claim.merchant === merchant)?.epoch,
    handoverProof: (tenant, merchant, to, epoch) => mesh.handoverProof(tenant, merchant, to, epoch),
    claim: async (tenant, merchant, epoch, proof, whenDurable) => {
      await store.record(tenant, merchant, epoch, { hosted: true, ...(proof === undefined ? {} : { proof }) });
      await whenDurable();
      await mesh.updateOwnRecord({
        merchants: [...others(tenant, merchant), { tenant, merchant, epoch, ...(proof === undefined ? {} : { proof }) }],
        handedOver: otherNotes(tenant, merchant),
      });
    },
    release: async (tenant, merchant, epoch, to) => {
      await store.record(tenant, merchant, epoch, { hosted: false, to });
      await mesh.updateOwnRecord({ merchants: others(tenant, merchant), handedOver: [...otherNotes(tenant, merchant), { tenant, merchant, toCell: to, epoch }] });
    },
    homeOf: (tenant, merchant) => mesh.homeCellOf(tenant, merchant),
  };
}

/**
 * The admin API's view of this cell's claims (cell/tenant-catalogue.ts): a merchant created here
 * is claimed at epoch 1 without proof, which the directory admits only while no cell claims it
 * (docs/mesh.md, "Trust: who may claim a merchant"); a removed one's claim is withdrawn, with no
 * note of a handover (no cell took it).
 */
export function catalogueClaimsOf(mesh: CellMesh, store: MerchantClaimsStore): CatalogueClaims {
  const isOther = (tenant: string, merchant: string) => (entry: { tenant: string; merchant: string }) => entry.tenant !== tenant || entry.merchant !== merchant;
  return {
    homeOf: (tenant, merchant) => mesh.homeCellOf(tenant, merchant),
    claimNew: async (tenant, merchant, whenDurable) => {
      await store.record(tenant, merchant, 1, { hosted: true });
      await whenDurable();
      const record = mesh.ownRecord();
      await mesh.updateOwnRecord({
        merchants: [...record.merchants.filter(isOther(tenant, merchant)), { tenant, merchant, epoch: 1 }],
        handedOver: (record.handedOver ?? []).filter(isOther(tenant, merchant)),
      });
    },
    withdraw: async (tenant, merchant) => {
      await store.record(tenant, merchant, store.epochOf(tenant, merchant) ?? 0, { hosted: false });
      await mesh.updateOwnRecord({ merchants: mesh.ownRecord().merchants.filter(isOther(tenant, merchant)) });
    },
  };
}
