import { createServer, type Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const PAGE_APP = fileURLToPath(new URL('./page-app.ts', import.meta.url));

/**
 * Bundles the test page's script, and with it the browser SDK (client/browser.ts), the way an
 * app would ship it: one ES module for browsers, kept in memory (no files are written).
 */
export async function bundlePageApp(): Promise<{ code: string; bytes: number; inputs: string[] }> {
  const result = await esbuild.build({
    entryPoints: [PAGE_APP],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'chrome120',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const output = result.outputFiles[0];
  if (output === undefined) throw new Error('esbuild produced no output');
  return { code: output.text, bytes: output.contents.byteLength, inputs: Object.keys(result.metafile.inputs) };
}

const PAGE_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>cellmesh browser SDK test</title>
<link rel="icon" href="data:,">
<script type="module" src="/app.js"></script>
</head><body><p>cellmesh browser SDK test page</p></body></html>`;

/** A plain HTTP server on 127.0.0.1 serving the test page (`/`) and its bundle (`/app.js`). */
export class PageServer {
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(bundle: string): Promise<PageServer> {
    const server = createServer((request, response) => {
      const path = new URL(request.url ?? '/', 'http://page').pathname;
      if (path === '/' || path === '/index.html') {
        response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        response.end(PAGE_HTML);
      } else if (path === '/app.js') {
        response.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
        response.end(bundle);
      } else {
        response.writeHead(404, { 'content-type': 'text/plain' });
        response.end('not found');
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the page server has no TCP address');
    return new PageServer(server, address.port);
  }

  /** The page at `host` (`127.0.0.1` or `localhost`: two different origins for the browser). */
  url(host: '127.0.0.1' | 'localhost'): string {
    return `http://${host}:${this.port}/`;
  }

  origin(host: '127.0.0.1' | 'localhost'): string {
    return `http://${host}:${this.port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
