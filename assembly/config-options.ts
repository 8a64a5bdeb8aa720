import { pathText, type ValueSource } from './config-paths.js';

/**
 * The options of a config that a flag and an environment variable can set besides the file, one
 * entry each: the command's flags, the environment it reads and the table of docs/operations.md
 * all come from one list (assembly/cell-options.ts, assembly/router-options.ts), so none of them
 * can name a setting the others do not (soketi's CLI keeps such a table; ours also drives the docs test).
 */

/** How the text of a flag or variable becomes a config value; the config's schema then checks it like the file's. */
export type OptionKind = 'string' | 'number' | 'boolean' | 'list';

export interface ConfigOption {
  /** The setting in the config file, `mesh.timings.probeIntervalMs`. */
  readonly path: string;
  /** `--mesh-timings-probe-interval-ms` (a boolean also has its `--no-` form). */
  readonly flag: string;
  /** `CELLMESH_MESH_TIMINGS_PROBE_INTERVAL_MS`. */
  readonly env: string;
  readonly kind: OptionKind;
  /** The default as the docs table shows it (markdown). */
  readonly defaultText: string;
  readonly description: string;
  /** Never echoed in an error (a cluster secret, an admin token). */
  readonly secret: boolean;
  /** Settings this one needs beside it, set unless the file or another option sets them: a data directory means a level store. */
  readonly implies: Readonly<Record<string, string>>;
}

/** A setting only the config file can hold (a list of sections): a row of the docs table without flag or variable. */
export interface FileOnlySetting {
  readonly path: string;
  readonly defaultText: string;
  readonly description: string;
}

/** An option of the command itself, not of the config (`--config`, `--insecure-allow-weak-secrets`). */
export interface CommandOption {
  /** As commander takes it: `-c, --config <file>`. */
  readonly flags: string;
  readonly env?: string | undefined;
  readonly defaultText: string;
  readonly description: string;
}

export const ENV_PREFIX = 'CELLMESH_';

/**
 * One option. Its flag and variable are named after its path (`limits.maxFrameBytes` is
 * `--limits-max-frame-bytes` and `CELLMESH_LIMITS_MAX_FRAME_BYTES`) unless `name` gives the
 * shorter name it has had since before this list (`listen.port` is `--port`, `CELLMESH_PORT`).
 */
export function option(
  path: string,
  kind: OptionKind,
  defaultText: string,
  description: string,
  extra: { name?: string; secret?: boolean; implies?: Record<string, string> } = {},
): ConfigOption {
  const name = extra.name ?? path.split('.').map((segment) => segment.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)).join('-');
  return { path, flag: `--${name}`, env: `${ENV_PREFIX}${name.toUpperCase().replaceAll('-', '_')}`, kind, defaultText, description, secret: extra.secret ?? false, implies: extra.implies ?? {} };
}

/** A value from a flag or the environment, with how the operator wrote it (for errors). */
export interface GivenValue {
  readonly option: ConfigOption;
  readonly text: string;
  /** `CELLMESH_PORT=abc`, `--port abc`, `--no-sync`, `CELLMESH_CLUSTER_SECRET (value hidden)`. */
  readonly source: string;
}

export function givenByFlag(option: ConfigOption, value: string | boolean): GivenValue {
  const text = String(value);
  if (option.kind === 'boolean' && typeof value === 'boolean') return { option, text, source: value ? option.flag : `--no-${option.flag.slice(2)}` };
  return { option, text, source: option.secret ? `${option.flag} (value hidden)` : `${option.flag} ${text}` };
}

export function givenByEnvironment(option: ConfigOption, text: string): GivenValue {
  return { option, text, source: option.secret ? `${option.env} (value hidden)` : `${option.env}=${text}` };
}

/**
 * The config value of a flag's or variable's text. A text that does not fit the kind stays
 * text, so the schema refuses it in the same words as a wrong value in the file.
 */
export function valueOf(kind: OptionKind, text: string): unknown {
  switch (kind) {
    case 'string':
      return text;
    case 'number':
      return /^[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i.test(text.trim()) ? Number(text) : text;
    case 'boolean':
      return text === 'true' ? true : text === 'false' ? false : text;
    case 'list':
      return text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  }
}

/**
 * The raw config with the given values set over the file's (a flag or variable wins), sections
 * created as needed (a mesh option alone makes a cell join a mesh), and where each value came
 * from, for the errors.
 */
export function withGivenValues(raw: Record<string, unknown>, given: readonly GivenValue[]): { merged: Record<string, unknown>; sourceOf: ValueSource } {
  const merged = structuredClone(raw);
  for (const value of given) setAt(merged, value.option.path.split('.'), valueOf(value.option.kind, value.text), true);
  for (const value of given) {
    for (const [path, implied] of Object.entries(value.option.implies)) setAt(merged, path.split('.'), implied, false);
  }
  const sourceOf: ValueSource = (path) => {
    const text = pathText(path.filter((segment) => typeof segment === 'string'));
    const exact = given.find((value) => text === value.option.path || text.startsWith(`${value.option.path}.`));
    if (exact !== undefined) return exact.source;
    // A setting the section needs, missing because a variable made the section (a mesh timing without the cluster secret).
    const section = String(path[0]);
    const maker = raw[section] === undefined ? given.find((value) => value.option.path.startsWith(`${section}.`)) : undefined;
    return maker === undefined ? undefined : `${maker.source} made the ${section} section`;
  };
  return { merged, sourceOf };
}

function setAt(target: Record<string, unknown>, segments: readonly string[], value: unknown, overwrite: boolean): void {
  let section = target;
  for (const segment of segments.slice(0, -1)) {
    const existing = section[segment];
    const next = typeof existing === 'object' && existing !== null && !Array.isArray(existing) ? (existing as Record<string, unknown>) : {};
    section[segment] = next;
    section = next;
  }
  const key = segments[segments.length - 1]!;
  if (overwrite || section[key] === undefined) section[key] = value;
}
