/**
 * The client SDK in a real browser against a real cell: the browser entry (client/browser.ts)
 * bundled by esbuild as an app would ship it, served by a Node HTTP server of the test's own on
 * 127.0.0.1, loaded in Debian's Chromium (driven through playwright-core), talking to an
 * in-process cell over uWS. Without /usr/bin/chromium the suite is reported as skipped.
 */
import { createServer } from 'node:net';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { HAVE_CHROMIUM, CHROMIUM_SKIP_REASON, launchChromium } from './browser/chromium.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCell } from '../assembly/process-cell.js';
import { parseCellConfig } from '../assembly/config.js';
import { silentLogger } from '../platform/logger.js';
import type { ServerFrame } from '../cell/protocol/frames.js';
import type { PageConnectOptions, PageConnectResult, PageLog } from './browser/page-app.js';
import { PageServer, bundlePageApp } from './browser/page-server.js';
import { TcpProxy } from './browser/tcp-proxy.js';
import { metricValue } from '../platform/prometheus-text.js';
import { ALLOWED_ORIGIN, Cleanup, RawClient, SECRET, TENANT, fetchMetrics, tokenFor, type TestCell } from './harness.js';

const CONV = 'm1:alice';
/** Fast reconnects, so the network tests take a second rather than a minute. */
const QUICK_BACKOFF = { initialDelayMs: 100, maxDelayMs: 500, jitter: 0.5 };

if (!HAVE_CHROMIUM) console.warn(`browser-sdk.test.ts: skipped: ${CHROMIUM_SKIP_REASON}`);

/** Rejects after `ms` (the browser's own calls, page.evaluate among them, have no bound). */
async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}

/** Only a poll interval or a bound on a wait; never a wait for something to happen. */
async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/** One browser tab with the test page, and what it printed. */
interface TestPage {
  page: Page;
  context: BrowserContext;
  console: string[];
  pageErrors: string[];
  /** Text frames the page's WebSockets sent, as Chromium put them on the wire. */
  framesSent: string[];
}

describe.skipIf(!HAVE_CHROMIUM)(HAVE_CHROMIUM ? 'client SDK in Chromium' : `client SDK in Chromium (skipped: ${CHROMIUM_SKIP_REASON})`, () => {
  const suite = new Cleanup();
  const cleanup = new Cleanup();
  let browser: Browser;
  let pages: PageServer;

  beforeAll(async () => {
    const bundle = await withTimeout(bundlePageApp(), 30_000, 'bundling the page with esbuild');
    // The SDK must reach the browser without Node's adapters (ws, node:crypto, SystemClock).
    const nodeOnly = bundle.inputs.filter((input) => /(^|\/)(node_modules\/ws|platform\/(clock|random)\.ts|client\/(index|ws-transport)\.ts)$/.test(input));
    expect(nodeOnly).toEqual([]);
    expect(bundle.inputs).toContain('client/browser.ts');
    pages = await PageServer.start(bundle.code);
    suite.add(() => withTimeout(pages.close(), 10_000, 'closing the page server'));
    browser = await launchChromium();
    suite.add(() => withTimeout(browser.close(), 15_000, 'closing Chromium'));
  }, 60_000);

  afterEach(() => cleanup.run(), 60_000);
  afterAll(() => suite.run(), 60_000);

  /** A new browser context (its own cookies, cache, sockets) with the test page loaded from `host`. */
  async function openPage(host: '127.0.0.1' | 'localhost'): Promise<TestPage> {
    const context = await browser.newContext();
    cleanup.add(async () => {
      await withTimeout(
        Promise.race([
          // Close the clients politely first, as a page unload would not.
          Promise.all(context.pages().map((page) => page.evaluate(() => window.cellmeshTest?.closeAll()).catch(() => undefined))),
          sleep(3_000),
        ]),
        5_000,
        'closing the page clients',
      );
      await withTimeout(context.close(), 10_000, 'closing a browser context');
    });
    context.setDefaultTimeout(15_000);
    const page = await context.newPage();
    const tab: TestPage = { page, context, console: [], pageErrors: [], framesSent: [] };
    page.on('console', (message) => tab.console.push(`${message.type()}: ${message.text()}`));
    page.on('websocket', (socket) =>
      socket.on('framesent', ({ payload }) => {
        if (typeof payload === 'string') tab.framesSent.push(payload);
      }),
    );
    page.on('pageerror', (error) => tab.pageErrors.push(String(error)));
    await page.goto(pages.url(host), { waitUntil: 'load', timeout: 15_000 });
    await page.waitForFunction('window.cellmeshTest !== undefined', undefined, { timeout: 10_000 });
    return tab;
  }

  async function connect(tab: TestPage, name: string, options: PageConnectOptions): Promise<PageConnectResult> {
    return withTimeout(
      tab.page.evaluate(([clientName, connectOptions]) => window.cellmeshTest.connect(clientName, connectOptions), [name, options] as const),
      (options.waitMs ?? 10_000) + 5_000,
      `connecting ${name} in the page`,
    );
  }

  async function pageLog(tab: TestPage, name: string): Promise<PageLog> {
    return withTimeout(
      tab.page.evaluate((clientName) => window.cellmeshTest.log(clientName), name),
      10_000,
      `reading the log of ${name}`,
    );
  }

  /** Polls the page's record of client `name` until `condition` holds. */
  async function waitForLog(tab: TestPage, name: string, condition: (log: PageLog) => boolean, what: string, timeoutMs = 10_000): Promise<PageLog> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const log = await pageLog(tab, name);
      if (condition(log)) return log;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}; page log of ${name}: ${JSON.stringify(log).slice(0, 3_000)}; ` +
            `console: ${JSON.stringify(tab.console.slice(-10))}; page errors: ${JSON.stringify(tab.pageErrors)}`,
        );
      }
      await sleep(25);
    }
  }

  async function originRejections(cell: TestCell): Promise<number> {
    const text = await fetchMetrics(cell.httpUrl);
    return metricValue(text, 'cellmesh_upgrades_rejected_total', { code: 'ORIGIN_FORBIDDEN' }) ?? 0;
  }

  function customerToken(device: string): Promise<string> {
    return tokenFor({ user: 'alice', device });
  }

  /** Agent a1 of merchant m1 on a raw protocol client, acknowledging what it receives. */
  async function agentOf(cell: { url: string }, device = 'desk'): Promise<RawClient> {
    const agent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device }));
    agent.autoAck();
    return agent;
  }

  async function historyOf(agent: RawClient, id: string): Promise<Array<Extract<ServerFrame, { t: 'msg' }>>> {
    const answer = await agent.request({ op: 'history', id, conv: CONV, limit: 200 });
    if (answer.t !== 'history') throw new Error(`history answered ${JSON.stringify(answer)}`);
    return answer.messages as Array<Extract<ServerFrame, { t: 'msg' }>>;
  }

  /** Starts a send in the page without waiting for its confirmation. */
  async function sendLater(tab: TestPage, body: string): Promise<void> {
    await withTimeout(
      tab.page.evaluate(([conv, text]) => window.cellmeshTest.sendLater('alice', conv, text), [CONV, body] as const),
      10_000,
      'starting a send',
    );
  }

  /** Connection attempts that failed: each goes from connecting back to reconnecting. */
  function failedAttempts(log: PageLog): number {
    return log.states.filter((change) => change.previous === 'connecting' && change.state === 'reconnecting').length;
  }

  function seqsOf(log: PageLog): number[] {
    return log.messages.filter((message) => message.conv === CONV).map((message) => message.seq);
  }

  it('sends with seqs 1..N in order, receives replies, syncs devices and read receipts', async () => {
    const cell = await cleanup.cell({ origins: [pages.origin('127.0.0.1')] });
    const agent = await agentOf(cell);
    // Two browser contexts: the customer's web tab and laptop (opened together; each costs a renderer).
    const [web, laptop] = await Promise.all([openPage('127.0.0.1'), openPage('127.0.0.1')]);

    expect(await connect(web, 'alice', { url: cell.url, token: await customerToken('web') })).toEqual({
      ok: true,
      session: { user: 'alice', device: 'web', role: 'customer', tenant: 'mall' },
    });
    expect(await connect(laptop, 'alice', { url: cell.url, token: await customerToken('laptop') })).toMatchObject({
      ok: true,
      session: { device: 'laptop' },
    });

    // A customer writing N messages: each is acknowledged with the next seq.
    const bodies = ['hello', 'my order 1042 has not arrived', 'it was due on Monday', 'tracking says "delivered"', 'ünïcödé ✓ 🙂'];
    const results = await withTimeout(
      web.page.evaluate(([conv, texts]) => window.cellmeshTest.sendEach('alice', conv, [...texts]), [CONV, bodies] as const),
      15_000,
      'the page sending',
    );
    expect(results.map((result) => [result.conv, result.seq])).toEqual(bodies.map((_body, index) => [CONV, index + 1]));
    expect(new Set(results.map((result) => result.cmid)).size).toBe(bodies.length);

    let webLog = await waitForLog(web, 'alice', (log) => log.messages.length >= bodies.length, 'the own messages as message events');
    expect(webLog.sent.map((sent) => sent.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(webLog.messages.map((message) => [message.seq, message.body, message.from, message.device])).toEqual(
      bodies.map((body, index) => [index + 1, body, 'alice', 'web']),
    );

    // The merchant's agent receives them in order.
    await agent.until(() => agent.messages(CONV).length >= bodies.length, { what: 'the customer messages at the agent' });
    expect(agent.messages(CONV).map((message) => [message.seq, message.body, message.from, message.device])).toEqual(
      bodies.map((body, index) => [index + 1, body, 'alice', 'web']),
    );

    // Multi-device: the customer's laptop shows what the web tab sent.
    let laptopLog = await waitForLog(laptop, 'alice', (log) => log.messages.length >= bodies.length, 'the web messages on the laptop');
    expect(laptopLog.messages.map((message) => [message.seq, message.body, message.device])).toEqual(
      bodies.map((body, index) => [index + 1, body, 'web']),
    );

    // The agent reads up to 5 (before replying, which would count as reading): the receipt
    // reaches both of the customer's pages.
    expect(await agent.request({ op: 'read', id: 'read-1', conv: CONV, seq: 5 })).toMatchObject({ t: 'ok' });
    for (const tab of [web, laptop]) {
      const log = await waitForLog(tab, 'alice', (entry) => entry.receipts.some((receipt) => receipt.user === 'a1'), 'the agent read receipt');
      expect(log.receipts.filter((receipt) => receipt.user === 'a1')).toEqual([{ conv: CONV, user: 'a1', role: 'agent', seq: 5 }]);
    }

    // The agent's reply reaches both of the customer's pages as a message event.
    const replyBody = 'Sorry about that, Alice: a new parcel leaves today.';
    const reply = await agent.request({ op: 'send', id: 'reply-1', conv: CONV, cmid: 'agent-reply-1', body: replyBody });
    expect(reply).toMatchObject({ t: 'sent', conv: CONV, seq: 6 });
    for (const tab of [web, laptop]) {
      const log = await waitForLog(tab, 'alice', (entry) => entry.messages.some((message) => message.seq === 6), 'the agent reply');
      expect(log.messages.at(-1)).toMatchObject({ conv: CONV, seq: 6, from: 'a1', role: 'agent', device: 'desk', body: replyBody });
    }

    // The customer reads on the laptop: the agent and the customer's web tab learn it.
    await withTimeout(laptop.page.evaluate((conv) => window.cellmeshTest.read('alice', conv, 6), CONV), 10_000, 'read on the laptop');
    await agent.until(() => agent.all('receipt').some((receipt) => receipt.user === 'alice' && receipt.seq === 6), {
      what: "the customer's receipt at the agent",
    });
    webLog = await waitForLog(web, 'alice', (log) => log.receipts.some((receipt) => receipt.user === 'alice'), "the laptop's receipt on the web tab");
    expect(webLog.receipts.filter((receipt) => receipt.user === 'alice')).toEqual([{ conv: CONV, user: 'alice', role: 'customer', seq: 6 }]);

    // History through the browser client, and nothing seen twice or out of order anywhere.
    const history = await withTimeout(web.page.evaluate((conv) => window.cellmeshTest.history('alice', conv), CONV), 10_000, 'history');
    expect(history.map((message) => [message.seq, message.body])).toEqual([...bodies, replyBody].map((body, index) => [index + 1, body]));
    webLog = await pageLog(web, 'alice');
    laptopLog = await pageLog(laptop, 'alice');
    expect(seqsOf(webLog)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(seqsOf(laptopLog)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const [tab, log] of [[web, webLog], [laptop, laptopLog]] as const) {
      expect(log.errors).toEqual([]);
      expect(log.state).toBe('open');
      expect(tab.pageErrors).toEqual([]);
    }
  });

  /** Sends `count` messages from the page in one go; returns the call order's bodies and the results. */
  async function sendBurst(count: number): Promise<{ web: TestPage; agent: RawClient; bodies: string[]; seqs: number[] }> {
    const cell = await cleanup.cell({ origins: [pages.origin('127.0.0.1')] });
    const agent = await agentOf(cell);
    const web = await openPage('127.0.0.1');
    expect(await connect(web, 'alice', { url: cell.url, token: await customerToken('web') })).toMatchObject({ ok: true });
    const bodies = Array.from({ length: count }, (_unused, index) => `burst ${index + 1}`);
    const results = await withTimeout(
      web.page.evaluate(([conv, texts]) => window.cellmeshTest.send('alice', conv, [...texts]), [CONV, bodies] as const),
      15_000,
      'the page sending a burst',
    );
    return { web, agent, bodies, seqs: results.map((result) => result.seq) };
  }

  it('keeps a burst of sends in call order on the wire and delivers it once in seq order', async () => {
    const count = 12;
    const { web, agent, bodies, seqs } = await sendBurst(count);
    // The SDK's part: one frame per send, on the wire in the order of the calls.
    const sendFrames = web.framesSent.map((text) => JSON.parse(text) as { op: string; body?: string }).filter((frame) => frame.op === 'send');
    expect(sendFrames.map((frame) => frame.body)).toEqual(bodies);
    // Every send confirmed once, with the seqs 1..N between them.
    expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_unused, index) => index + 1));
    // Guarantee 3 on both sides: the page's message events and the agent's pushes in seq order, once each.
    const log = await waitForLog(web, 'alice', (entry) => entry.messages.length >= count, 'the burst as message events');
    expect(seqsOf(log)).toEqual(Array.from({ length: count }, (_unused, index) => index + 1));
    for (const message of log.messages) expect(message.body).toBe(bodies[seqs.indexOf(message.seq)]);
    await agent.until(() => agent.messages(CONV).length >= count, { what: 'the burst at the agent' });
    expect(agent.messages(CONV).map((message) => message.seq)).toEqual(Array.from({ length: count }, (_unused, index) => index + 1));
    expect(log.errors).toEqual([]);
    expect(web.pageErrors).toEqual([]);
  });

  it('numbers a burst of sends in call order', async () => {
    const count = 12;
    const { seqs } = await sendBurst(count);
    expect(seqs).toEqual(Array.from({ length: count }, (_unused, index) => index + 1));
  });

  it('connects only from an allowed origin; a forbidden one learns ORIGIN_FORBIDDEN and stops retrying', async () => {
    // Only the 127.0.0.1 origin of the page server is allowed; the same page from localhost is
    // another origin for the browser (and for the cell's exact match).
    const cell = await cleanup.cell({ origins: [pages.origin('127.0.0.1')] });
    const before = await originRejections(cell);

    const [foreign, allowed] = await Promise.all([openPage('localhost'), openPage('127.0.0.1')]);
    // No cap on attempts: the cell tells a browser why in band (an error frame, then 4403), so
    // the SDK gives up at once instead of retrying what can never succeed.
    const refused = await connect(foreign, 'alice', {
      url: cell.url,
      token: await customerToken('web'),
      connectTimeoutMs: 5_000,
      backoff: QUICK_BACKOFF,
    });
    expect(refused).toMatchObject({ ok: false, error: { code: 'ORIGIN_FORBIDDEN' } });
    expect((await pageLog(foreign, 'alice')).session).toBeUndefined();
    expect(cell.cell.core.presence.connections).toBe(0);
    await expect.poll(() => originRejections(cell), { timeout: 5_000 }).toBe(before + 1);

    expect(await connect(allowed, 'alice', { url: cell.url, token: await customerToken('web') })).toMatchObject({
      ok: true,
      session: { user: 'alice', device: 'web' },
    });
    expect(cell.cell.core.presence.connections).toBe(1);
    expect(await originRejections(cell)).toBe(before + 1);
  });

  it('reconnects after the network drops: an in-flight send is confirmed once, a send made offline goes out after', async () => {
    const cell = await cleanup.cell({ origins: [pages.origin('127.0.0.1')] });
    const proxy = await TcpProxy.start(cell.cell.port);
    cleanup.add(() => proxy.close());
    const agent = await agentOf(cell);
    const web = await openPage('127.0.0.1');
    expect(
      await connect(web, 'alice', { url: `ws://127.0.0.1:${proxy.port}`, token: await customerToken('web'), backoff: QUICK_BACKOFF }),
    ).toMatchObject({ ok: true });

    const [first] = await withTimeout(
      web.page.evaluate((conv) => window.cellmeshTest.send('alice', conv, ['before the drop']), CONV),
      10_000,
      'the first send',
    );
    expect(first?.seq).toBe(1);

    // The link fails while a send is in flight: the cell stores it, its confirmation is lost.
    proxy.muteDownstream();
    await sendLater(web, 'in flight when the network dropped');
    await agent.until(() => agent.messages(CONV).some((message) => message.body === 'in flight when the network dropped'), {
      what: 'the in-flight message stored and pushed to the agent',
    });
    proxy.cut();
    await waitForLog(web, 'alice', (log) => log.state === 'reconnecting' || log.state === 'connecting', 'the page noticing the drop');

    // While the page is offline: it writes a message, and the agent answers.
    await sendLater(web, 'written while offline');
    expect(await agent.request({ op: 'send', id: 'away-1', conv: CONV, cmid: 'agent-away-1', body: 'are you still there?' })).toMatchObject({
      t: 'sent',
      seq: 3,
    });
    // Some reconnect attempts fail against the dead network before it comes back, and no send
    // is confirmed while it is down.
    const offline = await waitForLog(web, 'alice', (log) => failedAttempts(log) >= 2, 'two reconnect attempts failing against the dead network');
    expect(offline.sends).toEqual([]);
    proxy.restore();

    const log = await waitForLog(
      web,
      'alice',
      (entry) => entry.sends.length === 2 && entry.messages.length >= 4 && entry.state === 'open',
      'both sends confirmed and the missed reply delivered after the reconnect',
      15_000,
    );
    expect(log.sends.map((send) => [send.body, send.result?.seq, send.error?.code])).toEqual([
      ['in flight when the network dropped', 2, undefined],
      ['written while offline', 4, undefined],
    ]);
    expect(log.messages.map((message) => [message.seq, message.body, message.from])).toEqual([
      [1, 'before the drop', 'alice'],
      [2, 'in flight when the network dropped', 'alice'],
      [3, 'are you still there?', 'a1'],
      [4, 'written while offline', 'alice'],
    ]);
    expect(log.states.map((change) => change.state)).toContain('reconnecting');
    expect(log.synced).toBeGreaterThanOrEqual(1);
    expect(proxy.forwarded).toBeGreaterThanOrEqual(2);

    // The cell stored each message once, however often it was transmitted.
    await agent.until(() => agent.messages(CONV).some((message) => message.seq === 4), { what: 'the offline message at the agent' });
    expect(agent.messages(CONV).map((message) => [message.seq, message.body])).toEqual([
      [1, 'before the drop'],
      [2, 'in flight when the network dropped'],
      [4, 'written while offline'],
    ]);
    const history = await historyOf(agent, 'history-1');
    expect(history.map((message) => message.seq)).toEqual([1, 2, 3, 4]);
    expect(new Set(history.map((message) => message.cmid)).size).toBe(4);
    expect(web.pageErrors).toEqual([]);
  });

  it('reconnects to the cell restarted on the same port and data after a graceful stop', async () => {
    // A fixed port from the start: uWS sets SO_REUSEADDR only when told a port, and the
    // connections the stopping cell closed linger in TIME_WAIT on it, so a cell first bound to
    // port 0 could not bind the same port again for a minute.
    const port = await freePort();
    const directory = await cleanup.tempDir('cellmesh-browser-');
    const config = parseCellConfig({
      cell: { id: 'restart-cell' },
      listen: { host: '127.0.0.1', port },
      store: { kind: 'level', directory },
      tenants: [{ id: TENANT, secret: SECRET, origins: [ALLOWED_ORIGIN, pages.origin('127.0.0.1')], merchants: [{ id: 'm1' }] }],
      limits: { ratePerSecond: 10_000, rateBurst: 10_000 },
    });
    const url = `ws://127.0.0.1:${port}`;
    const first = await startCell({ config, logger: silentLogger });
    // Registered after the directory, so the cell stops before its directory goes.
    cleanup.add(() => withTimeout(first.stop(), 20_000, 'stopping the cell'));
    const web = await openPage('127.0.0.1');
    expect(await connect(web, 'alice', { url, token: await customerToken('web'), backoff: QUICK_BACKOFF })).toMatchObject({ ok: true });
    const [sent] = await withTimeout(
      web.page.evaluate((conv) => window.cellmeshTest.send('alice', conv, ['before the restart']), CONV),
      10_000,
      'the first send',
    );
    expect(sent?.seq).toBe(1);

    await withTimeout(first.stop(), 20_000, 'stopping the cell');
    const dropped = await waitForLog(web, 'alice', (log) => log.state !== 'open', 'the page noticing the stop');
    expect(['connecting', 'reconnecting']).toContain(dropped.state);
    const failedBefore = failedAttempts(await pageLog(web, 'alice'));
    await sendLater(web, 'written during the restart');
    // The send waits in the page through a reconnect attempt that fails while the cell is down.
    const waiting = await waitForLog(web, 'alice', (log) => failedAttempts(log) > failedBefore, 'a reconnect attempt failing while the cell is down');
    expect(waiting.sends).toEqual([]);

    // The same config: the same port and LevelDB directory.
    const second = await startCell({ config, logger: silentLogger });
    cleanup.add(() => withTimeout(second.stop(), 20_000, 'stopping the restarted cell'));

    const log = await waitForLog(
      web,
      'alice',
      (entry) => entry.sends.length === 1 && entry.messages.length >= 2 && entry.state === 'open',
      'the send confirmed after the restart',
      15_000,
    );
    expect(log.sends.map((send) => [send.body, send.result?.seq, send.error?.code])).toEqual([['written during the restart', 2, undefined]]);
    expect(log.messages.map((message) => [message.seq, message.body])).toEqual([
      [1, 'before the restart'],
      [2, 'written during the restart'],
    ]);
    expect(log.states.find((change) => change.previous === 'open')).toMatchObject({ state: 'reconnecting', closeCode: 1001 });

    const agent = await agentOf({ url });
    await agent.until(() => agent.messages(CONV).length >= 2, { what: 'both messages at the agent' });
    expect(agent.messages(CONV).map((message) => [message.seq, message.body])).toEqual([
      [1, 'before the restart'],
      [2, 'written during the restart'],
    ]);
    expect(web.pageErrors).toEqual([]);
  });
});
