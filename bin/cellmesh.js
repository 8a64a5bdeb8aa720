#!/usr/bin/env node
// Entry point of the `cellmesh` command: runs the program that scripts/build.mjs bundled from
// cli/main.ts into dist/ (`npm install` builds it, and so do `npm test`, `npm start` and
// `npm run bench`; after editing the sources, `npm run build`). Plain JavaScript, run in this
// process: no tsx, and a pod's SIGTERM reaches the cell itself.
import { existsSync } from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('cellmesh: the program is not built (no dist/main.js): run `npm install` or `npm run build`\n');
  process.exit(1);
}
await import(main.href);
