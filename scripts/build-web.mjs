// Builds the web pages (web/) into dist/app/, which every cell and the router serve under /app/
// (cell/access/web-pages.ts, docs/web.md). Called by scripts/build.mjs, so it runs at
// `npm install`, before `npm start` and before the tests.
//
// - Each page is an HTML file, the shared stylesheet and one ES module bundled by esbuild for
//   browsers (minified; the browser SDK, client/browser.ts, and nothing of Node inside).
// - The browser SDK alone, as one ES module (cellmesh.js) for merchants' own pages, and an
//   example page in plain JavaScript that imports it (example.html, example.js).
// - The customer chat must stay under 100 KB gzipped (issue 20): the build measures what a
//   browser downloads for it (HTML, CSS, script, each gzipped) and fails above the budget. The
//   figures go to dist/app/sizes.json, which docs/web.md quotes and a test reads.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

/** The pages: the HTML served at /app/<html>, and its script bundled to /app/<script>. */
export const WEB_PAGES = [
  { name: 'chat', html: 'index.html', source: 'web/chat/index.html', entry: 'web/chat/main.ts', script: 'chat.js' },
  { name: 'agent', html: 'agent.html', source: 'web/agent/index.html', entry: 'web/agent/main.ts', script: 'agent.js' },
  { name: 'console', html: 'console.html', source: 'web/console/index.html', entry: 'web/console/main.ts', script: 'console.js' },
];
const STYLESHEET = { source: 'web/style.css', name: 'style.css' };
/** The browser SDK as one ES module for merchants' own pages, and an example page that imports it as it is. */
const SDK = { entry: 'client/browser.ts', script: 'cellmesh.js' };
const EXAMPLE = [
  { source: 'web/example/example.html', name: 'example.html' },
  { source: 'web/example/example.js', name: 'example.js' },
];
export const CHAT_BUDGET_GZIP_BYTES = 100 * 1024;

export async function buildWeb(esbuild, root) {
  const outdir = join(root, 'dist', 'app');
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: Object.fromEntries([...WEB_PAGES, SDK].map((page) => [page.script.replace(/\.js$/, ''), page.entry])),
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome110', 'firefox110', 'safari16'],
    minify: true,
    // Names stay, as in the Node build: the SDK's error classes are named after their class.
    keepNames: true,
    legalComments: 'none',
    write: false,
    metafile: true,
    logLevel: 'warning',
  });
  const files = new Map();
  for (const file of result.outputFiles) files.set(file.path.slice(outdir.length + 1), Buffer.from(file.contents));
  for (const page of WEB_PAGES) files.set(page.html, readFileSync(join(root, page.source)));
  files.set(STYLESHEET.name, readFileSync(join(root, STYLESHEET.source)));
  for (const file of EXAMPLE) files.set(file.name, readFileSync(join(root, file.source)));

  const sizes = {};
  for (const page of WEB_PAGES) {
    const parts = [page.html, STYLESHEET.name, page.script];
    const gzipBytes = parts.reduce((sum, name) => sum + gzipSync(files.get(name), { level: 9 }).byteLength, 0);
    const bytes = parts.reduce((sum, name) => sum + files.get(name).byteLength, 0);
    sizes[page.name] = { files: parts, bytes, gzipBytes };
  }
  const sdk = files.get(SDK.script);
  sizes.sdk = { files: [SDK.script], bytes: sdk.byteLength, gzipBytes: gzipSync(sdk, { level: 9 }).byteLength };
  if (sizes.chat.gzipBytes > CHAT_BUDGET_GZIP_BYTES) {
    throw new Error(`the customer chat is ${sizes.chat.gzipBytes} bytes gzipped, over its budget of ${CHAT_BUDGET_GZIP_BYTES} (issue 20, docs/web.md)`);
  }
  files.set('sizes.json', Buffer.from(`${JSON.stringify(sizes, null, 2)}\n`));

  mkdirSync(outdir, { recursive: true });
  for (const [name, contents] of files) if (!sameContent(join(outdir, name), contents)) writeFileSync(join(outdir, name), contents);
  for (const name of readdirSync(outdir)) if (!files.has(name)) rmSync(join(outdir, name), { recursive: true });
  return sizes;
}

function sameContent(path, contents) {
  try {
    return contents.equals(readFileSync(path));
  } catch {
    return false;
  }
}
