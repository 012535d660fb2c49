import { type AnyDrizzleHandle, bindDrizzle, type DrizzleClasses, type DrizzleShape, drizzleDescriber } from './drizzle-executor.js'
import { transactionClientOf } from './drizzle-privates.js'
import { nodePgDriver } from './node-postgres-driver.js'
import { postgresJsDriver } from './postgres-js-driver.js'

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
 * A Drizzle Postgres database over node-postgres or postgres.js, or a transaction (`tx`) of one.
 * The driver entries (`@pglock/drizzle/node-postgres`, `@pglock/drizzle/postgres-js`) type it by
 * their driver's database.
 *
 * @example
 * ```ts
 * async function exclusively<T>(db: DrizzleHandle, job: string, fn: () => Promise<T>): Promise<T> {
 *   return withLock(db, `job:${job}`, fn, { scope: 'transaction' })
 * }
 * ```
 */
export type DrizzleHandle = AnyDrizzleHandle

const supports = 'Drizzle databases over node-postgres (drizzle-orm/node-postgres) or postgres.js (drizzle-orm/postgres-js)'

/** Loads a driver's classes once, when its first lock needs them, so that this entry imports neither driver. */
function loader(load: () => Promise<DrizzleClasses>): () => Promise<DrizzleClasses> {
  let loading: Promise<DrizzleClasses> | undefined
  return () => (loading ??= load())
}

const nodePg = drizzleDescriber(
  nodePgDriver({
    entry: '@pglock/drizzle',
    supports,
    owns: () => true,
    classes: loader(async () => (await import('./node-postgres-classes.js')).nodePgClasses),
  }),
)

const postgresJs = drizzleDescriber(
  postgresJsDriver({
    entry: '@pglock/drizzle',
    supports,
    owns: () => true,
    classes: loader(async () => (await import('./postgres-js-classes.js')).postgresJsClasses),
  }),
)

/** The driver client under a Drizzle database or `tx`, as far as its shape tells. */
function clientUnder(db: unknown): unknown {
  if (typeof db !== 'object' || db === null) return undefined
  const handle = db as Partial<DrizzleShape>
  if (handle.$primary !== undefined) return clientUnder(handle.$primary)
  if (typeof handle.rollback === 'function' && typeof handle._?.session === 'object') return transactionClientOf(handle as DrizzleShape)
  return handle.$client
}

// A postgres.js `Sql` is a function, node-postgres clients are objects.
const bound = bindDrizzle<DrizzleHandle>((db) => (typeof clientUnder(db) === 'function' ? postgresJs : nodePg)(db))

/**
 * Creates a handle on one advisory lock for a Drizzle database (over node-postgres or
 * postgres.js) or a transaction `tx`. It sends no SQL until you acquire. On a database, session
 * scope pins one connection of its pool from acquire to release and gives it back only after a
 * confirmed unlock; `lock.db` is a database of the same kind on that connection. Prefer the
 * driver's entry (`@pglock/drizzle/node-postgres` or `@pglock/drizzle/postgres-js`), which
 * types `db` by that driver.
 *
 * @throws `InvalidKeyError` for a key that cannot name a lock; `UnsupportedError` for transaction
 * scope on a database (use `withLock`, or pass the `tx`), and for a database over another driver;
 * `InvalidArgumentError` for a value that is not a Drizzle Postgres database.
 * @example
 * ```ts
 * import { drizzle } from 'drizzle-orm/node-postgres'
 * import { createLock } from '@pglock/drizzle'
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
 * database, session scope runs `fn` with `lease.db` bound to the connection holding the lock;
 * transaction scope runs it in a transaction with `lease.db` set to Drizzle's `tx`, which commits
 * when `fn` resolves and rolls back when it throws. If the lock is lost while `fn` runs,
 * `lease.signal` aborts and `withLock` rejects with `LockLostError`.
 *
 * @example
 * ```ts
 * import { withLock } from '@pglock/drizzle'
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
 * import { tryWithLock } from '@pglock/drizzle'
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
 * import { listHolders } from '@pglock/drizzle'
 *
 * for (const holder of await listHolders(db, { keys: ['invoice:42'], keyHash: ['sha1-int64', 'postgres-lock-0.1'] })) {
 *   console.log(holder.pid, holder.granted ? 'holds' : `waits since ${holder.waitingSince?.toISOString()}`, holder.applicationName)
 * }
 * ```
 */
export const listHolders = bound.listHolders
