import { z } from 'zod';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import { randomId, type Random } from '../platform/random.js';
import { deleteRange, readAll } from '../platform/store/scan.js';
import type { Store } from '../platform/store/store.js';
import { parseWith } from './access/http-router.js';
import { MIN_SECRET_BYTES } from './access/tokens.js';
import { keys } from './messaging/keys.js';
import { CellError, ErrorCode } from './protocol/errors.js';
import { IDENTIFIER_PATTERN } from './protocol/frames.js';
import { AttachmentsConfig, RetentionConfig, identifier, type TenantConfig } from './settings.js';

/**
 * The tenants this cell serves and the merchants it hosts, as the config file names them plus
 * those the admin API created at runtime (docs/desk.md, "Tenants and merchants").
 *
 * One rule keeps the two apart, so nothing changes behind an operator's back: what the config
 * file defines stays the file's. The API may not change or remove a config tenant, nor remove a
 * config merchant (CONFIG_OWNED: edit the file). Runtime tenants and merchants live in the
 * cell's store (keys.tenantRecord, keys.tenantMerchant), are read at start and merged with the
 * config, and take effect at once through the `CatalogueHost`. A runtime merchant may belong to
 * a config tenant.
 *
 * Changes run one at a time, each durable before it takes effect. In a cell of several
 * processes they run one at a time cell-wide (`CatalogueCellWide`), and every process follows the
 * store's catalogue at each round of its lease (`followStore`).
 */

/** What the catalogue does to the running cell (the core, its people, its desk). */
export interface CatalogueHost {
  /** Serves `tenant` (new), or takes its new secrets, origins and settings (known); merchants hosted stay. */
  serveTenant(tenant: TenantConfig): void;
  /** Stops serving the tenant: its tokens are refused, its devices closed. */
  stopServingTenant(tenant: string): void;
  /** The merchants of `tenant` hosted here now (moves change them); undefined when not served. */
  hostedMerchants(tenant: string): readonly string[] | undefined;
  /** Starts hosting a merchant whose desk is empty or copied in (its people, blocks and desk). */
  hostMerchant(tenant: string, merchant: string): Promise<void>;
  /** Stops hosting a removed merchant (its agents' devices are closed with 4403); resolves once its writes under way have landed. */
  removeMerchant(tenant: string, merchant: string): Promise<void>;
  /** A tenant came, went or changed its settings: what reads them once (the retention sweepers) reads them again. */
  tenantsChanged(): void;
}

/** In a cluster, a merchant is hosted by the cell that claims it (docs/mesh.md). */
export interface CatalogueClaims {
  /** The merchant's home in this cell's directory; undefined when no cell claims it. */
  homeOf(tenant: string, merchant: string): string | undefined;
  /** Claims a merchant nobody holds (epoch 1, no proof): persisted, then `whenDurable` (hosting), then gossiped. */
  claimNew(tenant: string, merchant: string, whenDurable: () => Promise<void>): Promise<void>;
  /** Withdraws this cell's claim of a removed merchant: persisted, then gossiped. */
  withdraw(tenant: string, merchant: string): Promise<void>;
}

/**
 * A cell of several processes (cell/processes/cell-wide-catalogue.ts): what makes a change
 * cell-wide. Absent in a cell of one process.
 */
export interface CatalogueCellWide {
  /** Runs `run` while no other process of the cell changes the catalogue. */
  exclusive<T>(run: () => Promise<T>): Promise<T>;
  /** The catalogue changed in the store: every process reads it again at its next round. */
  changed(): Promise<void>;
  /** Resolves once the owner of a removed merchant applied the removal (or after a bound). */
  merchantLetGo(tenant: string, merchant: string): Promise<void>;
}

export interface TenantCatalogueComponents {
  store: Store;
  clock: Clock;
  /** Draws generated secrets: the system's cryptographic source in a process. */
  random: Random;
  logger: Logger;
  /** The tenants of the config file. */
  configTenants: readonly TenantConfig[];
  /** What is wrong with a secret anyone could guess (assembly/secret-strength.ts); undefined: nothing. */
  weakSecret: (secret: string) => string | undefined;
  /** True in a cluster: merchants are claimed, and only once `attachClaims` was called. */
  clustered: boolean;
  /** A cell of several processes: changes run cell-wide. */
  cellWide?: CatalogueCellWide | undefined;
}

const NAME_CHARS = 200;
const MAX_ORIGINS = 100;
/** Characters of a generated secret: 48 of [0-9a-z], about 248 bits. */
const GENERATED_SECRET_CHARS = 48;
const FIRST_KID = 'k1';

const name = z.string().trim().min(1, 'must not be empty').max(NAME_CHARS, `must be at most ${NAME_CHARS} characters`);
const origins = z.array(z.string().url('must be a URL like https://shop.example')).max(MAX_ORIGINS, `holds at most ${MAX_ORIGINS} origins`);
const secret = z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`).max(512, 'must be at most 512 characters');
const SigningSecret = z.strictObject({ kid: identifier, secret });

/** A new tenant. Without `secret` one is generated and answered once. */
export const NewTenant = z.strictObject({
  id: identifier,
  name: name.optional(),
  origins: origins.optional(),
  /** Names the first secret in tokens' headers; default `k1`. */
  kid: identifier.optional(),
  secret: secret.optional(),
  attachments: AttachmentsConfig.optional(),
  retention: RetentionConfig.optional(),
});
/** A change of a tenant: any of these, at least one. `null` settings go back to the defaults. */
export const TenantPatch = z
  .strictObject({
    name: name.optional(),
    origins: origins.optional(),
    attachments: AttachmentsConfig.nullable().optional(),
    retention: RetentionConfig.nullable().optional(),
    /** Rotation, step one: a second secret (generated when `secret` is absent, answered once). */
    addSecret: z.strictObject({ kid: identifier, secret: secret.optional() }).optional(),
    /** Rotation, step two: drops the secret of this kid (never the last one). */
    removeSecret: identifier.optional(),
  })
  .refine((patch) => Object.values(patch).some((value) => value !== undefined), 'give at least one of name, origins, attachments, retention, addSecret, removeSecret');
export const NewMerchant = z.strictObject({ id: identifier, name: name.optional() });
export const MerchantPatch = z.strictObject({ name });

const TenantRecord = z.object({
  id: identifier,
  name: z.string().optional(),
  origins: z.array(z.string()),
  secrets: z.array(SigningSecret).min(1).max(2),
  attachments: AttachmentsConfig.optional(),
  retention: RetentionConfig.optional(),
  createdAtMs: z.number(),
  updatedAtMs: z.number(),
});
type TenantRecord = z.infer<typeof TenantRecord>;
const MerchantRecord = z.object({ id: identifier, name: z.string().optional(), createdAtMs: z.number(), updatedAtMs: z.number() });
type MerchantRecord = z.infer<typeof MerchantRecord>;

/** Where a tenant or merchant is defined: the config file, or the store (the admin API). */
export type CatalogueSource = 'config' | 'runtime';

/** What the admin API shows of a tenant: never a secret, only the kids that name them. */
export interface TenantView {
  id: string;
  name?: string | undefined;
  source: CatalogueSource;
  origins: string[];
  kids: string[];
  attachments: AttachmentsConfig | undefined;
  retention: RetentionConfig | undefined;
  merchants: MerchantView[];
}

export interface MerchantView {
  id: string;
  name?: string | undefined;
  source: CatalogueSource;
}

/** A secret the cell generated: answered once, never stored anywhere but the tenant's record. */
export interface IssuedSecret {
  kid: string;
  secret: string;
}

export class TenantCatalogue {
  private readonly configTenants: ReadonlyMap<string, TenantConfig>;
  private readonly runtimeTenants = new Map<string, TenantRecord>();
  /** Runtime merchants by `<tenant>/<merchant>`. */
  private readonly runtimeMerchants = new Map<string, MerchantRecord>();
  private host: CatalogueHost | undefined;
  private claims: CatalogueClaims | undefined;
  /** The change under way; the next one starts after it. */
  private changing: Promise<unknown> = Promise.resolve();
  /** Changes asked and not settled yet: a round's `followStore` waits for none of them. */
  private changesPending = 0;

  constructor(private readonly components: TenantCatalogueComponents) {
    this.configTenants = new Map(components.configTenants.map((tenant) => [tenant.id, tenant]));
  }

  /** Reads the runtime tenants and merchants; call once the store is open, before `tenants()`. */
  async load(): Promise<void> {
    const { tenants, merchants } = await this.readStored();
    for (const [id, record] of tenants) this.runtimeTenants.set(id, record);
    for (const [key, record] of merchants) this.runtimeMerchants.set(key, record);
  }

  /**
   * A cell of several processes: reads the runtime tenants and merchants again, as another
   * process may have changed them, and applies the differences through the host: tenants served,
   * changed or no longer served, removed merchants no longer hosted here (the merchants added are
   * claimed by the round that follows). Resolves false without reading when a change of this
   * process is under way: that change reads them itself, and the next round follows.
   */
  followStore(): Promise<boolean> {
    const host = this.host;
    if (host === undefined || this.changesPending > 0) return Promise.resolve(false);
    const next = this.changing.then(async () => {
      await this.follow(host);
      return true;
    });
    this.changing = next.catch(() => undefined);
    return next;
  }

  /** Binds the running cell; changes are refused before. */
  attachHost(host: CatalogueHost): void {
    this.host = host;
  }

  /** In a cluster: binds the claims once the cell joined its mesh. */
  attachClaims(claims: CatalogueClaims): void {
    this.claims = claims;
  }

  /** Every tenant, config and runtime, with its config and runtime merchants: what the cell starts with. */
  tenants(): TenantConfig[] {
    return [...this.configTenants.keys(), ...this.runtimeTenants.keys()].map((id) => this.tenantConfig(id)!);
  }

  /** One tenant as the core and the access layer use it (secrets, origins, settings); undefined when unknown. */
  tenantConfig(id: string): TenantConfig | undefined {
    const configured = this.configTenants.get(id);
    const runtimeMerchants = [...this.runtimeMerchants.entries()].filter(([key]) => key.startsWith(`${id}/`)).map(([, record]) => ({ id: record.id, ...(record.name === undefined ? {} : { name: record.name }) }));
    if (configured !== undefined) {
      const named = new Set(configured.merchants.map((merchant) => merchant.id));
      return { ...configured, merchants: [...configured.merchants, ...runtimeMerchants.filter((merchant) => !named.has(merchant.id))] };
    }
    const record = this.runtimeTenants.get(id);
    if (record === undefined) return undefined;
    return {
      id,
      secrets: record.secrets,
      origins: record.origins,
      merchants: runtimeMerchants,
      ...(record.attachments === undefined ? {} : { attachments: record.attachments }),
      ...(record.retention === undefined ? {} : { retention: record.retention }),
    };
  }

  /** The tenants served, with the merchants hosted here now; no secrets. */
  list(): TenantView[] {
    return [...this.configTenants.keys(), ...this.runtimeTenants.keys()].filter((id) => this.host?.hostedMerchants(id) !== undefined).map((id) => this.view(id));
  }

  get(id: string): TenantView {
    this.servedTenant(id);
    return this.view(id);
  }

  createTenant(body: unknown): Promise<{ tenant: TenantView; secret?: IssuedSecret }> {
    const input = parseWith(NewTenant, body);
    return this.change(async (host) => {
      if (this.configTenants.has(input.id) || this.runtimeTenants.has(input.id) || host.hostedMerchants(input.id) !== undefined) {
        throw new CellError(ErrorCode.TenantExists, `this cell serves a tenant ${input.id} already`);
      }
      const issued = this.secretFor(input.kid ?? FIRST_KID, input.secret, 'secret');
      const nowMs = this.components.clock.now();
      const record: TenantRecord = {
        id: input.id,
        ...(input.name === undefined ? {} : { name: input.name }),
        origins: input.origins ?? [],
        secrets: [issued.key],
        ...(input.attachments === undefined ? {} : { attachments: input.attachments }),
        ...(input.retention === undefined ? {} : { retention: input.retention }),
        createdAtMs: nowMs,
        updatedAtMs: nowMs,
      };
      // Stale merchants of an earlier tenant of this id (moved out before it was removed) do not come back.
      await deleteRange(this.components.store, keys.tenantMerchants(input.id));
      await this.writeTenant(record);
      host.serveTenant(this.tenantConfig(input.id)!);
      host.tenantsChanged();
      return { tenant: this.view(input.id), ...(issued.generated ? { secret: issued.key } : {}) };
    });
  }

  updateTenant(id: string, body: unknown): Promise<{ tenant: TenantView; secret?: IssuedSecret }> {
    const patch = parseWith(TenantPatch, body);
    return this.change(async (host) => {
      const before = this.runtimeTenant(id);
      let secrets = before.secrets;
      let issued: { key: IssuedSecret; generated: boolean } | undefined;
      if (patch.removeSecret !== undefined) {
        if (!secrets.some((entry) => entry.kid === patch.removeSecret)) throw badRequest('removeSecret', `tenant ${id} has no secret ${patch.removeSecret} (it has ${kidsOf(secrets)})`);
        if (secrets.length === 1) throw badRequest('removeSecret', `${patch.removeSecret} is the only secret of tenant ${id}: add another one first (addSecret)`);
        secrets = secrets.filter((entry) => entry.kid !== patch.removeSecret);
      }
      if (patch.addSecret !== undefined) {
        if (secrets.some((entry) => entry.kid === patch.addSecret!.kid)) throw badRequest('addSecret.kid', `tenant ${id} has a secret ${patch.addSecret.kid} already`);
        if (secrets.length === 2) throw badRequest('addSecret', `tenant ${id} holds two secrets (${kidsOf(secrets)}): remove the old one first (removeSecret)`);
        issued = this.secretFor(patch.addSecret.kid, patch.addSecret.secret, 'addSecret.secret');
        secrets = [...secrets, issued.key];
      }
      const record: TenantRecord = {
        ...before,
        ...(patch.name === undefined ? {} : { name: patch.name }),
        ...(patch.origins === undefined ? {} : { origins: patch.origins }),
        secrets,
        updatedAtMs: this.components.clock.now(),
      };
      if (patch.attachments === null) delete record.attachments;
      else if (patch.attachments !== undefined) record.attachments = patch.attachments;
      if (patch.retention === null) delete record.retention;
      else if (patch.retention !== undefined) record.retention = patch.retention;
      await this.writeTenant(record);
      host.serveTenant(this.tenantConfig(id)!);
      if (patch.retention !== undefined) host.tenantsChanged();
      return { tenant: this.view(id), ...(issued?.generated === true ? { secret: issued.key } : {}) };
    });
  }

  /** Removes a runtime tenant that has no merchant here any more: its tokens are refused at once. */
  removeTenant(id: string): Promise<{ removed: TenantView }> {
    return this.change(async (host) => {
      this.runtimeTenant(id);
      const merchants = host.hostedMerchants(id) ?? [];
      if (merchants.length > 0) {
        throw new CellError(ErrorCode.TenantNotEmpty, `tenant ${id} still has merchants on this cell (${merchants.join(', ')}): remove or move them first`);
      }
      const removed = this.view(id);
      await this.components.store.write([{ type: 'del', key: keys.tenantRecord(id) }]);
      await deleteRange(this.components.store, keys.tenantMerchants(id));
      this.runtimeTenants.delete(id);
      for (const key of [...this.runtimeMerchants.keys()]) if (key.startsWith(`${id}/`)) this.runtimeMerchants.delete(key);
      await this.written();
      host.stopServingTenant(id);
      host.tenantsChanged();
      return { removed };
    });
  }

  listMerchants(tenant: string): MerchantView[] {
    return this.view(this.servedTenant(tenant)).merchants;
  }

  /**
   * Creates a merchant and hosts it here at once: standalone directly, in a cluster by claiming
   * it, which only a merchant no cell claims allows (MERCHANT_EXISTS names its home otherwise).
   */
  createMerchant(tenant: string, body: unknown): Promise<MerchantView> {
    const input = parseWith(NewMerchant, body);
    return this.change(async (host) => {
      const hosted = host.hostedMerchants(this.servedTenant(tenant))!;
      if (hosted.includes(input.id)) throw new CellError(ErrorCode.MerchantExists, `this cell hosts a merchant ${input.id} of tenant ${tenant} already`);
      const claims = this.clusterClaims();
      const home = claims?.homeOf(tenant, input.id);
      if (home !== undefined) throw new CellError(ErrorCode.MerchantExists, `merchant ${input.id} of tenant ${tenant} is hosted by cell ${home}: move it here instead (cellmesh move)`);
      const { store } = this.components;
      // What an earlier merchant of this id left of its desk (agents, consultations) is not the new one's.
      await deleteRange(store, keys.merchantDesk(tenant, input.id));
      const nowMs = this.components.clock.now();
      const record: MerchantRecord = { id: input.id, ...(input.name === undefined ? {} : { name: input.name }), createdAtMs: nowMs, updatedAtMs: nowMs };
      await store.write([{ type: 'put', key: keys.tenantMerchant(tenant, input.id), value: JSON.stringify(record) }]);
      this.runtimeMerchants.set(`${tenant}/${input.id}`, record);
      await this.written();
      try {
        if (claims === undefined) await host.hostMerchant(tenant, input.id);
        else await claims.claimNew(tenant, input.id, () => host.hostMerchant(tenant, input.id));
      } catch (error) {
        // Not hosted: the record must not bring it to life at the next start.
        this.runtimeMerchants.delete(`${tenant}/${input.id}`);
        await store.write([{ type: 'del', key: keys.tenantMerchant(tenant, input.id) }]).catch(() => undefined);
        await this.written().catch(() => undefined);
        throw error;
      }
      return merchantView(record, 'runtime');
    });
  }

  updateMerchant(tenant: string, merchant: string, body: unknown): Promise<MerchantView> {
    const patch = parseWith(MerchantPatch, body);
    return this.change(async () => {
      const before = this.runtimeMerchant(tenant, merchant);
      const record: MerchantRecord = { ...before, name: patch.name, updatedAtMs: this.components.clock.now() };
      await this.components.store.write([{ type: 'put', key: keys.tenantMerchant(tenant, merchant), value: JSON.stringify(record) }]);
      this.runtimeMerchants.set(`${tenant}/${merchant}`, record);
      await this.written();
      return merchantView(record, 'runtime');
    });
  }

  /**
   * Removes a runtime merchant: its record first (so a crash cannot bring it back), then it is no
   * longer hosted (its agents' devices closed), its claim withdrawn, and its desk deleted (agents,
   * consultations, queues, logins). Its conversations stay in the store, unserved: a merchant
   * created again with this id serves them again (docs/desk.md).
   */
  removeMerchant(tenant: string, merchant: string): Promise<{ removed: MerchantView }> {
    return this.change(async (host) => {
      const record = this.runtimeMerchant(tenant, merchant);
      const claims = this.clusterClaims();
      const { store } = this.components;
      await store.write([{ type: 'del', key: keys.tenantMerchant(tenant, merchant) }]);
      this.runtimeMerchants.delete(`${tenant}/${merchant}`);
      await this.written();
      await host.removeMerchant(tenant, merchant);
      // In a cell of several processes its owner may be another process, which applies the removal at its next round.
      await this.components.cellWide?.merchantLetGo(tenant, merchant);
      await claims?.withdraw(tenant, merchant);
      await deleteRange(store, keys.merchantDesk(tenant, merchant));
      return { removed: merchantView(record, 'runtime') };
    });
  }

  /**
   * A merchant moved in (its keys are copied, its claim durable): serves its tenant first when
   * this cell lacks it, from the tenant's record the move brought, and learns the merchant's own
   * record, so the target verifies the merchant's tokens and may remove it like its home did.
   */
  async merchantMovedIn(tenant: string, merchant: string): Promise<void> {
    const { store, logger } = this.components;
    const merchantKey = keys.tenantMerchant(tenant, merchant);
    const tenantKey = keys.tenantRecord(tenant);
    let tenantRecord: TenantRecord | undefined;
    try {
      const merchantValue = await store.get(merchantKey);
      if (merchantValue === undefined) this.runtimeMerchants.delete(`${tenant}/${merchant}`);
      else this.runtimeMerchants.set(`${tenant}/${merchant}`, parseRecord(MerchantRecord, merchantKey, merchantValue));
      if (this.configTenants.has(tenant) || this.runtimeTenants.has(tenant)) return;
      const tenantValue = await store.get(tenantKey);
      if (tenantValue !== undefined) tenantRecord = parseRecord(TenantRecord, tenantKey, tenantValue);
    } catch (error) {
      // The claim is durable already: hosting goes on, and says why if the tenant is missing.
      logger.error({ err: error, tenant, merchant }, 'could not read the records of a merchant that moved in');
      return;
    }
    if (tenantRecord === undefined) {
      logger.warn({ tenant, merchant }, 'a merchant moved in whose tenant this cell does not serve, without the tenant\'s record');
      return;
    }
    this.runtimeTenants.set(tenant, tenantRecord);
    this.host?.serveTenant(this.tenantConfig(tenant)!);
    this.host?.tenantsChanged();
    logger.info({ tenant, merchant }, 'serving the tenant of a merchant that moved in');
  }

  /** The runtime records of the store; a tenant the config names too is the config's. */
  private async readStored(): Promise<{ tenants: Map<string, TenantRecord>; merchants: Map<string, MerchantRecord> }> {
    const tenants = new Map<string, TenantRecord>();
    const merchants = new Map<string, MerchantRecord>();
    for (const [key, value] of await readAll(this.components.store, keys.catalogue())) {
      const fields = key.split('/');
      if (fields.length === 2) {
        const record = parseRecord(TenantRecord, key, value);
        // A move may bring the record of a tenant the config names too: the config wins.
        if (!this.configTenants.has(record.id)) tenants.set(record.id, record);
      } else {
        merchants.set(`${fields[1]}/${fields[2]}`, parseRecord(MerchantRecord, key, value));
      }
    }
    return { tenants, merchants };
  }

  /** Takes the store's catalogue as this process's, applying the differences (followStore). */
  private async follow(host: CatalogueHost): Promise<void> {
    const { tenants, merchants } = await this.readStored();
    let tenantsChanged = false;
    for (const [id, record] of tenants) {
      const before = this.runtimeTenants.get(id);
      if (before !== undefined && JSON.stringify(before) === JSON.stringify(record)) continue;
      this.runtimeTenants.set(id, record);
      host.serveTenant(this.tenantConfig(id)!);
      tenantsChanged = true;
    }
    const removed = [...this.runtimeMerchants.keys()].filter((key) => !merchants.has(key));
    this.runtimeMerchants.clear();
    for (const [key, record] of merchants) this.runtimeMerchants.set(key, record);
    for (const key of removed) {
      const [tenant, merchant] = key.split('/') as [string, string];
      if (this.configTenants.get(tenant)?.merchants.some((named) => named.id === merchant) === true) continue;
      if (host.hostedMerchants(tenant) === undefined) continue;
      await host.removeMerchant(tenant, merchant);
    }
    for (const id of [...this.runtimeTenants.keys()]) {
      if (tenants.has(id)) continue;
      this.runtimeTenants.delete(id);
      host.stopServingTenant(id);
      tenantsChanged = true;
    }
    if (tenantsChanged) host.tenantsChanged();
  }

  /** The catalogue changed in the store: in a cell of several processes, the others follow. */
  private async written(): Promise<void> {
    await this.components.cellWide?.changed();
  }

  private view(id: string): TenantView {
    const config = this.tenantConfig(id)!;
    const record = this.runtimeTenants.get(id);
    const hosted = this.host?.hostedMerchants(id) ?? [];
    const configMerchants = new Set(this.configTenants.get(id)?.merchants.map((merchant) => merchant.id) ?? []);
    return {
      id,
      ...(record?.name === undefined ? {} : { name: record.name }),
      source: record === undefined ? 'config' : 'runtime',
      origins: [...config.origins],
      kids: config.secrets?.map((entry) => entry.kid) ?? [],
      attachments: config.attachments,
      retention: config.retention,
      merchants: [...hosted].sort().map((merchant) => {
        const runtime = this.runtimeMerchants.get(`${id}/${merchant}`);
        if (runtime !== undefined && !configMerchants.has(merchant)) return merchantView(runtime, 'runtime');
        const named = this.configTenants.get(id)?.merchants.find((candidate) => candidate.id === merchant)?.name;
        return { id: merchant, ...(named === undefined ? {} : { name: named }), source: 'config' as const };
      }),
    };
  }

  /**
   * Runs one change after the others; the host must be bound. In a cell of several processes, one
   * at a time cell-wide, on the catalogue as the store holds it (another process may have changed
   * it since this one last followed). The cell's lock is taken before the change queues here, so
   * a change waiting for it holds up no round of this process (`followStore`).
   */
  private change<T>(run: (host: CatalogueHost) => Promise<T>): Promise<T> {
    const { cellWide } = this.components;
    if (cellWide === undefined) return this.inTurn(run);
    return cellWide.exclusive(() =>
      this.inTurn(async (host) => {
        await this.follow(host);
        return run(host);
      }),
    );
  }

  /** Runs `run` after the changes and follows queued here. */
  private inTurn<T>(run: (host: CatalogueHost) => Promise<T>): Promise<T> {
    this.changesPending++;
    const next = this.changing.then(() => {
      const host = this.host;
      if (host === undefined) throw new CellError(ErrorCode.CellStarting, 'the cell is still starting; retry in a moment');
      return run(host);
    });
    this.changing = next.catch(() => undefined);
    void this.changing.then(() => this.changesPending--);
    return next;
  }

  /** The cluster's claims; undefined for a standalone cell. */
  private clusterClaims(): CatalogueClaims | undefined {
    if (!this.components.clustered) return undefined;
    if (this.claims === undefined) throw new CellError(ErrorCode.CellStarting, 'the cell is still joining its cluster; retry in a moment');
    return this.claims;
  }

  private servedTenant(id: string): string {
    if (!IDENTIFIER_PATTERN.test(id)) throw badRequest('tenant', `'${id.slice(0, 100)}' must be 1-64 characters of [A-Za-z0-9_.-]`);
    if (this.tenantConfig(id) === undefined || this.host?.hostedMerchants(id) === undefined) throw new CellError(ErrorCode.TenantUnknown, `this cell serves no tenant ${id}`);
    return id;
  }

  private runtimeTenant(id: string): TenantRecord {
    this.servedTenant(id);
    const record = this.runtimeTenants.get(id);
    if (record === undefined) throw configOwned(`tenant ${id} is defined in the config file: change or remove it there, then restart the cell`);
    return record;
  }

  private runtimeMerchant(tenant: string, merchant: string): MerchantRecord {
    const hosted = this.host?.hostedMerchants(this.servedTenant(tenant)) ?? [];
    if (!IDENTIFIER_PATTERN.test(merchant)) throw badRequest('merchant', `'${merchant.slice(0, 100)}' must be 1-64 characters of [A-Za-z0-9_.-]`);
    if (!hosted.includes(merchant)) throw new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} of tenant ${tenant} is not hosted by this cell`);
    const record = this.runtimeMerchants.get(`${tenant}/${merchant}`);
    const inConfig = this.configTenants.get(tenant)?.merchants.some((candidate) => candidate.id === merchant) === true;
    if (record === undefined || inConfig) {
      throw configOwned(`merchant ${merchant} of tenant ${tenant} is defined in a config file (this cell's, or that of the cell it moved from): change or remove it there`);
    }
    return record;
  }

  /** The secret given (checked) or a generated one. */
  private secretFor(kid: string, given: string | undefined, path: string): { key: IssuedSecret; generated: boolean } {
    if (given === undefined) return { key: { kid, secret: randomId(this.components.random, GENERATED_SECRET_CHARS) }, generated: true };
    const weakness = this.components.weakSecret(given);
    if (weakness !== undefined) throw badRequest(path, `${weakness}; leave it out to have the cell generate one`);
    return { key: { kid, secret: given }, generated: false };
  }

  private async writeTenant(record: TenantRecord): Promise<void> {
    await this.components.store.write([{ type: 'put', key: keys.tenantRecord(record.id), value: JSON.stringify(record) }]);
    this.runtimeTenants.set(record.id, record);
    await this.written();
  }
}

/** A record of the store, or an error naming its key (a damaged store stops the start loudly). */
function parseRecord<Schema extends z.ZodType>(schema: Schema, key: string, value: string): z.output<Schema> {
  const parsed = schema.safeParse(JSON.parse(value));
  if (!parsed.success) throw new Error(`the store's record ${key} is damaged: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}

function merchantView(record: MerchantRecord, source: CatalogueSource): MerchantView {
  return { id: record.id, ...(record.name === undefined ? {} : { name: record.name }), source };
}

function kidsOf(secrets: readonly IssuedSecret[]): string {
  return secrets.map((entry) => entry.kid).join(', ');
}

function badRequest(path: string, message: string): CellError {
  return new CellError(ErrorCode.BadFrame, `${path}: ${message}`);
}

function configOwned(message: string): CellError {
  return new CellError(ErrorCode.ConfigOwned, message);
}
