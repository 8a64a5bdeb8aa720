// Merchant moves as the fault planner schedules them, through the source cell's production
// MerchantMover, and where each merchant may live because of them: the moves under way, every
// cell a move involved, and the merchants whose cell left the cluster (hosted nowhere, on purpose).
import type { Cluster, CellSlot } from './cluster.js';
import type { MerchantPlan } from './population.js';
import { pickIndex, sampleIndexes } from './rng.js';
import { TENANT, type FaultSpan, type SimWorld } from './sim-world.js';

export class MerchantMoves {
  /** Merchants with a move under way (one at a time each; a move whose source crashed stays here). */
  readonly moving = new Set<string>();
  /** Merchants whose hosting cell left the cluster: hosted nowhere, on purpose. */
  readonly homeless = new Set<string>();
  readonly outcomes = { started: 0, moved: 0, failed: {} as Record<string, number> };
  /** Told when a move starts and when it settles (the desks' checks restart their grace clocks then). */
  onMove: ((merchant: string) => void) | undefined;
  /** Cells each moved merchant was ever moved to or from: where the home check looks for it. */
  private readonly moveCells = new Map<string, Set<string>>();

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: Cluster,
  ) {}

  /** The cells that may host `merchant`: where it started and every cell a move involved. */
  candidateHomes(merchant: MerchantPlan): string[] {
    const moved = this.moveCells.get(merchant.id);
    if (moved === undefined) return [merchant.cellId];
    return [...new Set([merchant.cellId, ...moved])].sort();
  }

  /** The cell of `slot` leaves: the merchants it hosts become homeless (hosted nowhere, on purpose); returns them. */
  markHomeless(slot: CellSlot): MerchantPlan[] {
    const hosted = this.world.population.merchants.filter((merchant) => this.candidateHomes(merchant).includes(slot.id) && slot.incarnation!.hosts(TENANT, merchant.id));
    for (const merchant of hosted) this.homeless.add(merchant.id);
    return hosted;
  }

  /** Moves `count` merchants hosted by the cells of `sources` to cells of `targets`, drawn from the seed. */
  moveMerchants(count: number, sources: readonly string[], targets: readonly string[]): void {
    const { world } = this;
    const sourceCells = new Set(sources);
    const candidates = world.population.merchants.filter(
      (merchant) => sourceCells.has(merchant.cellId) && !this.moving.has(merchant.id) && this.cluster.slots.get(merchant.cellId)?.incarnation?.hosts(TENANT, merchant.id) === true,
    );
    for (const at of sampleIndexes(world.faultRandom, candidates.length, Math.min(count, candidates.length))) {
      const merchant = candidates[at]!;
      const choices = targets.filter((cellId) => cellId !== merchant.cellId);
      if (choices.length > 0) this.moveMerchant(merchant, choices[pickIndex(world.faultRandom, choices.length)]!);
    }
  }

  /**
   * One move through the source cell's MerchantMover, as `POST /v1/admin/merchants/move` starts
   * it. The simulator follows the outcome only to aim its agents and classify sends; the checks
   * look at what the cells host.
   */
  private moveMerchant(merchant: MerchantPlan, to: string): void {
    const { world } = this;
    const source = this.cluster.slots.get(merchant.cellId)!;
    const mover = source.incarnation?.mover;
    if (mover === undefined) return;
    const span: FaultSpan = { kind: 'move', startS: world.seconds(), endS: undefined, detail: `${merchant.id}: ${source.id} -> ${to}` };
    world.faultSpans.push(span);
    this.moving.add(merchant.id);
    world.history.merchantMoving(merchant.id);
    this.onMove?.(merchant.id);
    this.outcomes.started++;
    const cells = this.moveCells.get(merchant.id) ?? new Set<string>();
    cells.add(source.id).add(to);
    this.moveCells.set(merchant.id, cells);
    // A move whose source crashes never settles (its process is gone): it stays under way.
    mover.move(TENANT, merchant.id, to).then(
      () => {
        this.outcomes.moved++;
        merchant.cellId = to;
        this.settleMove(merchant, span);
      },
      (error: unknown) => {
        const code = (error as { code?: string }).code ?? 'UNKNOWN';
        this.outcomes.failed[code] = (this.outcomes.failed[code] ?? 0) + 1;
        span.detail += ` (failed: ${code})`;
        // A failure after the commit leaves the merchant at the target all the same.
        if (this.cluster.slots.get(to)?.incarnation?.hosts(TENANT, merchant.id) === true) merchant.cellId = to;
        this.settleMove(merchant, span);
      },
    );
  }

  private settleMove(merchant: MerchantPlan, span: FaultSpan): void {
    span.endS = this.world.seconds();
    this.moving.delete(merchant.id);
    this.onMove?.(merchant.id);
  }
}
