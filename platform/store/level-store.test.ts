import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LevelStore } from './level-store.js';
import { StoreError, type StoreOp } from './store.js';
import { describeStoreContract } from '../../testing/store-contract.js';

async function makeDirectory(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'cellmesh-level-store-'));
}

describeStoreContract('LevelStore', async () => {
  const directory = await makeDirectory();
  return {
    store: new LevelStore({ directory }),
    cleanup: () => rm(directory, { recursive: true, force: true }),
  };
});

/** Puts of `count` keys named `${prefix}/0`, `${prefix}/1`... as one write. */
function puts(prefix: string, count: number): StoreOp[] {
  return Array.from(
    { length: count },
    (_, index): StoreOp => ({ type: 'put', key: `${prefix}/${index}`, value: 'x' }),
  );
}

/** The adapter's one call into LevelDB per flush (a chained batch), spied on to see the flushes. */
type BatchSpyTarget = { writeBatch: (ops: unknown[]) => Promise<void> };

describe('LevelStore', () => {
  let directory: string;
  const opened: LevelStore[] = [];

  async function openStore(init: { maxBatchOps?: number; maxQueuedOps?: number; minFlushIntervalMs?: number } = {}): Promise<LevelStore> {
    const store = new LevelStore({ directory, ...init });
    opened.push(store);
    await store.open();
    return store;
  }

  beforeEach(async () => {
    directory = await makeDirectory();
  });

  afterEach(async () => {
    vi.restoreAllMocks();
    await Promise.all(opened.splice(0).map((store) => store.close()));
    await rm(directory, { recursive: true, force: true });
  });

  describe('group commit', () => {
    it('coalesces 500 concurrent writes into a handful of batches', async () => {
      const store = await openStore();
      await Promise.all(Array.from({ length: 500 }, (_, index) => store.write(puts(`burst/${index}`, 1))));
      const { batches, writes } = store.stats();
      expect(writes).toBe(500);
      expect(batches).toBeLessThanOrEqual(5);
      const values = await store.getMany(Array.from({ length: 500 }, (_, index) => `burst/${index}/0`));
      expect(values.every((value) => value === 'x')).toBe(true);
    });

    it('groups the writes of concurrent writers that each wait for their own acks', async () => {
      const store = await openStore();
      const writerCount = 50;
      const writesPerWriter = 10;
      await Promise.all(
        Array.from({ length: writerCount }, async (_, writer) => {
          for (let round = 0; round < writesPerWriter; round += 1) {
            await store.write(puts(`writer/${writer}/${round}`, 1));
          }
        }),
      );
      const { batches, writes } = store.stats();
      expect(writes).toBe(writerCount * writesPerWriter);
      // Each round of the writers shares a batch or two; one batch a write would be 500.
      expect(batches).toBeLessThanOrEqual(writes / 10);
    });

    it('spaces flushes by minFlushIntervalMs, so writers that keep writing share fewer batches', async () => {
      const spaced = await openStore({ minFlushIntervalMs: 20 });
      const startedMs = performance.now();
      // Three writes in sequence: the second and third each wait out the interval.
      for (let round = 0; round < 3; round += 1) await spaced.write(puts(`spaced/${round}`, 1));
      expect(performance.now() - startedMs).toBeGreaterThanOrEqual(38);
      // Ten writers writing back to back for the same while: the interval gathers them.
      await Promise.all(
        Array.from({ length: 10 }, async (_, writer) => {
          for (let round = 0; round < 3; round += 1) await spaced.write(puts(`spaced/${writer}/${round}`, 1));
        }),
      );
      expect(spaced.stats().batches).toBeLessThanOrEqual(3 + 4);
    });

    it('caps a batch at maxBatchOps but never splits a write', async () => {
      const batchSpy = vi.spyOn(LevelStore.prototype as unknown as BatchSpyTarget, 'writeBatch');
      const store = await openStore({ maxBatchOps: 10 });
      const sizes = [4, 4, 4, 4, 4, 25, 1, 1];
      await Promise.all(sizes.map((size, index) => store.write(puts(`capped/${index}`, size))));
      // Whole writes in queue order: 4+4, 4+4, then 4 (4+25 would pass 10), 25 alone, 1+1.
      expect(batchSpy.mock.calls.map(([ops]) => ops.length)).toEqual([8, 8, 4, 25, 2]);
      expect(store.stats()).toEqual({ batches: 5, writes: sizes.length });
      const big = await store.getMany(puts('capped/5', 25).map((op) => op.key));
      expect(big.every((value) => value === 'x')).toBe(true);
    });

    it('rejects a write that would pass the queue bound, and recovers once it drains', async () => {
      const store = await openStore({ maxQueuedOps: 10 });
      // Writes called in one turn all wait in the queue: the first flush starts a tick later.
      const accepted = Array.from({ length: 5 }, (_, index) => store.write(puts(`bounded/${index}`, 2)));
      const overflow = store.write(puts('bounded/overflow', 1));
      await expect(overflow).rejects.toBeInstanceOf(StoreError);
      await expect(overflow).rejects.toThrow(/queue full/);
      await Promise.all(accepted);
      await expect(store.write(puts('bounded/after', 1))).resolves.toBeUndefined();
      expect(await store.get('bounded/overflow/0')).toBeUndefined();
    });

    it('rejects every write of a failed batch with StoreError and the cause, then goes on', async () => {
      const injected = new Error('injected I/O failure');
      const batchSpy = vi.spyOn(LevelStore.prototype as unknown as BatchSpyTarget, 'writeBatch');
      batchSpy.mockRejectedValueOnce(injected);
      const store = await openStore();

      const failed = [0, 1, 2].map((index) => store.write(puts(`failed/${index}`, 2)));
      const outcomes = await Promise.allSettled(failed);
      for (const outcome of outcomes) {
        expect(outcome.status).toBe('rejected');
        const reason = (outcome as PromiseRejectedResult).reason as StoreError;
        expect(reason).toBeInstanceOf(StoreError);
        expect(reason.code).toBe('STORE_UNAVAILABLE');
        expect(reason.cause).toBe(injected);
      }
      expect(batchSpy).toHaveBeenCalledTimes(1);
      const failedKeys = ['failed/0/0', 'failed/1/1', 'failed/2/0'];
      expect(await store.getMany(failedKeys)).toEqual([undefined, undefined, undefined]);

      await store.write(puts('after-failure', 1));
      expect(await store.get('after-failure/0')).toBe('x');
      expect(store.stats()).toEqual({ batches: 1, writes: 1 });
    });
  });

  describe('snapshotScan', () => {
    it('reads the range as it was at the call, page by page, whatever is written meanwhile', async () => {
      const store = await openStore();
      await store.write(puts('a', 10));
      const seen: string[] = [];
      for await (const [key] of store.snapshotScan({ gte: 'a/', lt: 'a0' }, 3)) {
        // Written after the scan began: none of it is seen, and the deletions do not hide anything.
        if (seen.length === 0) await store.write([...puts('a/late', 5), { type: 'del', key: 'a/9' }]);
        seen.push(key);
      }
      expect(seen).toEqual(puts('a', 10).map((op) => op.key).sort());
      expect(await store.get('a/9')).toBeUndefined();
    });

    it('ends with StoreError when the store closes during the scan', async () => {
      const store = await openStore();
      await store.write(puts('a', 10));
      const scan = store.snapshotScan({ gte: 'a/', lt: 'a0' }, 2);
      expect((await scan.next()).done).toBe(false);
      await store.close();
      await expect(async () => {
        for await (const _entry of scan);
      }).rejects.toBeInstanceOf(StoreError);
    });
  });

  describe('durability', () => {
    it('keeps the data across close and reopen, including writes still queued at close()', async () => {
      const first = await openStore();
      const writes = Array.from({ length: 200 }, (_, index) => first.write(puts(`kept/${index}`, 1)));
      await first.close();
      await Promise.all(writes);

      const second = await openStore();
      const values = await second.getMany(Array.from({ length: 200 }, (_, index) => `kept/${index}/0`));
      expect(values.every((value) => value === 'x')).toBe(true);
    });

    it('refuses a second store on the same directory with StoreError (LevelDB lock)', async () => {
      await openStore();
      const second = new LevelStore({ directory });
      await expect(second.open()).rejects.toBeInstanceOf(StoreError);
      await expect(second.get('a')).rejects.toBeInstanceOf(StoreError);
      await expect(second.close()).resolves.toBeUndefined();
    });

    describe('across a kill -9', () => {
      let child: ChildProcess | undefined;

      afterEach(() => {
        // A failed assertion must not leave the writer running.
        if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        child = undefined;
      });

      it('keeps every write acknowledged before the kill', async () => {
        const writerScript = fileURLToPath(new URL('./testdata/durable-writer.ts', import.meta.url));
        const acknowledgedBeforeKill = 2_000;
        const writerCount = 16;
        const maxKeys = 1_000_000;
        const spawned = spawn(
          process.execPath,
          ['--import', 'tsx', writerScript, directory, String(writerCount), String(maxKeys)],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        child = spawned;

        const acknowledged: string[] = [];
        let partialLine = '';
        let stderr = '';
        spawned.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
          stderr += chunk;
        });
        spawned.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
          // A line cut short by the kill was never fully printed, so it is no acknowledgement.
          const lines = (partialLine + chunk).split('\n');
          partialLine = lines.pop()!;
          acknowledged.push(...lines);
          if (acknowledged.length >= acknowledgedBeforeKill && spawned.signalCode === null) {
            spawned.kill('SIGKILL');
          }
        });
        // 'close' comes after the pipes are drained, so every line printed before the kill is read.
        const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
          spawned.on('close', (code, closeSignal) => resolve([code, closeSignal]));
        });

        expect({ exitCode, signal, stderr }).toMatchObject({ exitCode: null, signal: 'SIGKILL' });
        expect(acknowledged.length).toBeGreaterThanOrEqual(acknowledgedBeforeKill);

        const reopened = await openStore();
        const values = await reopened.getMany(acknowledged);
        const lost = acknowledged.filter((key, index) => values[index] !== key);
        expect(lost).toEqual([]);
      });
    });
  });
});
