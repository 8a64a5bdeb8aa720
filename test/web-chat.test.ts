/**
 * The customer chat page (/app/, web/chat/) in Debian's Chromium (driven through playwright-core)
 * against a real cell serving it, with the merchant's agent on a raw protocol client in Node:
 * both ways, read receipts, typing, a return after being away, the queue, a close and a rating.
 * Without /usr/bin/chromium the suite is reported as skipped. Each test saves screenshots to
 * .test-output/web/ (docs/web.md shows copies of them from docs/web/).
 */
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { HAVE_CHROMIUM, CHROMIUM_SKIP_REASON, SCREENSHOTS, useChromium } from './browser/chromium.js';
import { describe, expect, it } from 'vitest';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { solidPng } from './browser/solid-png.js';
import { TcpProxy } from './browser/tcp-proxy.js';
import { Cleanup, tokenFor, type RawClient, type TestCell } from './harness.js';

/** Where the screenshots go, for a person to look at (not committed; docs/web/ holds copies). */
/** A phone. */
const PHONE = { width: 390, height: 740 };
const AGENT_PASSWORD = 'ann-password-0123';

if (!HAVE_CHROMIUM) console.warn(`web-chat.test.ts: skipped: ${CHROMIUM_SKIP_REASON}`);

type Consultation = Extract<ServerFrame, { t: 'consultation' }>;

describe.skipIf(!HAVE_CHROMIUM)(HAVE_CHROMIUM ? 'customer chat page in Chromium' : `customer chat page in Chromium (skipped: ${CHROMIUM_SKIP_REASON})`, () => {
  const cleanup = new Cleanup();
  const browser = useChromium(cleanup);

  /** A customer's browser (its own storage: one guest) on a phone-sized screen. */
  async function customerBrowser(): Promise<{ context: BrowserContext; errors: string[] }> {
    const context = await browser().newContext({ viewport: PHONE });
    context.setDefaultTimeout(15_000);
    cleanup.add(() => context.close());
    const errors: string[] = [];
    context.on('weberror', (error) => errors.push(String(error.error())));
    return { context, errors };
  }

  /** Opens the merchant's chat link in `context`, as a customer who clicked it. */
  async function openChat(context: BrowserContext, cell: { httpUrl: string }, query = 'tenant=mall&merchant=m1'): Promise<Page> {
    const page = await context.newPage();
    await page.goto(`${cell.httpUrl}/app/?${query}`);
    // Ready once the guest's conversation is known: the composer is enabled.
    await page.locator('#text:not([disabled])').waitFor();
    return page;
  }

  async function write(page: Page, text: string): Promise<void> {
    await page.locator('#text').fill(text);
    await page.locator('#text').press('Enter');
  }

  /** The merchant's agent `ann` on a raw client in Node, acknowledging what it receives. */
  async function agentAnn(cell: TestCell, { autoAck = true } = {}): Promise<RawClient> {
    const agent = await cleanup.client(cell.url, await tokenFor({ user: 'ann', merchant: 'm1', device: 'desk' }));
    if (autoAck) agent.autoAck();
    return agent;
  }

  function consultationsOf(agent: RawClient): Consultation[] {
    return agent.frames.filter((frame): frame is Consultation => frame.t === 'consultation');
  }

  /** The conversation of the consultation assigned to `agent` whose customer wrote `body`. */
  async function conversationWith(agent: RawClient, body: string): Promise<string> {
    await agent.until(() => agent.messages().some((message) => message.body === body), { what: `"${body}" at the agent` });
    return agent.messages().find((message) => message.body === body)!.conv;
  }

  it('chats both ways: sent, delivered, then read; typing; the agent in the header; a message written while away is there on return', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'ann', name: 'Ann', password: AGENT_PASSWORD, capacity: 2 }] });
    // Ann's desk acks by hand at first, so that the customer's message stays "sent" until it does.
    const agent = await agentAnn(cell, { autoAck: false });
    const { context, errors } = await customerBrowser();
    let page = await openChat(context, cell);

    await write(page, 'Hello, my parcel has not arrived');
    const mine = page.locator('li.msg.mine', { hasText: 'Hello, my parcel has not arrived' });
    await expect.poll(() => mine.getAttribute('data-state')).toBe('sent');
    const conv = await conversationWith(agent, 'Hello, my parcel has not arrived');
    expect(conv).toMatch(/^m1:g-/);
    await page.locator('#agent', { hasText: 'You are chatting with Ann' }).waitFor();

    expect(await mine.locator('.tick').textContent()).toContain('Sent');

    // The agent's device acks it: the customer's message turns delivered.
    const seq = agent.messages(conv).find((message) => message.body === 'Hello, my parcel has not arrived')!.seq;
    agent.autoAck();
    await expect.poll(() => mine.getAttribute('data-state')).toBe('delivered');
    expect(await mine.locator('.tick').textContent()).toBe(' ✓✓ Delivered');
    await page.screenshot({ path: join(SCREENSHOTS, 'chat-delivered.png') });

    // The agent reads it: the customer's message turns read.
    expect(await agent.request({ op: 'read', id: 'read-1', conv, seq })).toMatchObject({ t: 'ok' });
    await expect.poll(() => mine.getAttribute('data-state')).toBe('read');
    expect(await mine.locator('.tick').textContent()).toContain('Read');

    // The agent types, then answers.
    agent.send({ op: 'typing', conv });
    await page.locator('#typing', { hasText: 'Ann is typing' }).waitFor();
    expect(await agent.request({ op: 'send', id: 'reply-1', conv, cmid: 'ann-1', body: 'Sorry to hear that! Let me check.' })).toMatchObject({ t: 'sent' });
    const answer = page.locator('li.msg.theirs', { hasText: 'Sorry to hear that! Let me check.' });
    await answer.waitFor();
    expect(await answer.locator('.who').textContent()).toBe('Ann');
    expect(await page.locator('#older').isHidden()).toBe(true);
    // The customer has the page open: it reads the answer, and the agent learns it.
    await agent.until(() => agent.frames.some((frame) => frame.t === 'receipt' && frame.conv === conv && frame.role === 'customer' && frame.seq >= seq + 2), {
      what: "the customer's read receipt",
    });
    await page.screenshot({ path: join(SCREENSHOTS, 'chat-assigned.png') });

    // The customer leaves (the tab closes); the agent writes meanwhile.
    await page.close();
    expect(await agent.request({ op: 'send', id: 'reply-2', conv, cmid: 'ann-2', body: 'Found it: it leaves the depot today.' })).toMatchObject({ t: 'sent' });
    // The customer comes back through the same link: the same guest, the same conversation, the answer there.
    page = await openChat(context, cell);
    await page.locator('li.msg.theirs', { hasText: 'Found it: it leaves the depot today.' }).waitFor();
    await expect.poll(() => page.locator('li.msg.mine', { hasText: 'Hello, my parcel has not arrived' }).getAttribute('data-state')).toBe('read');
    await page.locator('#agent', { hasText: 'Ann' }).waitFor({ state: 'attached' });
    await write(page, 'Great, thank you!');
    await agent.until(() => agent.messages(conv).some((message) => message.body === 'Great, thank you!'), { what: 'the message after the return' });
    expect(errors).toEqual([]);
  });

  it('keeps what the customer writes while the connection is down and sends it when it is back, with a banner meanwhile, also after the tab was closed', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'ann', name: 'Ann', password: AGENT_PASSWORD }] });
    const agent = await agentAnn(cell);
    // The page reaches its cell through a proxy that the test can cut (Chromium's offline
    // emulation leaves open WebSockets alone); the page, its guest token and its WebSocket all
    // come from the proxy's address, which is then the page's own origin.
    const proxy = await TcpProxy.start(cell.cell.port);
    cleanup.add(() => proxy.close());
    const { context, errors } = await customerBrowser();
    const page = await openChat(context, { httpUrl: `http://127.0.0.1:${proxy.port}` });
    await write(page, 'First question');
    const conv = await conversationWith(agent, 'First question');

    // The network goes away.
    proxy.cut();
    await page.locator('#banner', { hasText: 'Reconnecting' }).waitFor();
    await write(page, 'Written while offline');
    await expect.poll(() => page.locator('li.msg.mine', { hasText: 'Written while offline' }).getAttribute('data-state')).toBe('waiting');
    await page.screenshot({ path: join(SCREENSHOTS, 'chat-offline.png') });
    expect(agent.messages(conv).some((message) => message.body === 'Written while offline')).toBe(false);

    proxy.restore();
    await agent.until(() => agent.messages(conv).some((message) => message.body === 'Written while offline'), { what: 'the offline message at the agent', timeoutMs: 20_000 });
    // Ann's desk acknowledges it at once: past sent, it shows delivered.
    await expect.poll(() => page.locator('li.msg.mine', { hasText: 'Written while offline' }).getAttribute('data-state'), { timeout: 15_000 }).toBe('delivered');
    await page.locator('#banner').waitFor({ state: 'hidden' });

    // Offline again, the customer writes and closes the tab before the network is back: the
    // message waits in the browser's storage and goes out, once, when the link is opened again.
    proxy.cut();
    await page.locator('#banner', { hasText: 'Reconnecting' }).waitFor();
    await write(page, 'Written before closing the tab');
    await expect.poll(() => page.locator('li.msg.mine', { hasText: 'Written before closing the tab' }).getAttribute('data-state')).toBe('waiting');
    await page.close();
    proxy.restore();
    const again = await openChat(context, { httpUrl: `http://127.0.0.1:${proxy.port}` });
    await agent.until(() => agent.messages(conv).some((message) => message.body === 'Written before closing the tab'), { what: 'the message of the closed tab at the agent' });
    await expect.poll(() => again.locator('li.msg.mine', { hasText: 'Written before closing the tab' }).getAttribute('data-state')).toBe('delivered');
    expect(await again.locator('li.msg.mine', { hasText: 'Written before closing the tab' }).count()).toBe(1);
    expect(agent.messages(conv).filter((message) => message.body === 'Written before closing the tab')).toHaveLength(1);
    expect(await again.evaluate(() => Object.keys(window.localStorage).filter((key) => key.startsWith('cellmesh.chat.unsent.')))).toEqual([]);
    expect(errors).toEqual([]);
  });

  it('shows waiting customers their queue positions, falling as an agent frees up; the closed conversation can be rated', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'ann', name: 'Ann', password: AGENT_PASSWORD, capacity: 1 }] });
    const agent = await agentAnn(cell);
    const first = await openChat((await customerBrowser()).context, cell);
    await write(first, 'I was here first');
    const firstConv = await conversationWith(agent, 'I was here first');

    const second = await openChat((await customerBrowser()).context, cell);
    await write(second, 'Me too, please');
    await second.locator('#queue', { hasText: 'You are number 1 in the queue' }).waitFor();
    expect(await second.locator('#agent').textContent()).toBe('Waiting for an agent');
    const third = await openChat((await customerBrowser()).context, cell);
    await write(third, 'And me');
    await third.locator('#queue', { hasText: 'You are number 2 in the queue' }).waitFor();
    await second.screenshot({ path: join(SCREENSHOTS, 'chat-queued.png') });

    // Ann closes the first consultation: the second customer is served, the third moves up, the first may rate.
    const consultation = consultationsOf(agent).find((entry) => entry.conv === firstConv && entry.state === 'assigned')!;
    expect(await agent.request({ op: 'close', id: 'close-1', conv: firstConv, consultation: consultation.consultation })).toMatchObject({ t: 'ok' });
    await second.locator('#agent', { hasText: 'You are chatting with Ann' }).waitFor();
    expect(await second.locator('#queue').isHidden()).toBe(true);
    await third.locator('#queue', { hasText: 'You are number 1 in the queue' }).waitFor();
    await conversationWith(agent, 'Me too, please');

    await first.locator('#rating').waitFor();
    await first.locator('li.msg.system', { hasText: 'The conversation was closed.' }).waitFor();
    await first.screenshot({ path: join(SCREENSHOTS, 'chat-rating.png') });
    await first.locator('label[for="score-4"]').click();
    await first.locator('#comment').fill('Quick and kind');
    await first.locator('#rating button[type="submit"]').click();
    await first.locator('li.msg.system', { hasText: 'You rated the conversation 4 of 5.' }).waitFor();
    expect(await first.locator('#rating').isHidden()).toBe(true);
  });

  it('pages the history upwards: the newest page first, older ones on demand', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'ann', name: 'Ann', password: AGENT_PASSWORD }] });
    const agent = await agentAnn(cell);
    const { context } = await customerBrowser();
    let page = await openChat(context, cell);
    await write(page, 'Tell me everything');
    const conv = await conversationWith(agent, 'Tell me everything');
    let lastSeq = 0;
    for (let index = 1; index <= 40; index++) {
      const sent = await agent.request({ op: 'send', id: `line-${index}`, conv, cmid: `ann-line-${index}`, body: `Line ${index}` });
      expect(sent).toMatchObject({ t: 'sent' });
      if (sent.t === 'sent') lastSeq = sent.seq;
    }
    // The page acks what it was pushed; closing it earlier would have the cell push the rest again
    // to the reopened page (offline sync), on top of its newest history page.
    await agent.next((frame) => frame.t === 'delivered' && frame.conv === conv && frame.role === 'customer' && frame.seq === lastSeq, { fromStart: true });
    await page.close();
    page = await openChat(context, cell);
    await page.locator('li.msg.theirs', { hasText: 'Line 40' }).waitFor();
    // 42 messages (the customer's, the desk's, 40 lines): the page holds the newest 30.
    expect(await page.locator('li.msg').count()).toBe(30);
    // Scrolling to the top loads the older ones (as "Load earlier messages" does).
    await page.locator('#log').evaluate((log) => log.scrollTo({ top: 0 }));
    await page.locator('li.msg.mine', { hasText: 'Tell me everything' }).waitFor();
    expect(await page.locator('li.msg').count()).toBe(42);
    expect(await page.locator('li.msg').evaluateAll((items) => items.map((item) => Number(item.getAttribute('data-seq'))))).toEqual(
      Array.from({ length: 42 }, (_unused, index) => index + 1),
    );
    expect(await page.locator('#older').isHidden()).toBe(true);
  });

  it('the browser SDK as one ES module on a merchant\'s page: the example page chats as a guest', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'ann', name: 'Ann', password: AGENT_PASSWORD }] });
    const agent = await agentAnn(cell);
    const { context, errors } = await customerBrowser();
    const page = await context.newPage();
    await page.goto(`${cell.httpUrl}/app/example.html?tenant=mall&merchant=m1`);
    await page.locator('#state', { hasText: 'Connected' }).waitFor();
    await page.locator('#text').fill('Hello from the shop page');
    await page.getByRole('button', { name: 'Send' }).click();
    const conv = await conversationWith(agent, 'Hello from the shop page');
    expect(await agent.request({ op: 'send', id: 'example-reply', conv, cmid: 'ann-example', body: 'Hello, shop visitor' })).toMatchObject({ t: 'sent' });
    await page.locator('li.msg.theirs', { hasText: 'Hello, shop visitor' }).waitFor();
    expect(errors).toEqual([]);
  });

  it('sends an image from the page to the agent, and shows the agent\'s image', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'ann', name: 'Ann', password: AGENT_PASSWORD }] });
    const agent = await agentAnn(cell);
    const { context, errors } = await customerBrowser();
    const page = await openChat(context, cell);
    await write(page, 'The box arrived broken, see the photo');
    const conv = await conversationWith(agent, 'The box arrived broken, see the photo');

    // The customer picks a picture: it is uploaded, then sent as a message of its own.
    await page.locator('#file').setInputFiles({ name: 'broken-box.png', mimeType: 'image/png', buffer: PHOTO_PNG });
    await agent.until(() => agent.messages(conv).some((message) => message.attachments?.[0]?.name === 'broken-box.png'), { what: 'the photo at the agent' });
    const photo = agent.messages(conv).find((message) => message.attachments?.[0]?.name === 'broken-box.png')!;
    expect(photo.attachments).toEqual([{ id: expect.stringMatching(/^[0-9a-f]{64}$/), name: 'broken-box.png', type: 'image/png', bytes: PHOTO_PNG.byteLength }]);
    const shown = page.locator(`li.msg.mine[data-seq="${photo.seq}"] img[alt="broken-box.png"]`);
    await expect.poll(() => shown.evaluate((image: HTMLImageElement) => image.complete && image.naturalWidth)).toBe(160);

    // The agent answers with an image of its own: uploaded over HTTP with its token, then sent.
    const agentToken = await tokenFor({ user: 'ann', merchant: 'm1', device: 'desk' });
    const upload = await fetch(`${cell.httpUrl}/v1/conversations/${encodeURIComponent(conv)}/attachments?name=label.png`, {
      method: 'POST',
      headers: { authorization: `Bearer ${agentToken}` },
      body: new Uint8Array(LABEL_PNG),
    });
    expect(upload.status).toBe(201);
    const { id } = (await upload.json()) as { id: string };
    expect(await agent.request({ op: 'send', id: 'photo-reply', conv, cmid: 'ann-photo', body: 'Please print this return label', attachments: [id] })).toMatchObject({ t: 'sent' });
    const theirs = page.locator('li.msg.theirs', { hasText: 'Please print this return label' }).locator('img[alt="label.png"]');
    await expect.poll(() => theirs.evaluate((image: HTMLImageElement) => image.complete && image.naturalWidth)).toBe(120);
    await page.screenshot({ path: join(SCREENSHOTS, 'chat-images.png') });
    expect(errors).toEqual([]);
  });
});

const PHOTO_PNG = solidPng(160, 100, [180, 83, 9]);
const LABEL_PNG = solidPng(120, 80, [21, 128, 61]);
