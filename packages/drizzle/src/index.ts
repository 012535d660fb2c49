import { bindScopedExecutor, type LeaseDbOf } from '@pglock/core'
import { type DrizzleHandle, type DrizzleLeaseDb, drizzleExecutor } from './drizzle-executor.js'

export * from '@pglock/core'
export { type DrizzleHandle, type DrizzleLeaseDb, type DrizzleTransactionOf, drizzleExecutor } from './drizzle-executor.js'

/** `lease.db` of a Drizzle handle, as a type-level function for the core's bound functions. */
interface DrizzleLease extends LeaseDbOf {
  readonly db: DrizzleLeaseDb<this['handle'], this['scope']>
}

const bound = bindScopedExecutor<DrizzleHandle, DrizzleLease>(drizzleExecutor)

/**
 * Creates a handle on one advisory lock for a Drizzle database (over node-postgres or
 * postgres.js) or a transaction `tx`. It sends no SQL until you acquire. On a database, session
 * scope pins one connection of its pool from acquire to release and gives it back only after a
 * confirmed unlock; `lock.db` is a database of the same kind on that connection.
 *
 * @throws `InvalidKeyError` for a key that cannot name a lock; `UnsupportedError` for transaction
 * scope on a database (use `withLock`, or pass the `tx`), and for session scope on a database
 * that has no pool to pin a connection from.
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
 * transaction scope runs it inside `db.transaction()` with `lease.db` set to the `tx`, which
 * commits when `fn` resolves and rolls back when it throws. If the lock is lost while `fn` runs,
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
