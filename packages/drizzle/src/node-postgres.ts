import { is } from 'drizzle-orm'
import { type NodePgDatabase, NodePgDatabase as NodePgDatabaseClass, NodePgTransaction } from 'drizzle-orm/node-postgres'
import { bindDrizzle, type DrizzleTransactionOf, drizzleDescriber } from './drizzle-executor.js'
import { nodePgClasses } from './node-postgres-classes.js'
import { nodePgDriver } from './node-postgres-driver.js'

// The user's API only: the executor behind it stays inside the package.
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
export type { DrizzleLeaseDb, DrizzleTransactionOf } from './drizzle-executor.js'

/**
 * A Drizzle database over node-postgres (`drizzle()` of `drizzle-orm/node-postgres`, over a
 * `Pool` or one `Client`), or a transaction (`tx`) of one.
 *
 * @example
 * ```ts
 * import type { DrizzleHandle } from '@pglock/drizzle/node-postgres'
 *
 * async function exclusively<T>(db: DrizzleHandle, job: string, fn: () => Promise<T>): Promise<T> {
 *   return withLock(db, `job:${job}`, fn, { scope: 'transaction' })
 * }
 * ```
 */
export type DrizzleHandle = NodePgDatabase<any> | DrizzleTransactionOf<NodePgDatabase<any>>

const bound = bindDrizzle<DrizzleHandle>(
  drizzleDescriber(
    nodePgDriver({
      entry: '@pglock/drizzle/node-postgres',
      supports:
        'Drizzle databases over node-postgres (drizzle-orm/node-postgres); use @pglock/drizzle/postgres-js for drizzle-orm/postgres-js',
      owns: (db) => is(db, NodePgDatabaseClass) || is(db, NodePgTransaction),
      classes: () => nodePgClasses,
    }),
  ),
)

/**
 * Creates a handle on one advisory lock for a Drizzle node-postgres database or a `tx`. It sends
 * no SQL until you acquire. On a database over a `Pool`, session scope pins one client of the
 * pool from acquire to release and gives it back only after a confirmed unlock; `lock.db` is a
 * database of the same kind (schema, casing, logger) on that client.
 *
 * @throws `InvalidKeyError` for a key that cannot name a lock; `UnsupportedError` for transaction
 * scope on a database (use `withLock`, or pass the `tx`), for a database of another Drizzle driver
 * or over no node-postgres client, and for a drizzle-orm release without a member pglock reads;
 * `InvalidArgumentError` for a value that is not a Drizzle database.
 * @example
 * ```ts
 * import { drizzle } from 'drizzle-orm/node-postgres'
 * import { createLock } from '@pglock/drizzle/node-postgres'
 *
 * const db = drizzle(process.env.DATABASE_URL)
 * const lock = createLock(db, 'job:7')
 * if (await lock.tryAcquire()) {
 *   try {
 *     await lock.db?.update(jobs).set({ startedAt: new Date() }).where(eq(jobs.id, 7))
 *   } finally {
 *     await lock.release()
 *   }
 * }
 * ```
 */
export const createLock = bound.createLock

/**
 * Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. On a
 * database, session scope runs `fn` with `lease.db` bound to the client holding the lock;
 * transaction scope sends `BEGIN` with the lock and runs `fn` with `lease.db` set to Drizzle's
 * `tx`, committed when `fn` resolves and rolled back when it throws. If the lock is lost while
 * `fn` runs, `lease.signal` aborts and `withLock` rejects with `LockLostError`.
 *
 * @example
 * ```ts
 * import { withLock } from '@pglock/drizzle/node-postgres'
 *
 * await withLock(db, 'invoice:42', async ({ db: tx }) => {
 *   const [invoice] = await tx.select().from(invoices).where(eq(invoices.id, 42))
 *   await tx.update(invoices).set({ total: invoice.total + 1 }).where(eq(invoices.id, 42))
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
 * import { tryWithLock } from '@pglock/drizzle/node-postgres'
 *
 * const run = await tryWithLock(db, 'cron:nightly', () => nightly())
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
 * import { listHolders } from '@pglock/drizzle/node-postgres'
 *
 * for (const holder of await listHolders(db, { keys: ['invoice:42'], keyHash: ['sha1-int64', 'postgres-lock-0.1'] })) {
 *   console.log(holder.pid, holder.granted ? 'holds' : `waits since ${holder.waitingSince?.toISOString()}`, holder.applicationName)
 * }
 * ```
 */
export const listHolders = bound.listHolders
