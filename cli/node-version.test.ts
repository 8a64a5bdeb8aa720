import { expect, test } from 'vitest';
import { nodeVersionWarning } from './node-version.js';

test('Node 20 runs without a warning', () => {
  expect(nodeVersionWarning('20.20.2')).toBeUndefined();
});

test('a later Node is warned that uWS falls back to its JavaScript implementation, which cannot run a cell, in one line', () => {
  const warning = nodeVersionWarning('22.11.0');
  expect(warning).toMatch(/^cellmesh: warning: running on Node 22\.11\.0, not Node 20: uWebSockets\.js has no native build for it and falls back to its JavaScript implementation, which cannot run a cell/);
  expect(warning).not.toContain('\n');
});

test('an older Node is told it is too old', () => {
  expect(nodeVersionWarning('18.20.0')).toMatch(/^cellmesh: warning: running on Node 18\.20\.0, not Node 20: the dependencies need Node 20/);
});
