/**
 * Rotating the admin token of a running cluster cell by cell (issue 15, item 17; the steps of
 * docs/operations.md, "Rotating secrets"), with devices chatting across the two cells all along.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { connectNode, conversationIdOf, type CellmeshClient, type ChatMessage } from '../client/index.js';
import { ADMIN_TOKEN, Cleanup, eventually, freePort, httpRequest, killChildCell, startChildCell, tokenFor, type ChildCell } from './harness.js';

const OLD_TOKEN = ADMIN_TOKEN;
const NEW_TOKEN = 'rotated-admin-token-9f3Kq2Lm8Zx4Vb7Nc1Pd6Ws5';
const CONV = conversationIdOf('m2', 'alice');
const FAST_BACKOFF = { initialDelayMs: 50, maxDelayMs: 400 };

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

type Admin = { token: string; acceptTokens?: readonly string[] };

/** One cell of the test cluster, restartable on its ports with another admin section. */
class RotatingCell {
  current: ChildCell | undefined;
  private ports: { port: number; meshPort: number } | undefined;

  constructor(
    private readonly root: string,
    readonly cellId: string,
    private readonly merchant: string,
  ) {
    cleanup.add(() => (this.current === undefined ? undefined : killChildCell(this.current)));
  }

  private admin: Admin = { token: OLD_TOKEN };

  async start(admin: Admin, bootstrap: readonly string[]): Promise<ChildCell> {
    this.admin = admin;
    this.ports ??= { port: await freePort(), meshPort: await freePort() };
    this.current = await startChildCell({
      directory: join(this.root, this.cellId),
      configDir: this.root,
      cellId: this.cellId,
      merchants: [this.merchant],
      port: this.ports.port,
      mesh: { port: this.ports.meshPort, bootstrap },
      admin,
    });
    return this.current;
  }

  /** SIGTERM (the cell leaves the mesh, devices get 1001), then the same cell with `admin`. */
  async restart(admin: Admin, bootstrap: readonly string[]): Promise<void> {
    const running = this.cell;
    running.kill('SIGTERM');
    expect((await running.exited).code).toBe(0);
    await this.start(admin, bootstrap);
  }

  get cell(): ChildCell {
    if (this.current === undefined) throw new Error(`${this.cellId} is not running`);
    return this.current;
  }

  /** The HTTP status the admin API answers `token` with. */
  async adminStatus(token: string): Promise<number> {
    return (await httpRequest('GET', `${this.cell.httpUrl}/v1/admin/cluster`, { token })).status;
  }

  private async view(): Promise<{ self: string; cells: Array<{ cellId: string; liveness: string; endpoints: { p2p: string[] } }> }> {
    const answer = await httpRequest('GET', `${this.cell.httpUrl}/v1/admin/cluster`, { token: this.admin.token });
    if (answer.status !== 200) throw new Error(`${this.cellId}: the admin API answered ${answer.status}`);
    return answer.body as Awaited<ReturnType<RotatingCell['view']>>;
  }

  /** Whether this cell sees every cell of `cellIds` alive (and so can route to their merchants). */
  async seesAlive(cellIds: readonly string[]): Promise<boolean> {
    const { cells } = await this.view();
    return cellIds.every((cellId) => cells.some((seen) => seen.cellId === cellId && seen.liveness === 'alive'));
  }

  async address(): Promise<string> {
    const view = await this.view();
    const address = view.cells.find((seen) => seen.cellId === view.self)?.endpoints.p2p[0];
    if (address === undefined) throw new Error(`${this.cellId} has no mesh address`);
    return address;
  }
}

async function device(url: string, user: string, deviceId: string, merchant?: string): Promise<CellmeshClient> {
  const token = await tokenFor({ user, device: deviceId, ...(merchant === undefined ? {} : { merchant }) });
  const client = await connectNode({ url, token, backoff: FAST_BACKOFF, signal: AbortSignal.timeout(20_000) });
  cleanup.add(() => client.close());
  return client;
}

describe('rotating the admin token cell by cell', () => {
  test('devices keep chatting; the admin API answers old and new during the change, only the new after', { timeout: 240_000 }, async () => {
    const root = await cleanup.tempDir('cellmesh-rotation-');
    const cellA = new RotatingCell(root, 'cell-a', 'm1');
    const cellB = new RotatingCell(root, 'cell-b', 'm2');
    // After each (re)start, as an operator waits for a rollout step: both cells see both alive.
    const converged = (): Promise<void> =>
      eventually(async () => (await cellA.seesAlive(['cell-a', 'cell-b'])) && (await cellB.seesAlive(['cell-a', 'cell-b'])), 'both cells to see each other alive', 30_000);
    await cellA.start({ token: OLD_TOKEN }, []);
    const addressA = await cellA.address();
    await cellB.start({ token: OLD_TOKEN }, [addressA]);
    const addressB = await cellB.address();
    await converged();

    // alice writes from cell A to merchant m2, whose home (and agent bob) is cell B.
    const alice = await device(cellA.cell.url, 'alice', 'phone');
    const bob = await device(cellB.cell.url, 'bob', 'desk', 'm2');
    const bobSaw: ChatMessage[] = [];
    bob.on('message', (message) => bobSaw.push(message));
    let sent = 0;
    const chat = async (): Promise<void> => {
      for (let index = 0; index < 3; index++) await alice.send(CONV, `message ${sent++}`);
    };
    const statuses = async (): Promise<number[]> => [await cellA.adminStatus(OLD_TOKEN), await cellA.adminStatus(NEW_TOKEN), await cellB.adminStatus(OLD_TOKEN), await cellB.adminStatus(NEW_TOKEN)];

    await chat();
    expect(await statuses()).toEqual([200, 403, 200, 403]);

    // Step 1, cell by cell: accept the new token beside the old one.
    await cellA.restart({ token: OLD_TOKEN, acceptTokens: [NEW_TOKEN] }, [addressB]);
    await converged();
    await chat();
    expect(await statuses()).toEqual([200, 200, 200, 403]);
    await cellB.restart({ token: OLD_TOKEN, acceptTokens: [NEW_TOKEN] }, [addressA]);
    await converged();
    await chat();
    expect(await statuses()).toEqual([200, 200, 200, 200]);

    // Step 2 (the tools switch to the new token) needs no cell. Step 3, cell by cell: the new one alone.
    await cellA.restart({ token: NEW_TOKEN }, [addressB]);
    await converged();
    await chat();
    expect(await statuses()).toEqual([403, 200, 200, 200]);
    await cellB.restart({ token: NEW_TOKEN }, [addressA]);
    await converged();
    await chat();
    expect(await statuses()).toEqual([403, 200, 403, 200]);

    // Every message reached the agent once and in order, across four restarts.
    await eventually(() => bobSaw.length >= sent, `bob to see all ${sent} messages`, 30_000);
    expect(bobSaw.map((message) => message.body)).toEqual(Array.from({ length: sent }, (_, index) => `message ${index}`));
    expect(bobSaw.map((message) => message.seq)).toEqual(Array.from({ length: sent }, (_, index) => index + 1));
  });
});
