import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { ConfigError, parseCellConfig, type CellConfig } from '../assembly/config.js';
import { withGivenValues, type GivenValue } from '../assembly/config-options.js';

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

/**
 * The cell's config: the file's, with what flags and variables give set over it
 * (assembly/cell-options.ts), validated as one; an error names the flag or variable of a bad value.
 */
export function resolveCellConfig(raw: Record<string, unknown>, given: readonly GivenValue[]): CellConfig {
  const { merged, sourceOf } = withGivenValues(raw, given);
  // A level store without a directory gets one per cell id, so two cells never share one.
  const store = section(merged, 'store');
  store['kind'] ??= 'level';
  if (store['kind'] === 'level' && store['directory'] === undefined) {
    store['directory'] = `./data/${String(section(merged, 'cell')['id'] ?? 'cell-1')}`;
  }
  return parseCellConfig(merged, sourceOf);
}

function section(config: Record<string, unknown>, name: string): Record<string, unknown> {
  const existing = config[name];
  const object = typeof existing === 'object' && existing !== null ? (existing as Record<string, unknown>) : {};
  config[name] = object;
  return object;
}
