import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { placementVerifies, type SignedPlacement } from '../mesh/claim-proof.js';
import { REPO_ROOT } from './harness.js';

/** `cellmesh operator keygen` and `place` as an operator runs them (the cluster side: test/mesh-cluster.test.ts). */
function cellmesh(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'bin', 'cellmesh.js'), ...args], { cwd: REPO_ROOT }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

let directory: string | undefined;
afterEach(async () => {
  if (directory !== undefined) await rm(directory, { recursive: true, force: true });
  directory = undefined;
});

describe('cellmesh operator', () => {
  it('makes a key pair, and signs a placement that verifies with the printed public key only', async () => {
    directory = await mkdtemp(join(tmpdir(), 'cellmesh-operator-'));
    const keyFile = join(directory, 'operator.pem');
    const made = await cellmesh(['operator', 'keygen', '--out', keyFile]);
    expect(made.code).toBe(0);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    const publicKey = /^(ed25519:\S+)$/m.exec(made.stdout)?.[1];
    expect(publicKey).toBeDefined();

    const placed = await cellmesh(['operator', 'place', '--key', keyFile, '--tenant', 'mall', '--merchant', 'acme-shoes', '--cell', 'shops-b', '--epoch', '7']);
    expect(placed.code).toBe(0);
    const placement = JSON.parse(placed.stdout) as SignedPlacement;
    expect(placement).toMatchObject({ tenant: 'mall', merchant: 'acme-shoes', cell: 'shops-b', epoch: 7, key: publicKey });
    // A placement moves no data: the operator is told what stays behind.
    expect(placed.stderr).toContain('warning: a placement moves no data. shops-b starts acme-shoes empty');
    expect(placed.stderr).toContain('its conversations and their history');
    expect(placementVerifies(placement, [publicKey as string])).toBe(true);
    expect(placementVerifies({ ...placement, cell: 'shops-c' }, [publicKey as string])).toBe(false);
    expect(placementVerifies(placement, [])).toBe(false);

    // An existing key is never overwritten; a placement needs an epoch or a cluster to look it up.
    const again = await cellmesh(['operator', 'keygen', '--out', keyFile]);
    expect(again).toMatchObject({ code: 2, stderr: `cellmesh operator keygen: ${keyFile} exists already; choose another file\n` });
    const noEpoch = await cellmesh(['operator', 'place', '--key', keyFile, '--tenant', 'mall', '--merchant', 'acme-shoes', '--cell', 'shops-b']);
    expect(noEpoch.code).toBe(2);
    expect(noEpoch.stderr.trim().split('\n')).toHaveLength(1);
  }, 60_000);
});
