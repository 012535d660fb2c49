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
          exclude: ['packages/core/test/**'],
          globalSetup: ['packages/testing/src/global-setup.ts'],
          testTimeout: 30_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
})
