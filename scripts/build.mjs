#!/usr/bin/env node
// Builds the `cellmesh` command: esbuild bundles cli/main.ts and our TypeScript it imports into
// dist/, which bin/cellmesh.js runs. Packages in node_modules stay outside the bundle (imported
// at run time; uWebSockets.js is a native addon). Runs at `npm install` (the `prepare` script),
// before `npm start` and `npm run bench`, and before the tests (test/build-program.ts), so
// these never run a dist/ older than the sources.
//
// - Code splitting: cli/main.ts imports each subcommand with `await import()`, so a subcommand's
//   modules and the packages they import (libp2p, uWS, LevelDB, the simulator) load only when
//   it runs; `cellmesh --version` and `token` load almost nothing. It also keeps the
//   Promise.withResolvers polyfill ahead of libp2p: main.js runs its own code (the polyfill
//   first) only after the chunks it imports statically, and libp2p comes later, dynamically.
// - Every output file lies directly in dist/, one level below the root, like the sources: paths
//   built from import.meta.url ('../package.json', '../bin/cellmesh.js') stay right.
// - keepNames, as tsx does: error classes are named after their class (platform/coded-error.ts).
// - Source maps beside the files: `node --enable-source-maps bin/cellmesh.js` names the sources
//   in stack traces.
// - The web pages go to dist/app/ (scripts/build-web.mjs, docs/web.md).
// - Only changed files are written and only stale ones removed, so a build while another test
//   run uses dist/ leaves an unchanged program alone.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildWeb } from './build-web.mjs';

// esbuild is a dev dependency: an install without them (npm ci --omit=dev) cannot build.
const esbuild = await import('esbuild').catch((error) => {
  if (error?.code !== 'ERR_MODULE_NOT_FOUND') throw error;
  process.stderr.write('cellmesh build: esbuild (a dev dependency) is not installed: install with dev dependencies (npm ci), then drop them with npm prune --omit=dev\n');
  process.exit(1);
});

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const outdir = join(root, 'dist');

const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: { main: 'cli/main.ts' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  keepNames: true,
  sourcemap: 'linked',
  write: false,
  logLevel: 'warning',
});

mkdirSync(outdir, { recursive: true });
const built = new Set();
for (const file of result.outputFiles) {
  const name = basename(file.path);
  built.add(name);
  if (!sameContent(join(outdir, name), file.contents)) writeFileSync(join(outdir, name), file.contents);
}
// dist/app/ holds the web pages (scripts/build-web.mjs).
built.add('app');
for (const name of readdirSync(outdir)) if (!built.has(name)) rmSync(join(outdir, name), { recursive: true });
await buildWeb(esbuild, root);

function sameContent(path, contents) {
  try {
    return Buffer.from(contents).equals(readFileSync(path));
  } catch {
    return false;
  }
}
