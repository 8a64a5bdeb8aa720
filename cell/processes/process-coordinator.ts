import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import { assignOwners } from './owner-assignment.js';
import { merchantKey, type MerchantRef, type OwnerRecord, type ProcessAddress, type ProcessCoordination, type ProcessRecord } from './coordination-port.js';

/** What the coordinator does to the process's core when it gains or loses a merchant. */
export interface OwnedMerchantsHost {
  /** Starts hosting the merchant: loads its conversations, desk and people from the store. */
  hostMerchant(tenant: string, merchant: string): Promise<void>;
  /** Stops hosting it at once and closes its devices here with the reconnect close code. */
  dropMerchant(tenant: string, merchant: string): void;
  /** New writes to the merchant's conversations wait until the returned release is called. */
  fence(tenant: string, merchant: string): () => void;
  /** Resolves once the writes under way to the merchant's conversations are settled. */
  whenMerchantIdle(tenant: string, merchant: string): Promise<void>;
  /** Writes the delivery cursors acked so far. */
  cursorsFlushed(): Promise<void>;
}

export interface ProcessCoordinatorInit {
  readonly processId: string;
  readonly coordination: ProcessCoordination;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How long a lease lives without renewal: a process dead this long loses its merchants. */
  readonly leaseTtlMs: number;
  /** How often the lease is renewed and the owners looked at (well below `leaseTtlMs`). */
  readonly renewIntervalMs: number;
  /**
   * Merchants move in and out of the cell (a cell in a mesh): one no longer listed was released
   * from the core already (by the mover, or by following the catalogue), so only its owner record
   * goes. Otherwise (a standalone cell) a removed merchant is handed over as to another process.
   */
  readonly merchantsMove?: boolean | undefined;
}

/** Where a device of a merchant is served. */
export type MerchantPlacement = { readonly here: true } | { readonly here: false; readonly owner: ProcessRecord };

export const PROCESS_DEFAULTS = { leaseTtlMs: 3000, renewIntervalMs: 1000 } as const;

/**
 * One process's part in a cell of several processes (docs/operations.md, "A cell of several
 * processes"). It holds the process's lease, whose fencing token the store checks on every write
 * (so a process that lost its lease cannot write), and it keeps the core hosting exactly the
 * merchants this process owns: it claims those it should own when they have no live owner,
 * hands over those another process should own once that process has been live for a lease
 * period, and drops everything at once when its lease is lost, then registers again with a new
 * token. Every step runs in one tick at a time, every `renewIntervalMs`.
 */
export class ProcessCoordinator {
  /** The fencing token of the lease held; undefined between a lost lease and the next. */
  private token: number | undefined;
  /** When the last renewal that succeeded was sent: the lease holds until this plus the TTL. */
  private renewedAtMs = 0;
  private address: ProcessAddress | undefined;
  private host: OwnedMerchantsHost | undefined;
  private merchants: () => readonly MerchantRef[] | Promise<readonly MerchantRef[]> = () => [];
  /** When each merchant of the cell was first listed: one listed lately (moved in, or created) is left to the process that hosts it for a lease period. */
  private readonly listedSinceMs = new Map<string, number>();
  /** Callers of `acquire` waiting for a merchant to be hosted here, by merchantKey. */
  private readonly hostedWaiters = new Map<string, Array<() => void>>();
  /** Brings the process's catalogue up to date before the owners are looked at (a cell's catalogue changes at runtime). */
  private followCatalogue: (() => Promise<void>) | undefined;
  /** Merchants hosted here, by merchantKey. */
  private readonly hosted = new Map<string, MerchantRef>();
  /** The owner of each merchant hosted elsewhere, as of the last tick. */
  private owners = new Map<string, ProcessRecord>();
  /** Every merchant of the cell, as of the last tick. */
  private known = new Set<string>();
  /** When each live process was first seen: it gets merchants handed over one lease period later. */
  private readonly firstSeenMs = new Map<string, number>();
  /** The live processes, by id, as of the last round (this one included). */
  private live = new Map<string, ProcessRecord>();
  /** Asked when the lease is lost: true keeps the process without a lease (it is ending: it spoke for the cell). */
  private endsOnLeaseLoss: () => boolean = () => false;
  private timer: TimerHandle | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly init: ProcessCoordinatorInit) {}

  get processId(): string {
    return this.init.processId;
  }

  /** The fencing token of the current lease, as the store compares it; undefined between leases. */
  fencingToken(): string | undefined {
    return this.token === undefined ? undefined : String(this.token);
  }

  /** The fencing token of the current lease; undefined between leases. */
  leaseToken(): number | undefined {
    return this.token;
  }

  /**
   * `ends` is asked when the lease is lost: when it answers true, no new lease is taken and every
   * write stays fenced off (a process that spoke for the cell in a mesh ends instead).
   */
  endOnLeaseLoss(ends: () => boolean): void {
    this.endsOnLeaseLoss = ends;
  }

  /** True when `processId` held the lease of `token` at the last round (or is this process, holding it now). */
  isLive(processId: string, token: number): boolean {
    if (processId === this.init.processId) return this.token === token;
    return this.live.get(processId)?.token === token;
  }

  /** The other live processes, as of the last round. */
  liveSiblings(): ProcessRecord[] {
    return [...this.live.values()].filter((process) => process.id !== this.init.processId);
  }

  /** True when the merchant is one of the cell's (hosted here or by a sibling), as of the last round. */
  isCellMerchant(tenant: string, merchant: string): boolean {
    return this.known.has(merchantKey({ tenant, merchant }));
  }

  /** Takes the lease and keeps renewing it; the process owns nothing until `startOwning`. */
  async register(): Promise<void> {
    await this.registerLease();
    this.schedule();
  }

  /**
   * The process listens at `address` and its core is ready: from now on it claims and hosts the
   * merchants it should own. Resolves after the first round of claims.
   */
  async startOwning(address: ProcessAddress, host: OwnedMerchantsHost, merchants: () => readonly MerchantRef[] | Promise<readonly MerchantRef[]>, followCatalogue?: () => Promise<void>): Promise<void> {
    this.address = address;
    this.host = host;
    this.merchants = merchants;
    this.followCatalogue = followCatalogue;
    // Until the first round placed them, the cell's merchants are refused for a retry, not as unknown.
    const listed = await merchants();
    this.known = new Set(listed.map(merchantKey));
    for (const key of this.known) this.listedSinceMs.set(key, Number.NEGATIVE_INFINITY);
    await this.runTick();
  }

  /**
   * Makes this process the merchant's owner for a while (a move out of the cell runs where the
   * mesh is): pins it here, so that its owner hands it over and this process claims it, and
   * resolves once it is hosted here with the unpin to call when done. Rejects after `timeoutMs`.
   */
  async acquire(tenant: string, merchant: string, timeoutMs: number): Promise<() => Promise<void>> {
    const ref = { tenant, merchant };
    const key = merchantKey(ref);
    const unpin = (): Promise<void> => this.init.coordination.unpin(ref, this.init.processId).catch((error: unknown) => this.init.logger.warn({ err: error, ...ref }, 'could not unpin a merchant; the pin expires'));
    await this.init.coordination.pin(ref, this.init.processId, Math.max(timeoutMs, 10 * this.init.leaseTtlMs));
    if (this.hosted.has(key)) return unpin;
    const hosted = new Promise<void>((resolve) => this.hostedWaiters.set(key, [...(this.hostedWaiters.get(key) ?? []), resolve]));
    let timer: TimerHandle | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = this.init.clock.setTimer(timeoutMs, () => resolve('timeout'))));
    const outcome = await Promise.race([hosted, timedOut]);
    timer?.cancel();
    if (outcome === 'timeout') {
      await unpin();
      throw new Error(`merchant ${merchant} was not handed to this process within ${timeoutMs} ms`);
    }
    return unpin;
  }

  /**
   * A merchant moved into the cell, hosted by this process's core already (the mesh's mover did
   * it): recorded as owned here, so no other process claims it; it is spread at a later round.
   */
  adopt(tenant: string, merchant: string): Promise<void> {
    // Between two rounds: a round that read the merchants before the move in would let it go again.
    const adopted = this.ticking.then(() => this.adoptNow(tenant, merchant));
    this.ticking = adopted.catch(() => undefined);
    return adopted;
  }

  private async adoptNow(tenant: string, merchant: string): Promise<void> {
    const ref = { tenant, merchant };
    const key = merchantKey(ref);
    this.known.add(key);
    this.listedSinceMs.set(key, this.init.clock.now());
    const token = this.token;
    if (token !== undefined && (await this.init.coordination.claim(ref, { processId: this.init.processId, token }))) {
      this.hosted.set(key, ref);
      return;
    }
    this.init.logger.error({ process: this.init.processId, ...ref }, 'a merchant moved in, but another process of the cell holds it; it is served there');
  }

  /**
   * Where a device of `tenant`/`merchant` is served now: here, at its owner, or nowhere (no owner
   * right now). A merchant the cell does not have is "here": the core refuses it as usual.
   */
  placement(tenant: string, merchant: string): MerchantPlacement | undefined {
    const key = merchantKey({ tenant, merchant });
    if (this.hosted.has(key) || !this.known.has(key)) return { here: true };
    const owner = this.owners.get(key);
    return owner === undefined ? undefined : { here: false, owner };
  }

  /** True while a live process owns the merchant, as Redis says now. */
  async ownerIsLive(merchant: MerchantRef): Promise<boolean> {
    const [owner] = await this.init.coordination.owners([merchant]);
    if (owner === undefined) return false;
    const live = await this.init.coordination.liveProcesses();
    return live.some((process) => process.id === owner.processId && process.token === owner.token);
  }

  /** The merchants hosted here (merchantKey), for tests and logs. */
  ownedMerchants(): string[] {
    return [...this.hosted.keys()].sort();
  }

  /** Hands every merchant over (writes under way finish first) and deletes the lease: siblings take over at once. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.cancel();
    await this.ticking;
    for (const merchant of [...this.hosted.values()]) await this.handOver(merchant);
    const token = this.token;
    this.token = undefined;
    if (token !== undefined) await this.init.coordination.unregister(this.init.processId, token).catch((error: unknown) => this.init.logger.warn({ err: error }, 'could not delete the process lease; it expires'));
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.init.clock.setTimer(this.init.renewIntervalMs, () => {
      void this.runTick().finally(() => this.schedule());
    });
  }

  /** One tick at a time: a slow Redis delays the next, never overlaps it. */
  private runTick(): Promise<void> {
    this.ticking = this.ticking.then(() => this.tick()).catch((error: unknown) => this.init.logger.warn({ err: error, process: this.init.processId }, 'a round of the process lease failed; retrying'));
    return this.ticking;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    if (this.token === undefined) await this.registerLease();
    else if (!(await this.renewLease())) return;
    if (this.host === undefined || this.address === undefined) return;
    // A catalogue that cannot be followed now still leaves the owners of the merchants it knows to be looked at.
    await this.followCatalogue?.().catch((error: unknown) => this.init.logger.warn({ err: error, process: this.init.processId }, 'could not follow the cell\'s catalogue this round; retrying'));
    await this.balance(this.host);
  }

  private async registerLease(): Promise<void> {
    const sentAtMs = this.init.clock.now();
    this.token = await this.init.coordination.register(this.init.processId, this.init.leaseTtlMs);
    this.renewedAtMs = sentAtMs;
    this.init.logger.info({ process: this.init.processId, token: this.token }, 'process lease taken');
  }

  /** False when the lease is lost (and everything dropped) or its state is unknown. */
  private async renewLease(): Promise<boolean> {
    const { coordination, clock, leaseTtlMs, processId } = this.init;
    const token = this.token!;
    const sentAtMs = clock.now();
    // Past the TTL (the process was paused, say) the lease may be another's already.
    if (sentAtMs - this.renewedAtMs >= leaseTtlMs) {
      await this.leaseLost('the lease ran out before it was renewed');
      return false;
    }
    let renewed: 'renewed' | 'expired' | 'replaced';
    try {
      renewed = await coordination.renew(processId, token, this.address, leaseTtlMs);
    } catch (error) {
      this.init.logger.warn({ err: error, process: processId }, 'could not renew the process lease');
      if (clock.now() - this.renewedAtMs >= leaseTtlMs) await this.leaseLost('the lease could not be renewed within its TTL');
      return false;
    }
    if (renewed !== 'renewed') {
      // Only another process registering under this id replaces a lease that runs: ids must differ.
      if (renewed === 'replaced') this.init.logger.error({ process: processId }, `another process registered under the id ${processId}: give each process of the cell its own processes.id (--process-id)`);
      await this.leaseLost(renewed === 'replaced' ? 'another process took the lease of this id' : 'the lease expired');
      return false;
    }
    this.renewedAtMs = sentAtMs;
    // A renewal that took longer than the TTL came back too late to count.
    if (clock.now() - sentAtMs >= leaseTtlMs) {
      await this.leaseLost('the renewal came back after the TTL');
      return false;
    }
    return true;
  }

  /**
   * The lease is gone: another process may own our merchants already. Stop serving them at once,
   * let their writes (refused by the store's fence) settle, and only then take a new lease, so
   * that no write queued under the old token goes out under the new one.
   */
  private async leaseLost(reason: string): Promise<void> {
    this.init.logger.warn({ process: this.init.processId, merchants: this.ownedMerchants(), reason }, 'process lease lost: dropping every merchant');
    this.token = undefined;
    const dropped = [...this.hosted.values()];
    this.hosted.clear();
    this.owners.clear();
    this.live.clear();
    for (const { tenant, merchant } of dropped) this.host?.dropMerchant(tenant, merchant);
    await Promise.all(dropped.map(({ tenant, merchant }) => this.host?.whenMerchantIdle(tenant, merchant).catch(() => undefined)));
    if (this.endsOnLeaseLoss()) {
      this.stopped = true;
      return;
    }
    await this.registerLease();
  }

  /** Claims, hands over and records where each merchant is, from the live processes and the owners. */
  private async balance(host: OwnedMerchantsHost): Promise<void> {
    const { coordination, clock, leaseTtlMs, processId } = this.init;
    const token = this.token!;
    const nowMs = clock.now();
    const live = await coordination.liveProcesses();
    for (const process of live) if (!this.firstSeenMs.has(`${process.id}/${process.token}`)) this.firstSeenMs.set(`${process.id}/${process.token}`, nowMs);
    for (const seen of [...this.firstSeenMs.keys()]) if (!live.some((process) => `${process.id}/${process.token}` === seen)) this.firstSeenMs.delete(seen);
    const byId = new Map(live.map((process) => [process.id, process]));
    this.live = byId;
    const merchants = await this.merchants();
    this.known = new Set(merchants.map(merchantKey));
    for (const key of this.known) if (!this.listedSinceMs.has(key)) this.listedSinceMs.set(key, nowMs);
    for (const key of [...this.listedSinceMs.keys()]) if (!this.known.has(key)) this.listedSinceMs.delete(key);
    const self: OwnerRecord = { processId, token };
    // Moved out of the cell (the mover released it from the core already) or removed from its
    // catalogue (following the catalogue closed its devices and let its writes land): the owner record goes too.
    for (const [key, merchant] of [...this.hosted]) {
      if (this.known.has(key)) continue;
      this.init.logger.info({ process: processId, ...merchant }, 'merchant left the cell');
      if (this.init.merchantsMove !== true) {
        await this.handOver(merchant);
        continue;
      }
      this.hosted.delete(key);
      await coordination.release(merchant, self);
    }
    const [recorded, pins] = await Promise.all([coordination.owners(merchants), coordination.pins(merchants)]);
    const everyone = assignOwners(merchants, live.map((process) => process.id));
    const settled = assignOwners(
      merchants,
      live.filter((process) => process.id === processId || nowMs - (this.firstSeenMs.get(`${process.id}/${process.token}`) ?? nowMs) >= leaseTtlMs).map((process) => process.id),
    );
    // A pinned merchant goes to the live process it is pinned to, whatever the hashing says.
    for (const [index, merchant] of merchants.entries()) {
      const pinned = pins[index];
      if (pinned !== undefined && byId.has(pinned)) {
        everyone.set(merchantKey(merchant), pinned);
        settled.set(merchantKey(merchant), pinned);
      }
    }
    const owners = new Map<string, ProcessRecord>();
    for (const [index, merchant] of merchants.entries()) {
      const key = merchantKey(merchant);
      const owner = recorded[index];
      const ownerProcess = owner === undefined ? undefined : byId.get(owner.processId);
      const ownerLive = ownerProcess !== undefined && ownerProcess.token === owner!.token;
      if (owner?.processId === processId && owner.token === token) {
        if (!this.hosted.has(key)) await this.host_(host, merchant);
        else if (settled.get(key) !== processId) await this.handOver(merchant);
        continue;
      }
      if (this.hosted.has(key)) {
        // Recorded for another: our claim is gone (only a lost lease does that, which drops all).
        this.hosted.delete(key);
        host.dropMerchant(merchant.tenant, merchant.merchant);
      }
      // A merchant listed lately (moved in, or created) is left for a lease period to the process that hosts it first (the speaker, for a move in).
      const listedLongEnough = nowMs - (this.listedSinceMs.get(key) ?? nowMs) >= leaseTtlMs || pins[index] === processId;
      if (ownerLive) owners.set(key, ownerProcess);
      else if (everyone.get(key) === processId && listedLongEnough && (await coordination.claim(merchant, self))) await this.host_(host, merchant);
    }
    this.owners = owners;
  }

  private async host_(host: OwnedMerchantsHost, merchant: MerchantRef): Promise<void> {
    const key = merchantKey(merchant);
    this.hosted.set(key, merchant);
    this.init.logger.info({ process: this.init.processId, ...merchant }, 'hosting merchant');
    await host.hostMerchant(merchant.tenant, merchant.merchant);
    for (const resolve of this.hostedWaiters.get(key) ?? []) resolve();
    this.hostedWaiters.delete(key);
  }

  /**
   * Gives a merchant up for its rightful owner: new writes wait, its devices are told to
   * reconnect, the writes under way and the acked cursors land, then it is released here and its
   * owner record deleted, after which the winner claims it at its next tick.
   */
  private async handOver(merchant: MerchantRef): Promise<void> {
    const host = this.host;
    const token = this.token;
    if (host === undefined || token === undefined) return;
    const { tenant, merchant: id } = merchant;
    this.init.logger.info({ process: this.init.processId, ...merchant }, 'handing merchant over');
    const unfence = host.fence(tenant, id);
    try {
      await host.whenMerchantIdle(tenant, id);
      await host.cursorsFlushed().catch(() => undefined);
      this.hosted.delete(merchantKey(merchant));
      host.dropMerchant(tenant, id);
    } finally {
      unfence();
    }
    await this.init.coordination.release(merchant, { processId: this.init.processId, token });
  }
}
