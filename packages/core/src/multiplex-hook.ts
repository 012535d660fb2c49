import type { Holding } from './holding.js'
import type { LockSpec, Wait } from './options.js'

/**
 * @internal The acquire of each multiplexed executor (see `multiplex.ts`), by executor: `acquire`
 * hands a multiplexed lock over here, so `Lock` and `withLock` serve both kinds unchanged. A
 * module of its own, so that the pipeline and the multiplexer do not import each other.
 */
export const multiplexers = new WeakMap<object, (spec: LockSpec, wait: Wait) => Promise<Holding<undefined> | undefined>>()
