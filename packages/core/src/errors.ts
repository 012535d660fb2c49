import type { LockKey, LockMode, LockScope } from './types.js'

/**
 * The stable code of every error pglock raises. Match on `error.code` rather than on messages.
 *
 * - `INVALID_KEY`: the key is not a safe integer, a bigint in int64 range, an int32 pair or a string.
 * - `INVALID_ARGUMENT`: an option or argument has the wrong type or range (refused before any SQL).
 * - `TIMEOUT`: `timeoutMs` elapsed before the lock was granted.
 * - `LOST`: the connection holding the lock failed or ended, so Postgres no longer holds it for us.
 * - `ALREADY_HELD`: `acquire()` or `tryAcquire()` on a handle that already holds its lock.
 * - `UNSUPPORTED`: the driver handle cannot do what was asked (for example transaction scope on a
 *   bare pool with `createLock`).
 * - `RELEASE_FAILED`: the unlock statement failed on a connection pglock may not close; the lock is
 *   still held and `release()` may be called again.
 * - `STANDBY`: the server is in recovery (a hot standby), where an advisory lock would be local to
 *   that standby; nothing was taken.
 * - `LOCK_TABLE_FULL`: Postgres's shared lock table is full (`out of shared memory`, SQLSTATE
 *   53200): raise `max_locks_per_transaction`, or hold fewer locks at once.
 */
export type PgLockErrorCode =
  | 'INVALID_KEY'
  | 'INVALID_ARGUMENT'
  | 'TIMEOUT'
  | 'LOST'
  | 'ALREADY_HELD'
  | 'UNSUPPORTED'
  | 'RELEASE_FAILED'
  | 'STANDBY'
  | 'LOCK_TABLE_FULL'

/** What an error knows about the lock it concerns; every field is optional. */
export interface PgLockErrorDetails {
  /** The key as the caller gave it. */
  readonly key?: LockKey | undefined
  /** The lock mode involved. */
  readonly mode?: LockMode | undefined
  /** The lock scope involved. */
  readonly scope?: LockScope | undefined
  /** The underlying error (a driver error, an abort reason). */
  readonly cause?: unknown
}

const brand = Symbol.for('@pglock/core/PgLockError')

/**
 * The base class of every error pglock raises. Each has a stable {@link PgLockErrorCode} in
 * `code`, and the key, mode and scope it concerns where known.
 *
 * `instanceof` works across two loaded copies of `@pglock/core` (ESM and CJS, or two versions),
 * because classes recognise each other by a global symbol rather than by identity.
 *
 * @example
 * ```ts
 * import { PgLockError, withLock } from '@pglock/pg'
 *
 * try {
 *   await withLock(pool, 'report:daily', build, { timeoutMs: 1_000 })
 * } catch (error) {
 *   if (error instanceof PgLockError && error.code === 'TIMEOUT') console.log('busy, try later')
 *   else throw error
 * }
 * ```
 */
export class PgLockError extends Error {
  /** The stable machine-readable code. */
  readonly code: PgLockErrorCode
  /** The key as the caller gave it, when the error concerns one lock. */
  readonly key: LockKey | undefined
  /** The lock mode, when known. */
  readonly mode: LockMode | undefined
  /** The lock scope, when known. */
  readonly scope: LockScope | undefined

  constructor(code: PgLockErrorCode, message: string, details: PgLockErrorDetails = {}) {
    super(message, 'cause' in details ? { cause: details.cause } : undefined)
    this.name = new.target.name
    this.code = code
    this.key = details.key
    this.mode = details.mode
    this.scope = details.scope
  }

  /** @internal Marks instances so that `instanceof` works across copies of the package. */
  get [brand](): string {
    return this.code
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== 'object' || value === null || !(brand in value)) return false
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass that `instanceof` asks about
    return this === PgLockError || (value as PgLockError).name === this.name
  }
}

/**
 * The key cannot name an advisory lock (`NaN`, `1.5`, `2n ** 64n`, a pair that is not two int32,
 * `null`, an object). Raised by `createLock`/`withLock` before any SQL is sent.
 *
 * @example
 * ```ts
 * createLock(pool, 1.5) // throws InvalidKeyError, code 'INVALID_KEY'
 * ```
 */
export class InvalidKeyError extends PgLockError {
  constructor(message: string, details: PgLockErrorDetails = {}) {
    super('INVALID_KEY', message, details)
  }
}

/**
 * An option or argument has the wrong type or range, for example a negative `timeoutMs` or a
 * `fn` that is not a function. Raised before any SQL is sent.
 *
 * @example
 * ```ts
 * await withLock(pool, 'k', fn, { timeoutMs: -1 }) // rejects with InvalidArgumentError
 * ```
 */
export class InvalidArgumentError extends PgLockError {
  constructor(message: string, details: PgLockErrorDetails = {}) {
    super('INVALID_ARGUMENT', message, details)
  }
}

/**
 * The lock was not granted within `timeoutMs`. Nothing is left held or waiting.
 *
 * @example
 * ```ts
 * try {
 *   await createLock(pool, 'job:7').acquire({ timeoutMs: 500 })
 * } catch (error) {
 *   if (error instanceof LockTimeoutError) console.log(`still busy after ${error.timeoutMs} ms`)
 * }
 * ```
 */
export class LockTimeoutError extends PgLockError {
  /** The timeout that elapsed, in milliseconds. */
  readonly timeoutMs: number

  constructor(timeoutMs: number, details: PgLockErrorDetails = {}) {
    super('TIMEOUT', `lock ${describeKey(details.key)} was not granted within ${timeoutMs} ms`, details)
    this.timeoutMs = timeoutMs
  }
}

/**
 * The lock was lost while held: the connection holding it failed or ended, or the unlock found
 * it already gone. `lock.signal` and `lease.signal` abort with this error as their reason, and
 * `withLock` rejects with it when the lock was lost while `fn` ran, whatever `fn` did with the
 * driver's error: if `fn` threw, its error is the `cause`.
 *
 * @example
 * ```ts
 * await withLock(pool, 'job:7', async ({ signal }) => {
 *   for (const item of items) {
 *     signal.throwIfAborted() // throws LockLostError once the lock is gone
 *     await handle(item)
 *   }
 * })
 * ```
 */
export class LockLostError extends PgLockError {
  constructor(message: string, details: PgLockErrorDetails = {}) {
    super('LOST', message, details)
  }
}

/**
 * `acquire()` or `tryAcquire()` was called on a handle that already holds its lock.
 *
 * @example
 * ```ts
 * const lock = await createLock(pool, 'job:7').acquire()
 * await lock.acquire() // rejects with AlreadyHeldError
 * ```
 */
export class AlreadyHeldError extends PgLockError {
  constructor(details: PgLockErrorDetails = {}) {
    super('ALREADY_HELD', `lock ${describeKey(details.key)} is already held by this handle`, details)
  }
}

/**
 * The driver handle cannot do what was asked, for example transaction scope with `createLock` on
 * a bare pool, or session scope on a driver that cannot pin a connection.
 *
 * @example
 * ```ts
 * createLock(pool, 'k', { scope: 'transaction' }) // throws UnsupportedError: use withLock or a transaction
 * ```
 */
export class UnsupportedError extends PgLockError {
  constructor(message: string, details: PgLockErrorDetails = {}) {
    super('UNSUPPORTED', message, details)
  }
}

/**
 * The unlock statement failed on a connection that pglock does not own (one you passed in), so
 * it could not close it to drop the lock. The lock is still held; fix the connection (for
 * example roll back its failed transaction) and call `release()` again.
 *
 * @example
 * ```ts
 * try {
 *   await lock.release()
 * } catch (error) {
 *   if (error instanceof ReleaseFailedError) await client.query('ROLLBACK').then(() => lock.release())
 * }
 * ```
 */
export class ReleaseFailedError extends PgLockError {
  constructor(message: string, details: PgLockErrorDetails = {}) {
    super('RELEASE_FAILED', message, details)
  }
}

/**
 * The server is in recovery (a hot standby, or a replica a pool was pointed at by mistake).
 * Advisory locks there are local to that standby and not replicated, so two services on two
 * replicas would both "hold" the same lock: pglock refuses, before taking anything. A standby that
 * is promoted accepts locks at once (every lock statement checks again).
 *
 * @example
 * ```ts
 * try {
 *   await withLock(pool, 'job:7', run)
 * } catch (error) {
 *   if (error instanceof StandbyError) console.error('DATABASE_URL points at a replica')
 *   else throw error
 * }
 * ```
 */
export class StandbyError extends PgLockError {
  constructor(details: PgLockErrorDetails = {}) {
    super(
      'STANDBY',
      `lock ${describeKey(details.key)} was refused: the server is in recovery (a standby), where advisory locks are local to it and not replicated; connect to the primary`,
      details,
    )
  }
}

/**
 * Postgres refused the lock because its shared lock table is full (`out of shared memory`,
 * SQLSTATE 53200). The table has `max_locks_per_transaction` × (`max_connections` +
 * `max_prepared_transactions`) entries for the whole server, and every held advisory lock takes
 * one. Nothing was taken, and the other locks on the same connection stay held. Raise
 * `max_locks_per_transaction` (a restart is needed), or hold fewer locks at once. The driver's
 * error is the `cause`.
 *
 * @example
 * ```ts
 * try {
 *   await locks.createLock(`tenant:${id}`).acquire()
 * } catch (error) {
 *   if (error instanceof LockTableFullError) console.error('raise max_locks_per_transaction')
 * }
 * ```
 */
export class LockTableFullError extends PgLockError {
  constructor(details: PgLockErrorDetails = {}) {
    super(
      'LOCK_TABLE_FULL',
      `lock ${describeKey(details.key)} was refused: Postgres's lock table is full (out of shared memory). ` +
        'Every advisory lock held on the server takes an entry of a table sized max_locks_per_transaction × (max_connections + max_prepared_transactions): ' +
        'raise max_locks_per_transaction (and restart Postgres), or hold fewer locks at once',
      details,
    )
  }
}

/** @internal Formats a key for messages: strings quoted, pairs as `[a, b]`. */
export function describeKey(key: LockKey | undefined): string {
  if (key === undefined) return '(unknown key)'
  if (typeof key === 'string') return JSON.stringify(key)
  if (typeof key === 'bigint') return `${key}n`
  if (Array.isArray(key)) return `[${key.join(', ')}]`
  return String(key)
}

/** @internal Formats an option's value for messages: a string quoted, so that `'100'` does not read as `100`. */
export function describeValue(value: unknown): string {
  return typeof value === 'string' ? `the string ${JSON.stringify(value)}` : typeof value === 'bigint' ? `${value}n` : String(value)
}
