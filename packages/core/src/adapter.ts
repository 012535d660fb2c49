import type { LockExecutor } from './executor.js'
import { Lock } from './lock.js'
import type { LockKey, LockOptions, TryWithLockResult, WithLockOptions } from './types.js'
import { type LeaseFn, runWithLock } from './with-lock.js'

/**
 * The three functions every adapter exports, bound to one driver. Adapters re-export them with
 * types that name the driver's own handles.
 */
export interface BoundLockFunctions<Handle, Db> {
  /** A handle on one lock; sends no SQL until acquired. */
  createLock(db: Handle, key: LockKey, options?: LockOptions): Lock<Db>
  /** Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. */
  withLock<T>(db: Handle, key: LockKey, fn: LeaseFn<Db, T>, options?: WithLockOptions): Promise<T>
  /** Like `withLock`, but does not wait: `{ acquired: false }` when the lock is taken. */
  tryWithLock<T>(db: Handle, key: LockKey, fn: LeaseFn<Db, T>, options?: WithLockOptions): Promise<TryWithLockResult<T>>
}

/**
 * Builds an adapter's `createLock`, `withLock` and `tryWithLock` from one function that
 * describes a driver handle as a {@link LockExecutor}. `toExecutor` should throw
 * `InvalidArgumentError` for a value that is not a handle of its driver; it runs before any SQL.
 *
 * @example
 * ```ts
 * import { bindExecutor, type LockExecutor } from '@pglock/core'
 *
 * const { createLock, withLock, tryWithLock } = bindExecutor((db: MyPool): LockExecutor<MyConn> => ({
 *   kind: 'pool',
 *   scope: db,
 *   connect: async () => toLockConnection(await db.checkout()),
 * }))
 * ```
 */
export function bindExecutor<Handle, Db>(toExecutor: (db: Handle) => LockExecutor<Db>): BoundLockFunctions<Handle, Db> {
  return {
    createLock: (db, key, options) => new Lock(toExecutor(db), key, options),
    withLock: async (db, key, fn, options) => {
      const result = await runWithLock(toExecutor(db), key, fn, options, false)
      if (!result.acquired) throw new Error('unreachable: a blocking withLock resolved without the lock')
      return result.value
    },
    tryWithLock: async (db, key, fn, options) => runWithLock(toExecutor(db), key, fn, options, true),
  }
}
