import { bindScopedExecutor, type LeaseDbOf } from '@pglock/core/adapter'
import { type KyselyHandle, type KyselyLeaseDb, kyselyExecutor } from './kysely-executor.js'

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
export type { KyselyHandle, KyselyLeaseDb } from './kysely-executor.js'

/** `lease.db` of a Kysely handle, as a type-level function for the core's bound functions. */
interface KyselyLease extends LeaseDbOf {
  readonly db: KyselyLeaseDb<this['handle'], this['scope']>
}

const bound = bindScopedExecutor<KyselyHandle, KyselyLease>(kyselyExecutor)

/**
 * Creates a handle on one advisory lock for a `Kysely` instance or a `Transaction`. It sends no
 * SQL until you acquire. On an instance, session scope pins one connection (through
 * `db.connection()`) from acquire to release, and gives it back only after a confirmed unlock;
 * `lock.db` is a `Kysely` bound to that connection. On a `Transaction`, transaction scope takes
 * the lock inside it, where it lasts until the transaction ends.
 *
 * @throws `InvalidKeyError` for a key that cannot name a lock, `UnsupportedError` for
 * transaction scope on an instance (use `withLock`, or pass a `Transaction`).
 * @example
 * ```ts
 * import { Kysely, PostgresDialect } from 'kysely'
 * import pg from 'pg'
 * import { createLock } from '@pglock/kysely'
 *
 * const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool() }) })
 * const lock = createLock(db, 'job:7')
 * if (await lock.tryAcquire()) {
 *   try {
 *     await lock.db?.updateTable('jobs').set({ started_at: new Date() }).where('id', '=', 7).execute()
 *   } finally {
 *     await lock.release()
 *   }
 * }
 * ```
 */
export const createLock = bound.createLock

/**
 * Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. In session
 * scope `lease.db` is a `Kysely` bound to the connection holding the lock. In transaction scope
 * pglock runs `fn` inside `db.transaction().execute(...)`: `lease.db` is that `Transaction`,
 * committed when `fn` resolves and rolled back when it throws. If the lock is lost while `fn`
 * runs, `lease.signal` aborts and `withLock` rejects with `LockLostError`.
 *
 * @example
 * ```ts
 * import { withLock } from '@pglock/kysely'
 *
 * const total = await withLock(db, 'invoice:42', async ({ db }) => {
 *   const row = await db.selectFrom('invoices').select('total').where('id', '=', 42).executeTakeFirstOrThrow()
 *   return row.total
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
 * import { tryWithLock } from '@pglock/kysely'
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
 * import { listHolders } from '@pglock/kysely'
 *
 * for (const holder of await listHolders(db, { keys: ['invoice:42'], keyHash: ['sha1-int64', 'postgres-lock-0.1'] })) {
 *   console.log(holder.pid, holder.granted ? 'holds' : `waits since ${holder.waitingSince?.toISOString()}`, holder.applicationName)
 * }
 * ```
 */
export const listHolders = bound.listHolders
