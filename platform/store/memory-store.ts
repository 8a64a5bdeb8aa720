import { MemoryLevel } from 'memory-level';
import type { RangeQuery, Store, StoreOp } from './store.js';
import { StoreGuard, assertValidOps, assertValidRange } from './store-guard.js';

/**
 * The in-memory Store of the simulator and of unit tests, over memory-level.
 *
 * "Durable" here means "applied": the data lives as long as this object. Each write() is one
 * memory-level batch, applied at once when called, so writes are atomic and land in call order.
 */
export class MemoryStore implements Store {
  // The 'utf8' store encoding makes memory-level compare keys with `<` on strings, which is
  // exactly the port's order; its default, 'buffer', would compare UTF-8 bytes.
  private readonly db = new MemoryLevel<string, string>({
    storeEncoding: 'utf8',
    keyEncoding: 'utf8',
    valueEncoding: 'utf8',
  });
  private readonly guard = new StoreGuard('memory store');

  open(): Promise<void> {
    return this.guard.open(() => this.db.open());
  }

  close(): Promise<void> {
    return this.guard.close(() => this.db.close());
  }

  get(key: string): Promise<string | undefined> {
    return this.guard.run('get', () => this.db.get(key));
  }

  getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    return this.guard.run('getMany', () => this.db.getMany([...keys]));
  }

  getManySync(keys: readonly string[]): Array<string | undefined> {
    return this.guard.runSync('getManySync', () => keys.map((key) => this.db.getSync(key)));
  }

  write(ops: readonly StoreOp[]): Promise<void> {
    return this.guard.run('write', async () => {
      assertValidOps(ops);
      await this.db.batch([...ops]);
    });
  }

  range(query: RangeQuery): Promise<Array<[key: string, value: string]>> {
    return this.guard.run('range', async () => {
      assertValidRange(query);
      const { gte, lt, reverse = false, limit } = query;
      return this.db.iterator({ gte, lt, reverse, limit }).all();
    });
  }
}
