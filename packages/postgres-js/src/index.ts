import { bindScopedExecutor, type LeaseDbOf } from '@pglock/core/adapter'
import { type PostgresJsHandle, type PostgresJsLeaseDb, postgresJsExecutor } from './postgres-js-executor.js'

// The user's API only: the executor behind it is on the `@pglock/postgres-js/adapter` subpath.
export {
  type AcquireOperation,
  type AcquireOptions,
  type AcquireOutcome,
  type AcquireTraceContext,
  AlreadyHeldError,
  type HeldLock,
  InvalidArgumentError,
  InvalidKeyError,
  type KeyHash,
  type Lease,
  type ListHoldersOptions,
  Lock,
  type LockHolder,
  type LockId,
  type LockKey,
  LockLostError,
  type LockMode,
  type LockOptions,
  type LockScope,
  LockTimeoutError,
  type LockTraceBase,
  type LostMessage,
  PgLockError,
  type PgLockErrorCode,
  type PgLockErrorDetails,
  pgLocksRow,
  ReleaseFailedError,
  type ReleaseTraceContext,
  type RunTraceContext,
  resolveLockId,
  StandbyError,
  type TryWithLockResult,
  UnsupportedError,
  type WithLockOptions,
} from '@pglock/core'
export type { PostgresJsHandle, PostgresJsLeaseDb } from './postgres-js-executor.js'

/** `lease.db` of a postgres.js handle, as a type-level function for the core's bound functions. */
interface PostgresJsLease extends LeaseDbOf {
  readonly db: PostgresJsLeaseDb<this['handle'], this['scope']>
}

const bound = bindScopedExecutor<PostgresJsHandle, PostgresJsLease>(postgresJsExecutor)

/**
 * Creates a handle on one advisory lock for a postgres.js `Sql`, `ReservedSql` or
 * `TransactionSql`. It sends no SQL until you acquire. On a `Sql`, session scope pins one
 * connection with `sql.reserve()` from acquire to release and gives it back only after a
 * confirmed unlock; `lock.db` is that `ReservedSql`.
 *
 * @throws `InvalidKeyError` for a key that cannot name a lock, `UnsupportedError` for
 * transaction scope on a `Sql` (use `withLock`, or pass the `TransactionSql` of `sql.begin()`).
 * @example
 * ```ts
 * import postgres from 'postgres'
 * import { createLock } from '@pglock/postgres-js'
 *
 * const sql = postgres(process.env.DATABASE_URL)
 * const lock = createLock(sql, 'job:7')
 * if (await lock.tryAcquire()) {
 *   try {
 *     await lock.db?.`UPDATE jobs SET started_at = now() WHERE id = 7`
 *   } finally {
 *     await lock.release()
 *   }
 * }
 * ```
 */
export const createLock = bound.createLock

/**
 * Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. On a `Sql`,
 * session scope runs `fn` with `lease.db` set to the `ReservedSql` holding the lock; transaction
 * scope runs it inside `sql.begin()` with `lease.db` set to the `TransactionSql`, which commits
 * when `fn` resolves and rolls back when it throws. If the lock is lost while `fn` runs,
 * `lease.signal` aborts and `withLock` rejects with `LockLostError`.
 *
 * @example
 * ```ts
 * import { withLock } from '@pglock/postgres-js'
 *
 * const total = await withLock(sql, 'invoice:42', async ({ db }) => {
 *   const [invoice] = await db`SELECT total FROM invoices WHERE id = 42`
 *   await db`UPDATE invoices SET locked_at = now() WHERE id = 42`
 *   return invoice.total
 * }, { scope: 'transaction', timeoutMs: 5_000 })
 * ```
 */
export const withLock = bound.withLock

/**
 * Like {@link withLock}, but never waits: resolves `{ acquired: false }` at once when another
 * holder has the lock, else `{ acquired: true, value }`.
 *
 * @example
 * ```ts
 * import { tryWithLock } from '@pglock/postgres-js'
 *
 * const run = await tryWithLock(sql, 'cron:nightly', () => nightly())
 * if (!run.acquired) console.log('another instance is on it')
 * ```
 */
export const tryWithLock = bound.tryWithLock

/**
 * Lists the backends holding or waiting for advisory locks in the current database, from
 * `pg_locks` and `pg_stat_activity`, in one read-only statement on any handle this entry takes.
 * Pass `keys` to list only their locks and name each row's key (string keys are matched under
 * every hash of `keyHash`). A role sees every lock, but of other roles' backends only the pid and
 * `applicationName` (`pg_stat_activity` hides the rest unless it has `pg_read_all_stats`).
 *
 * @throws `InvalidKeyError` for a key or `keyHash` that cannot name a lock, `InvalidArgumentError`
 * for other malformed options; both before any SQL.
 * @example
 * ```ts
 * import postgres from 'postgres'
 * import { listHolders } from '@pglock/postgres-js'
 *
 * const sql = postgres(process.env.DATABASE_URL)
 *
 * for (const holder of await listHolders(sql, { keys: ['invoice:42'], keyHash: ['sha1-int64', 'postgres-lock-0.1'] })) {
 *   console.log(holder.pid, holder.granted ? 'holds' : `waits since ${holder.waitingSince?.toISOString()}`, holder.applicationName)
 * }
 * ```
 */
export const listHolders = bound.listHolders
