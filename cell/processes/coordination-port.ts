/**
 * What the processes of one cell share to divide its merchants (docs/operations.md, "A cell of
 * several processes"): a lease per process, holding a fencing token, and an owner per merchant.
 * The Redis adapter is assembly/redis-coordination.ts; every operation is atomic there.
 */

/** A merchant of the cell. */
export interface MerchantRef {
  readonly tenant: string;
  readonly merchant: string;
}

/** Where siblings reach a process: its own WebSocket and HTTP endpoints. */
export interface ProcessAddress {
  readonly ws: string;
  readonly http: string;
}

/** A live process: its lease exists. */
export interface ProcessRecord extends ProcessAddress {
  readonly id: string;
  /** The fencing token it took at registration; a process that re-registers gets a new one. */
  readonly token: number;
}

/** The owner of a merchant: a process and the token of the lease it held when it claimed. */
export interface OwnerRecord {
  readonly processId: string;
  readonly token: number;
}

export interface ProcessCoordination {
  /**
   * Takes a new fencing token (one counter for the cell, so tokens only grow) and writes this
   * process's lease holding it, expiring after `ttlMs`; answers the token.
   */
  register(processId: string, ttlMs: number): Promise<number>;
  /**
   * Extends the lease if it still holds `token`, and with it the address siblings reach the
   * process at (none before it listens). `expired`: the lease is gone; `replaced`: it holds
   * another token, so another process registered under the same id since.
   */
  renew(processId: string, token: number, address: ProcessAddress | undefined, ttlMs: number): Promise<'renewed' | 'expired' | 'replaced'>;
  /** Deletes the lease if it still holds `token`. */
  unregister(processId: string, token: number): Promise<void>;
  /** Every process whose lease exists and that published its address. */
  liveProcesses(): Promise<ProcessRecord[]>;
  /** The owner of each merchant, in the order asked; undefined where none is recorded. */
  owners(merchants: readonly MerchantRef[]): Promise<Array<OwnerRecord | undefined>>;
  /**
   * Records `self` as the merchant's owner if it has none, or if its owner's lease is gone (or
   * holds another token: the owner re-registered since), and only while `self`'s own lease holds
   * its token. True when `self` owns it now.
   */
  claim(merchant: MerchantRef, self: OwnerRecord): Promise<boolean>;
  /** Deletes the merchant's owner if it is `self`. */
  release(merchant: MerchantRef, self: OwnerRecord): Promise<void>;
  /**
   * Pins each merchant to a process, for a while (`ttlMs`): every process assigns a pinned
   * merchant to that process, so its owner hands it over (the speaker takes a merchant it moves
   * out of the cell). Answers the pins of `merchants`, in the order asked.
   */
  pins(merchants: readonly MerchantRef[]): Promise<Array<string | undefined>>;
  pin(merchant: MerchantRef, processId: string, ttlMs: number): Promise<void>;
  /** Deletes the merchant's pin if it names `processId`. */
  unpin(merchant: MerchantRef, processId: string): Promise<void>;
}

export function merchantKey(merchant: MerchantRef): string {
  return `${merchant.tenant}/${merchant.merchant}`;
}
