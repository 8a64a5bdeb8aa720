import { ConfigError } from '../assembly/config.js';
import { parseRouterConfig, type RouterConfig } from '../assembly/router-config.js';
import { startRouter } from '../assembly/process-router.js';
import { weakSecretProblems, type SecretSetting } from '../assembly/secret-strength.js';
import { DEMO_CLUSTER_SECRET } from './demo-cluster.js';
import { createLogger } from './logger.js';
import { withGivenValues, type GivenValue } from '../assembly/config-options.js';
import { ROUTER_COMMAND_OPTIONS, ROUTER_OPTIONS } from '../assembly/router-options.js';
import { givenValues, refuseUnknownVariables } from './config-environment.js';
import { readConfigFile } from './load-config.js';
import { listenForStopSignal, runUntilSignal } from './signals.js';

interface RouterCommandOptions {
  config?: string;
  /** Starts even with a guessable cluster secret (the demo's, say): for local experiments only. */
  insecureAllowWeakSecrets?: boolean;
  /** The flags of the config's options (cli/config-flags.ts). */
  [flag: string]: unknown;
}

/** `cellmesh router`: joins a cluster as an observer and answers route requests (docs/routing.md). */
export async function runRouterCommand(options: RouterCommandOptions): Promise<void> {
  refuseUnknownVariables('router', process.env, ROUTER_COMMAND_OPTIONS, ROUTER_OPTIONS);
  const given = givenValues(ROUTER_OPTIONS, options, process.env);
  if (options.config === undefined && !given.some((value) => value.option.path.startsWith('mesh.'))) {
    throw new ConfigError('a router needs its mesh settings (cluster secret, bootstrap addresses): pass --config <file>, or set them by flags or variables (see docs/operations.md, "Running a router")');
  }
  const config = resolveRouterConfig(options.config === undefined ? {} : await readConfigFile(options.config), given);
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

/** The router's config: the file's (if any), with flags and variables set over it, validated as one. */
export function resolveRouterConfig(raw: Record<string, unknown>, given: readonly GivenValue[]): RouterConfig {
  const { merged, sourceOf } = withGivenValues(raw, given);
  return parseRouterConfig(merged, sourceOf);
}

function secretSettingsOf(config: RouterConfig): SecretSetting[] {
  return [
    { path: 'mesh.clusterSecret', value: config.mesh.clusterSecret },
    ...(config.mesh.acceptClusterSecrets ?? []).map((value, index) => ({ path: `mesh.acceptClusterSecrets[${index}]`, value })),
  ];
}
