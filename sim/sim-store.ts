import { MemoryStore } from '../cell/store/memory-store.js';
import type { RangeQuery, Store, StoreOp } from '../cell/store/store.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { never, type Life } from './sim-clock.js';

interface PendingWrite {
  readonly ops: readonly StoreOp[];
  readonly dueMs: number;
  readonly life: Life;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The disk of one simulated cell: a MemoryStore that outlives the cell's incarnations, with
 * durability modelled on the Store port's contract ("write() resolves once durable").
 *
 * A write becomes durable `writeLatencyMs` of virtual time after it is called (the fsync of a
 * group commit); only then is it applied, visible to reads, and resolved, in call order. A crash
 * drops every write not yet durable: its caller never hears back, and nothing of it survives,
 * which is the whole of "state kept only where the write completed". The MemoryStore's own
 * writes are atomic, so a durable batch is all there or not at all.
 */
export class SimStore {
  private readonly memory = new MemoryStore();
  private readonly pending: PendingWrite[] = [];
  private timer: TimerHandle | undefined;
  private opened = false;
  private writesCount = 0;
  private droppedCount = 0;

  /**
   * `lying`: a broken disk for the simulator's own tests, which acknowledges a write at once and
   * makes it durable only later, so a crash loses acknowledged writes; the checkers must notice.
   */
  constructor(
    private readonly clock: Clock,
    private readonly writeLatencyMs: number,
    private readonly lying = false,
  ) {}

  async open(): Promise<void> {
    if (this.opened) return;
    this.opened = true;
    await this.memory.open();
  }

  /** Durable writes so far and writes lost to crashes. */
  stats(): { writes: number; droppedByCrash: number } {
    return { writes: this.writesCount, droppedByCrash: this.droppedCount };
  }

  /** The process holding this disk died: what was not durable yet is gone. */
  crash(): void {
    this.droppedCount += this.pending.length;
    this.pending.length = 0;
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** The Store the incarnation `life` uses; its calls go quiet when that incarnation dies. */
  view(life: Life): Store {
    const memory = this.memory;
    const guard = <T>(operation: () => Promise<T>): Promise<T> => {
      if (!life.alive) return never();
      return new Promise<T>((resolve, reject) => {
        operation().then(
          (value) => {
            if (life.alive) resolve(value);
          },
          (error: unknown) => {
            if (life.alive) reject(error);
          },
        );
      });
    };
    return {
      // The disk is opened once by the simulator and closed never: a cell's close is a no-op.
      open: async () => {},
      close: async () => {},
      get: (key: string) => guard(() => memory.get(key)),
      getMany: (keys: readonly string[]) => guard(() => memory.getMany(keys)),
      getManySync: (keys: readonly string[]) => memory.getManySync(keys),
      range: (query: RangeQuery) => guard(() => memory.range(query)),
      write: (ops: readonly StoreOp[]) => (life.alive ? this.enqueue(ops, life) : never()),
    };
  }

  private enqueue(ops: readonly StoreOp[], life: Life): Promise<void> {
    if (this.lying) {
      this.pending.push({ ops: ops.map((op) => ({ ...op })), dueMs: this.clock.now() + this.writeLatencyMs, life, resolve: () => {}, reject: () => {} });
      this.arm();
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      // The ops are copied: the caller may reuse its array once write() returned.
      this.pending.push({ ops: ops.map((op) => ({ ...op })), dueMs: this.clock.now() + this.writeLatencyMs, life, resolve, reject });
      this.arm();
    });
  }

  private arm(): void {
    if (this.timer !== undefined) return;
    const head = this.pending[0];
    if (head === undefined) return;
    this.timer = this.clock.setTimer(Math.max(0, head.dueMs - this.clock.now()), () => {
      this.timer = undefined;
      this.flushDue();
    });
  }

  private flushDue(): void {
    const nowMs = this.clock.now();
    let count = 0;
    while (count < this.pending.length && this.pending[count]!.dueMs <= nowMs) count++;
    const due = this.pending.splice(0, count);
    for (const write of due) {
      // memory-level applies batches in call order; each resolves after it is applied.
      this.writesCount++;
      this.memory.write(write.ops).then(
        () => {
          if (write.life.alive) write.resolve();
        },
        (error: unknown) => {
          if (write.life.alive) write.reject(error);
        },
      );
    }
    this.arm();
  }
}
