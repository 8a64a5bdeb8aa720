/**
 * The one table of options in docs/operations.md ("Running a cell", "Running a router") is the
 * registry the commands derive their flags and variables from (assembly/cell-options.ts,
 * router-options.ts), row for row; the registry covers every setting of the config's schema (or
 * says it is file-only); and every CELLMESH_* variable the sources read is one a command knows.
 * On a mismatch the expected table is printed, ready to paste.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { z } from 'zod';
import { CELL_COMMAND_OPTIONS, CELL_FILE_ONLY, CELL_OPTIONS } from '../assembly/cell-options.js';
import { CellConfig, parseCellConfig } from '../assembly/config.js';
import type { CommandOption, ConfigOption, FileOnlySetting } from '../assembly/config-options.js';
import { RouterConfig, parseRouterConfig } from '../assembly/router-config.js';
import { ROUTER_COMMAND_OPTIONS, ROUTER_OPTIONS } from '../assembly/router-options.js';
import { OTHER_COMMANDS_VARIABLES } from '../cli/config-environment.js';
import { REPO_ROOT } from './harness.js';

const PLACEHOLDER = { string: '<text>', number: '<number>', list: '<a,b,...>', boolean: '' } as const;

function row(cells: readonly string[]): string {
  return `| ${cells.map((cell) => cell.replaceAll('|', '\\|')).join(' | ')} |`;
}

/** The table's rows as the registry has them: the command's options, the config's, the file-only settings. */
function expectedRows(commandOptions: readonly CommandOption[], options: readonly ConfigOption[], fileOnly: readonly FileOnlySetting[]): string[] {
  return [
    row(['setting', 'flag', 'environment', 'default', 'meaning']),
    '|---|---|---|---|---|',
    ...commandOptions.map((option) => row(['', `\`${option.flags}\``, option.env === undefined ? '' : `\`${option.env}\``, option.defaultText, option.description])),
    ...options.map((option) =>
      row([
        `\`${option.path}\``,
        option.kind === 'boolean' ? `\`${option.flag}\`, \`--no-${option.flag.slice(2)}\`` : `\`${option.flag} ${PLACEHOLDER[option.kind]}\``,
        `\`${option.env}\``,
        option.defaultText,
        option.description,
      ]),
    ),
    ...fileOnly.map((setting) => row([`\`${setting.path}\``, 'file only', 'file only', setting.defaultText, setting.description])),
  ];
}

/** The first table after `heading` in docs/operations.md, one string per row. */
function documentedRows(heading: string): string[] {
  const operations = readFileSync(join(REPO_ROOT, 'docs', 'operations.md'), 'utf8');
  const start = operations.indexOf(`\n${heading}\n`);
  expect(start, `docs/operations.md has no "${heading}"`).toBeGreaterThan(-1);
  const lines = operations.slice(start).split('\n');
  const first = lines.findIndex((line) => line.startsWith('|'));
  const end = lines.findIndex((line, index) => index > first && !line.startsWith('|'));
  return lines.slice(first, end).map((line) => line.trim());
}

function expectTable(heading: string, expected: readonly string[]): void {
  const documented = documentedRows(heading);
  expect(documented, `docs/operations.md, "${heading}", should have this table:\n${expected.join('\n')}\n`).toEqual(expected);
}

/** Every setting of a config schema, by path, with the schema of its value. */
function leaves(schema: z.ZodType, prefix = ''): Map<string, z.ZodType> {
  let current = schema;
  while (current instanceof z.ZodDefault || current instanceof z.ZodOptional) current = current.unwrap() as z.ZodType;
  const found = new Map<string, z.ZodType>();
  if (current instanceof z.ZodObject) {
    for (const [key, value] of Object.entries(current.shape as Record<string, z.ZodType>)) {
      for (const [path, leaf] of leaves(value, prefix === '' ? key : `${prefix}.${key}`)) found.set(path, leaf);
    }
  } else if (current instanceof z.ZodDiscriminatedUnion) {
    for (const option of current.options as z.ZodType[]) for (const [path, leaf] of leaves(option, prefix)) found.set(path, leaf);
  } else {
    found.set(prefix, current);
  }
  return found;
}

function kindOf(leaf: z.ZodType): string {
  if (leaf instanceof z.ZodNumber) return 'number';
  if (leaf instanceof z.ZodBoolean) return 'boolean';
  if (leaf instanceof z.ZodArray) return leaf.element instanceof z.ZodString ? 'list' : 'a list of sections';
  if (leaf instanceof z.ZodString || leaf instanceof z.ZodEnum || leaf instanceof z.ZodLiteral) return 'string';
  return leaf.constructor.name;
}

/** Each setting is in the registry with the kind of its schema, or file-only; the registry names nothing else. */
function expectCoverage(schema: z.ZodType, options: readonly ConfigOption[], fileOnly: readonly FileOnlySetting[]): void {
  const settings = leaves(schema);
  const registered = new Map(options.map((option) => [option.path, option.kind]));
  const uncovered = [...settings.keys()].filter((path) => !registered.has(path) && !fileOnly.some((setting) => path === setting.path || path.startsWith(`${setting.path}.`)));
  expect(uncovered, 'settings with neither a line in the registry nor a file-only entry').toEqual([]);
  expect(options.map((option) => option.path).filter((path) => !settings.has(path)), 'registry lines naming no setting').toEqual([]);
  expect(options.filter((option) => option.kind !== kindOf(settings.get(option.path)!)).map((option) => `${option.path}: ${option.kind}, schema ${kindOf(settings.get(option.path)!)}`)).toEqual([]);
  expect(new Set(options.map((option) => option.env)).size, 'one variable per option').toBe(options.length);
}

/** A registry default written as a value (`7400`) is the schema's default. */
function expectDefaults(options: readonly ConfigOption[], parsed: unknown): void {
  for (const option of options) {
    const literal = /^`([^`<]*)`/.exec(option.defaultText)?.[1];
    if (literal === undefined || option.path.startsWith('mesh.timings.') || option.path.startsWith('mesh.admission.')) continue;
    const value = option.path.split('.').reduce<unknown>((section, key) => (section as Record<string, unknown> | undefined)?.[key], parsed);
    expect(String(value), option.path).toBe(literal);
  }
}

const SECRET = 'config-table-test-secret-0123456789abcdef';
const PEER = '/ip4/127.0.0.1/tcp/7500/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN';

describe('the cell\'s options', () => {
  test('docs/operations.md, "Running a cell", is the registry row for row', () => {
    expectTable('## Running a cell', expectedRows(CELL_COMMAND_OPTIONS, CELL_OPTIONS, CELL_FILE_ONLY));
  });

  test('every setting of the schema has a flag and a variable, or is file-only, and the defaults are the schema\'s', () => {
    expectCoverage(CellConfig, CELL_OPTIONS, CELL_FILE_ONLY);
    const tenants = [{ id: 'mall', secret: SECRET }];
    const onRedis = (option: ConfigOption): boolean => option.path.startsWith('store.redis.');
    expectDefaults(CELL_OPTIONS.filter((option) => !onRedis(option)), parseCellConfig({ tenants, cell: { id: 'cell-1' }, store: { kind: 'level', directory: '/tmp/x' }, mesh: { clusterSecret: SECRET } }));
    // The redis store's section exists only on that store.
    expectDefaults(CELL_OPTIONS.filter(onRedis), parseCellConfig({ tenants, cell: { id: 'cell-1' }, store: { kind: 'redis', redis: { url: 'redis://127.0.0.1:6379' } } }));
  });
});

describe('the router\'s options', () => {
  test('docs/operations.md, "Running a router", is the registry row for row', () => {
    expectTable('## Running a router', expectedRows(ROUTER_COMMAND_OPTIONS, ROUTER_OPTIONS, []));
  });

  test('every setting of the schema has a flag and a variable, and the defaults are the schema\'s', () => {
    expectCoverage(RouterConfig, ROUTER_OPTIONS, []);
    expectDefaults(ROUTER_OPTIONS, parseRouterConfig({ mesh: { clusterSecret: SECRET, bootstrap: [PEER] } }));
  });
});

/** The non-test TypeScript files of the repository (node_modules, dist and hidden folders left out). */
function sourceFiles(directory: string): string[] {
  return readdirSync(directory).flatMap((name) => {
    if (name.startsWith('.') || name === 'node_modules' || name === 'dist') return [];
    const path = join(directory, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') && !name.endsWith('.test.ts') ? [path] : [];
  });
}

test('every CELLMESH_* variable the sources name is an option of a command or one the other commands read', () => {
  const known = new Set([
    ...[...CELL_OPTIONS, ...ROUTER_OPTIONS].map((option) => option.env),
    ...[...CELL_COMMAND_OPTIONS, ...ROUTER_COMMAND_OPTIONS].flatMap((option) => (option.env === undefined ? [] : [option.env])),
    ...OTHER_COMMANDS_VARIABLES,
  ]);
  const named = sourceFiles(REPO_ROOT).flatMap((path) => [...readFileSync(path, 'utf8').matchAll(/CELLMESH_[A-Z][A-Z0-9_]*/g)].map((match) => ({ path, name: match[0] })));
  expect(named.length).toBeGreaterThan(10);
  expect(named.filter(({ name }) => !known.has(name)).map(({ path, name }) => `${path}: ${name}`)).toEqual([]);
});
