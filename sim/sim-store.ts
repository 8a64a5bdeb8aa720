import { MemoryStore } from '../platform/store/memory-store.js';
import { StoreError, type RangeQuery, type Store, type StoreOp } from '../platform/store/store.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { never, type Life } from './sim-clock.js';

interface PendingWrite {
  readonly ops: readonly StoreOp[];
  readonly dueMs: number;
  readonly life: Life;
  /** A drawn write error: at its due time the write rejects and nothing of it is applied. */
  readonly fails: boolean;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * A failing disk, in force for a while (a `disk` fault): each read and each write fails with
 * its rate, and each one is slowed by `spikeMs` with `spikeRate` (a stalled fsync, a slow
 * seek). Draws come from the disk's own random stream, at the call, so a seed replays them.
 */
export interface DiskFaults {
  readonly readErrorRate: number;
  readonly writeErrorRate: number;
  readonly spikeRate: number;
  readonly spikeMs: number;
}

export interface DiskStats {
  /** Durable writes so far. */
  readonly writes: number;
  /** Writes lost to crashes (never acknowledged). */
  readonly droppedByCrash: number;
  /** Reads and writes failed by a `disk` fault, and those slowed by a latency spike. */
  readonly readErrors: number;
  readonly writeErrors: number;
  readonly latencySpikes: number;
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
  private readErrors = 0;
  private writeErrors = 0;
  private latencySpikes = 0;
  private faults: DiskFaults | undefined;
  /** The last write handed to the memory store: a failed write settles after it, in call order. */
  private lastApplied: Promise<unknown> = Promise.resolve();

  /**
   * `lying`: a broken disk for the simulator's own tests, which acknowledges a write at once and
   * makes it durable only later, so a crash loses acknowledged writes; the checkers must notice.
   */
  constructor(
    private readonly clock: Clock,
    private readonly writeLatencyMs: number,
    /** The disk's own stream, drawn only while a fault is in force. */
    private readonly random: Random,
    private readonly lying = false,
  ) {}

  /** Puts a `disk` fault in force (undefined: the disk works again). */
  setFaults(faults: DiskFaults | undefined): void {
    this.faults = faults;
  }

  async open(): Promise<void> {
    if (this.opened) return;
    this.opened = true;
    await this.memory.open();
  }

  stats(): DiskStats {
    return { writes: this.writesCount, droppedByCrash: this.droppedCount, readErrors: this.readErrors, writeErrors: this.writeErrors, latencySpikes: this.latencySpikes };
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
    // A read is performed at the call (a snapshot, as a LevelDB iterator takes one) and answered
    // after the spike, if one was drawn; a drawn read error answers at once.
    const guard = <T>(name: string, operation: () => Promise<T>): Promise<T> => {
      if (!life.alive) return never();
      const error = this.drawReadError(name);
      if (error !== undefined) return Promise.reject(error);
      const delayMs = this.drawSpikeMs();
      return new Promise<T>((resolve, reject) => {
        const answer = (settle: () => void): void => {
          if (delayMs === 0) settle();
          else this.clock.setTimer(delayMs, settle);
        };
        operation().then(
          (value) =>
            answer(() => {
              if (life.alive) resolve(value);
            }),
          (failure: unknown) =>
            answer(() => {
              if (life.alive) reject(failure);
            }),
        );
      });
    };
    return {
      // The disk is opened once by the simulator and closed never: a cell's close is a no-op.
      open: async () => {},
      close: async () => {},
      get: (key: string) => guard('get', () => memory.get(key)),
      getMany: (keys: readonly string[]) => guard('getMany', () => memory.getMany(keys)),
      getManySync: (keys: readonly string[]) => {
        const error = this.drawReadError('getManySync');
        if (error !== undefined) throw error;
        return memory.getManySync(keys);
      },
      range: (query: RangeQuery) => guard('range', () => memory.range(query)),
      write: (ops: readonly StoreOp[]) => (life.alive ? this.enqueue(ops, life) : never()),
    };
  }

  private drawReadError(operation: string): StoreError | undefined {
    const faults = this.faults;
    if (faults === undefined || faults.readErrorRate === 0 || this.random.next() >= faults.readErrorRate) return undefined;
    this.readErrors++;
    return new StoreError(`simulated disk: ${operation} failed`);
  }

  /** A latency spike's length, or 0. */
  private drawSpikeMs(): number {
    const faults = this.faults;
    if (faults === undefined || faults.spikeRate === 0 || faults.spikeMs === 0 || this.random.next() >= faults.spikeRate) return 0;
    this.latencySpikes++;
    return faults.spikeMs;
  }

  private enqueue(ops: readonly StoreOp[], life: Life): Promise<void> {
    const faults = this.faults;
    const fails = faults !== undefined && faults.writeErrorRate > 0 && this.random.next() < faults.writeErrorRate;
    // A slow write holds back the ones behind it, as a stalled fsync does: writes land in order.
    const dueMs = this.clock.now() + this.writeLatencyMs + this.drawSpikeMs();
    if (this.lying) {
      this.pending.push({ ops: ops.map((op) => ({ ...op })), dueMs, life, fails: false, resolve: () => {}, reject: () => {} });
      this.arm();
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      // The ops are copied: the caller may reuse its array once write() returned.
      this.pending.push({ ops: ops.map((op) => ({ ...op })), dueMs, life, fails, resolve, reject });
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
      if (write.fails) {
        // Atomic, as the Store port requires: a failed write leaves nothing behind.
        this.writeErrors++;
        const fail = (): void => {
          if (write.life.alive) write.reject(new StoreError('simulated disk: write failed'));
        };
        this.lastApplied.then(fail, fail);
        continue;
      }
      // memory-level applies batches in call order; each resolves after it is applied.
      this.writesCount++;
      const applied = this.memory.write(write.ops);
      this.lastApplied = applied;
      applied.then(
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
