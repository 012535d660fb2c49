export {
  AlreadyHeldError,
  InvalidArgumentError,
  InvalidKeyError,
  LockLostError,
  LockTimeoutError,
  PgLockError,
  type PgLockErrorCode,
  type PgLockErrorDetails,
  ReleaseFailedError,
  StandbyError,
  UnsupportedError,
} from './errors.js'
export type { ListHoldersOptions, LockHolder } from './holders.js'
export { type LockId, pgLocksRow, postgresLock01, resolveLockId, sha1Int64 } from './keys.js'
export { type HeldLock, Lock } from './lock.js'
export type {
  AcquireOperation,
  AcquireOutcome,
  AcquireTraceContext,
  LockTraceBase,
  LostMessage,
  ReleaseTraceContext,
  RunTraceContext,
} from './tracing.js'
export type {
  AcquireOptions,
  KeyHash,
  Lease,
  LockKey,
  LockMode,
  LockOptions,
  LockScope,
  NoOptions,
  ScopeOf,
  TryWithLockResult,
  WithLockOptions,
} from './types.js'
export type { LeaseFn } from './with-lock.js'
