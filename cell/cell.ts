import { SystemClock, type Clock } from '../platform/clock.js';
import { SystemRandom, type Random } from '../platform/random.js';
import { AccessServer } from './access/uws-server.js';
import { CellCore } from './cell-core.js';
import type { CellConfig } from './config.js';
import type { Logger } from './logger.js';
import { CellMetrics } from './metrics.js';
import { LevelStore, MemoryStore, type Store } from './store/index.js';

export interface StartCellOptions {
  config: CellConfig;
  logger: Logger;
  /** Defaults to the system clock; tests may pass a virtual one. */
  clock?: Clock;
  random?: Random;
  /** Defaults to the store the config names. */
  store?: Store;
  /** Adds process metrics (CPU, memory, event loop) to /v1/metrics; on for a real process. */
  processMetrics?: boolean;
}

/** A cell listening for devices. */
export interface RunningCell {
  readonly cellId: string;
  readonly port: number;
  readonly core: CellCore;
  readonly metrics: CellMetrics;
  /**
   * Graceful stop: stop accepting, let writes under way finish and be acked, close devices
   * with "going away", close the store. Idempotent.
   */
  stop(): Promise<void>;
}

function storeFromConfig(config: CellConfig): Store {
  return config.store.kind === 'level'
    ? new LevelStore({ directory: config.store.directory, sync: config.store.sync, minFlushIntervalMs: config.store.minFlushIntervalMs })
    : new MemoryStore();
}

/** Production wiring of one cell: uWS access, the configured store, the system clock. */
export async function startCell(options: StartCellOptions): Promise<RunningCell> {
  const { config, logger } = options;
  const store = options.store ?? storeFromConfig(config);
  const metrics = new CellMetrics();
  if (options.processMetrics === true) metrics.collectProcessMetrics();
  await store.open();
  const core = new CellCore({
    cellId: config.cell.id,
    tenants: config.tenants,
    limits: config.limits,
    clock: options.clock ?? new SystemClock(),
    random: options.random ?? new SystemRandom(),
    store,
    metrics,
    logger,
  });
  let ready = false;
  const access = new AccessServer({
    core,
    metrics,
    logger,
    limits: config.limits,
    host: config.listen.host,
    port: config.listen.port,
    isReady: () => ready && !core.isDraining,
  });
  let port: number;
  try {
    port = await access.listen();
  } catch (error) {
    await store.close();
    throw error;
  }
  ready = true;
  logger.info({ cell: config.cell.id, host: config.listen.host, port, store: config.store.kind }, 'cell listening');

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      ready = false;
      access.stopListening();
      await core.drain();
      await store.close();
      logger.info({ cell: config.cell.id }, 'cell stopped');
    })();
    return stopping;
  };
  return { cellId: config.cell.id, port, core, metrics, stop };
}
