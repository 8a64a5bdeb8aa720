/**
 * Item 17, tenant signing secrets: a tenant's secret is rotated cell by cell, the way
 * docs/operations.md ("Rotating secrets") tells, over a real cell process restarted with each
 * config, devices connected throughout, and the new tokens minted by `cellmesh token`.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import {
  Cleanup,
  REPO_ROOT,
  RawClient,
  SECRET,
  TENANT,
  UpgradeRejected,
  expectUpgradeRejected,
  killChildCell,
  sendMessage,
  startChildCell,
  tokenFor,
  type ChildCell,
} from './harness.js';

const NEW_SECRET = 'rotated-tenant-secret-0123456789abcdef-0123';
const CONV = 'm1:c1';

/** Mints a token with the CLI, reading the secret of `kid` from a config file. */
async function cliToken(configFile: string, user: string, device: string, kid: string): Promise<string> {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'cellmesh.js'), 'token', '--config', configFile, '--tenant', TENANT, '--user', user, '--device', device, '--kid', kid], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('CELLMESH_'))),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`cellmesh token exited ${code}: ${stderr}`);
  return stdout.trim();
}

describe('rotating a tenant signing secret with devices connected', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('both secrets: old and new tokens pass; old secret removed: old tokens are refused', async () => {
    const dataDir = await cleanup.tempDir('cellmesh-rotation-');
    const configDir = await cleanup.tempDir('cellmesh-rotation-config-');
    let cell: ChildCell | undefined;
    cleanup.add(() => (cell === undefined ? undefined : killChildCell(cell)));
    const restart = async (tenantKeys: Parameters<typeof startChildCell>[0]['tenantKeys']): Promise<ChildCell> => {
      const port = cell?.port;
      if (cell !== undefined) {
        cell.kill('SIGTERM');
        await cell.exited;
      }
      cell = await startChildCell({ directory: dataDir, configDir, ...(port === undefined ? {} : { port }), ...(tenantKeys === undefined ? {} : { tenantKeys }) });
      return cell;
    };

    // Before: the tenant's single secret; devices hold tokens without kid.
    let running = await restart({ secret: SECRET });
    const customerToken = await tokenFor({ user: 'c1', device: 'phone' });
    const agentToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' });
    const customer = await cleanup.client(running.url, customerToken);
    const agent = await cleanup.client(running.url, agentToken);
    await sendMessage(customer, CONV, 'before', 'sent before the rotation');

    // Step 1: every cell gets the new secret beside the old one (one cell here), restarted.
    const bothKeys = { secrets: [{ kid: 'old', secret: SECRET }, { kid: 'new', secret: NEW_SECRET }] };
    running = await restart(bothKeys);
    await customer.whenClosed();
    expect(customer.closeCode).toBe(1001);
    // The devices come back with the tokens they hold.
    const customerAgain = await cleanup.client(running.url, customerToken);
    const agentAgain = await cleanup.client(running.url, agentToken);
    const oldKidToken = await tokenFor({ user: 'c2', device: 'tablet', kid: 'old' });
    await cleanup.client(running.url, oldKidToken);

    // Step 2: new tokens are minted with the new kid, here by the CLI from the config.
    const configFile = join(configDir, 'rotation-tenants.json');
    await writeFile(configFile, JSON.stringify({ tenants: [{ id: TENANT, ...bothKeys }] }));
    const newCustomerToken = await cliToken(configFile, 'c1', 'laptop', 'new');
    expect(JSON.parse(Buffer.from(newCustomerToken.split('.')[0]!, 'base64url').toString())).toMatchObject({ kid: 'new' });
    const laptop = await cleanup.client(running.url, newCustomerToken);
    await sendMessage(laptop, CONV, 'during', 'sent with a new-kid token');
    await agentAgain.until(() => agentAgain.messages(CONV).some((message) => message.cmid === 'during'), { what: 'the new-kid device reaching the agent' });
    // A new kid does not stand for the old secret.
    const newKidOldSecret = await tokenFor({ user: 'c1', device: 'fake', kid: 'new', secret: SECRET });
    expect((await expectUpgradeRejected(running.url, newKidOldSecret)).code).toBe('TOKEN_INVALID');
    await customerAgain.close();
    await agent.whenClosed();

    // Step 3: once the old tokens have expired or been replaced, the old secret goes.
    running = await restart({ secrets: [{ kid: 'new', secret: NEW_SECRET }] });
    for (const oldToken of [customerToken, agentToken, oldKidToken]) {
      const refusal = await expectUpgradeRejected(running.url, oldToken);
      expect(refusal).toBeInstanceOf(UpgradeRejected);
      expect([(refusal as UpgradeRejected).status, refusal.code]).toEqual([401, 'TOKEN_INVALID']);
    }
    const laptopAgain = await cleanup.client(running.url, newCustomerToken);
    const history = await laptopAgain.request({ id: 'h', op: 'history', conv: CONV });
    expect(history.t === 'history' && history.messages.map((message) => message.cmid)).toEqual(['before', 'during']);
    const newAgent = await RawClient.connect(running.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk', kid: 'new', secret: NEW_SECRET }));
    await newAgent.close();
    // Three cell starts and a CLI run, each a Node process loading TypeScript: slow on a busy machine.
  }, 180_000);
});
