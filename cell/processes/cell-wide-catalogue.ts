import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import { randomId, type Random } from '../../platform/random.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { CatalogueCellWide } from '../tenant-catalogue.js';
import type { MerchantRef } from './coordination-port.js';

/**
 * The catalogue of a cell of several processes (docs/operations.md, "A cell of several
 * processes", "Tenants, merchants and erasures"): every process loaded the tenants and merchants
 * of the store at start, and each change made through the admin API of one of them must reach the
 * others. A change runs under the cell's catalogue lock, so two processes never interleave theirs
 * (each first reads what the others changed); every durable write of it moves the catalogue's
 * version; every process compares the version at each round of its lease and, when it moved,
 * reads the catalogue from the store again and applies the differences (TenantCatalogue.followStore).
 * The Redis adapter is assembly/redis-catalogue-coordination.ts.
 */
export interface CatalogueCoordination {
  /** Takes the cell's catalogue lock for `holder` unless someone holds it; it expires after `ttlMs`. True when taken. */
  lock(holder: string, ttlMs: number): Promise<boolean>;
  /** Releases the lock if `holder` still holds it. */
  unlock(holder: string): Promise<void>;
  /** The catalogue's version: it changes whenever a process changed the catalogue in the store. */
  version(): Promise<string>;
  /** Moves the version on. */
  bump(): Promise<void>;
}

export interface CellWideCatalogueInit {
  readonly processId: string;
  readonly coordination: CatalogueCoordination;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  /** How often the processes look at the version: a round of their leases. */
  readonly renewIntervalMs: number;
  /** How long a dead process's lease lives: its merchants are nobody's after this. */
  readonly leaseTtlMs: number;
  /** True while a live process of the cell owns the merchant (ProcessCoordinator.ownerIsLive). */
  readonly ownerIsLive: (merchant: MerchantRef) => Promise<boolean>;
}

/** The lock outlives any change: a process that dies holding it blocks the others this long at most. */
const LOCK_TTL_MS = 30_000;
/** How long a change waits for the lock before it is refused CATALOGUE_BUSY. */
const LOCK_WAIT_MS = 10_000;
const LOCK_RETRY_MS = 50;
const RETRY_AFTER_MS = 1_000;

export class CellWideCatalogue implements CatalogueCellWide {
  /** The version the catalogue of this process follows; undefined until the first round. */
  private followed: string | undefined;

  constructor(private readonly init: CellWideCatalogueInit) {}

  async exclusive<T>(run: () => Promise<T>): Promise<T> {
    const { coordination, clock } = this.init;
    const holder = `${this.init.processId}/${randomId(this.init.random, 12)}`;
    const deadlineMs = clock.now() + LOCK_WAIT_MS;
    while (!(await coordination.lock(holder, LOCK_TTL_MS))) {
      if (clock.now() >= deadlineMs) {
        throw new CellError(ErrorCode.CatalogueBusy, `another process of this cell has been changing its tenants or merchants for over ${LOCK_WAIT_MS / 1000} s; retry`, { retryAfterMs: RETRY_AFTER_MS });
      }
      await this.sleep(LOCK_RETRY_MS);
    }
    try {
      return await run();
    } finally {
      await coordination.unlock(holder).catch((error: unknown) => this.init.logger.warn({ err: error }, `could not release the catalogue lock; it expires in ${LOCK_TTL_MS / 1000} s`));
    }
  }

  changed(): Promise<void> {
    return this.init.coordination.bump();
  }

  /**
   * Resolves once no live process owns the removed merchant: its owner applied the removal at
   * its next round (its agents closed with 4403, its writes landed) and released it. An owner that
   * does not within a lease period plus two rounds is logged and left: it drops the merchant when
   * it catches up, and what it writes of the desk meanwhile is deleted when a merchant of the
   * same id is created again.
   */
  async merchantLetGo(tenant: string, merchant: string): Promise<void> {
    const { clock, leaseTtlMs, renewIntervalMs } = this.init;
    const deadlineMs = clock.now() + leaseTtlMs + 2 * renewIntervalMs;
    while (await this.init.ownerIsLive({ tenant, merchant })) {
      if (clock.now() >= deadlineMs) {
        this.init.logger.warn({ tenant, merchant }, 'the owner of a removed merchant has not let it go yet; deleting its desk anyway');
        return;
      }
      await this.sleep(Math.max(LOCK_RETRY_MS, Math.floor(renewIntervalMs / 4)));
    }
  }

  /**
   * One round: when the version moved since the catalogue last followed it, `follow` reads the
   * store again (false: a change of this process is under way, which reads it itself; the next
   * round tries again).
   */
  async followRound(follow: () => Promise<boolean>): Promise<void> {
    const version = await this.init.coordination.version();
    if (version === this.followed) return;
    if (await follow()) this.followed = version;
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.init.clock.setTimer(delayMs, resolve));
  }
}
