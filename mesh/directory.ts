import type { Logger } from '../platform/logger.js';
import { silentLogger } from '../platform/logger.js';
import { invariant } from '../platform/invariant.js';
import { compareRecordOrder, merchantKey, type CellRecord, type HandedOver, type MerchantClaim, type SignedRecord, type VerifiedRecord } from './cell-record.js';
import { rejectAllProofs, type ClaimProofVerifier, type ProofCheck } from './claim-proof.js';
import type { DeadClaim } from './membership-wire.js';
import type { PeerId } from './transport.js';

/**
 * What this cell believes about a cell's liveness.
 * - alive / leaving / left: what the owner's record says (status).
 * - suspect / dead: a claim by the failure detector (this cell's or another's) about one
 *   incarnation; only a record with a higher incarnation clears it.
 */
export type Liveness = 'alive' | 'suspect' | 'dead' | 'leaving' | 'left';

/** A failure detector's claim about one incarnation of a cell. Dead outranks suspect. */
export interface LivenessClaim {
  readonly kind: 'suspect' | 'dead';
  readonly incarnation: number;
}

export interface DirectoryEntry {
  readonly record: CellRecord;
  /** The envelope as received (or signed, for the own record): what anti-entropy relays. */
  readonly signed: SignedRecord;
  readonly liveness: Liveness;
  /** The suspect/dead claim in force, if any (its incarnation is >= the record's). */
  readonly claim: LivenessClaim | undefined;
  /**
   * Virtual time this cell last heard directly from that cell (heartbeat, own record, request,
   * probe answer). Live: it moves in place while the entry is current, so read it, don't keep it.
   */
  readonly lastHeardMs: number;
  /** When `liveness` took its current value; tombstones expire from here. */
  readonly livenessSinceMs: number;
}

interface MutableEntry extends DirectoryEntry {
  lastHeardMs: number;
}

/** A claim at a higher epoch than the home's that displaces it without proof: ignored by routing. */
export interface UnprovenClaim {
  readonly cellId: string;
  readonly epoch: number;
}

/**
 * A merchant claimed by more than its home: two or more cells at the home's epoch, or cells
 * claiming it at a higher epoch without proof (`unproven`, present only when there are some).
 */
export interface MerchantConflict {
  readonly tenant: string;
  readonly merchant: string;
  /** The home's epoch. */
  readonly epoch: number;
  /** The cells claiming it at the home's epoch with a right to, sorted by cell id. */
  readonly claimants: readonly string[];
  /** The home the rule picks everywhere: the lowest cell id among the claimants. */
  readonly winner: string;
  readonly unproven?: readonly UnprovenClaim[];
}

export type MergeOutcome = 'added' | 'updated' | 'stale' | 'peer-mismatch' | 'directory-full';
export type ClaimOutcome = 'applied' | 'stale' | 'unknown' | 'redundant';

export type ChangeListener = (cellId: string, before: DirectoryEntry | undefined, after: DirectoryEntry | undefined) => void;
export type ConflictListener = (conflict: MerchantConflict) => void;

/** The read side of a directory, as CellMesh hands it out. */
/** Where a merchant lives: its home cell and the epoch of the claim that made it the home. */
export interface MerchantHome {
  readonly cellId: string;
  readonly epoch: number;
}

export interface DirectoryView {
  readonly size: number;
  get(cellId: string): DirectoryEntry | undefined;
  values(): IterableIterator<DirectoryEntry>;
  peerOf(cellId: string): PeerId | undefined;
  cellOfPeer(peer: PeerId): string | undefined;
  homeCellOf(tenant: string, merchant: string): string | undefined;
  /** The home cell of a merchant with the epoch of its winning claim; undefined when no cell holding claims claims it. */
  homeOf(tenant: string, merchant: string): MerchantHome | undefined;
  /**
   * For a merchant with no home (homeOf is undefined): the cell that claimed it when it left the
   * cluster, by the same rule over the records of cells that left; undefined otherwise. A cell
   * that stopped gracefully may come back with its disk, so its merchants wait for it.
   */
  departedHomeOf(tenant: string, merchant: string): MerchantHome | undefined;
  conflicts(): MerchantConflict[];
  onChange(listener: ChangeListener): () => void;
  onConflict(listener: ConflictListener): () => void;
}

export interface DirectoryInit {
  readonly selfCellId: string;
  readonly maxCells: number;
  readonly maxTombstones: number;
  readonly tombstoneRetentionMs: number;
  /** Checks the proofs claims carry (claim-proof.ts); default: every proof is invalid. */
  readonly verifyClaimProof?: ClaimProofVerifier;
  readonly logger?: Logger;
}

interface IndexedClaim {
  readonly epoch: number;
  /** Checked once, when the record is indexed: signatures do not change. */
  readonly proof: ProofCheck;
}

interface MerchantClaimants {
  readonly tenant: string;
  readonly merchant: string;
  /** cellId -> its claim, over every record held (serving or not). */
  readonly claims: Map<string, IndexedClaim>;
}

/** Who is home, and who claims more than it may. */
interface Resolution {
  readonly epoch: number;
  /** Admitted claimants at the home's epoch, sorted by cell id; the first is home. */
  readonly claimants: string[];
  /** Claims above the home's epoch without a proof that holds, sorted by cell id. */
  readonly unproven: UnprovenClaim[];
}

/** Liveness states whose cells still host their merchants (and can be routed to). */
export function isServing(liveness: Liveness): boolean {
  return liveness === 'alive' || liveness === 'suspect' || liveness === 'leaving';
}

/**
 * Liveness states whose cells keep their merchant claims: the serving ones, and `dead`. A cell
 * declared dead may be on the other side of a partition, still serving its merchants there, or
 * restarting; its merchants wait for it (cross-cell writes queue in the outboxes; the router
 * sends nobody there) instead of passing to a lower claim, which would make two homes. Only a
 * cell that `left` gives its merchants up.
 */
export function holdsClaims(liveness: Liveness): boolean {
  return isServing(liveness) || liveness === 'dead';
}

/** Dead and left records are tombstones: kept only so older copies cannot come back. */
export function isTombstone(liveness: Liveness): boolean {
  return liveness === 'dead' || liveness === 'left';
}

/**
 * The local view of the cluster: cellId -> the newest record held, its liveness and when the
 * cell was last heard from. Pure state, no I/O or timers; the failure detector, anti-entropy
 * and CellMesh drive it. Every cell applies the same rules to the same records, so views that
 * hold the same records agree (on liveness once the same claims arrived, too).
 *
 * Rules:
 * - A record replaces the held one only when newer by (incarnation, version).
 * - A cell id stays bound to its peer id while the cell lives: a record naming another peer is
 *   accepted only once the held one is a tombstone (a cell re-created with a new key), so one
 *   member of the cluster cannot take over another's cell id; likewise a peer id names one cell.
 * - Claims (suspect/dead about incarnation i) apply when i >= the held incarnation; a record
 *   with a higher incarnation than the claim clears it (SWIM's refutation).
 * - Home of a merchant: among cells holding claims (alive, suspect, leaving, dead) claiming it,
 *   the highest epoch among the admitted claims; ties go to the lowest cell id. A claim is
 *   admitted when nothing lower is claimed (the first claim of a merchant, and every claim at
 *   the lowest epoch claimed), or when it carries a proof that holds: a placement signed by a
 *   configured operator key, or a handover signed by the peer of the cell it names as the
 *   previous home, a cell this directory holds under that peer, which, if it still claims the
 *   merchant, claims it at the handover's `fromEpoch`. So a member of the cluster cannot
 *   displace a home by claiming a higher epoch. Ties and unproven claims above the home are
 *   reported as conflicts (once per new set of claimants). The rule reads only records and
 *   liveness, so every cell picks the same home.
 * - Tombstones are kept `tombstoneRetentionMs`, at most `maxTombstones` (oldest dropped first);
 *   the directory holds at most `maxCells` entries (a tombstone is dropped to make room).
 */
export class Directory implements DirectoryView {
  readonly selfCellId: string;
  private readonly maxCells: number;
  private readonly maxTombstones: number;
  private readonly tombstoneRetentionMs: number;
  private readonly verifyClaimProof: ClaimProofVerifier;
  private readonly logger: Logger;
  private readonly entries = new Map<string, MutableEntry>();
  private readonly cellByPeer = new Map<PeerId, string>();
  private readonly merchants = new Map<string, MerchantClaimants>();
  private readonly conflictsByKey = new Map<string, MerchantConflict>();
  private readonly changeListeners = new Set<ChangeListener>();
  private readonly conflictListeners = new Set<ConflictListener>();
  /**
   * Tombstones held (other cells only), kept as entries change: counting them at every new
   * tombstone was a walk of the directory per dead claim applied, and a heal applies one per cell
   * of the other side at every cell (n³ at 1,000 simulated cells).
   */
  private tombstones = 0;

  constructor(init: DirectoryInit) {
    this.selfCellId = init.selfCellId;
    this.maxCells = init.maxCells;
    this.maxTombstones = init.maxTombstones;
    this.tombstoneRetentionMs = init.tombstoneRetentionMs;
    this.verifyClaimProof = init.verifyClaimProof ?? rejectAllProofs;
    this.logger = init.logger ?? silentLogger;
  }

  get size(): number {
    return this.entries.size;
  }

  get(cellId: string): DirectoryEntry | undefined {
    return this.entries.get(cellId);
  }

  values(): IterableIterator<DirectoryEntry> {
    return this.entries.values();
  }

  peerOf(cellId: string): PeerId | undefined {
    return this.entries.get(cellId)?.record.peerId;
  }

  cellOfPeer(peer: PeerId): string | undefined {
    return this.cellByPeer.get(peer);
  }

  onChange(listener: ChangeListener): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  onConflict(listener: ConflictListener): () => void {
    this.conflictListeners.add(listener);
    return () => this.conflictListeners.delete(listener);
  }

  /** Installs this cell's own record; it must be newer than the held one (a programmer error otherwise). */
  setOwn(verified: VerifiedRecord, nowMs: number): void {
    const { record } = verified;
    invariant(record.cellId === this.selfCellId, () => `setOwn with the record of ${record.cellId}`);
    const held = this.entries.get(record.cellId);
    invariant(held === undefined || compareRecordOrder(record, held.record) > 0, () => `own record ${record.incarnation}.${record.version} is not newer than ${held!.record.incarnation}.${held!.record.version}`);
    this.replace(record.cellId, held, this.entryOf(verified, undefined, held, nowMs, true));
  }

  /**
   * Merges a verified record of another cell. `heard` says it came straight from its owner (a
   * gossip publish by that cell), which counts as hearing from it.
   */
  mergeRecord(verified: VerifiedRecord, options: { nowMs: number; heard: boolean }): MergeOutcome {
    const { record } = verified;
    const assessment = this.assess(record);
    if (assessment !== 'newer') return assessment;
    const held = this.entries.get(record.cellId);
    if (held === undefined && this.entries.size >= this.maxCells && !this.evictOldestTombstone()) return 'directory-full';
    const claim = held?.claim !== undefined && held.claim.incarnation >= record.incarnation ? held.claim : undefined;
    this.replace(record.cellId, held, this.entryOf(verified, claim, held, options.nowMs, options.heard));
    return held === undefined ? 'added' : 'updated';
  }

  /**
   * What `mergeRecord` would do with `record`, without changing anything: what a topic validator
   * needs to accept, ignore or reject before the record is delivered or relayed.
   */
  assess(record: CellRecord): 'newer' | 'stale' | 'peer-mismatch' | 'directory-full' {
    if (record.cellId === this.selfCellId) throw new Error('own records are installed with setOwn');
    const held = this.entries.get(record.cellId);
    if (held !== undefined) {
      if (compareRecordOrder(record, held.record) <= 0) return 'stale';
      if (record.peerId !== held.record.peerId && !isTombstone(held.liveness)) return 'peer-mismatch';
    }
    const otherCell = this.cellByPeer.get(record.peerId);
    if (otherCell !== undefined && otherCell !== record.cellId) {
      const other = this.entries.get(otherCell);
      if (other !== undefined && !isTombstone(other.liveness)) return 'peer-mismatch';
    }
    if (held === undefined && this.entries.size >= this.maxCells && this.tombstones === 0) return 'directory-full';
    return 'newer';
  }

  /** Applies a suspect or dead claim about another cell; see the class comment for the rules. */
  applyClaim(cellId: string, claim: LivenessClaim, nowMs: number): ClaimOutcome {
    if (cellId === this.selfCellId) throw new Error('claims about this cell are refuted, not applied');
    const held = this.entries.get(cellId);
    if (held === undefined) return 'unknown';
    if (claim.incarnation < held.record.incarnation) return 'stale';
    if (held.liveness === 'left') return 'redundant';
    if (held.claim !== undefined) {
      if (held.claim.incarnation > claim.incarnation) return 'stale';
      if (held.claim.incarnation === claim.incarnation && (held.claim.kind === 'dead' || claim.kind === 'suspect')) return 'redundant';
    }
    const liveness = livenessOf(held.record, claim);
    const next: MutableEntry = {
      ...held,
      claim,
      liveness,
      livenessSinceMs: liveness === held.liveness ? held.livenessSinceMs : nowMs,
    };
    this.replace(cellId, held, next);
    return 'applied';
  }

  /** Notes that `cellId` was heard from directly at `nowMs`. */
  markHeard(cellId: string, nowMs: number): void {
    const entry = this.entries.get(cellId);
    if (entry !== undefined && nowMs > entry.lastHeardMs) entry.lastHeardMs = nowMs;
  }

  /** Drops tombstones older than the retention; returns how many. */
  sweep(nowMs: number): number {
    // Every cell sweeps at each connection-keeper round: without tombstones there is nothing to walk for.
    if (this.tombstones === 0) return 0;
    const expired: string[] = [];
    for (const [cellId, entry] of this.entries) {
      if (cellId !== this.selfCellId && isTombstone(entry.liveness) && nowMs - entry.livenessSinceMs >= this.tombstoneRetentionMs) {
        expired.push(cellId);
      }
    }
    for (const cellId of expired) this.remove(cellId);
    return expired.length;
  }

  /** cellId -> [incarnation, version] of every record held, own and tombstones included. */
  digest(): Record<string, [number, number]> {
    const digest: Record<string, [number, number]> = {};
    for (const [cellId, entry] of this.entries) digest[cellId] = [entry.record.incarnation, entry.record.version];
    return digest;
  }

  /** Every dead claim held: the tombstones anti-entropy spreads. */
  deadClaims(): DeadClaim[] {
    const claims: DeadClaim[] = [];
    for (const [cellId, entry] of this.entries) {
      if (entry.claim?.kind === 'dead') claims.push({ cellId, incarnation: entry.claim.incarnation });
    }
    return claims;
  }

  /** Envelopes of the records held that are newer than `digest` or absent from it. */
  *newerThan(digest: Readonly<Record<string, readonly [number, number]>>): Generator<SignedRecord> {
    for (const [cellId, entry] of this.entries) {
      const known = Object.hasOwn(digest, cellId) ? digest[cellId] : undefined;
      if (known === undefined || compareRecordOrder(entry.record, { incarnation: known[0], version: known[1] }) > 0) yield entry.signed;
    }
  }

  /** Cell ids whose record in `digest` is newer than the one held (or is not held). */
  olderThan(digest: Readonly<Record<string, readonly [number, number]>>): string[] {
    const cells: string[] = [];
    for (const [cellId, order] of Object.entries(digest)) {
      const held = this.entries.get(cellId);
      if (held === undefined || compareRecordOrder(held.record, { incarnation: order[0], version: order[1] }) < 0) cells.push(cellId);
    }
    return cells;
  }

  /** The home cell of a merchant by the rule in the class comment; undefined when no serving cell claims it. */
  homeCellOf(tenant: string, merchant: string): string | undefined {
    return this.resolve(merchantKey(tenant, merchant))?.claimants[0];
  }

  homeOf(tenant: string, merchant: string): MerchantHome | undefined {
    const resolution = this.resolve(merchantKey(tenant, merchant));
    const cellId = resolution?.claimants[0];
    return cellId === undefined ? undefined : { cellId, epoch: resolution!.epoch };
  }

  departedHomeOf(tenant: string, merchant: string): MerchantHome | undefined {
    const key = merchantKey(tenant, merchant);
    if (this.resolve(key) !== undefined) return undefined;
    const resolution = this.resolve(key, (cellId) => this.entries.get(cellId)?.liveness === 'left');
    const cellId = resolution?.claimants[0];
    return cellId === undefined ? undefined : { cellId, epoch: resolution!.epoch };
  }

  /** Conflicts in force now, sorted by (tenant, merchant). */
  conflicts(): MerchantConflict[] {
    return [...this.conflictsByKey.values()].sort((a, b) =>
      a.tenant === b.tenant ? compareStrings(a.merchant, b.merchant) : compareStrings(a.tenant, b.tenant),
    );
  }

  private entryOf(
    verified: VerifiedRecord,
    claim: LivenessClaim | undefined,
    held: MutableEntry | undefined,
    nowMs: number,
    heard: boolean,
  ): MutableEntry {
    const liveness = livenessOf(verified.record, claim);
    return {
      record: verified.record,
      signed: verified.signed,
      claim,
      liveness,
      // A cell first learned of second hand gets a grace period from now before it is probed.
      lastHeardMs: heard || held === undefined ? nowMs : held.lastHeardMs,
      livenessSinceMs: held !== undefined && held.liveness === liveness ? held.livenessSinceMs : nowMs,
    };
  }

  private replace(cellId: string, before: MutableEntry | undefined, after: MutableEntry): void {
    // Every path here (own records, merged records, claims) keeps or advances a cell's record, never rolls it back.
    invariant(before === undefined || compareRecordOrder(after.record, before.record) >= 0, () => `record of ${cellId} would go back from ${before!.record.incarnation}.${before!.record.version} to ${after.record.incarnation}.${after.record.version}`);
    this.entries.set(cellId, after);
    if (cellId !== this.selfCellId) this.tombstones += Number(isTombstone(after.liveness)) - Number(before !== undefined && isTombstone(before.liveness));
    if (before !== undefined && before.record.peerId !== after.record.peerId && this.cellByPeer.get(before.record.peerId) === cellId) {
      this.cellByPeer.delete(before.record.peerId);
    }
    this.cellByPeer.set(after.record.peerId, cellId);
    const affected = new Set<string>();
    // A cell's handover notes decide whether another cell's claim holds (proofHolds).
    if (!sameNotes(before?.record.handedOver ?? [], after.record.handedOver ?? [])) {
      addNoted(before?.record, affected);
      addNoted(after.record, affected);
    }
    if (before !== undefined && (before.record === after.record || sameClaims(before.record.merchants, after.record.merchants))) {
      // The index already holds these claims (most record changes are load updates): only a
      // change of liveness can change who wins them.
      if (isServing(before.liveness) !== isServing(after.liveness) || holdsClaims(before.liveness) !== holdsClaims(after.liveness)) {
        for (const claim of after.record.merchants) affected.add(merchantKey(claim.tenant, claim.merchant));
      }
    } else {
      if (before !== undefined) this.unindexMerchants(cellId, before.record, affected);
      this.indexMerchants(cellId, after.record, affected);
    }
    this.emitChange(cellId, before, after);
    this.refreshConflicts(affected);
    if (isTombstone(after.liveness)) this.enforceTombstoneBound();
  }

  private remove(cellId: string): void {
    const before = this.entries.get(cellId);
    if (before === undefined) return;
    this.entries.delete(cellId);
    if (cellId !== this.selfCellId && isTombstone(before.liveness)) this.tombstones--;
    if (this.cellByPeer.get(before.record.peerId) === cellId) this.cellByPeer.delete(before.record.peerId);
    const affected = new Set<string>();
    this.unindexMerchants(cellId, before.record, affected);
    addNoted(before.record, affected);
    this.emitChange(cellId, before, undefined);
    this.refreshConflicts(affected);
  }

  private indexMerchants(cellId: string, record: CellRecord, affected: Set<string>): void {
    for (const claim of record.merchants) {
      const key = merchantKey(claim.tenant, claim.merchant);
      let claimants = this.merchants.get(key);
      if (claimants === undefined) {
        claimants = { tenant: claim.tenant, merchant: claim.merchant, claims: new Map() };
        this.merchants.set(key, claimants);
      }
      claimants.claims.set(cellId, { epoch: claim.epoch, proof: this.verifyClaimProof(claim, { cellId, peerId: record.peerId }) });
      affected.add(key);
    }
  }

  private unindexMerchants(cellId: string, record: CellRecord, affected: Set<string>): void {
    for (const claim of record.merchants) {
      const key = merchantKey(claim.tenant, claim.merchant);
      const claimants = this.merchants.get(key);
      if (claimants === undefined) continue;
      claimants.claims.delete(cellId);
      if (claimants.claims.size === 0) this.merchants.delete(key);
      affected.add(key);
    }
  }

  /**
   * The home of a merchant and the claims it overrules, by the rule in the class comment, over the
   * claims of the cells `counts` (by default those holding claims); undefined when none of them claims it.
   */
  private resolve(key: string, counts: (cellId: string) => boolean = this.holdsClaimsNow): Resolution | undefined {
    const claimants = this.merchants.get(key);
    if (claimants === undefined) return undefined;
    // Routing asks this for every cross-cell write: two passes over the claimants, no proofs checked unless needed.
    let lowest = Number.POSITIVE_INFINITY;
    let highest = Number.NEGATIVE_INFINITY;
    for (const [cellId, claim] of claimants.claims) {
      if (!counts(cellId)) continue;
      if (claim.epoch < lowest) lowest = claim.epoch;
      if (claim.epoch > highest) highest = claim.epoch;
    }
    if (highest < 0) return undefined;
    let epoch = -1;
    let top: string[] = [];
    for (const [cellId, claim] of claimants.claims) {
      if (claim.epoch < epoch || !counts(cellId)) continue;
      if (claim.epoch !== lowest && !this.proofHolds(claimants, cellId, claim.epoch, claim.proof)) continue;
      if (claim.epoch > epoch) {
        epoch = claim.epoch;
        top = [];
      }
      top.push(cellId);
    }
    const unproven: UnprovenClaim[] = [];
    if (highest > epoch) {
      for (const [cellId, claim] of claimants.claims) if (claim.epoch > epoch && counts(cellId)) unproven.push({ cellId, epoch: claim.epoch });
      unproven.sort((a, b) => compareStrings(a.cellId, b.cellId));
    }
    if (top.length > 1) top.sort(compareStrings);
    return { epoch, claimants: top, unproven };
  }

  /** A property, so that resolve's default takes no closure per call (routing asks it for every cross-cell write). */
  private readonly holdsClaimsNow = (cellId: string): boolean => {
    const entry = this.entries.get(cellId);
    return entry !== undefined && holdsClaims(entry.liveness);
  };

  /**
   * Whether a proof lets the claim of `cellId` at `epoch` displace lower ones. A handover counts
   * only if its signer is the peer this directory holds for the cell it names (tombstones
   * included), and that cell's record shows it was the home: it still claims the merchant at
   * the handover's `fromEpoch` (a move under way), or it lists the merchant as handed over to
   * this very cell at this very epoch (a move done). A handover signed by any other member, or
   * an old one replayed, shows neither.
   */
  private proofHolds(claimants: MerchantClaimants, cellId: string, epoch: number, proof: ProofCheck): boolean {
    if (proof.kind === 'placement') return true;
    if (proof.kind !== 'handover') return false;
    const from = this.entries.get(proof.fromCell);
    if (from === undefined || from.record.peerId !== proof.fromPeer) return false;
    const held = claimants.claims.get(proof.fromCell);
    if (held !== undefined) return held.epoch === proof.fromEpoch;
    return (from.record.handedOver ?? []).some(
      (note) => note.tenant === claimants.tenant && note.merchant === claimants.merchant && note.toCell === cellId && note.epoch === epoch,
    );
  }

  private refreshConflicts(keys: Iterable<string>): void {
    for (const key of keys) {
      const top = this.resolve(key);
      const names = this.merchants.get(key);
      if (top === undefined || names === undefined || (top.claimants.length < 2 && top.unproven.length === 0)) {
        this.conflictsByKey.delete(key);
        continue;
      }
      const held = this.conflictsByKey.get(key);
      if (held !== undefined && held.epoch === top.epoch && sameList(held.claimants, top.claimants) && sameUnproven(held.unproven ?? [], top.unproven)) continue;
      const conflict: MerchantConflict = Object.freeze({
        tenant: names.tenant,
        merchant: names.merchant,
        epoch: top.epoch,
        claimants: Object.freeze(top.claimants),
        winner: top.claimants[0] as string,
        ...(top.unproven.length === 0 ? {} : { unproven: Object.freeze(top.unproven) }),
      });
      this.conflictsByKey.set(key, conflict);
      for (const listener of this.conflictListeners) {
        try {
          listener(conflict);
        } catch (error) {
          this.logger.error({ err: error }, 'directory conflict listener failed');
        }
      }
    }
  }

  private emitChange(cellId: string, before: DirectoryEntry | undefined, after: DirectoryEntry | undefined): void {
    for (const listener of this.changeListeners) {
      try {
        listener(cellId, before, after);
      } catch (error) {
        this.logger.error({ err: error, cellId }, 'directory change listener failed');
      }
    }
  }

  private enforceTombstoneBound(): void {
    while (this.tombstones > this.maxTombstones && this.evictOldestTombstone());
  }

  private evictOldestTombstone(): boolean {
    let oldest: string | undefined;
    let oldestMs = Number.POSITIVE_INFINITY;
    for (const [cellId, entry] of this.entries) {
      if (cellId === this.selfCellId || !isTombstone(entry.liveness)) continue;
      if (entry.livenessSinceMs < oldestMs) {
        oldest = cellId;
        oldestMs = entry.livenessSinceMs;
      }
    }
    if (oldest === undefined) return false;
    this.remove(oldest);
    return true;
  }
}

function livenessOf(record: CellRecord, claim: LivenessClaim | undefined): Liveness {
  if (record.status === 'left') return 'left';
  if (claim !== undefined && claim.incarnation >= record.incarnation) return claim.kind;
  return record.status === 'leaving' ? 'leaving' : 'alive';
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((item, index) => item === b[index]);
}

function sameNotes(a: readonly HandedOver[], b: readonly HandedOver[]): boolean {
  return a.length === b.length && a.every((note, index) => {
    const other = b[index];
    return other !== undefined && note.tenant === other.tenant && note.merchant === other.merchant && note.toCell === other.toCell && note.epoch === other.epoch;
  });
}

/** Adds the merchants a record lists as handed over. */
function addNoted(record: CellRecord | undefined, affected: Set<string>): void {
  for (const note of record?.handedOver ?? []) affected.add(merchantKey(note.tenant, note.merchant));
}

function sameUnproven(a: readonly UnprovenClaim[], b: readonly UnprovenClaim[]): boolean {
  return a.length === b.length && a.every((item, index) => item.cellId === b[index]?.cellId && item.epoch === b[index]?.epoch);
}

/** The same merchant claims, proofs included, in the same order (what the merchant index was built from). */
function sameClaims(a: readonly MerchantClaim[], b: readonly MerchantClaim[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index++) {
    const x = a[index] as MerchantClaim;
    const y = b[index] as MerchantClaim;
    if (x.tenant !== y.tenant || x.merchant !== y.merchant || x.epoch !== y.epoch || x.proof?.signature !== y.proof?.signature) return false;
  }
  return true;
}
