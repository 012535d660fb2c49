import type { Lease, ListHoldersOptions, Lock, LockHolder, LockKey, LockOptions, TryWithLockResult, WithLockOptions } from '@pglock/core'
import { bindExecutor } from '@pglock/core/adapter'
import { type PgHandle, type PgLeaseDb, pgExecutor } from './pg-executor.js'

// The user's API only: the executor behind it is on the `@pglock/pg/adapter` subpath.
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
export type { PgHandle, PgLeaseDb } from './pg-executor.js'

const bound = bindExecutor(pgExecutor<PgHandle>)

/**
 * Creates a handle on one advisory lock for a node-postgres `Pool`, `PoolClient` or `Client`.
 * It sends no SQL until you acquire. On a pool, session scope checks out one client from
 * acquire to release and returns it only after a confirmed unlock.
 *
 * @throws `InvalidKeyError` for a key that cannot name a lock, `UnsupportedError` for
 * transaction scope on a pool (use `withLock`, or a client inside a transaction).
 * @example
 * ```ts
 * import pg from 'pg'
 * import { createLock } from '@pglock/pg'
 *
 * const pool = new pg.Pool()
 * const lock = createLock(pool, 'job:7')
 * if (await lock.tryAcquire()) {
 *   try {
 *     await lock.db?.query('UPDATE jobs SET started_at = now() WHERE id = 7')
 *   } finally {
 *     await lock.release()
 *   }
 * }
 * ```
 */
export function createLock<H extends PgHandle>(db: H, key: LockKey, options?: LockOptions): Lock<PgLeaseDb<H>> {
  return bound.createLock(db, key, options) as Lock<PgLeaseDb<H>>
}

/**
 * Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. In session
 * scope `lease.db` is the client holding the lock; in transaction scope pglock opens a
 * transaction (`BEGIN` travels with the lock in one round trip), runs `fn` inside it, commits when
 * `fn` resolves and rolls back when it throws. If the lock is lost while `fn` runs, `lease.signal`
 * aborts and `withLock` rejects with `LockLostError`.
 *
 * @example
 * ```ts
 * import { withLock } from '@pglock/pg'
 *
 * const total = await withLock(pool, 'invoice:42', async ({ db }) => {
 *   const { rows } = await db.query('SELECT total FROM invoices WHERE id = 42')
 *   return rows[0].total
 * }, { timeoutMs: 5_000 })
 * ```
 */
export function withLock<H extends PgHandle, T>(
  db: H,
  key: LockKey,
  fn: (lease: Lease<PgLeaseDb<H>>) => T | PromiseLike<T>,
  options?: WithLockOptions,
): Promise<T> {
  return bound.withLock(db, key, fn as (lease: Lease<unknown>) => T, options)
}

/**
 * Like {@link withLock}, but never waits: resolves `{ acquired: false }` at once when another
 * holder has the lock, else `{ acquired: true, value }`.
 *
 * @example
 * ```ts
 * import { tryWithLock } from '@pglock/pg'
 *
 * const run = await tryWithLock(pool, 'cron:nightly', () => nightly())
 * if (!run.acquired) console.log('another instance is on it')
 * ```
 */
export function tryWithLock<H extends PgHandle, T>(
  db: H,
  key: LockKey,
  fn: (lease: Lease<PgLeaseDb<H>>) => T | PromiseLike<T>,
  options?: WithLockOptions,
): Promise<TryWithLockResult<T>> {
  return bound.tryWithLock(db, key, fn as (lease: Lease<unknown>) => T, options)
}

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
 * import pg from 'pg'
 * import { listHolders } from '@pglock/pg'
 *
 * const pool = new pg.Pool()
 *
 * for (const holder of await listHolders(pool, { keys: ['invoice:42'], keyHash: ['sha1-int64', 'postgres-lock-0.1'] })) {
 *   console.log(holder.pid, holder.granted ? 'holds' : `waits since ${holder.waitingSince?.toISOString()}`, holder.applicationName)
 * }
 * ```
 */
export function listHolders(db: PgHandle, options?: ListHoldersOptions): Promise<LockHolder[]> {
  return bound.listHolders(db, options)
}
