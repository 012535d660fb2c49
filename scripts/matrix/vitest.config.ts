import { defineConfig } from 'vitest/config'
import base from '../../vitest.config.ts'

/**
 * One matrix cell: the workspace's own test settings, plus the probe that records which Node,
 * Postgres and driver versions ran, and a JSON report (`PGLOCK_MATRIX_REPORT`) for the counts.
 */
// biome-ignore lint/suspicious/noUndeclaredEnvVars: set per cell by scripts/matrix/run.mjs, not a turbo input
const report = process.env.PGLOCK_MATRIX_REPORT

export default defineConfig({
  ...base,
  test: {
    ...base.test,
    globalSetup: [...[base.test?.globalSetup ?? []].flat(), 'scripts/matrix/probe.ts'],
    reporters: [
      ...[base.test?.reporters ?? []].flat(),
      ...(report ? [['json', { outputFile: report }] satisfies ['json', { outputFile: string }]] : []),
    ],
  },
})
