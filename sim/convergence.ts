// The convergence checks: after each heal, how long until every running cell agrees on
// membership and merchant homes; whether nothing is left to arrive (the settle phase ends early);
// and the checks at the end of the run beyond the history's own (membership, merchant homes,
// lost messages, in-cell delivery during partitions).
import type { TimerHandle } from '../platform/clock.js';
import { holdsClaims, type DirectoryView } from '../mesh/directory.js';
import type { Cluster } from './cluster.js';
import type { InCellStats } from './history.js';
import type { MerchantMoves } from './merchant-moves.js';
import { checkOutageSends, type OutageFigures } from './outage-checks.js';
import type { Partitions } from './partitions.js';
import { TENANT, type SimWorld } from './sim-world.js';
import type { Workload } from './workload.js';

/** Distinct directories the convergence watch's home check remembers per check. */
const MAX_HOME_VIEWS_COMPARED = 8;

export interface HealRecord {
  /** Virtual seconds since the start. */
  readonly atS: number;
  readonly what: string;
  /** Virtual ms until every running cell agreed on membership and merchant homes; null when another fault came first or it never did. */
  convergedMs: number | null;
}

export class Convergence {
  /** Heals (a partition ending, a restart, the final heal) and how long the directory took to converge after each. */
  readonly heals: HealRecord[] = [];
  healAtMs: number | undefined;
  convergedAtMs: number | undefined;
  /** What the sends made while their merchant's home was down came to (set by finalChecks). */
  outage: OutageFigures = { sends: 0, queued: 0, servedWithinBound: 0, acknowledged: 0 };
  private convergenceTimer: TimerHandle | undefined;

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: Cluster,
    private readonly moves: MerchantMoves,
    private readonly workload: Workload,
    private readonly partitions: Partitions,
  ) {}

  /** How often the watches check: less often in large clusters, where a check costs more. */
  checkIntervalMs(): number {
    return this.cluster.slots.size > 200 ? 1_000 : 250;
  }

  /**
   * Measures how long the directory takes to converge after a heal: checked every
   * checkIntervalMs while no partition is in force. A fault that comes first ends the watch.
   */
  watch(what: string): void {
    const { clock } = this.world;
    const record: HealRecord = { atS: this.world.seconds(), what, convergedMs: null };
    this.heals.push(record);
    const startedMs = clock.now();
    this.convergenceTimer?.cancel();
    const check = (): void => {
      this.convergenceTimer = undefined;
      if (!this.partitions.inForce && this.converged()) {
        record.convergedMs = Math.round(clock.now() - startedMs);
        if (what === 'final heal') this.convergedAtMs = clock.now();
        return;
      }
      if (this.world.phase === 'done') return;
      this.convergenceTimer = clock.setTimer(this.checkIntervalMs(), check);
    };
    this.convergenceTimer = clock.setTimer(0, check);
  }

  /** The final heal happened now: the membership bound counts from here. */
  watchFinalHeal(): void {
    this.healAtMs = this.world.clock.now();
    this.watch('final heal');
  }

  /** Nothing left to arrive: every acked message on every device of its parties, and the outboxes empty. */
  quiescent(): boolean {
    const { history } = this.world;
    const { orphaned } = this.workload;
    if (history.pendingSendsOutside(orphaned) > 0 || history.undelivered(orphaned, 1) > 0) return false;
    return this.cluster.outboxWaiting().live === 0;
  }

  finalChecks(): void {
    const { history, scenario } = this.world;
    const { invariants } = scenario;
    history.checkLost(this.workload.orphaned);
    const outage = checkOutageSends(history.allSends(), invariants.outageAcceptWithin, history.startMs);
    this.outage = outage.figures;
    for (const violation of outage.violations) history.violation(violation.kind, violation.message, violation.atMs);
    if (this.convergedAtMs === undefined) {
      for (const problem of [...this.membershipDisagreements(10), ...this.homeDisagreements(10)]) history.violation('membership', `not converged at the end: ${problem}`);
    } else if (this.convergedAtMs - (this.healAtMs ?? 0) > invariants.convergeWithin) {
      history.violation('membership', `converged ${this.convergedAtMs - (this.healAtMs ?? 0)} ms after the heal; the bound is ${invariants.convergeWithin} ms`);
    }
    // Exactly one home per merchant, checked on every live cell whatever the convergence said.
    for (const problem of this.homeDisagreements(10)) history.violation('merchant-home', problem);
    const inCell = this.inCellStats();
    if (inCell.eligible > 0 && inCell.ratio < invariants.inCellDeliveryRatioMin) {
      history.violation('in-cell-delivery', `${inCell.ackedWithinBound} of ${inCell.eligible} in-cell sends during partitions were acked within ${invariants.inCellAckWithin} ms (${(inCell.ratio * 100).toFixed(2)}%); at least ${invariants.inCellDeliveryRatioMin * 100}% must be`);
    }
  }

  /**
   * In-cell delivery during partitions, without the sends to a cell that was down or whose disk
   * failed meanwhile: the autonomy guarantee is about partitions, and a failing disk delays acks
   * by design (STORE_UNAVAILABLE, then the client's retry).
   */
  inCellStats(): InCellStats {
    return this.world.history.inCellDelivery(this.world.scenario.invariants.inCellAckWithin, (cellId, fromMs, toMs) => {
      const slot = this.cluster.slots.get(cellId);
      if (slot === undefined) return true;
      if (slot.downSinceMs !== undefined && slot.downSinceMs <= toMs) return true;
      const diskFailed = slot.diskFaultIntervals.some(([startMs, endMs]) => startMs <= toMs && (endMs === undefined || endMs >= fromMs));
      return diskFailed || slot.downIntervals.some(([downMs, upMs]) => downMs <= toMs && upMs >= fromMs);
    });
  }

  /**
   * Every running cell holds every other as alive at its current incarnation, left ones as left
   * (or forgotten), and the right merchant homes. Homes are checked only once membership agrees,
   * and by homesAgree (the same answer as homeDisagreements(1) at a fraction of the cost).
   */
  private converged(): boolean {
    return this.membershipDisagreements(1).length === 0 && this.homesAgree();
  }

  private membershipDisagreements(limit: number): string[] {
    const problems: string[] = [];
    const up = this.cluster.upSlots();
    for (const viewer of up) {
      const mesh = viewer.incarnation?.mesh;
      if (mesh === undefined || mesh.state !== 'running') {
        problems.push(`${viewer.id} is not running its mesh`);
        if (problems.length >= limit) return problems;
        continue;
      }
      for (const slot of this.cluster.slots.values()) {
        const entry = mesh.directory.get(slot.id);
        if (slot.status === 'up') {
          const incarnation = slot.incarnation?.mesh?.state === 'running' ? slot.incarnation.mesh.incarnation : undefined;
          if (entry === undefined || entry.liveness !== 'alive' || entry.record.incarnation !== incarnation) {
            problems.push(`${viewer.id} holds ${slot.id} as ${entry === undefined ? 'unknown' : `${entry.liveness} incarnation ${entry.record.incarnation}`}; it is alive at incarnation ${incarnation}`);
          }
        } else if (slot.status === 'left' && entry !== undefined && entry.liveness !== 'left') {
          problems.push(`${viewer.id} holds ${slot.id}, which left, as ${entry.liveness}`);
        }
        if (problems.length >= limit) return problems;
      }
      if (mesh.conflicts().length > 0) {
        problems.push(`${viewer.id} reports merchant conflicts: ${mesh.conflicts().map((conflict) => conflict.merchant).join(', ')}`);
        if (problems.length >= limit) return problems;
      }
    }
    return problems;
  }

  /**
   * Each merchant is hosted by exactly one running cell (none once its cell left), and every
   * running cell's directory names that cell as its home. Which cell hosts it is what the cells'
   * cores say, so moves that failed or never finished are judged by their real outcome.
   */
  private homeDisagreements(limit: number): string[] {
    const problems: string[] = [];
    const homes = this.expectedHomes(problems, limit);
    if (problems.length >= limit) return problems;
    for (const viewer of this.cluster.upSlots()) {
      const mesh = viewer.incarnation?.mesh;
      if (mesh === undefined) continue;
      for (const [merchant, expected] of homes) {
        const held = mesh.homeCellOf(TENANT, merchant);
        if (held !== expected) {
          problems.push(`${viewer.id} holds ${held ?? 'no cell'} as the home of ${merchant}; it is ${expected ?? 'homeless (its cell left)'}`);
          if (problems.length >= limit) return problems;
        }
      }
    }
    return problems;
  }

  /** The running cell hosting each merchant, by the cells' cores; problems (more than one, or none) go to `problems`, up to `limit`. */
  private expectedHomes(problems: string[], limit: number): Map<string, string | undefined> {
    const homes = new Map<string, string | undefined>();
    for (const merchant of this.world.population.merchants) {
      const hosting = this.moves.candidateHomes(merchant).filter((cellId) => {
        const slot = this.cluster.slots.get(cellId);
        return slot?.status === 'up' && slot.incarnation?.hosts(TENANT, merchant.id) === true;
      });
      if (hosting.length > 1) problems.push(`${merchant.id} is hosted by ${hosting.length} cells: ${hosting.join(', ')}`);
      else if (hosting.length === 0 && !this.moves.homeless.has(merchant.id)) problems.push(`${merchant.id} is hosted by no running cell`);
      if (problems.length >= limit) return homes;
      homes.set(merchant.id, hosting[0]);
    }
    return homes;
  }

  /**
   * Whether homeDisagreements(1) finds nothing, for the convergence watch. Asking every viewer
   * for every merchant's home is cells x merchants lookups; instead each viewer's directory is
   * compared with those of viewers already found right, and only a viewer unlike all of them is
   * asked merchant by merchant. A directory's homes are a function of its records and their
   * liveness (the rule in mesh/directory.ts), so a viewer holding the same records (same
   * signatures) with the same claim-holding liveness as a right viewer is right too. The final
   * checks still ask every viewer (homeDisagreements).
   */
  private homesAgree(): boolean {
    const problems: string[] = [];
    const homes = this.expectedHomes(problems, 1);
    if (problems.length > 0) return false;
    const agreeing: DirectoryView[] = [];
    for (const viewer of this.cluster.upSlots()) {
      const mesh = viewer.incarnation?.mesh;
      if (mesh === undefined) continue;
      if (agreeing.some((known) => sameHomeInputs(known, mesh.directory))) continue;
      for (const [merchant, expected] of homes) {
        if (mesh.homeCellOf(TENANT, merchant) !== expected) return false;
      }
      // A bound on the comparisons per viewer when the views differ widely.
      if (agreeing.length < MAX_HOME_VIEWS_COMPARED) agreeing.push(mesh.directory);
    }
    return true;
  }
}

/**
 * True when two directories hold the same records (by signature: each is verified, so the same
 * signature is the same record text) with the same claim-holding liveness, which is all the home
 * rule reads. Stops at the first difference.
 */
function sameHomeInputs(a: DirectoryView, b: DirectoryView): boolean {
  if (a.size !== b.size) return false;
  for (const entry of b.values()) {
    const other = a.get(entry.record.cellId);
    if (other === undefined || other.signed.signature !== entry.signed.signature || holdsClaims(other.liveness) !== holdsClaims(entry.liveness)) return false;
  }
  return true;
}
