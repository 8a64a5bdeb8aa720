import { recordOutcome, type AuditLog } from '../cell/audit-log.js';
import { CellError, ErrorCode } from '../cell/protocol/errors.js';
import { operatingErrorOf } from '../cell/protocol/operating-errors.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Metrics, Registered } from '../platform/metrics.js';
import { chooseDrainTarget, type DrainTarget } from './drain-targets.js';

/**
 * Draining a cell before it is removed (docs/operations.md, "Removing a cell"): every merchant it
 * hosts moves to another live cell of the cluster through the ordinary merchant move
 * (mesh/merchant-move.ts), a bounded number at a time, each to the target the load figures
 * favour at the moment its move starts (so one target does not take everything). From the start
 * of a drain until it is cancelled the cell takes no new merchants: created through the admin
 * API, moved in or placed, they are refused CELL_DRAINING. A drained cell hosts nothing and can
 * be stopped.
 */

export type DrainMerchantState = 'pending' | 'moving' | 'moved' | 'failed';
export const DRAIN_MERCHANT_STATES: readonly DrainMerchantState[] = ['pending', 'moving', 'moved', 'failed'];

/**
 * `idle`: no drain asked. `draining`: moves under way. `drained`: every merchant moved.
 * `failed`: the drain ended with merchants that did not move (asking again retries them).
 * `cancelled`: stopped by the operator; the cell takes merchants again.
 */
export type DrainState = 'idle' | 'draining' | 'drained' | 'failed' | 'cancelled';

export interface DrainMerchantProgress {
  readonly tenant: string;
  readonly merchant: string;
  state: DrainMerchantState;
  /** The cell it is moving or moved to. */
  to?: string | undefined;
  /** Why its move failed. */
  error?: { code: string; message: string } | undefined;
}

export interface DrainProgress {
  readonly cellId: string;
  readonly state: DrainState;
  readonly parallelism: number;
  readonly startedAtMs?: number | undefined;
  readonly finishedAtMs?: number | undefined;
  readonly counts: Record<DrainMerchantState, number>;
  readonly merchants: readonly DrainMerchantProgress[];
}

export interface HostedMerchantId {
  readonly tenant: string;
  readonly merchant: string;
}

export interface CellDrainComponents {
  readonly cellId: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Where every move and the drain's end are recorded (the start and a cancel are recorded by the admin API). */
  readonly audit: AuditLog;
  /** The cell's figures: `cellmesh_drain_merchants{state}` is registered there. */
  readonly metrics: Metrics;
  /** The other live cells that may take merchants, with their gossiped load, read afresh for each move. */
  targets(): DrainTarget[];
  /** The merchants this cell hosts now. */
  hosted(): HostedMerchantId[];
  /** The devices of a merchant connected here now: what its move adds to a target's load. */
  devicesOf(tenant: string, merchant: string): number;
  /** The merchant move (MerchantMover.move): resolves once every cell routes the merchant to `to`. */
  move(tenant: string, merchant: string, to: string): Promise<unknown>;
}

/** Moves at once, at most: each fences its merchant's writes while it copies. */
export const MAX_DRAIN_PARALLELISM = 8;

export class CellDrain {
  private state: DrainState = 'idle';
  private parallelism = 1;
  private startedAtMs: number | undefined;
  private finishedAtMs: number | undefined;
  private merchants: DrainMerchantProgress[] = [];
  private cancelled = false;
  /** The devices each target was sent during this drain: the gossiped load shows them only later. */
  private readonly sentDevices = new Map<string, number>();
  private readonly sentMerchants = new Map<string, number>();
  private readonly gauge: Registered;

  constructor(private readonly components: CellDrainComponents) {
    this.gauge = components.metrics.collectedGauge(
      { name: 'cellmesh_drain_merchants', help: 'Merchants of the drain under way or last run, by state (pending, moving, moved, failed).', labelNames: ['state'] },
      (emit) => {
        const counts = this.counts();
        for (const state of DRAIN_MERCHANT_STATES) emit({ state }, counts[state]);
      },
    );
  }

  /**
   * Starts draining (or answers the drain under way). Refused NO_DRAIN_TARGET when no other live
   * cell could take a merchant; then nothing changes.
   */
  start(options: { parallelism?: number | undefined } = {}): DrainProgress {
    if (this.state === 'draining') return this.progress();
    const { cellId, clock, logger } = this.components;
    if (this.components.targets().length === 0) {
      throw new CellError(ErrorCode.NoDrainTarget, `no other live cell in the cluster of ${cellId} can take its merchants: start or heal one first`);
    }
    this.parallelism = Math.min(MAX_DRAIN_PARALLELISM, Math.max(1, options.parallelism ?? 1));
    this.merchants = this.components.hosted().map(({ tenant, merchant }) => ({ tenant, merchant, state: 'pending' }));
    this.sentDevices.clear();
    this.sentMerchants.clear();
    this.cancelled = false;
    this.state = 'draining';
    this.startedAtMs = clock.now();
    this.finishedAtMs = undefined;
    logger.info({ cell: cellId, merchants: this.merchants.length, parallelism: this.parallelism }, 'draining the cell: moving every merchant to the other cells');
    void this.run();
    return this.progress();
  }

  /** Stops starting moves (those under way finish) and takes merchants again. */
  cancel(): DrainProgress {
    if (this.state === 'idle' || this.state === 'cancelled') return this.progress();
    if (this.state === 'draining') this.cancelled = true;
    else this.state = 'cancelled';
    this.components.logger.info({ cell: this.components.cellId }, 'drain cancelled: the cell takes merchants again');
    return this.progress();
  }

  /** CELL_DRAINING while a drain holds (running, or ended and not cancelled); undefined when merchants may come. */
  merchantIntakeRefusal(): CellError | undefined {
    if (this.cancelled || this.state === 'idle' || this.state === 'cancelled') return undefined;
    return new CellError(ErrorCode.CellDraining, `cell ${this.components.cellId} is draining (cellmesh drain): it takes no new merchants; create or move them to another cell, or cancel the drain`);
  }

  progress(): DrainProgress {
    return {
      cellId: this.components.cellId,
      state: this.state,
      parallelism: this.parallelism,
      startedAtMs: this.startedAtMs,
      finishedAtMs: this.finishedAtMs,
      counts: this.counts(),
      merchants: this.merchants.map((entry) => ({ ...entry })),
    };
  }

  /** Unregisters the metric; a drain under way goes on until its moves end. */
  close(): void {
    this.gauge.unregister();
  }

  private counts(): Record<DrainMerchantState, number> {
    const counts: Record<DrainMerchantState, number> = { pending: 0, moving: 0, moved: 0, failed: 0 };
    for (const entry of this.merchants) counts[entry.state]++;
    return counts;
  }

  private async run(): Promise<void> {
    const workers = Array.from({ length: this.parallelism }, () => this.work());
    await Promise.all(workers);
    const counts = this.counts();
    this.finishedAtMs = this.components.clock.now();
    this.state = this.cancelled ? 'cancelled' : counts.failed > 0 || counts.pending > 0 ? 'failed' : 'drained';
    this.cancelled = false;
    const { cellId, logger, audit } = this.components;
    logger.info({ cell: cellId, state: this.state, counts }, 'drain ended');
    const failed = this.merchants.filter((entry) => entry.state === 'failed').map((entry) => `${entry.tenant}/${entry.merchant}`);
    await audit
      .record({
        actor: 'admin',
        action: 'drain.finish',
        target: cellId,
        details: { state: this.state, counts },
        ...(this.state === 'failed' ? { error: { code: ErrorCode.MoveFailed, message: `merchants that did not move: ${failed.slice(0, 20).join(', ')}` } } : {}),
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'could not record the end of the drain in the audit log'));
  }

  /** One worker: takes the next pending merchant until none is left or the drain is cancelled. */
  private async work(): Promise<void> {
    for (;;) {
      if (this.cancelled) return;
      const entry = this.merchants.find((candidate) => candidate.state === 'pending');
      if (entry === undefined) return;
      await this.moveOne(entry);
    }
  }

  private async moveOne(entry: DrainMerchantProgress): Promise<void> {
    const { tenant, merchant } = entry;
    const { audit, logger } = this.components;
    // Chosen now, not at the start: the load figures moved, and a target may have gone.
    const target = chooseDrainTarget(this.components.targets(), this.sentDevices, this.sentMerchants);
    if (target === undefined) {
      entry.state = 'failed';
      entry.error = { code: ErrorCode.NoDrainTarget, message: 'no other live cell could take it' };
      return;
    }
    const devices = Math.max(1, this.components.devicesOf(tenant, merchant));
    this.sentDevices.set(target, (this.sentDevices.get(target) ?? 0) + devices);
    this.sentMerchants.set(target, (this.sentMerchants.get(target) ?? 0) + 1);
    entry.state = 'moving';
    entry.to = target;
    try {
      await recordOutcome(audit, { actor: 'admin', action: 'drain.move', tenant, merchant, target, details: { to: target } }, () => this.components.move(tenant, merchant, target));
      entry.state = 'moved';
    } catch (error) {
      // The move undid itself (or, after its commit, the target is the home anyway and the
      // merchant is no longer hosted here): recorded, and the drain goes on with the others.
      this.sentDevices.set(target, (this.sentDevices.get(target) ?? devices) - devices);
      this.sentMerchants.set(target, (this.sentMerchants.get(target) ?? 1) - 1);
      const known = operatingErrorOf(error);
      entry.state = 'failed';
      entry.error = known === undefined ? { code: ErrorCode.Internal, message: 'internal error (see the cell log)' } : { code: known.code, message: known.message };
      logger.warn({ err: error, tenant, merchant, to: target }, 'a merchant of the drain did not move');
    }
  }
}
