import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assembleCell, type AssembledCell } from '../assembly/assemble-cell.js';
import { mintToken, verifyToken, type Identity } from '../cell/access/tokens.js';
import { LimitsConfig, type TenantConfig } from '../cell/settings.js';
import { SystemClock } from '../platform/clock.js';
import { silentLogger } from '../platform/logger.js';
import { PromMetrics } from '../platform/prom-metrics.js';
import { SeededRandom, randomId } from '../platform/random.js';
import { LevelStore, type LevelStoreInit } from '../platform/store/index.js';

export const BENCH_TENANT = 'bench';

/** A benchmark's cell in this process, and how its devices prove who they are. */
export interface InProcessCell {
  readonly cell: AssembledCell;
  /** A verified identity of the bench tenant (an agent when `merchant` is given). */
  identity(user: string, merchant?: string): Promise<Identity>;
  /** Stops the cell and removes its store. */
  close(): Promise<void>;
}

/** The next turn of the event loop (after I/O callbacks), for benchmarks that wait on the cell. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A standalone cell wired as every cell is (the assembly, LevelDB in a temp dir, prom-client as a
 * process counts), whose devices are the benchmark's own ports attached to the core directly.
 */
export async function startInProcessCell(options: {
  name: string;
  seed: number;
  merchants: TenantConfig['merchants'];
  limits: Partial<LimitsConfig>;
  storeSync: boolean;
  /** The cell's LevelDB store, made for its directory (default: a plain LevelStore). */
  store?: (init: LevelStoreInit) => LevelStore;
}): Promise<InProcessCell> {
  const clock = new SystemClock();
  const random = new SeededRandom(options.seed);
  const secret = randomId(random, 32);
  const directory = mkdtempSync(join(tmpdir(), `cellmesh-${options.name}-`));
  const cell = await assembleCell({
    cellId: options.name,
    tenants: [{ id: BENCH_TENANT, secret, origins: [], merchants: options.merchants }],
    limits: LimitsConfig.parse(options.limits),
    clock,
    random,
    store: (options.store ?? ((init) => new LevelStore(init)))({ directory, sync: options.storeSync }),
    metrics: new PromMetrics(),
    logger: silentLogger,
    devices: { open: async () => ({ ws: 'in-process:', http: 'in-process:' }), stopAccepting: () => undefined },
  });
  return {
    cell,
    identity: async (user, merchant) => {
      const token = await mintToken({
        secret,
        tenant: BENCH_TENANT,
        user,
        role: merchant === undefined ? 'customer' : 'agent',
        ...(merchant === undefined ? {} : { merchant }),
        device: 'd1',
        ttlSeconds: 24 * 3600,
        nowMs: clock.now(),
      });
      return verifyToken(token, () => [{ secret }], clock.now());
    },
    close: async () => {
      await cell.stop();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
