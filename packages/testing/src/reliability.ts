import type { AdapterUnderTest } from './adapter.ts'
import { describeBadInput } from './bad-input.ts'
import { describePgBouncer } from './bouncer.ts'
import { describeFaults } from './faults.ts'
import { describeModel } from './model.ts'
import { describeProcesses } from './processes.ts'
import { describeRaces } from './races.ts'
import { describeRestart } from './restart.ts'

/**
 * Every reliability suite for one adapter, in one call: faults (resets, blackholes, cut waiters,
 * refused connections), Postgres restarts, races at volume, processes at volume, the model-based
 * property test, bad input and PgBouncer. Each suite checks for leaks after every test and at the
 * end of its file. Counts are small under `pnpm test` and large under `pnpm test:soak`.
 *
 * One file per suite (`describeFaults(adapter)` in `faults.test.ts`, and so on) lets vitest run
 * them in parallel; this is the one-line form for a new adapter, in `reliability.test.ts`.
 *
 * @example
 * ```ts
 * import { describeReliability } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeReliability(adapter)
 * ```
 */
export function describeReliability(adapter: AdapterUnderTest): void {
  describeFaults(adapter)
  describeRestart(adapter)
  describeRaces(adapter)
  describeProcesses(adapter)
  describeModel(adapter)
  describeBadInput(adapter)
  describePgBouncer(adapter)
}
