import type { Reporter, SerializedError, TestModule } from 'vitest/node'

/** Longest error message quoted on a failure line; the full error is in vitest's own output above. */
const MESSAGE_CHARS = 200

/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`, after vitest's own
 * summary, so that any tool reading the output (CI included) can count the run.
 *
 * "failed" counts failed tests, and also each failure outside a test: a file that failed to load
 * (or whose top-level hook failed), a suite whose hook failed, an unhandled error. Such a failure
 * leaves its tests skipped or not collected, so counting tests alone would print `0 failed` for a
 * run that exits 1. Each one is named on its own `failed outside a test:` line above the count.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError> = []): void {
    const counts = { passed: 0, failed: 0, skipped: 0 }
    const outside: string[] = []
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state
        if (state === 'passed') counts.passed += 1
        else if (state === 'failed') counts.failed += 1
        else counts.skipped += 1
      }
      const file = module.relativeModuleId
      for (const error of module.errors()) outside.push(`${file}: ${summarize(error)}`)
      for (const suite of module.children.allSuites()) {
        for (const error of suite.errors()) outside.push(`${file} > ${suite.fullName}: ${summarize(error)}`)
      }
    }
    for (const error of unhandledErrors) outside.push(`unhandled error: ${summarize(error)}`)
    counts.failed += outside.length
    const lines = outside.map((failure) => `failed outside a test: ${failure}`)
    process.stdout.write(
      `\n${[...lines, `tests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`].join('\n')}\n`,
    )
  }
}

function summarize(error: SerializedError): string {
  const firstLine = `${error.name && error.name !== 'Error' ? `${error.name}: ` : ''}${error.message ?? String(error)}`.split('\n')[0] ?? ''
  return firstLine.length > MESSAGE_CHARS ? `${firstLine.slice(0, MESSAGE_CHARS - 1)}…` : firstLine
}
