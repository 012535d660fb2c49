import type { AdapterUnderTest } from './adapter.ts'
import { describeAbort } from './conformance/abort.ts'
import { describeExclusion } from './conformance/exclusion.ts'
import { describeFencing } from './conformance/fencing.ts'
import { describeHandles } from './conformance/handles.ts'
import { describeHolders } from './conformance/holders.ts'
import { describeKeys } from './conformance/keys.ts'
import { describeLoad } from './conformance/load.ts'
import { describeLoss } from './conformance/loss.ts'
import { describeOneConnection } from './conformance/one-connection.ts'
import { describePoolWait } from './conformance/pool-wait.ts'
import { describeRoundTrips } from './conformance/round-trips.ts'
import { describeTimeouts } from './conformance/timeouts.ts'
import { describeTracing } from './conformance/tracing.ts'
import { describeTransactionScope } from './conformance/transaction-scope.ts'

/**
 * The conformance suite: every behaviour DESIGN.md promises, against a real Postgres, for one
 * adapter. Each adapter's `conformance.test.ts` calls it once with its factories and capability
 * flags; each feature lives in its own file under `conformance/` and can run alone.
 *
 * @example
 * ```ts
 * import { describeConformance } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeConformance(adapter)
 * ```
 */
export function describeConformance(adapter: AdapterUnderTest): void {
  describeExclusion(adapter)
  describeTransactionScope(adapter)
  describeTimeouts(adapter)
  describePoolWait(adapter)
  describeAbort(adapter)
  describeLoss(adapter)
  describeOneConnection(adapter)
  describeHandles(adapter)
  describeHolders(adapter)
  describeKeys(adapter)
  describeRoundTrips(adapter)
  describeLoad(adapter)
  describeTracing(adapter)
  describeFencing(adapter)
}
