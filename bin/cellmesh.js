#!/usr/bin/env node
// Entry point of the `cellmesh` command: loads the TypeScript sources through tsx, so the
// package runs from a checkout with no build step.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
