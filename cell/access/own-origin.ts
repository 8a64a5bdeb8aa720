/**
 * Whether a browser's `Origin` names the very host it sent the request to (its `Host`): then the
 * page was served by this cell itself (the pages under /app/, docs/web.md), and the tenant's list
 * of allowed origins, which is about the merchants' own sites, need not name every cell. A page of
 * another site cannot claim it: the browser sets both headers.
 */
export function isOwnOrigin(origin: string, host: string): boolean {
  if (origin === '' || host === '') return false;
  try {
    return new URL(origin).host === host.toLowerCase();
  } catch {
    return false;
  }
}
