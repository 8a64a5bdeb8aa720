/**
 * The store's share of the hot path: how much CPU LevelDB (and the LevelStore adapter in front
 * of it) takes to write exactly what the core wrote, replayed alone. `hot-path` records the
 * core's writes for a stretch of messages after its measured window, then replays them into a
 * fresh store in the same groups (the writes of one tick go together, so the group commit
 * merges them as it did in the cell) and reports the replay's CPU per message: a floor under the
 * core's figure that no change to the core's code can go below while it writes these ops with
 * these guarantees.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LevelStore, type StoreOp } from '../platform/store/index.js';

/** A LevelStore that keeps the writes it is given, grouped by tick, while recording. */
export class RecordingLevelStore extends LevelStore {
  private recording: StoreOp[][] | undefined;
  private readonly ticks: StoreOp[][][] = [];

  override write(ops: readonly StoreOp[]): Promise<void> {
    this.recording?.push([...ops]);
    return super.write(ops);
  }

  startRecording(): void {
    this.recording = [];
  }

  /** Closes the tick under way: its writes are replayed together. */
  endTick(): void {
    if (this.recording === undefined) return;
    this.ticks.push(this.recording);
    this.recording = [];
  }

  /** The ticks recorded, and recording stopped. */
  takeRecording(): StoreOp[][][] {
    this.endTick();
    this.recording = undefined;
    return this.ticks.splice(0);
  }
}

export interface StoreFloor {
  /** Process CPU (all threads) of the timed replay, per message of it. */
  cpuMicrosPerMessage: number;
  opsPerMessage: number;
  /** Key and value characters written per message. */
  bytesPerMessage: number;
}

/**
 * Replays `ticks` into a fresh store twice: once to warm it up, then again under the CPU clock,
 * each key written anew. `messages` is how many messages the ticks carried. A floor indeed: a
 * few tens of thousands of messages stay within one memtable, so the replay leaves out the
 * flushes and compactions that the cell's larger store also pays for.
 */
export async function replayStoreFloor(ticks: StoreOp[][][], messages: number, sync: boolean): Promise<StoreFloor> {
  const directory = mkdtempSync(join(tmpdir(), 'cellmesh-store-floor-'));
  const store = new LevelStore({ directory, sync });
  await store.open();
  try {
    for (const tick of ticks) await Promise.all(tick.map((ops) => store.write(ops)));
    let ops = 0;
    let bytes = 0;
    for (const tick of ticks) {
      for (const write of tick) {
        ops += write.length;
        for (const op of write) bytes += op.key.length + (op.type === 'put' ? op.value.length : 0);
      }
    }
    const before = process.cpuUsage();
    for (const tick of ticks) await Promise.all(tick.map((write) => store.write(write)));
    const cpu = process.cpuUsage(before);
    return { cpuMicrosPerMessage: (cpu.user + cpu.system) / messages, opsPerMessage: ops / messages, bytesPerMessage: bytes / messages };
  } finally {
    await store.close();
    rmSync(directory, { recursive: true, force: true });
  }
}
