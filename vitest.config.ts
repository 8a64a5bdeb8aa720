import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**'],
    setupFiles: ['./platform/promise-with-resolvers.ts'],
    // Builds dist/, which the tests that spawn bin/cellmesh.js run (test/build-program.ts).
    globalSetup: ['./test/build-program.ts'],
    // Integration tests start real processes and sockets; give them room on a 2-core machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
