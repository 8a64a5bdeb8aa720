/**
 * Reads what deploy/ holds for test/deploy-manifests.test.ts: the Dockerfile (simple line
 * parsing of the instructions the image's command line depends on), the YAML files, the
 * environment variables and flags a cell reads (from the config table of docs/operations.md),
 * and the config a container gives its cell (its config file with its environment applied, by
 * the cell's own resolveCellConfig).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CellConfig } from '../assembly/config.js';
import { CELL_OPTIONS } from '../assembly/cell-options.js';
import { givenValues } from '../cli/config-environment.js';
import { resolveCellConfig } from '../cli/load-config.js';
import { REPO_ROOT } from './harness.js';

export const DEPLOY_DIR = join(REPO_ROOT, 'deploy');

// ---------------------------------------------------------------------------------------------
// The Dockerfile

export interface DockerInstruction {
  readonly keyword: string;
  readonly argument: string;
}

export interface DockerStage {
  readonly from: string;
  readonly instructions: readonly DockerInstruction[];
}

/** The Dockerfile's stages, each with its instructions (comments dropped, continuations joined). */
export function dockerStages(text: string): DockerStage[] {
  const logical: string[] = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue; // also inside a continued instruction, as Docker reads it
    const continued = /\\\s*$/.test(line);
    pending += `${line.replace(/\\\s*$/, '')}${continued ? ' ' : ''}`;
    if (continued) continue;
    if (pending.trim() !== '') logical.push(pending.trim());
    pending = '';
  }
  const stages: Array<{ from: string; instructions: DockerInstruction[] }> = [];
  for (const line of logical) {
    const match = /^(\w+)\s+(.*)$/.exec(line);
    if (match === null) throw new Error(`Dockerfile: cannot read the instruction ${JSON.stringify(line)}`);
    const keyword = match[1]!.toUpperCase();
    const argument = match[2]!.trim();
    if (keyword === 'FROM') stages.push({ from: argument, instructions: [] });
    else if (stages.length === 0) throw new Error(`Dockerfile: ${keyword} before the first FROM`);
    else stages.at(-1)!.instructions.push({ keyword, argument });
  }
  return stages;
}

/** What the runtime image (the last stage) runs and with what, as `docker run` would. */
export interface ImageRuntime {
  readonly base: string;
  readonly workdir: string | undefined;
  readonly user: string | undefined;
  readonly env: Readonly<Record<string, string>>;
  readonly exposedPorts: readonly number[];
  readonly volumes: readonly string[];
  /** ENTRYPOINT and CMD as written: exec form (JSON arrays), or undefined for the shell form. */
  readonly entrypoint: readonly string[] | undefined;
  readonly cmd: readonly string[] | undefined;
  readonly healthcheck: { readonly options: string; readonly command: readonly string[] | undefined } | undefined;
}

export function imageRuntime(stages: readonly DockerStage[]): ImageRuntime {
  const last = stages.at(-1);
  if (last === undefined) throw new Error('Dockerfile: no FROM');
  const all = (keyword: string): string[] => last.instructions.filter((instruction) => instruction.keyword === keyword).map((instruction) => instruction.argument);
  const env: Record<string, string> = {};
  for (const argument of all('ENV')) {
    // Only the `ENV NAME=value NAME=value` form, without quotes: what this Dockerfile writes.
    for (const assignment of argument.split(/\s+/)) {
      const equals = assignment.indexOf('=');
      if (equals <= 0 || /["']/.test(assignment)) throw new Error(`Dockerfile: write ENV as NAME=value without quotes, not ${JSON.stringify(argument)}`);
      env[assignment.slice(0, equals)] = assignment.slice(equals + 1);
    }
  }
  const healthcheck = all('HEALTHCHECK').at(-1);
  const healthMatch = healthcheck === undefined ? undefined : /^(.*?)\bCMD\s+(.*)$/.exec(healthcheck);
  return {
    base: last.from,
    workdir: all('WORKDIR').at(-1),
    user: all('USER').at(-1),
    env,
    exposedPorts: all('EXPOSE').flatMap((argument) => argument.split(/\s+/)).map((port) => Number(port.replace(/\/tcp$/, ''))),
    volumes: all('VOLUME').flatMap((argument) => execForm(argument) ?? argument.split(/\s+/)),
    entrypoint: execFormOf(all('ENTRYPOINT').at(-1)),
    cmd: execFormOf(all('CMD').at(-1)),
    healthcheck: healthcheck === undefined ? undefined : { options: healthMatch?.[1]?.trim() ?? '', command: execFormOf(healthMatch?.[2]) },
  };
}

function execFormOf(argument: string | undefined): string[] | undefined {
  return argument === undefined ? undefined : execForm(argument);
}

/** A JSON array of strings (the exec form), or undefined (the shell form). */
function execForm(argument: string): string[] | undefined {
  if (!argument.startsWith('[')) return undefined;
  const parsed = JSON.parse(argument) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((item) => typeof item === 'string')) throw new Error(`Dockerfile: not an array of strings: ${argument}`);
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// YAML files

export interface YamlFile {
  /** Relative to the repository root. */
  readonly path: string;
  readonly documents: readonly unknown[];
}

/** Every YAML file under deploy/, each document parsed; a syntax error or warning throws. */
export function deployYamlFiles(directory = DEPLOY_DIR): YamlFile[] {
  const files: YamlFile[] = [];
  for (const entry of readdirSync(directory, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !/\.ya?ml$/.test(entry.name)) continue;
    const path = join(entry.parentPath, entry.name);
    const documents = parseAllDocuments(readFileSync(path, 'utf8'));
    const parsed = (Array.isArray(documents) ? documents : [documents]).map((document) => {
      const problems = [...document.errors, ...document.warnings];
      if (problems.length > 0) throw new Error(`${relative(REPO_ROOT, path)}: ${problems.map((problem) => problem.message).join('; ')}`);
      return document.toJS() as unknown;
    });
    files.push({ path: relative(REPO_ROOT, path), documents: parsed.filter((document) => document !== null) });
  }
  return files.sort((a, b) => a.path.localeCompare(b.path));
}

// ---------------------------------------------------------------------------------------------
// What a cell reads

/** One row of the config table: a flag and the environment variable that stands for it. */
export interface CellOption {
  readonly env: string;
  /** The long flag, `--mesh-port`; undefined for a variable without one. */
  readonly flag: string | undefined;
  /** The flag takes a number (`<port>`, `<number>`), which the command parses into one. */
  readonly isNumber: boolean;
}

/**
 * The environment variables `cellmesh cell` reads, from the config table of docs/operations.md
 * ("Running a cell"): the one table of every option, its flag, its variable, its default.
 */
export function documentedCellOptions(): Map<string, CellOption> {
  const operations = readFileSync(join(REPO_ROOT, 'docs', 'operations.md'), 'utf8');
  const start = operations.indexOf('## Running a cell');
  const section = operations.slice(start, operations.indexOf('\n## ', start + 1));
  const options = new Map<string, CellOption>();
  // The columns are found by their headings, `flag` and `environment`, wherever they stand.
  let flagColumn = -1;
  let envColumn = -1;
  for (const line of section.split('\n')) {
    if (!line.startsWith('|')) {
      flagColumn = envColumn = -1;
      continue;
    }
    const cells = line.split('|').slice(1, -1).map((cell) => cell.trim());
    if (flagColumn === -1) {
      flagColumn = cells.indexOf('flag');
      envColumn = cells.indexOf('environment');
      continue;
    }
    const flagCell = cells[flagColumn] ?? '';
    for (const env of cells[envColumn]?.match(/CELLMESH_[A-Z0-9_]+/g) ?? []) {
      const flag = /--[a-z][a-z-]*/.exec(flagCell)?.[0];
      options.set(env, { env, flag, isNumber: /<(port|number)>/.test(flagCell) });
    }
  }
  if (options.size === 0) throw new Error('docs/operations.md, "Running a cell": no table of environment variables found');
  return options;
}

/**
 * The config a container gives its cell: the config file with the container's environment
 * applied exactly as `cellmesh cell` applies it (the cell's option list, no flags).
 */
export function effectiveCellConfig(raw: Record<string, unknown>, env: Readonly<Record<string, string>>): CellConfig {
  return resolveCellConfig(raw, givenValues(CELL_OPTIONS, {}, env));
}

/** The GET routes the cell's HTTP server registers itself (cell/access/uws-server.ts). */
export function cellServerGetRoutes(): Set<string> {
  const source = readFileSync(join(REPO_ROOT, 'cell', 'access', 'uws-server.ts'), 'utf8');
  return new Set([...source.matchAll(/this\.router\.on\('get', '([^']+)'/g)].map((match) => match[1]!));
}
