import { defineConfig } from 'vitest/config'

/**
 * `pnpm test:soak`: the reliability suites at volume (PGLOCK_SOAK=1 scales their counts up), one
 * file at a time so that timings are not skewed by other files on a 2-core machine.
 */
export default defineConfig({
  test: {
    include: ['packages/*/test/**/reliability.test.ts'],
    globalSetup: ['packages/testing/src/global-setup.ts'],
    env: { PGLOCK_SOAK: '1' },
    fileParallelism: false,
    testTimeout: 1_800_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
  },
})
