/**
 * What names a lock:
 * - a `number` (safe integer) or `bigint` in int64 range: that integer, as `pg_advisory_lock(bigint)`;
 * - a pair of int32 numbers: the two-key form `pg_advisory_lock(int4, int4)`;
 * - a `string`: hashed to an int64 by the `keyHash` option (SHA-1, compatible with Python
 *   `postgresql-lock`, by default).
 *
 * @example
 * ```ts
 * createLock(pool, 42)
 * createLock(pool, 9_007_199_254_740_993n)
 * createLock(pool, [7, 1001])          // (class, object) pair
 * createLock(pool, 'invoice:42')       // hashed
 * ```
 */
export type LockKey = number | bigint | string | readonly [number, number]

/**
 * `'session'`: held by one connection until released (or the connection ends).
 * `'transaction'`: held until the surrounding transaction commits or rolls back.
 */
export type LockScope = 'session' | 'transaction'

/** `'exclusive'`: one holder at a time. `'shared'`: many shared holders, no exclusive holder. */
export type LockMode = 'exclusive' | 'shared'

/**
 * How a string key becomes an int64 lock id:
 * - `'sha1-int64'` (default): the first 8 bytes of SHA-1 over the UTF-8 bytes, big-endian signed.
 *   The same id as Python `postgresql-lock` >= 0.1.6, so services in both languages share locks.
 * - `'postgres-lock-0.1'`: the id Python `postgres-lock` 0.1.x computed (SHA-1 as a decimal
 *   number, first 18 digits).
 * - a function from the string to a bigint in int64 range.
 */
export type KeyHash = 'sha1-int64' | 'postgres-lock-0.1' | ((key: string) => bigint)

/** Options fixed when a lock handle is created. */
export interface LockOptions {
  /**
   * Session locks live on one connection until released; transaction locks end with their
   * transaction.
   * @default 'session'
   */
  readonly scope?: LockScope | undefined
  /**
   * Exclusive excludes everyone else; shared excludes only exclusive holders.
   * @default 'exclusive'
   */
  readonly mode?: LockMode | undefined
  /**
   * How string keys become lock ids.
   * @default 'sha1-int64'
   */
  readonly keyHash?: KeyHash | undefined
  /**
   * While held, probe the holding connection with `SELECT 1` this often, and treat the lock as
   * lost when a probe fails or gets no answer within the same interval. Detects a connection
   * that died silently (no RST). Choose it longer than your longest statement on `lease.db`,
   * which the probe waits behind. Off by default.
   */
  readonly keepAliveMs?: number | undefined
  /**
   * Take a fencing token with each acquire: `lock.fencingToken` / `lease.fencingToken`, a `bigint`
   * larger than the token of every earlier holder of any key in the cluster. It costs no round
   * trip (it comes in the lock's own message) and one transaction id per acquire; see the README's
   * "Fencing tokens". An acquire's own `fencing` overrides it.
   * @default false
   */
  readonly fencing?: boolean | undefined
}

/** Options for one wait. */
export interface AcquireOptions {
  /**
   * Give up after this many milliseconds with `LockTimeoutError`. It bounds the whole acquire: the
   * wait for a pooled connection (one that arrives later goes straight back to its pool), the
   * queue in memory behind other handles of this process, and the wait in Postgres, enforced by
   * its own `lock_timeout`. `0` tries the lock once without waiting, once a connection is in hand.
   * @default undefined (wait as long as it takes)
   */
  readonly timeoutMs?: number | undefined
  /** Abort the wait: the promise rejects with `signal.reason` and the server-side wait is cancelled. */
  readonly signal?: AbortSignal | undefined
  /**
   * Take a fencing token with this acquire (see {@link LockOptions.fencing}).
   * @default the handle's `fencing`
   */
  readonly fencing?: boolean | undefined
}

/** Options of `withLock` and `tryWithLock`: those of the handle plus those of the wait. */
export interface WithLockOptions extends LockOptions, AcquireOptions {}

/**
 * What `withLock` passes to your function.
 * @typeParam Db - the driver-native handle type of the adapter.
 */
export interface Lease<Db> {
  /**
   * The driver-native handle on the lock's own connection (session scope) or transaction
   * (transaction scope). Queries through it run where the lock is held. Like every member of the
   * lease, a getter: read or destructure it (`async ({ db, signal }) => ...`); spreading the lease
   * (`{ ...lease }`) copies none of them.
   */
  readonly db: Db
  /**
   * Aborts with `LockLostError` if the lock is lost while your function runs. Made on first read
   * (already aborted if the lock was lost before), e.g. `async ({ db, signal }) => ...`; spreading
   * the lease (`{ ...lease }`) does not copy it.
   */
  readonly signal: AbortSignal
  /**
   * With `fencing: true`, the fencing token of this grant: a `bigint` larger than that of every
   * earlier holder of any key in the cluster. Pass it with each write the lock protects, and let
   * the write happen only if no larger token wrote first:
   * `UPDATE jobs SET result = $1, fence = $2 WHERE id = $3 AND fence < $2`. Otherwise `undefined`.
   */
  readonly fencingToken: bigint | undefined
}

/** The result of `tryWithLock`: the function's value when the lock was free, else nothing. */
export type TryWithLockResult<T> = { readonly acquired: true; readonly value: T } | { readonly acquired: false }

/**
 * The scope an options object asks for, for adapters whose `lease.db` type depends on it:
 * `S` for `{ scope: S }`, `'session'` for options without `scope` (or none), and either when
 * the type leaves it open.
 *
 * @example
 * ```ts
 * type A = ScopeOf<{ scope: 'transaction' }> // 'transaction'
 * type B = ScopeOf<{ timeoutMs: 500 }>       // 'session'
 * type C = ScopeOf<WithLockOptions>          // LockScope
 * ```
 */
export type ScopeOf<O> = O extends { readonly scope: infer S extends LockScope } ? S : 'scope' extends keyof O ? LockScope : 'session'

/**
 * The options type an adapter's functions infer when called without options.
 *
 * @example
 * ```ts
 * function withLock<O extends WithLockOptions = NoOptions>(db: Db, key: LockKey, fn: LeaseFn, options?: O): Promise<void>
 * ```
 */
export type NoOptions = Record<never, never>
