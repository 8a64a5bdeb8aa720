import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreError, type Store, type StoreOp } from '../platform/store/store.js';

export interface StoreUnderTest {
  store: Store;
  /** Releases what the store used (a temporary directory, a server); called after close(). */
  cleanup: () => Promise<void>;
}

/**
 * The one contract suite of the Store port; every adapter runs it from its own test file.
 *
 * `createStore` returns a fresh, empty store that is not yet open. The suite opens it before
 * each test and closes it (close is idempotent) before calling `cleanup`.
 */
export function describeStoreContract(
  name: string,
  createStore: () => Promise<StoreUnderTest>,
): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await createStore());
      await store.open();
    });

    afterEach(async () => {
      await store.close();
      await cleanup();
    });

    const put = (key: string, value: string): Promise<void> => store.write([{ type: 'put', key, value }]);

    // JSON.stringify escapes lone surrogates, so any key gives a value that every store keeps.
    const valueFor = (key: string): string => `value of ${JSON.stringify(key)}`;

    async function putAll(keys: readonly string[]): Promise<void> {
      await store.write(keys.map((key): StoreOp => ({ type: 'put', key, value: valueFor(key) })));
    }

    async function allKeys(): Promise<string[]> {
      // Every key of this suite is shorter than this bound, which sorts after all of them.
      const entries = await store.range({ gte: '', lt: '\uffff'.repeat(8), limit: 100_000 });
      return entries.map(([key]) => key);
    }

    describe('single keys', () => {
      it('returns undefined for a missing key', async () => {
        expect(await store.get('missing')).toBeUndefined();
      });

      it('returns what was put, and a later put replaces it', async () => {
        await put('greeting', 'hello');
        expect(await store.get('greeting')).toBe('hello');
        await put('greeting', 'bonjour');
        expect(await store.get('greeting')).toBe('bonjour');
      });

      it('deletes a key, and deleting a missing key is harmless', async () => {
        await put('doomed', 'x');
        await store.write([{ type: 'del', key: 'doomed' }]);
        expect(await store.get('doomed')).toBeUndefined();
        await store.write([{ type: 'del', key: 'never-was' }]);
        expect(await store.get('never-was')).toBeUndefined();
      });

      it('keeps values exactly: empty, non-ASCII, control characters, large', async () => {
        const values = [
          '',
          'plain',
          'é 中文 😀 \u{1F9D1}\u200D\u{1F4BB}',
          'line\nnull\u0000tab\t',
          'x'.repeat(256 * 1024),
        ];
        await store.write(
          values.map((value, index): StoreOp => ({ type: 'put', key: `v/${index}`, value })),
        );
        expect(await store.getMany(values.map((_, index) => `v/${index}`))).toEqual(values);
      });

      it('refuses a value with a lone surrogate, and keeps nothing of that write', async () => {
        const refused = store.write([
          { type: 'put', key: 'fine', value: 'ok' },
          { type: 'put', key: 'broken', value: 'half a pair: \ud83d' },
        ]);
        await expect(refused).rejects.toThrow(/lone surrogate/);
        expect(await store.getMany(['fine', 'broken'])).toEqual([undefined, undefined]);
      });
    });

    describe('getMany', () => {
      it('returns values in the order asked, undefined for gaps, repeats included', async () => {
        await store.write([
          { type: 'put', key: 'a', value: '1' },
          { type: 'put', key: 'b', value: '2' },
        ]);
        expect(await store.getMany(['b', 'gap', 'a', 'b'])).toEqual(['2', undefined, '1', '2']);
        expect(await store.getMany([])).toEqual([]);
      });

      it('answers getManySync, where the adapter has it, exactly as getMany', async () => {
        if (store.getManySync === undefined) return;
        await store.write([
          { type: 'put', key: 'a', value: '1' },
          { type: 'put', key: 'b', value: '2' },
        ]);
        const write = store.write([{ type: 'put', key: 'c', value: '3' }]);
        await write;
        const asked = ['b', 'gap', 'a', 'c'];
        expect(store.getManySync(asked)).toEqual(await store.getMany(asked));
        expect(store.getManySync(asked)).toEqual(['2', undefined, '1', '3']);
      });
    });

    describe('atomic writes', () => {
      it('applies the ops of one write in order', async () => {
        await store.write([
          { type: 'put', key: 'k', value: '1' },
          { type: 'put', key: 'k', value: '2' },
          { type: 'put', key: 'gone', value: 'x' },
          { type: 'del', key: 'gone' },
        ]);
        expect(await store.getMany(['k', 'gone'])).toEqual(['2', undefined]);
      });

      it('makes all the ops of a write visible together, never a part of them', async () => {
        const keys = Array.from({ length: 500 }, (_, index) => `atomic/${String(index).padStart(4, '0')}`);
        let written = false;
        const writing = putAll(keys).then(() => {
          written = true;
        });
        const snapshots: Array<Array<string | undefined>> = [];
        for (let round = 0; round < 1_000 && !written; round += 1) snapshots.push(await store.getMany(keys));
        await writing;
        snapshots.push(await store.getMany(keys));
        for (const snapshot of snapshots) {
          const present = snapshot.filter((value) => value !== undefined).length;
          expect([0, keys.length]).toContain(present);
        }
        expect(snapshots.at(-1)!.every((value) => value !== undefined)).toBe(true);
      });

      it('resolves an empty write', async () => {
        await expect(store.write([])).resolves.toBeUndefined();
      });

      it('resolves concurrent writes in call order, and the last write to a key wins', async () => {
        const resolved: number[] = [];
        const writes = Array.from({ length: 300 }, (_, index) =>
          store
            .write([
              { type: 'put', key: 'contended', value: String(index) },
              { type: 'put', key: `own/${String(index).padStart(3, '0')}`, value: String(index) },
            ])
            .then(() => {
              resolved.push(index);
            }),
        );
        await Promise.all(writes);
        expect(resolved).toEqual(Array.from({ length: 300 }, (_, index) => index));
        expect(await store.get('contended')).toBe('299');
        const own = await store.range({ gte: 'own/', lt: 'own/\uffff', limit: 1_000 });
        expect(own.map(([, value]) => Number(value))).toEqual(resolved);
      });
    });

    describe('range', () => {
      beforeEach(async () => {
        await putAll(['a', 'b', 'c', 'd', 'e']);
      });

      it('includes the lower bound and excludes the upper one', async () => {
        const entries = await store.range({ gte: 'b', lt: 'd', limit: 10 });
        expect(entries).toEqual([
          ['b', valueFor('b')],
          ['c', valueFor('c')],
        ]);
      });

      it('goes newest first when reverse, within the same bounds', async () => {
        const entries = await store.range({ gte: 'b', lt: 'd', reverse: true, limit: 10 });
        expect(entries.map(([key]) => key)).toEqual(['c', 'b']);
      });

      it('stops at the limit, from the start of its direction', async () => {
        const forward = await store.range({ gte: 'a', lt: 'z', limit: 2 });
        expect(forward.map(([key]) => key)).toEqual(['a', 'b']);
        const backward = await store.range({ gte: 'a', lt: 'z', reverse: true, limit: 2 });
        expect(backward.map(([key]) => key)).toEqual(['e', 'd']);
      });

      it('returns nothing for an empty or inverted interval', async () => {
        expect(await store.range({ gte: 'c', lt: 'c', limit: 10 })).toEqual([]);
        expect(await store.range({ gte: 'd', lt: 'b', limit: 10 })).toEqual([]);
        expect(await store.range({ gte: 'x', lt: 'z', limit: 10 })).toEqual([]);
      });

      it('refuses a limit that is not a positive integer', async () => {
        for (const limit of [0, -1, 1.5, Number.NaN]) {
          await expect(store.range({ gte: 'a', lt: 'z', limit })).rejects.toThrow(/limit/);
        }
      });
    });

    describe('key order', () => {
      it('sorts common prefixes and zero-padded numbers as strings do', async () => {
        const keys = [
          'conv/1/msg/000000010',
          'conv/10',
          'conv',
          'conv/1/msg/000000009',
          'conv/2',
          'conv/1',
          'conv/1/',
          'conv0',
          'conv/10/msg/000000001',
          'conv/1/msg/000000100',
        ];
        await putAll(keys);
        expect(await allKeys()).toEqual([...keys].sort());
        const messages = await store.range({ gte: 'conv/1/msg/', lt: 'conv/1/msg/\uffff', limit: 10 });
        expect(messages.map(([key]) => key)).toEqual([
          'conv/1/msg/000000009',
          'conv/1/msg/000000010',
          'conv/1/msg/000000100',
        ]);
        const latest = await store.range({
          gte: 'conv/1/msg/',
          lt: 'conv/1/msg/\uffff',
          reverse: true,
          limit: 1,
        });
        expect(latest.map(([key]) => key)).toEqual(['conv/1/msg/000000100']);
      });

      it('sorts by UTF-16 code unit beyond ASCII, lone surrogates included', async () => {
        // Code units where byte orders and UTF-16 order could part: the UTF-8 length steps,
        // both halves of the surrogate range, and the private-use area above it.
        const alphabet = [
          ...['/', '0', '9', 'a', '\u007f', '\u0080', 'é', '\u07ff', '\u0800', '\ud7ff'],
          ...['\ud800', '\udbff', '\udc00', '\udfff', '\ue000', '\uffff'],
        ];
        const nextRandom = seededRandom(20_240_601);
        const keys = new Set<string>(['😀', '\ue000', 'a😀', 'a\uffff', 'a\ue000z']);
        for (let index = 0; index < 300; index += 1) {
          let key = '';
          const length = 1 + Math.floor(nextRandom() * 6);
          for (let position = 0; position < length; position += 1) {
            key += alphabet[Math.floor(nextRandom() * alphabet.length)]!;
          }
          keys.add(key);
        }
        const sorted = [...keys].sort();
        await putAll(sorted);

        expect(await allKeys()).toEqual(sorted);
        expect(await store.getMany(sorted)).toEqual(sorted.map(valueFor));
        const bounds = [
          ['\ud800', '\ue000'],
          ['\u0080', '\ud800'],
          ['a\ud800', 'a\uffff'],
          ['\ue000', '\uffff'],
        ] as const;
        for (const [gte, lt] of bounds) {
          const entries = await store.range({ gte, lt, limit: 1_000 });
          const expected = sorted.filter((key) => gte <= key && key < lt);
          expect(entries.map(([key]) => key)).toEqual(expected);
        }
      });
    });

    describe('closing', () => {
      it('waits for the writes under way, which all succeed', async () => {
        const writes = Array.from({ length: 50 }, (_, index) => put(`closing/${index}`, String(index)));
        await store.close();
        const outcomes = await Promise.allSettled(writes);
        expect(outcomes.every((outcome) => outcome.status === 'fulfilled')).toBe(true);
      });

      it('is idempotent', async () => {
        await Promise.all([store.close(), store.close()]);
        await expect(store.close()).resolves.toBeUndefined();
      });

      it('rejects every operation called after close() with StoreError', async () => {
        const closing = store.close();
        // Called after close() began but before it ended: refused too.
        const late = store.write([{ type: 'put', key: 'late', value: 'x' }]);
        await closing;
        const attempts: Array<Promise<unknown>> = [
          late,
          store.get('a'),
          store.getMany(['a']),
          store.write([{ type: 'put', key: 'a', value: 'x' }]),
          store.range({ gte: 'a', lt: 'z', limit: 1 }),
        ];
        if (store.getManySync !== undefined) {
          const sync = store.getManySync.bind(store);
          attempts.push(new Promise((resolve) => resolve(sync(['a']))));
        }
        for (const attempt of attempts) {
          const error: unknown = await attempt.then(
            () => undefined,
            (reason: unknown) => reason,
          );
          expect(error).toBeInstanceOf(StoreError);
          expect((error as StoreError).code).toBe('STORE_UNAVAILABLE');
        }
      });
    });
  });
}

/** A small deterministic generator (mulberry32), so a failing key set can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4_294_967_296;
  };
}
