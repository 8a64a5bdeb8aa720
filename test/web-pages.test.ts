/**
 * The web pages as a cell and the router serve them under /app/ (cell/access/web-pages.ts):
 * built by scripts/build-web.mjs (the tests' global setup runs the build), over real uWS.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { WEB_PAGES_DIRECTORY } from '../assembly/web-pages.js';
import { contentSecurityPolicy, fileNameOf } from '../cell/access/web-pages.js';
import { isOwnOrigin } from '../cell/access/own-origin.js';
import { SystemClock } from '../platform/clock.js';
import { silentLogger } from '../platform/logger.js';
import { PromMetrics } from '../platform/prom-metrics.js';
import { RouterServer } from '../router/router-server.js';
import { DEFAULT_ROUTING_SETTINGS } from '../router/routing-settings.js';
import { Cleanup, tokenFor } from './harness.js';

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A GET with the path sent exactly as written (fetch would resolve `..` and decompress). */
function get(port: number, path: string, headers: Record<string, string> = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const outgoing = request({ host: '127.0.0.1', port, path, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const built = (name: string): Buffer => readFileSync(`${WEB_PAGES_DIRECTORY}${name}`);

/** What every server of the pages must answer: the same checks for a cell and for the router. */
async function expectServesPages(port: number): Promise<void> {
  // The customer chat is the page /app/ lands on (where /v1/connect sends a browser).
  const page = await get(port, '/app/?tenant=mall&merchant=m1');
  expect(page.status).toBe(200);
  expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
  expect(page.body.equals(built('index.html'))).toBe(true);
  expect(page.headers['cache-control']).toBe('no-cache');
  expect(page.headers['x-content-type-options']).toBe('nosniff');
  expect(page.headers['content-security-policy']).toMatch(/^default-src 'self'; script-src 'self'; style-src 'self'; /);
  const etag = page.headers['etag'] as string;
  expect(etag).toMatch(/^"[\w-]+"$/);

  for (const name of ['agent.html', 'console.html', 'example.html']) {
    const other = await get(port, `/app/${name}`);
    expect(other.status).toBe(200);
    expect(other.body.equals(built(name))).toBe(true);
  }

  // The browser SDK for merchants' pages, as an ES module.
  const sdk = await get(port, '/app/cellmesh.js');
  expect(sdk.headers['content-type']).toBe('text/javascript; charset=utf-8');
  expect(sdk.body.toString()).toMatch(/export\s*\{[^}]*\bguestTokenSource\b/);

  // Revalidation costs no bytes.
  const again = await get(port, '/app/', { 'if-none-match': etag });
  expect(again.status).toBe(304);
  expect(again.body.byteLength).toBe(0);

  // The script, gzipped for a browser that takes it.
  const script = await get(port, '/app/chat.js', { 'accept-encoding': 'gzip, deflate, br' });
  expect(script.status).toBe(200);
  expect(script.headers['content-type']).toBe('text/javascript; charset=utf-8');
  expect(script.headers['content-encoding']).toBe('gzip');
  expect(script.headers['vary']).toBe('accept-encoding');
  expect(gunzipSync(script.body).equals(built('chat.js'))).toBe(true);
  expect(script.headers['content-security-policy']).toBeUndefined();
  const plain = await get(port, '/app/style.css');
  expect(plain.headers['content-encoding']).toBeUndefined();
  expect(plain.headers['content-type']).toBe('text/css; charset=utf-8');
  expect(plain.body.equals(built('style.css'))).toBe(true);

  // /app without the slash keeps the merchant's query.
  const bare = await get(port, '/app?tenant=mall&merchant=m1');
  expect(bare.status).toBe(301);
  expect(bare.headers['location']).toBe('/app/?tenant=mall&merchant=m1');

  // Nothing outside the built files, however the path is spelled.
  for (const path of ['/app/nope.js', '/app/../package.json', '/app/%2e%2e/package.json', '/app/..%2fpackage.json', '/app/%2fetc%2fpasswd', '/app/a//b', '/app/%E0%A4%A']) {
    const answer = await get(port, path);
    expect(answer.status, path).toBe(404);
    expect(answer.headers['content-type'], path).toBe('application/json');
    expect((JSON.parse(answer.body.toString()) as { error: { code: string } }).error.code, path).toBe('NOT_FOUND');
  }
}

describe('web pages under /app/', () => {
  it('a cell serves the built pages with their types, caching, gzip and a self-only policy; nothing else', async () => {
    const cell = await cleanup.cell();
    await expectServesPages(cell.cell.port);
  });

  it('the router serves them too', async () => {
    const metrics = new PromMetrics();
    const server = new RouterServer({
      host: '127.0.0.1',
      port: 0,
      directory: () => undefined,
      isReady: () => true,
      clock: new SystemClock(),
      settings: DEFAULT_ROUTING_SETTINGS,
      metrics,
      exposition: metrics,
      logger: silentLogger,
      webPages: { directory: WEB_PAGES_DIRECTORY },
    });
    const port = await server.listen();
    cleanup.add(() => server.close());
    await expectServesPages(port);
  });

  it('records the customer chat size under its budget of 100 KB gzipped', () => {
    const sizes = JSON.parse(built('sizes.json').toString()) as { chat: { gzipBytes: number; files: string[] } };
    expect(sizes.chat.files).toEqual(['index.html', 'style.css', 'chat.js']);
    expect(sizes.chat.gzipBytes).toBeGreaterThan(1_000);
    expect(sizes.chat.gzipBytes).toBeLessThanOrEqual(100 * 1024);
  });

  it('names files only by plain relative paths', () => {
    expect(fileNameOf('')).toBe('index.html');
    expect(fileNameOf('chat.js')).toBe('chat.js');
    expect(fileNameOf('a/b.css')).toBe('a/b.css');
    for (const path of ['..', '../x', 'a/../b', './a', '/etc/passwd', 'a\\b', '%2e%2e', 'a%00', '%E0%A4%A']) expect(fileNameOf(path), path).toBeUndefined();
  });

  it('lets pages connect to the cluster\'s cells, over HTTP and WebSocket', () => {
    expect(contentSecurityPolicy([])).not.toMatch(/http:/);
    expect(contentSecurityPolicy(['http://127.0.0.1:7401'])).toContain("connect-src 'self' http://127.0.0.1:7401 ws://127.0.0.1:7401");
    expect(contentSecurityPolicy(['https://cell-b.example'])).toContain("img-src 'self' blob: data: https://cell-b.example wss://cell-b.example");
  });

  it('admits a WebSocket from a page the cell served itself, without listing the cell among the origins', async () => {
    expect(isOwnOrigin('http://127.0.0.1:7401', '127.0.0.1:7401')).toBe(true);
    expect(isOwnOrigin('https://cell.example', 'cell.example')).toBe(true);
    expect(isOwnOrigin('https://cell.example', 'cell.example:443')).toBe(false);
    expect(isOwnOrigin('http://evil.example', '127.0.0.1:7401')).toBe(false);
    expect(isOwnOrigin('null', '127.0.0.1:7401')).toBe(false);
    expect(isOwnOrigin('', '127.0.0.1:7401')).toBe(false);

    const cell = await cleanup.cell();
    const token = await tokenFor({ user: 'alice', device: 'web' });
    const own = await cleanup.client(cell.url, token, { origin: cell.httpUrl });
    expect(own.all('welcome')).toHaveLength(1);
    await expect(cleanup.client(cell.url, await tokenFor({ user: 'bob', device: 'web' }), { origin: 'http://evil.example' })).rejects.toThrow(/ORIGIN_FORBIDDEN/);
  });
});
