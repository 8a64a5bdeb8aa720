import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { REPO_ROOT, type Cleanup } from '../harness.js';

/** Debian's chromium, which the browser tests drive through playwright-core. */
export const CHROMIUM = '/usr/bin/chromium';
export const HAVE_CHROMIUM = existsSync(CHROMIUM);
/** Why a browser suite is skipped: reported by each suite in its name and on stderr. */
export const CHROMIUM_SKIP_REASON = `${CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)`;
/** Where the web pages' tests save their screenshots (docs/web.md shows copies of them). */
export const SCREENSHOTS = join(REPO_ROOT, '.test-output', 'web');

/**
 * As the machine notes prescribe; without the background-networking flags Chromium keeps trying
 * Google's hosts on this closed network. playwright-core gives every launch a fresh, empty
 * --user-data-dir of its own (and refuses one in `args`).
 */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/**
 * A suite's Chromium: launched (and the screenshots folder made) before its tests, closed after
 * them; `cleanup` runs after each test (its pages and cells). The browser, once launched.
 */
export function useChromium(cleanup: Cleanup): () => Browser {
  let browser: Browser | undefined;
  beforeAll(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    browser = await launchChromium();
  }, 60_000);
  afterEach(() => cleanup.run(), 60_000);
  afterAll(() => browser?.close(), 60_000);
  return () => {
    if (browser === undefined) throw new Error('Chromium has not been launched (use it inside a test)');
    return browser;
  };
}
