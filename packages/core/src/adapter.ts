/**
 * `@pglock/core/adapter`: what a driver package needs to describe its driver to the core. Users
 * of pglock import from their driver's package, never from here.
 */
export {
  type BoundLockFunctions,
  bindExecutor,
  bindScopedExecutor,
  type LeaseDb,
  type LeaseDbOf,
  type ScopedLockFunctions,
} from './bind.js'
export { type BackendKey, sendCancelRequest } from './cancel-request.js'
export type { CancelOutcome, LockConnection, LockExecutor, PreparedStatement, Row } from './executor.js'
export { type AfterLoss, describeValue, lastRows, runInDriverTransaction, wrongHandle } from './helpers.js'
export { type LossTracker, trackLoss } from './loss.js'
export { bindMultiplex } from './multiplex.js'
export { isConnectionFailure } from './sqlstate.js'
export type { LeaseFn } from './with-lock.js'
