// The web pages (customer chat and the others, built from web/ into dist/app/ by
// scripts/build-web.mjs) as static files under /app/. Every cell serves them, and so does the
// router, so a merchant's link works wherever it points (docs/web.md).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { gzipSync } from 'node:zlib';
import type uWS from 'uWebSockets.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { writeError, type HttpRouter } from './http-router.js';

export interface WebPagesInit {
  /** The built pages (dist/app/): read once, when the routes are registered. */
  readonly directory: string;
  /**
   * Other origins the pages may connect to (the cells of the cluster: a page follows its
   * merchant's home there); 'self' is always allowed. Asked at each page load.
   */
  readonly connectOrigins?: (() => readonly string[]) | undefined;
}

/** One file, ready to send: its bytes, their gzip when that is smaller, and a strong ETag. */
interface PageFile {
  readonly bytes: Buffer;
  readonly gzipped: Buffer | undefined;
  readonly contentType: string;
  readonly etag: string;
}

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.map': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};
/** Files are small: bundles and pages. A bound keeps a stray large file from being held in memory. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
const MAX_FILES = 200;

/** Reads the built pages into memory, keyed by their path below the directory ('chat.js', 'index.html'). */
export function loadWebPages(directory: string): Map<string, PageFile> {
  const files = new Map<string, PageFile>();
  if (!existsSync(directory)) return files;
  const visit = (folder: string): void => {
    for (const name of readdirSync(folder).sort()) {
      const path = join(folder, name);
      const stat = statSync(path);
      if (stat.isDirectory()) {
        visit(path);
        continue;
      }
      const contentType = CONTENT_TYPES[extname(name)];
      if (contentType === undefined || stat.size > MAX_FILE_BYTES || files.size >= MAX_FILES) continue;
      const bytes = readFileSync(path);
      const compressed = contentType.startsWith('image/png') ? undefined : gzipSync(bytes, { level: 9 });
      files.set(relative(directory, path).split(sep).join('/'), {
        bytes,
        gzipped: compressed !== undefined && compressed.byteLength < bytes.byteLength ? compressed : undefined,
        contentType,
        etag: `"${createHash('sha256').update(bytes).digest('base64url').slice(0, 27)}"`,
      });
    }
  };
  visit(directory);
  return files;
}

/**
 * The Content-Security-Policy of every page: scripts, styles, frames and forms from this origin
 * only; connections (WebSocket, fetch) and images also to the cluster's cells, since a page
 * follows its merchant's home cell (route mode) and shows attachments from it.
 */
export function contentSecurityPolicy(connectOrigins: readonly string[]): string {
  const others = [...new Set(connectOrigins.flatMap((origin) => [origin, origin.replace(/^http/, 'ws')]))].join(' ');
  const withOthers = (list: string): string => (others === '' ? list : `${list} ${others}`);
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    withOthers("img-src 'self' blob: data:"),
    withOthers("connect-src 'self'"),
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
  ].join('; ');
}

/**
 * GET /app/ (the customer chat, index.html) and /app/<file>; /app without the slash is sent to
 * /app/ with its query (the merchant's link). Paths are looked up in the files read at start,
 * never on the disk, so no path can reach outside them; an unknown one is 404 NOT_FOUND.
 */
export function webPagesRoutes(init: WebPagesInit): (router: HttpRouter) => void {
  const files = loadWebPages(init.directory);
  return (router) => {
    router.on('get', '/app', (res, req) => {
      const query = req.getQuery();
      res.writeStatus('301 Moved Permanently').writeHeader('location', `/app/${query ? `?${query}` : ''}`).end();
    });
    router.on('get', '/app/*', (res, req) => {
      const url = req.getUrl();
      const name = fileNameOf(url.slice('/app/'.length));
      const file = name === undefined ? undefined : files.get(name);
      if (file === undefined) {
        const why = files.size === 0 ? 'the web pages are not built (npm run build writes dist/app/)' : `no page ${url}`;
        writeError(res, new CellError(ErrorCode.NotFound, why));
        return;
      }
      servePageFile(res, req, file, init.connectOrigins?.() ?? []);
    });
  };
}

/** The file a path below /app/ names: '' is index.html; undefined for anything that is not a plain relative path. */
export function fileNameOf(path: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return undefined;
  }
  if (decoded === '') return 'index.html';
  if (decoded.includes('\\') || decoded.includes('\0') || decoded.startsWith('/')) return undefined;
  if (decoded.split('/').some((segment) => segment === '' || segment === '.' || segment === '..')) return undefined;
  return decoded;
}

function servePageFile(res: uWS.HttpResponse, req: uWS.HttpRequest, file: PageFile, connectOrigins: readonly string[]): void {
  const notModified = req.getHeader('if-none-match') === file.etag;
  const gzip = file.gzipped !== undefined && /\bgzip\b/.test(req.getHeader('accept-encoding'));
  res.cork(() => {
    res.writeStatus(notModified ? '304 Not Modified' : '200 OK');
    res.writeHeader('content-type', file.contentType);
    // The names are not content-hashed: a browser revalidates each time (a 304 costs a round trip, no bytes).
    res.writeHeader('cache-control', 'no-cache');
    res.writeHeader('etag', file.etag);
    res.writeHeader('vary', 'accept-encoding');
    res.writeHeader('x-content-type-options', 'nosniff');
    res.writeHeader('referrer-policy', 'no-referrer');
    if (file.contentType.startsWith('text/html')) res.writeHeader('content-security-policy', contentSecurityPolicy(connectOrigins));
    if (notModified) {
      res.endWithoutBody();
      return;
    }
    if (gzip && file.gzipped !== undefined) {
      res.writeHeader('content-encoding', 'gzip');
      res.end(file.gzipped);
    } else {
      res.end(file.bytes);
    }
  });
}
