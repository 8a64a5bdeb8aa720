import { startCell } from '../assembly/process-cell.js';
import { ConfigError } from '../assembly/config.js';
import { secretSettingsOf, weakSecretProblems } from '../assembly/secret-strength.js';
import { DEMO_ADMIN_TOKEN, DEMO_CLUSTER_SECRET, DEMO_TENANT_SECRET } from './demo-cluster.js';
import { createLogger } from './logger.js';
import { CELL_COMMAND_OPTIONS, CELL_OPTIONS } from '../assembly/cell-options.js';
import { givenValues, refuseUnknownVariables } from './config-environment.js';
import { readConfigFile, resolveCellConfig } from './load-config.js';
import { listenForStopSignal, runUntilSignal } from './signals.js';

interface CellCommandOptions {
  config?: string;
  /** Starts even with guessable secrets (the demo's, say): for local experiments only. */
  insecureAllowWeakSecrets?: boolean;
  /** The flags of the config's options (cli/config-flags.ts). */
  [flag: string]: unknown;
}

/** The secrets published with the project: the demo's, printed in the README. */
const PUBLISHED_SECRETS = [DEMO_TENANT_SECRET, DEMO_CLUSTER_SECRET, DEMO_ADMIN_TOKEN];

export async function runCellCommand(options: CellCommandOptions): Promise<void> {
  refuseUnknownVariables('cell', process.env, CELL_COMMAND_OPTIONS, CELL_OPTIONS);
  if (options.config === undefined) {
    throw new ConfigError('a cell needs a config file with its tenants: pass --config <file> or set CELLMESH_CONFIG (see docs/operations.md)');
  }
  const raw = await readConfigFile(options.config);
  const config = resolveCellConfig(raw, givenValues(CELL_OPTIONS, options, process.env));
  const weakSecrets = weakSecretProblems(secretSettingsOf(config), PUBLISHED_SECRETS);
  if (weakSecrets.length > 0 && options.insecureAllowWeakSecrets !== true) {
    const advice = 'set secrets of your own, or pass --insecure-allow-weak-secrets for a local experiment';
    throw new ConfigError(weakSecrets.length === 1 ? `${weakSecrets[0]}; ${advice}` : `guessable secrets (${advice}):\n${weakSecrets.map((line) => `  ${line}`).join('\n')}`);
  }
  const logger = createLogger(config.log.level, `cell:${config.cell.id}`);
  if (weakSecrets.length > 0) logger.warn({ weakSecrets }, 'starting with guessable secrets (--insecure-allow-weak-secrets): for local experiments only');
  // From before the start: a SIGTERM while the cell starts, or right after it says it listens, stops it gracefully.
  const stopSignal = listenForStopSignal(logger);
  // A process of a cell on Redis in a mesh that loses the speaker lease logged it; another
  // process may speak for the cell already, so this one ends now.
  const cell = await startCell({ config, logger, processMetrics: true, onSpeakerLost: () => process.exit(1) });
  process.stdout.write(`${JSON.stringify({ event: 'listening', cell: cell.cellId, host: config.listen.host, port: cell.port })}\n`);
  await runUntilSignal(stopSignal, () => cell.stop(), config.shutdownGraceSeconds * 1000, logger);
}
