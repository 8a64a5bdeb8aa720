import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The one rule of the arrows (docs/architecture.md, "Layers"): a folder imports only the folders
 * below it, so no two folders import each other. Tests inside a folder follow their folder's
 * rule and may also use the shared test helpers (`testing/`, `test/`).
 */
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  platform: [],
  cell: ['platform'],
  client: ['platform', 'cell'],
  mesh: ['platform', 'cell'],
  router: ['platform', 'cell', 'mesh'],
  assembly: ['platform', 'cell', 'mesh', 'router'],
  sim: ['platform', 'cell', 'mesh', 'router', 'assembly', 'client'],
  cli: ['platform', 'cell', 'mesh', 'router', 'assembly', 'client', 'sim'],
  // Benchmarks, like tests, sit on top (docs/architecture.md): they start a real redis-server with testing/'s helper.
  bench: ['platform', 'cell', 'mesh', 'router', 'assembly', 'client', 'testing'],
  testing: ['platform', 'cell', 'mesh', 'client'],
  // The web pages (docs/web.md) run in browsers: they use the SDK's browser entry and nothing else of ours.
  web: ['client'],
};
const TEST_HELPERS = ['testing', 'test'];

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function sourceFiles(directory: string, found: string[] = []): string[] {
  for (const name of readdirSync(directory)) {
    const path = join(directory, name);
    if (statSync(path).isDirectory()) sourceFiles(path, found);
    else if (name.endsWith('.ts')) found.push(path);
  }
  return found;
}

interface Import {
  readonly file: string;
  readonly folder: string;
  readonly target: string;
}

function importsOf(folder: string): Import[] {
  const found: Import[] = [];
  for (const path of sourceFiles(join(root, folder))) {
    const file = relative(root, path);
    for (const match of readFileSync(path, 'utf8').matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)) {
      const specifier = match[1] as string;
      const target = specifier.startsWith('.') ? relative(root, resolve(dirname(path), specifier)).split('/')[0] as string : specifier;
      found.push({ file, folder, target });
    }
  }
  return found;
}

describe('folder layers', () => {
  for (const [folder, allowed] of Object.entries(ALLOWED)) {
    it(`${folder}/ imports only ${allowed.length === 0 ? 'packages' : allowed.join(', ')}`, () => {
      const wrong = importsOf(folder)
        .filter(({ target }) => target in ALLOWED || TEST_HELPERS.includes(target))
        .filter(({ file, target }) => target !== folder && !allowed.includes(target) && !(file.endsWith('.test.ts') && TEST_HELPERS.includes(target)))
        .map(({ file, target }) => `${file} imports ${target}/`);
      expect(wrong).toEqual([]);
    });
  }

  it('no production module imports a test framework', () => {
    const production = Object.keys(ALLOWED).filter((folder) => folder !== 'testing');
    const wrong = production
      .flatMap(importsOf)
      .filter(({ file, target }) => !file.endsWith('.test.ts') && ['vitest', 'playwright-core'].includes(target))
      .map(({ file, target }) => `${file} imports ${target}`);
    expect(wrong).toEqual([]);
  });

  it('only the metrics adapter imports prom-client: the core counts through the metrics port', () => {
    const wrong = [...Object.keys(ALLOWED), 'test']
      .flatMap(importsOf)
      .filter(({ file, target }) => target === 'prom-client' && file !== 'platform/prom-metrics.ts')
      .map(({ file }) => `${file} imports prom-client`);
    expect(wrong).toEqual([]);
  });

  it('web/ imports nothing of Node: its pages are bundled for browsers', () => {
    const wrong = importsOf('web')
      .filter(({ target }) => target.startsWith('node:') || ['fs', 'path', 'crypto', 'ws', 'uWebSockets.js'].includes(target))
      .map(({ file, target }) => `${file} imports ${target}`);
    expect(wrong).toEqual([]);
  });

  it('the layer table names every source folder', () => {
    const folders = readdirSync(root).filter((name) => !name.startsWith('.') && !['node_modules', 'dist', 'docs', 'bin', 'scripts', 'test', 'deploy'].includes(name) && statSync(join(root, name)).isDirectory());
    expect(folders.filter((folder) => !(folder in ALLOWED))).toEqual([]);
  });
});
