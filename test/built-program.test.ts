/**
 * The built program: bin/cellmesh.js runs dist/ (scripts/build.mjs, run by `npm install` and
 * before the tests), and a command loads only the packages it needs, so `--version` and `token`
 * answer without loading libp2p, uWS, LevelDB or the simulator. How fast they answer is measured
 * by hand (README, "Node 20 and the built program"), not here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { jwtVerify } from 'jose';
import { expect, test } from 'vitest';
import { REPO_ROOT } from './harness.js';
import { runCli } from './cli-process.js';

const DIST = join(REPO_ROOT, 'dist');
const onNode20 = process.versions.node.startsWith('20.');

test('`cellmesh --version` prints the version of package.json', async () => {
  const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const run = await runCli(['--version']);
  expect(run).toMatchObject({ code: 0, stdout: `${version}\n` });
  if (onNode20) expect(run.stderr).toBe('');
});

test('`cellmesh token` prints a device token with the claims asked for', async () => {
  const secret = 'built-program-test-secret-of-32-bytes-at-least';
  const run = await runCli(['token', '--secret', secret, '--tenant', 'mall', '--user', 'alice', '--device', 'phone', '--ttl', '600']);
  expect(run.code, run.stderr).toBe(0);
  if (onNode20) expect(run.stderr).toBe('');
  expect(run.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
  const { payload: claims } = await jwtVerify(run.stdout.trim(), new TextEncoder().encode(secret));
  expect(claims).toMatchObject({ tenant: 'mall', sub: 'alice', role: 'customer', device: 'phone' });
  expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(600);
});

/** The packages a file of dist/ loads before it runs: its static imports, and theirs within dist/. */
function packagesLoadedBy(file: string, seen = new Set<string>()): Set<string> {
  const packages = new Set<string>();
  if (seen.has(file)) return packages;
  seen.add(file);
  for (const match of readFileSync(join(DIST, file), 'utf8').matchAll(/^(?:import|export)\b[^;]*?["']([^"']+)["'];?$/gm)) {
    const specifier = match[1] as string;
    if (specifier.startsWith('./')) for (const name of packagesLoadedBy(specifier.slice(2), seen)) packages.add(name);
    else if (!specifier.startsWith('node:')) packages.add(specifier);
  }
  return packages;
}

test('the program loads a command\'s packages only when that command runs', () => {
  expect([...packagesLoadedBy('main.js')].sort()).toEqual(['commander']);
  const token = readdirSync(DIST).find((name) => /^token-command-\w+\.js$/.test(name));
  expect(token).toBeDefined();
  expect([...packagesLoadedBy(token as string)].sort()).toEqual(['commander', 'jose', 'zod']);
  const cell = readdirSync(DIST).find((name) => /^cell-command-\w+\.js$/.test(name));
  expect(packagesLoadedBy(cell as string)).toContain('uWebSockets.js');
});
