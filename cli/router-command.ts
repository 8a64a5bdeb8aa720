import { ConfigError } from '../assembly/config.js';
import { parseRouterConfig, type RouterConfig } from '../assembly/router-config.js';
import { startRouter } from '../assembly/process-router.js';
import { weakSecretProblems, type SecretSetting } from '../assembly/secret-strength.js';
import { DEMO_CLUSTER_SECRET } from './demo-cluster.js';
import { createLogger } from './logger.js';
import { readConfigFile } from './load-config.js';
import { listenForStopSignal, runUntilSignal } from './signals.js';

interface RouterCommandOptions {
  config?: string;
  host?: string;
  port?: number;
  logLevel?: string;
  /** Starts even with a guessable cluster secret (the demo's, say): for local experiments only. */
  insecureAllowWeakSecrets?: boolean;
}

/** `cellmesh router`: joins a cluster as an observer and answers route requests (docs/routing.md). */
export async function runRouterCommand(options: RouterCommandOptions): Promise<void> {
  if (options.config === undefined) {
    throw new ConfigError('a router needs a config file with its mesh section: pass --config <file> or set CELLMESH_CONFIG (see docs/operations.md, "Running a router")');
  }
  const raw = await readConfigFile(options.config);
  const listen = typeof raw['listen'] === 'object' && raw['listen'] !== null ? { ...(raw['listen'] as Record<string, unknown>) } : {};
  if (options.host !== undefined) listen['host'] = options.host;
  if (options.port !== undefined) listen['port'] = options.port;
  const log = typeof raw['log'] === 'object' && raw['log'] !== null ? { ...(raw['log'] as Record<string, unknown>) } : {};
  if (options.logLevel !== undefined) log['level'] = options.logLevel;
  const config = parseRouterConfig({ ...raw, ...(Object.keys(listen).length === 0 ? {} : { listen }), ...(Object.keys(log).length === 0 ? {} : { log }) });
  const weakSecrets = weakSecretProblems(secretSettingsOf(config), [DEMO_CLUSTER_SECRET]);
  if (weakSecrets.length > 0 && options.insecureAllowWeakSecrets !== true) {
    const advice = 'set a cluster secret of your own, or pass --insecure-allow-weak-secrets for a local experiment';
    throw new ConfigError(weakSecrets.length === 1 ? `${weakSecrets[0]}; ${advice}` : `guessable secrets (${advice}):\n${weakSecrets.map((line) => `  ${line}`).join('\n')}`);
  }
  const logger = createLogger(config.log.level, `router:${config.router.id}`);
  if (weakSecrets.length > 0) logger.warn({ weakSecrets }, 'starting with guessable secrets (--insecure-allow-weak-secrets): for local experiments only');
  const stopSignal = listenForStopSignal(logger);
  const router = await startRouter({ config, logger, processMetrics: true });
  process.stdout.write(`${JSON.stringify({ event: 'listening', router: router.routerId, host: config.listen.host, port: router.port, mesh: router.transport.addresses() })}\n`);
  await runUntilSignal(stopSignal, () => router.stop(), config.shutdownGraceSeconds * 1000, logger);
}

function secretSettingsOf(config: RouterConfig): SecretSetting[] {
  return [
    { path: 'mesh.clusterSecret', value: config.mesh.clusterSecret },
    ...(config.mesh.acceptClusterSecrets ?? []).map((value, index) => ({ path: `mesh.acceptClusterSecrets[${index}]`, value })),
  ];
}
