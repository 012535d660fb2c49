import type { AdapterUnderTest } from './adapter.ts'
import { describeBadInput } from './bad-input.ts'
import { describePgBouncer } from './bouncer.ts'
import { describeFailover } from './failover.ts'
import { describeFaults } from './faults.ts'
import { describeLossPoints } from './loss-points.ts'
import { describeModel } from './model.ts'
import { describeProcesses } from './processes.ts'
import { describeRaces } from './races.ts'
import { describeRestart } from './restart.ts'

/**
 * Every reliability suite for one adapter, in one call: faults (resets, blackholes, cut waiters,
 * refused connections), Postgres restarts, failover to a promoted standby, races at volume, processes at volume, the model-based
 * property test, bad input, PgBouncer and the loss points. Each suite checks for leaks after every
 * test and at the end of its suite. Counts are small under `pnpm test` and large under `pnpm test:soak`.
 *
 * Every adapter calls it from one `reliability.test.ts` per driver: vitest runs files in parallel,
 * and one file per driver already makes more files than a 2- to 4-core runner has workers.
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
  describeFailover(adapter)
  describeRaces(adapter)
  describeProcesses(adapter)
  describeModel(adapter)
  describeBadInput(adapter)
  describePgBouncer(adapter)
  describeLossPoints(adapter)
}
