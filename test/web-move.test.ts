/**
 * The pages in a cluster: two real cells in this process (uWS, LevelDB, libp2p on loopback), the
 * customer chat opened through /v1/connect at the cell that is not the merchant's home, and the
 * agent workbench, both in Debian's Chromium (driven through playwright-core). The operator moves
 * the merchant mid-chat with the cell console; both pages follow it to the new home without a
 * reload, and the chat goes on. The console shows the merchant's queues and agents, and then a
 * third and a fourth cell joining.
 * Without /usr/bin/chromium the suite is reported as skipped.
 */
import { mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, type Page } from 'playwright-core';
import { HAVE_CHROMIUM, CHROMIUM_SKIP_REASON, launchChromium, SCREENSHOTS } from './browser/chromium.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { silentLogger } from '../platform/logger.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, SECRET, TENANT, eventually, freePort } from './harness.js';

const ANN_PASSWORD = 'ann-password-0123';

if (!HAVE_CHROMIUM) console.warn(`web-move.test.ts: skipped: ${CHROMIUM_SKIP_REASON}`);

describe.skipIf(!HAVE_CHROMIUM)(HAVE_CHROMIUM ? 'the pages follow a merchant move' : `the pages follow a merchant move (skipped: ${CHROMIUM_SKIP_REASON})`, () => {
  let root: string;
  let browser: Browser;
  const cells: Record<'c1' | 'c2', { running: RunningCell; httpUrl: string }> = {} as never;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'cellmesh-web-move-'));
    mkdirSync(SCREENSHOTS, { recursive: true });
    const ports = { c1: await freePort(), c2: await freePort() };
    // The pages come from one cell and may end on the other: each lists both cells' origins.
    const origins = [`http://127.0.0.1:${ports.c1}`, `http://127.0.0.1:${ports.c2}`];
    const start = async (cellId: 'c1' | 'c2', merchant: { id: string; agents?: Array<{ id: string; name: string }> }, bootstrap: readonly string[]) => {
      const running = await startCell({
        config: parseCellConfig({
          cell: { id: cellId },
          listen: { host: '127.0.0.1', port: ports[cellId] },
          store: { kind: 'level', directory: join(root, cellId) },
          tenants: [{ id: TENANT, secret: SECRET, origins, merchants: [merchant] }],
          mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap },
          admin: { token: ADMIN_TOKEN },
        }),
        logger: silentLogger,
      });
      return { running, httpUrl: `http://127.0.0.1:${running.port}` };
    };
    cells.c1 = await start('c1', { id: 'm1' }, []);
    cells.c2 = await start('c2', { id: 'm2', agents: [{ id: 'ann', name: 'Ann' }] }, cells.c1.running.mesh!.transport.addresses());
    await cells.c2.running.people.setPassword(TENANT, 'm2', 'ann', ANN_PASSWORD);
    const knows = (cell: 'c1' | 'c2', merchant: string, home: string): boolean => cells[cell].running.mesh!.mesh.homeCellOf(TENANT, merchant) === home;
    await eventually(() => knows('c1', 'm2', 'c2') && knows('c2', 'm1', 'c1'), 'both cells to know both homes', 30_000);
    browser = await launchChromium();
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await cells.c2?.running.stop();
    await cells.c1?.running.stop();
    await rm(root, { recursive: true, force: true });
  }, 60_000);

  async function write(page: Page, text: string): Promise<void> {
    await page.locator('#text').fill(text);
    await page.locator('#text').press('Enter');
  }

  it('a customer and an agent chat across a move of the merchant made in the console, without a reload; the console shows a cell joining', async () => {
    const { c1, c2 } = cells;
    const customerContext = await browser.newContext({ viewport: { width: 390, height: 700 } });
    const agentContext = await browser.newContext({ viewport: { width: 1100, height: 680 } });
    const consoleContext = await browser.newContext({ viewport: { width: 1200, height: 520 } });
    try {
      for (const context of [customerContext, agentContext, consoleContext]) context.setDefaultTimeout(20_000);
      const errors: string[] = [];
      for (const context of [customerContext, agentContext, consoleContext]) context.on('weberror', (error) => errors.push(String(error.error())));

      // The merchant's link points at c1; /v1/connect sends the browser on to the home, c2.
      const customer = await customerContext.newPage();
      await customer.goto(`${c1.httpUrl}/v1/connect?tenant=${TENANT}&merchant=m2`);
      expect(customer.url()).toBe(`${c2.httpUrl}/app/?tenant=${TENANT}&merchant=m2`);
      await customer.locator('#text:not([disabled])').waitFor();

      const agent = await agentContext.newPage();
      await agent.goto(`${c2.httpUrl}/app/agent.html?tenant=${TENANT}&merchant=m2&agent=ann`);
      await agent.getByLabel('Password').fill(ANN_PASSWORD);
      await agent.getByRole('button', { name: 'Log in' }).click();
      await agent.locator('#workspace').waitFor();

      await write(customer, 'Before the move');
      await agent.locator('#mine li button', { hasText: 'g-' }).click();
      await agent.locator('li.msg.theirs', { hasText: 'Before the move' }).waitFor();
      await write(agent, 'Hello from Ann');
      await customer.locator('li.msg.theirs', { hasText: 'Hello from Ann' }).waitFor();
      expect(c2.running.core.presence.connections).toBe(2);
      // Marks the pages: a reload would lose these.
      for (const page of [customer, agent]) await page.evaluate(() => ((window as unknown as { notReloaded: boolean }).notReloaded = true));

      // The operator moves the merchant with the cell console of its home.
      const operator = await consoleContext.newPage();
      await operator.goto(`${c2.httpUrl}/app/console.html`);
      await operator.getByLabel('Admin token').fill(ADMIN_TOKEN);
      await operator.getByRole('button', { name: 'Open the console' }).click();
      for (const cellId of ['c1', 'c2']) await operator.locator(`tr[data-cell="${cellId}"][data-liveness="alive"]`).waitFor();
      await operator.locator('tr[data-cell="c2"] li[data-merchant="mall/m2"]').waitFor();
      // The cell's own figures: the two pages' connections, Ann online at the desk, one consultation assigned.
      await expect.poll(() => operator.locator('dd[data-figure="Connections"]').textContent()).toMatch(/^2 /);
      expect(await operator.locator('dd[data-figure="Agents, by status"]').textContent()).toBe('online 1');
      expect(await operator.locator('dd[data-figure="Open consultations, by state"]').textContent()).toContain('assigned 1');
      // Queues and agents per merchant (GET /v1/admin/desks): Ann online with one consultation, nobody waiting.
      const desk = operator.locator('tr[data-desk="mall/m2"]');
      await expect.poll(() => desk.locator('li[data-agent="ann"]').textContent()).toMatch(/^Ann: online, 1 of \d+$/);
      expect(await desk.locator('li[data-group="default"]').textContent()).toBe('default: nobody waiting');
      expect(await desk.locator('td').last().textContent()).toBe('1 assigned, 0 waiting');
      await operator.screenshot({ path: join(SCREENSHOTS, 'console-desks.png'), fullPage: true });
      await operator.getByLabel('Move mall/m2 to').focus();
      await operator.getByLabel('Move mall/m2 to').selectOption('c1');
      expect(await operator.evaluate(() => document.activeElement?.id)).toBe('move-mall-m2');
      // The console redraws every two seconds; the form being filled in keeps its focus.
      // Wait past one redraw: the "last heard" text may read the same after it ("0.1 s ago" again).
      await operator.waitForTimeout(2_500);
      expect(await operator.evaluate(() => document.activeElement?.id)).toBe('move-mall-m2');
      await operator.getByRole('button', { name: 'Move', exact: true }).click();
      await operator.locator('tr[data-cell="c1"] li[data-merchant="mall/m2"]').waitFor();
      // The merchant's desk went with it: c2 hosts no desk any more.
      await operator.locator('#desks td', { hasText: 'No merchant with a desk is hosted here.' }).waitFor();
      await eventually(() => c1.running.core.presence.connections === 2, 'both pages to be connected to the new home, c1', 20_000);

      await write(customer, 'After the move');
      await agent.locator('li.msg.theirs', { hasText: 'After the move' }).waitFor();
      await write(agent, 'Still here');
      await customer.locator('li.msg.theirs', { hasText: 'Still here' }).waitFor();
      await expect.poll(() => customer.locator('li.msg.mine', { hasText: 'After the move' }).getAttribute('data-state')).toBe('read');
      for (const page of [customer, agent]) expect(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
      expect(c2.running.core.presence.connections).toBe(0);
      await expect.poll(() => operator.locator('dd[data-figure="Connections"]').textContent()).toMatch(/^0 /);
      await customer.screenshot({ path: join(SCREENSHOTS, 'chat-after-move.png') });

      // A third cell joins, then a fourth: the console shows each.
      const joining = async (cellId: string, merchant: string): Promise<RunningCell> =>
        startCell({
          config: parseCellConfig({
            cell: { id: cellId },
            listen: { host: '127.0.0.1', port: await freePort() },
            store: { kind: 'level', directory: join(root, cellId) },
            tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: merchant }] }],
            mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: c1.running.mesh!.transport.addresses() },
            admin: { token: ADMIN_TOKEN },
          }),
          logger: silentLogger,
        });
      const joined: RunningCell[] = [];
      try {
        joined.push(await joining('c3', 'm3'));
        await operator.locator('tr[data-cell="c3"][data-liveness="alive"] li[data-merchant="mall/m3"]').waitFor({ timeout: 30_000 });
        expect(await operator.locator('#cells tbody tr').count()).toBe(3);
        joined.push(await joining('c4', 'm4'));
        await operator.locator('tr[data-cell="c4"][data-liveness="alive"] li[data-merchant="mall/m4"]').waitFor({ timeout: 30_000 });
        await expect.poll(() => operator.locator('#cells tbody tr[data-liveness="alive"]').count()).toBe(4);
        await operator.screenshot({ path: join(SCREENSHOTS, 'console.png'), fullPage: true });
      } finally {
        for (const cell of joined.reverse()) await cell.stop();
      }
      expect(errors).toEqual([]);
    } finally {
      await customerContext.close();
      await agentContext.close();
      await consoleContext.close();
    }
  });
});
