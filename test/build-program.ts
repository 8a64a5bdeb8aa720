/**
 * Vitest's global setup: builds the `cellmesh` program into dist/ (scripts/build.mjs) before any
 * test runs. Tests spawn bin/cellmesh.js, which runs dist/, so they always run the sources as
 * they are, never a build older than an edit. The build writes only what changed.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function buildProgram(): void {
  execFileSync(process.execPath, [fileURLToPath(new URL('../scripts/build.mjs', import.meta.url))], { stdio: 'inherit' });
}
