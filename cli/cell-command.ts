import { startCell } from '../cell/cell.js';
import { ConfigError } from '../cell/config.js';
import { createLogger } from './logger.js';
import { readConfigFile, resolveCellConfig, type CellOverrides } from './load-config.js';
import { listenForStopSignal, runUntilSignal } from './signals.js';

interface CellCommandOptions extends CellOverrides {
  config?: string;
}

export async function runCellCommand(options: CellCommandOptions): Promise<void> {
  let config;
  try {
    if (options.config === undefined) {
      throw new ConfigError('a cell needs a config file with its tenants: pass --config <file> or set CELLMESH_CONFIG (see docs/operations.md)');
    }
    const raw = await readConfigFile(options.config);
    const overrides: CellOverrides = { ...options };
    // commander sets `sync: true` unless --no-sync was given; only an explicit flag overrides the file.
    if (options.sync !== false) delete overrides.sync;
    config = resolveCellConfig(raw, overrides);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`cellmesh cell: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const logger = createLogger(config.log.level, `cell:${config.cell.id}`);
  // From before the start: a SIGTERM while the cell starts, or right after it says it listens, stops it gracefully.
  const stopSignal = listenForStopSignal(logger);
  const cell = await startCell({ config, logger, processMetrics: true });
  process.stdout.write(`${JSON.stringify({ event: 'listening', cell: cell.cellId, host: config.listen.host, port: cell.port })}\n`);
  await runUntilSignal(stopSignal, () => cell.stop(), config.shutdownGraceSeconds * 1000, logger);
}
