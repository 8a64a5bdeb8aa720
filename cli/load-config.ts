import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { ConfigError, parseCellConfig, type CellConfig } from '../assembly/config.js';

/** Settings that flags and environment variables may override over the config file. */
export interface CellOverrides {
  cellId?: string;
  host?: string;
  port?: number;
  store?: 'level' | 'memory' | 'redis';
  dataDir?: string;
  /** store.redis.url; names the redis store when no kind is given. */
  redisUrl?: string;
  /** `processes.id`: this process among the processes of a cell on Redis. */
  processId?: string;
  sync?: boolean;
  logLevel?: string;
  meshHost?: string;
  meshPort?: number;
  /** Comma-separated libp2p addresses of cells to join through. */
  bootstrap?: string;
  clusterSecret?: string;
}

/** Reads a YAML or JSON config file (YAML is a superset of JSON). */
export async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`config file ${path} is not valid YAML or JSON: ${(error as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`config file ${path} must hold an object`);
  return raw as Record<string, unknown>;
}

/** Applies overrides onto a raw config, then validates the result. */
export function resolveCellConfig(raw: Record<string, unknown>, overrides: CellOverrides): CellConfig {
  const merged = structuredClone(raw);
  const section = (name: string): Record<string, unknown> => {
    const existing = merged[name];
    const object = typeof existing === 'object' && existing !== null ? (existing as Record<string, unknown>) : {};
    merged[name] = object;
    return object;
  };
  if (overrides.cellId !== undefined) section('cell')['id'] = overrides.cellId;
  if (overrides.host !== undefined) section('listen')['host'] = overrides.host;
  if (overrides.port !== undefined) section('listen')['port'] = overrides.port;
  if (overrides.store !== undefined) section('store')['kind'] = overrides.store;
  if (overrides.dataDir !== undefined) {
    const store = section('store');
    store['kind'] ??= 'level';
    store['directory'] = overrides.dataDir;
  }
  if (overrides.redisUrl !== undefined) {
    const store = section('store');
    store['kind'] ??= 'redis';
    const redis = store['redis'];
    store['redis'] = { ...(typeof redis === 'object' && redis !== null ? redis : {}), url: overrides.redisUrl };
  }
  if (overrides.processId !== undefined) section('processes')['id'] = overrides.processId;
  if (overrides.sync !== undefined) section('store')['sync'] = overrides.sync;
  if (overrides.logLevel !== undefined) section('log')['level'] = overrides.logLevel;
  applyMeshOverrides(merged, overrides);
  // A level store without a directory gets one per cell id, so two cells never share one.
  const store = section('store');
  store['kind'] ??= 'level';
  if (store['kind'] === 'level' && store['directory'] === undefined) {
    store['directory'] = `./data/${String(section('cell')['id'] ?? 'cell-1')}`;
  }
  return parseCellConfig(merged);
}

/** Mesh flags create the `mesh` section when the file has none: a cluster secret is enough to join. */
function applyMeshOverrides(merged: Record<string, unknown>, overrides: CellOverrides): void {
  const { meshHost, meshPort, bootstrap, clusterSecret } = overrides;
  if (meshHost === undefined && meshPort === undefined && bootstrap === undefined && clusterSecret === undefined) return;
  const existing = merged['mesh'];
  const mesh = typeof existing === 'object' && existing !== null ? (existing as Record<string, unknown>) : {};
  merged['mesh'] = mesh;
  const listen = typeof mesh['listen'] === 'object' && mesh['listen'] !== null ? (mesh['listen'] as Record<string, unknown>) : {};
  mesh['listen'] = listen;
  if (meshHost !== undefined) listen['host'] = meshHost;
  if (meshPort !== undefined) listen['port'] = meshPort;
  if (clusterSecret !== undefined) mesh['clusterSecret'] = clusterSecret;
  if (bootstrap !== undefined) {
    mesh['bootstrap'] = bootstrap
      .split(',')
      .map((address) => address.trim())
      .filter((address) => address !== '');
  }
}
