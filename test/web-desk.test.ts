/**
 * The agent workbench (/app/agent.html, web/agent/) and the customer chat in Debian's Chromium
 * (driven through playwright-core) against a real cell serving both: an agent logs in with its
 * password, in two tabs, and serves a customer; transfers one to a colleague and closes another.
 * Without /usr/bin/chromium the suite is reported as skipped. Screenshots go to .test-output/web/.
 */
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { HAVE_CHROMIUM, CHROMIUM_SKIP_REASON, SCREENSHOTS, useChromium } from './browser/chromium.js';
import { solidPng } from './browser/solid-png.js';
import { describe, expect, it } from 'vitest';
import { Cleanup, tokenFor, type TestCell } from './harness.js';

const ANN_PASSWORD = 'ann-password-0123';

if (!HAVE_CHROMIUM) console.warn(`web-desk.test.ts: skipped: ${CHROMIUM_SKIP_REASON}`);

describe.skipIf(!HAVE_CHROMIUM)(HAVE_CHROMIUM ? 'agent workbench in Chromium' : `agent workbench in Chromium (skipped: ${CHROMIUM_SKIP_REASON})`, () => {
  const cleanup = new Cleanup();
  const browser = useChromium(cleanup);

  async function newContext(viewport: { width: number; height: number }): Promise<{ context: BrowserContext; errors: string[] }> {
    const context = await browser().newContext({ viewport });
    context.setDefaultTimeout(15_000);
    cleanup.add(() => context.close());
    const errors: string[] = [];
    context.on('weberror', (error) => errors.push(String(error.error())));
    return { context, errors };
  }

  /** An agent's workbench in a tab of its own, logged in through the form, with desktop notifications allowed (and recorded). */
  async function workbench(cell: TestCell, agent = 'ann', password = ANN_PASSWORD): Promise<{ page: Page; errors: string[] }> {
    const { context, errors } = await newContext({ width: 1100, height: 680 });
    await context.grantPermissions(['notifications'], { origin: cell.httpUrl });
    // Chromium's own notifications, with a record of each one the page shows.
    await context.addInitScript(() => {
      const shown: Array<{ title: string; body: string | undefined }> = [];
      (window as unknown as { shownNotifications: typeof shown }).shownNotifications = shown;
      const Original = window.Notification;
      window.Notification = class extends Original {
        constructor(title: string, options?: NotificationOptions) {
          super(title, options);
          shown.push({ title, body: options?.body });
        }
      } as typeof Notification;
    });
    const page = await context.newPage();
    await page.goto(`${cell.httpUrl}/app/agent.html?tenant=mall&merchant=m1`);
    await page.getByLabel('Agent').fill(agent);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#workspace').waitFor();
    await page.locator('#queue li.none').waitFor();
    return { page, errors };
  }

  async function customer(cell: TestCell): Promise<Page> {
    const { context } = await newContext({ width: 390, height: 700 });
    const page = await context.newPage();
    await page.goto(`${cell.httpUrl}/app/?tenant=mall&merchant=m1`);
    await page.locator('#text:not([disabled])').waitFor();
    return page;
  }

  async function write(page: Page, text: string): Promise<void> {
    await page.locator('#text').fill(text);
    await page.locator('#text').press('Enter');
  }

  it('an agent serves a customer from the workbench, in two tabs; transfers one customer to a colleague and closes another', async () => {
    const cell = await cleanup.cell({
      agents: [
        { id: 'ann', name: 'Ann', password: ANN_PASSWORD, capacity: 3 },
        { id: 'bob', name: 'Bob', capacity: 3 },
      ],
    });
    // Bob is at his desk on a protocol client (online: he may take a transfer).
    const bob = await cleanup.client(cell.url, await tokenFor({ user: 'bob', merchant: 'm1', device: 'desk' }));
    bob.autoAck();
    // Bob is busy at first, so that the desk gives the customers to Ann.
    expect(await bob.request({ op: 'status', id: 'busy', status: 'busy' })).toMatchObject({ t: 'ok' });
    const first = await workbench(cell);
    const second = await workbench(cell);

    const carol = await customer(cell);
    await write(carol, 'Hi, where is my order?');
    // Both tabs list the new consultation with one unread message.
    for (const tab of [first.page, second.page]) {
      await tab.locator('#mine li[data-unread="1"]', { hasText: 'g-' }).waitFor();
    }
    const conv = (await first.page.locator('#mine li').first().getAttribute('data-conv'))!;
    expect(conv).toMatch(/^m1:g-/);
    // A desktop notification told each tab of the assignment.
    for (const tab of [first.page, second.page]) {
      await expect
        .poll(() => tab.evaluate(() => (window as unknown as { shownNotifications: unknown[] }).shownNotifications))
        .toEqual([{ title: 'New conversation', body: `${conv.slice(3)} (default)` }]);
    }

    // Ann opens it in the first tab: she reads it, and the customer sees it read.
    await first.page.locator(`#mine li[data-conv="${conv}"] button`).click();
    await first.page.locator('li.msg.theirs', { hasText: 'Hi, where is my order?' }).waitFor();
    await first.page.locator(`#mine li[data-conv="${conv}"][data-unread="0"]`).waitFor();
    await expect.poll(() => carol.locator('li.msg.mine', { hasText: 'Hi, where is my order?' }).getAttribute('data-state')).toBe('read');

    // She answers; the customer has it, and so does her second tab, whose list keeps the keyboard's focus while it is drawn again.
    await second.page.locator(`#mine li[data-conv="${conv}"] button`).focus();
    await write(first.page, 'It left our depot this morning.');
    await carol.locator('li.msg.theirs', { hasText: 'It left our depot this morning.' }).waitFor();
    // The customer writes again. The first tab has the conversation open, so the agent reads it
    // there at once; the second tab, drawing its list again, follows that read: nothing unread.
    await write(carol, 'Great');
    await first.page.locator('li.msg.theirs', { hasText: 'Great' }).waitFor();
    await expect.poll(() => carol.locator('li.msg.mine', { hasText: 'Great' }).getAttribute('data-state')).toBe('read');
    await expect.poll(() => second.page.locator(`#mine li[data-conv="${conv}"]`).getAttribute('data-unread')).toBe('0');
    expect(await second.page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset['focus'])).toBe(`list:${conv}`);
    await second.page.locator(`#mine li[data-conv="${conv}"] button`).click();
    await second.page.locator('li.msg.mine', { hasText: 'It left our depot this morning.' }).waitFor();
    // The customer's page read the answer: it turns read in the workbench.
    await expect.poll(() => first.page.locator('li.msg.mine', { hasText: 'It left our depot this morning.' }).getAttribute('data-state')).toBe('read');
    // The customer types for a while (the page says so at most every 2 s, so some keystrokes fall after the last time it did).
    await carol.locator('#text').pressSequentially('One more thing', { delay: 150 });
    await first.page.locator('#typing', { hasText: 'The customer is typing' }).waitFor();
    await carol.locator('#text').fill('');

    // Images both ways: the customer's shows in the workbench, Ann's in the customer's chat.
    await carol.locator('#file').setInputFiles({ name: 'receipt.png', mimeType: 'image/png', buffer: solidPng(140, 90, [190, 24, 93]) });
    const received = first.page.locator('li.msg.theirs img[alt="receipt.png"]');
    await expect.poll(() => received.evaluate((image: HTMLImageElement) => image.complete && image.naturalWidth)).toBe(140);
    await first.page.locator('#file').setInputFiles({ name: 'map.png', mimeType: 'image/png', buffer: solidPng(100, 70, [37, 99, 235]) });
    const sent = carol.locator('li.msg.theirs img[alt="map.png"]');
    await expect.poll(() => sent.evaluate((image: HTMLImageElement) => image.complete && image.naturalWidth)).toBe(100);
    await carol.locator('#text').pressSequentially('Thanks, that is quick', { delay: 150 });
    await first.page.locator('#typing', { hasText: 'The customer is typing' }).waitFor();
    await first.page.screenshot({ path: join(SCREENSHOTS, 'desk-conversation.png') });

    // A second customer; Ann closes that consultation, and its customer may rate it.
    const dave = await customer(cell);
    await write(dave, 'Do you ship to Norway?');
    await first.page.locator('#mine li', { hasText: 'g-' }).nth(1).waitFor();
    const daveConv = (await first.page.locator('#mine li').nth(1).getAttribute('data-conv'))!;
    await first.page.locator(`#mine li[data-conv="${daveConv}"] button`).click();
    await write(first.page, 'Yes, in 3 days.');
    await dave.locator('li.msg.theirs', { hasText: 'Yes, in 3 days.' }).waitFor();
    await first.page.getByRole('button', { name: 'Close conversation' }).click();
    await dave.locator('#rating').waitFor();
    await first.page.locator(`#mine li[data-conv="${daveConv}"]`).waitFor({ state: 'detached' });
    // Dave rates it and writes again: a new consultation, given to Ann (she served him last), whose
    // conversation view lists the earlier one, read from the history's system messages.
    await dave.locator('label[for="score-4"]').click();
    await dave.locator('#rating button[type="submit"]').click();
    await dave.locator('li.msg.system', { hasText: 'You rated the conversation 4 of 5.' }).waitFor();
    await write(dave, 'And to Sweden?');
    await first.page.locator(`#mine li[data-conv="${daveConv}"] button`).click();
    await first.page.locator('li.msg.theirs', { hasText: 'And to Sweden?' }).waitFor();
    const earlier = first.page.locator('#earlier');
    await earlier.locator('summary', { hasText: 'Earlier consultations (1)' }).click();
    const entry = earlier.locator('#earlier-list li');
    await expect.poll(() => entry.count()).toBe(1);
    expect(await entry.textContent()).toMatch(/: Ann; closed by the agent; rated 4 of 5$/);
    await entry.locator('button').click();
    await first.page.screenshot({ path: join(SCREENSHOTS, 'desk-earlier.png') });
    await first.page.getByRole('button', { name: 'Close conversation' }).click();
    await first.page.locator(`#mine li[data-conv="${daveConv}"]`).waitFor({ state: 'detached' });

    // Bob comes online; Ann transfers the first customer to him: Bob gets the history, Ann's lists drop it.
    expect(await bob.request({ op: 'status', id: 'online', status: 'online' })).toMatchObject({ t: 'ok' });
    await first.page.locator(`#mine li[data-conv="${conv}"] button`).click();
    await expect.poll(() => first.page.locator('#transfer-to option').allTextContents()).toContain('Bob');
    await first.page.getByLabel('Transfer to').selectOption('agent:bob');
    await first.page.getByRole('button', { name: 'Transfer', exact: true }).click();
    await bob.until(() => bob.messages(conv).some((message) => message.body === 'Hi, where is my order?'), { what: 'the history at Bob' });
    await carol.locator('li.msg.system', { hasText: 'You were passed on to Bob.' }).waitFor();
    await carol.locator('#agent', { hasText: 'You are chatting with Bob' }).waitFor();
    for (const tab of [first.page, second.page]) await tab.locator(`#mine li[data-conv="${conv}"]`).waitFor({ state: 'detached' });

    // The status switch.
    await first.page.getByLabel('Status').selectOption('away');
    let asked = 0;
    await expect
      .poll(async () => {
        const desk = await bob.request({ op: 'desk', id: `desk-${++asked}` });
        return desk.t === 'desk' ? desk.agents.find((agent) => agent.id === 'ann')?.status : desk;
      })
      .toBe('away');
    expect([...first.errors, ...second.errors]).toEqual([]);
  });

  it('a supervisor sees a colleague\'s conversation and watches it live', async () => {
    const cell = await cleanup.cell({
      agents: [
        { id: 'ann', name: 'Ann', capacity: 3 },
        { id: 'sue', name: 'Sue', password: 'sue-password-0123', capacity: 1, supervisor: true },
      ],
    });
    const ann = await cleanup.client(cell.url, await tokenFor({ user: 'ann', merchant: 'm1', device: 'desk' }));
    ann.autoAck();
    const sue = await workbench(cell, 'sue', 'sue-password-0123');
    // Sue is away: the desk gives the customer to Ann.
    await sue.page.getByLabel('Status').selectOption('away');
    const carol = await customer(cell);
    await write(carol, 'Can I change my delivery address?');
    await sue.page.locator('#others li', { hasText: 'Ann · open' }).waitFor();
    await sue.page.locator('#others li button').click();
    await sue.page.locator('li.msg.theirs', { hasText: 'Can I change my delivery address?' }).waitFor();
    expect(await sue.page.locator('#customer').textContent()).toContain("(Ann's)");
    expect(await sue.page.locator('#text').isDisabled()).toBe(true);
    await ann.until(() => ann.messages().length > 0, { what: 'the message at Ann' });
    const conv = ann.messages()[0]!.conv;
    expect(await ann.request({ op: 'send', id: 'ann-1', conv, cmid: 'ann-1', body: 'Yes, until it ships.' })).toMatchObject({ t: 'sent' });
    await sue.page.locator('li.msg.mine', { hasText: 'Yes, until it ships.' }).waitFor();
    expect(sue.errors).toEqual([]);
  });

  it('refuses a wrong password with a message the agent can read', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'ann', name: 'Ann', password: ANN_PASSWORD }] });
    const { context } = await newContext({ width: 1100, height: 680 });
    const page = await context.newPage();
    await page.goto(`${cell.httpUrl}/app/agent.html?tenant=mall&merchant=m1&agent=ann`);
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#banner', { hasText: 'Wrong agent name or password.' }).waitFor();
    expect(await page.locator('#workspace').isHidden()).toBe(true);
  });
});
