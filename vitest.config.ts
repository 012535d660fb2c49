import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    reporters: ['default', './packages/testing/src/summary-reporter.ts'],
    teardownTimeout: 60_000,
    projects: [
      {
        // the core's unit tests run on an in-memory Postgres model: no database, no global setup
        test: { name: 'core', include: ['packages/core/test/**/*.test.ts'], testTimeout: 10_000 },
      },
      {
        test: {
          name: 'adapters',
          include: ['packages/*/test/**/*.test.ts'],
          // the model-vs-Postgres check stalls when other files load the server (cause open): it runs in `pnpm test:soak`
          exclude: ['packages/core/test/**', 'packages/testing/test/memory-postgres.test.ts'],
          globalSetup: ['packages/testing/src/global-setup.ts'],
          testTimeout: 30_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
})
