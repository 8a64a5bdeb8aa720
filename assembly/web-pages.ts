// Where the cells and the router find the built web pages, and which origins the pages may
// connect to: the cells of the cluster, since a page follows its merchant's home cell.
import { fileURLToPath } from 'node:url';
import type { WebPagesInit } from '../cell/access/web-pages.js';
import { isServing, type DirectoryView } from '../mesh/directory.js';

/**
 * dist/app/, written by scripts/build-web.mjs. This module runs from assembly/ (tsx) or from a
 * chunk in dist/ (the built program): both lie one level below the root.
 */
export const WEB_PAGES_DIRECTORY = fileURLToPath(new URL('../dist/app/', import.meta.url));

/** The HTTP origins of the serving cells (and routers) in `directory`; none without a mesh. */
export function clusterOrigins(directory: DirectoryView | undefined): string[] {
  const origins = new Set<string>();
  for (const entry of directory?.values() ?? []) {
    if (!isServing(entry.liveness)) continue;
    try {
      origins.add(new URL(entry.record.endpoints.http).origin);
    } catch {
      // A record's URL is checked when it is accepted; one that does not parse is left out.
    }
  }
  return [...origins].sort();
}

/** The pages as every cell and router serves them under /app/. */
export function webPagesOf(directory: () => DirectoryView | undefined): WebPagesInit {
  return { directory: WEB_PAGES_DIRECTORY, connectOrigins: () => clusterOrigins(directory()) };
}
