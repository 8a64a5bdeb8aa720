// Entry of the load-generator worker threads. Node 20 does not apply the parent's `--import tsx`
// hooks to a worker's own entry file, so the worker registers tsx itself and then loads the
// TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./load-worker.ts');
