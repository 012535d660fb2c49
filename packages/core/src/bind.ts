import type { LockExecutor } from './executor.js'
import { type ListHoldersOptions, type LockHolder, listHolders } from './holders.js'
import { Lock } from './lock.js'
import type { LockKey, LockOptions, LockScope, NoOptions, ScopeOf, TryWithLockResult, WithLockOptions } from './types.js'
import { type LeaseFn, NOT_ACQUIRED, runWithLock } from './with-lock.js'

/**
 * The functions every adapter exports, bound to one driver. Adapters re-export them with
 * types that name the driver's own handles.
 */
export interface BoundLockFunctions<Handle, Db> {
  /** A handle on one lock; sends no SQL until acquired. */
  createLock(db: Handle, key: LockKey, options?: LockOptions): Lock<Db>
  /** Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. */
  withLock<T>(db: Handle, key: LockKey, fn: LeaseFn<Db, T>, options?: WithLockOptions): Promise<T>
  /** Like `withLock`, but does not wait: `{ acquired: false }` when the lock is taken. */
  tryWithLock<T>(db: Handle, key: LockKey, fn: LeaseFn<Db, T>, options?: WithLockOptions): Promise<TryWithLockResult<T>>
  /** The backends holding or waiting for advisory locks of the current database, in one statement. */
  listHolders(db: Handle, options?: ListHoldersOptions): Promise<LockHolder[]>
}

/**
 * Builds an adapter's `createLock`, `withLock`, `tryWithLock` and `listHolders` from one function that
 * describes a driver handle as a {@link LockExecutor}. `toExecutor` should throw
 * `InvalidArgumentError` for a value that is not a handle of its driver; it runs before any SQL.
 *
 * @example
 * ```ts
 * import { bindExecutor, type LockExecutor } from '@pglock/core/adapter'
 *
 * const { createLock, withLock, tryWithLock, listHolders } = bindExecutor((db: MyPool): LockExecutor<MyConn> => ({
 *   kind: 'pool',
 *   queueKey: db,
 *   connect: async () => toLockConnection(await db.checkout()),
 *   query: async (sql) => (await db.query(sql)).rows,
 * }))
 * ```
 */
export function bindExecutor<Handle, Db>(toExecutor: (db: Handle) => LockExecutor<Db>): BoundLockFunctions<Handle, Db> {
  return {
    createLock: (db, key, options) => new Lock(toExecutor(db), key, options),
    withLock: <T>(db: Handle, key: LockKey, fn: LeaseFn<Db, T>, options?: WithLockOptions): Promise<T> => {
      let executor: LockExecutor<Db>
      try {
        executor = toExecutor(db)
      } catch (error) {
        return Promise.reject(error) as Promise<T>
      }
      // the blocking form never resolves to NOT_ACQUIRED
      return runWithLock(executor, key, fn, options, false) as Promise<T>
    },
    tryWithLock: async (db, key, fn, options) => {
      const value = await runWithLock(toExecutor(db), key, fn, options, true)
      return value === NOT_ACQUIRED ? NOT_TAKEN : { acquired: true, value }
    },
    listHolders: async (db, options) => listHolders(toExecutor(db), options),
  }
}

const NOT_TAKEN = Object.freeze({ acquired: false }) as TryWithLockResult<never>

/**
 * A type-level function from a driver handle and a lock scope to the type of `lease.db`, for
 * adapters where it depends on both (postgres.js: the `ReservedSql` of a session lock, the
 * `TransactionSql` of a transaction lock). Extend it and compute `db` from `this['handle']` and
 * `this['scope']`, through a type alias so that a scope left open (`LockScope`) gives a union.
 *
 * @example
 * ```ts
 * type MyLeaseDb<H, S> = S extends 'transaction' ? MyTransaction : MyConnection
 * interface MyLease extends LeaseDbOf {
 *   readonly db: MyLeaseDb<this['handle'], this['scope']>
 * }
 * ```
 */
export interface LeaseDbOf {
  readonly handle: unknown
  readonly scope: LockScope
  readonly db: unknown
}

/**
 * What `lease.db` is for handle `H` in scope `S`, by an adapter's {@link LeaseDbOf}.
 *
 * @example
 * ```ts
 * type Pinned = LeaseDb<PostgresJsLease, Sql, 'session'> // ReservedSql
 * ```
 */
export type LeaseDb<F extends LeaseDbOf, H, S extends LockScope> = (F & { readonly handle: H; readonly scope: S })['db']

/**
 * {@link BoundLockFunctions} for adapters whose `lease.db` depends on the handle and on the scope
 * the options ask for (see {@link ScopeOf}).
 *
 * @example
 * ```ts
 * const { withLock } = bindScopedExecutor<PostgresJsHandle, PostgresJsLease>(postgresJsExecutor)
 * await withLock(sql, 'k', ({ db }) => db`SELECT 1`)                              // db: ReservedSql
 * await withLock(sql, 'k', ({ db }) => db`SELECT 1`, { scope: 'transaction' })   // db: TransactionSql
 * ```
 */
export interface ScopedLockFunctions<Handle, F extends LeaseDbOf> {
  /** A handle on one lock; sends no SQL until acquired. */
  createLock<H extends Handle, O extends LockOptions = NoOptions>(db: H, key: LockKey, options?: O): Lock<LeaseDb<F, H, ScopeOf<O>>>
  /** Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. */
  withLock<H extends Handle, T, O extends WithLockOptions = NoOptions>(
    db: H,
    key: LockKey,
    fn: LeaseFn<LeaseDb<F, H, ScopeOf<O>>, T>,
    options?: O,
  ): Promise<T>
  /** Like `withLock`, but does not wait: `{ acquired: false }` when the lock is taken. */
  tryWithLock<H extends Handle, T, O extends WithLockOptions = NoOptions>(
    db: H,
    key: LockKey,
    fn: LeaseFn<LeaseDb<F, H, ScopeOf<O>>, T>,
    options?: O,
  ): Promise<TryWithLockResult<T>>
  /** The backends holding or waiting for advisory locks of the current database, in one statement. */
  listHolders(db: Handle, options?: ListHoldersOptions): Promise<LockHolder[]>
}

/**
 * {@link bindExecutor} for adapters whose `lease.db` type depends on the handle and the scope:
 * the functions are typed by the adapter's {@link LeaseDbOf}.
 *
 * @example
 * ```ts
 * interface PostgresJsLease extends LeaseDbOf {
 *   readonly db: PostgresJsLeaseDb<this['handle'], this['scope']>
 * }
 * export const { createLock, withLock, tryWithLock } = bindScopedExecutor<PostgresJsHandle, PostgresJsLease>(postgresJsExecutor)
 * ```
 */
export function bindScopedExecutor<Handle, F extends LeaseDbOf>(
  toExecutor: (db: Handle) => LockExecutor<unknown>,
): ScopedLockFunctions<Handle, F> {
  return bindExecutor(toExecutor) as unknown as ScopedLockFunctions<Handle, F>
}
