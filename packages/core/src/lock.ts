import { acquire, type Take } from './acquire.js'
import { AlreadyHeldError, type PgLockErrorDetails, ReleaseFailedError, UnsupportedError } from './errors.js'
import type { LockExecutor } from './executor.js'
import type { Holding } from './holding.js'
import type { LockId } from './keys.js'
import { LazyAbort } from './lazy-abort.js'
import { type LockSpec, resolveSpec, resolveWait, type Wait } from './options.js'
import { nextSavepoint } from './sql.js'
import { NotInTransaction, SESSION } from './take.js'
import { LockTrace, tracing } from './tracing.js'
import { nextMark, tieToTransaction } from './tx-marks.js'
import type { AcquireOptions, LockKey, LockMode, LockOptions, LockScope } from './types.js'

/**
 * A {@link Lock} as `acquire()` resolves it: held, so `db` is the driver's handle on the
 * connection (or transaction) that holds the lock, never `undefined`.
 *
 * @example
 * ```ts
 * const lock: HeldLock<PoolClient> = await createLock(pool, 'job:7').acquire()
 * await lock.db.query('SELECT 1')
 * ```
 */
export type HeldLock<Db> = Lock<Db> & { readonly db: Db }

/**
 * A handle on one advisory lock, for acquire and release split across code. Create it with
 * your adapter's `createLock(db, key, options)`; it sends no SQL until you acquire.
 *
 * A handle holds its lock at most once. In session scope it pins one connection from acquire
 * to release (checked out of a pool, or the connection you passed). Handles for the same key on
 * the same pool or connection queue in memory, so two handles never both hold an exclusive lock,
 * even on one connection where Postgres itself would let the second re-enter: also when they
 * reach it through different objects, such as a transaction and one of its savepoints, or
 * `lock.db` passed back to `createLock`.
 *
 * @typeParam Db - the driver-native handle on the lock's connection.
 *
 * @example
 * ```ts
 * const lock = createLock(pool, 'job:7')
 * if (await lock.tryAcquire()) {
 *   try {
 *     await runJob(lock.signal)
 *   } finally {
 *     await lock.release()
 *   }
 * }
 *
 * // or, released when the block exits:
 * await using held = await createLock(pool, 'job:7').acquire({ timeoutMs: 5_000 })
 * ```
 */
export class Lock<Db = unknown> implements AsyncDisposable {
  /** The key as given. */
  readonly key: LockKey
  /** The lock id Postgres sees (an int64, or an int32 pair). */
  readonly id: LockId
  /** The lock's scope. */
  readonly scope: LockScope
  /** The lock's mode. */
  readonly mode: LockMode

  readonly #executor: LockExecutor<Db>
  readonly #spec: LockSpec
  #acquiring = false
  #releasing = false
  /** the lock this handle holds, or held until it was lost (its `db` then stays readable until release) */
  #holding: Holding<Db> | undefined
  /** the trace of the last acquire and its lock, made when something listened on pglock's channels */
  #trace: LockTrace | undefined
  #abort = new LazyAbort()

  /** @internal Use your adapter's `createLock`. */
  constructor(executor: LockExecutor<Db>, key: LockKey, options: LockOptions | undefined) {
    const spec = resolveSpec(key, options)
    this.key = key
    this.id = spec.id
    this.scope = spec.scope
    this.mode = spec.mode
    this.#spec = spec
    this.#executor = executor
    if (spec.scope === 'transaction' && executor.kind === 'pool') {
      throw new UnsupportedError(
        `transaction scope needs a transaction: use withLock(db, key, fn, { scope: 'transaction' }), which opens one, or pass createLock a handle already inside a transaction (the transaction itself, or the connection that opened it)`,
        spec.details,
      )
    }
    if (spec.scope === 'session' && executor.connect === undefined) {
      throw new UnsupportedError(
        `session scope needs one connection kept from acquire to release, and this handle cannot pin one: use withLock(db, key, fn, { scope: 'transaction' })`,
        spec.details,
      )
    }
  }

  /** Whether this handle holds its lock now. Becomes false on release and when the lock is lost. */
  get isHeld(): boolean {
    const holding = this.#holding
    if (holding === undefined || holding.settled) return false
    // the caller's transaction may have ended, where the driver can tell without a statement
    if (holding.transaction !== undefined && this.#executor.inTransaction?.() === false) {
      void holding.endQuietly()
      return false
    }
    return true
  }

  /**
   * Aborts with `LockLostError` when the lock is lost while held (its connection failed or
   * ended). A fresh signal is made for each acquire; release does not abort it.
   */
  get signal(): AbortSignal {
    return this.#abort.signal
  }

  /**
   * The driver-native handle on the connection that holds the lock, while held, and after a loss
   * until `release()` (its queries then fail as the driver fails them); else `undefined`.
   */
  get db(): Db | undefined {
    const holding = this.#holding
    if (holding === undefined) return undefined
    return !holding.settled || holding.lost.aborted ? holding.db : undefined
  }

  /**
   * With `fencing: true`, the fencing token of the current grant, while held (and after a loss until
   * `release()`): a `bigint` larger than that of every earlier holder of any key in the cluster.
   * Else `undefined`.
   *
   * @example
   * ```ts
   * const lock = await createLock(pool, 'job:7', { fencing: true }).acquire()
   * await pool.query('UPDATE jobs SET done = true, fence = $1 WHERE id = 7 AND fence < $1', [lock.fencingToken])
   * ```
   */
  get fencingToken(): bigint | undefined {
    const holding = this.#holding
    if (holding === undefined) return undefined
    return !holding.settled || holding.lost.aborted ? holding.fencingToken : undefined
  }

  /**
   * Takes the lock if it is free, without waiting. Resolves `true` when taken, `false` when
   * another holder has it (nothing is left held or checked out). It does wait for a pooled
   * connection: `timeoutMs` bounds that wait (`LockTimeoutError`), as it does for `tryWithLock`.
   *
   * @throws `AlreadyHeldError` if this handle holds (or is acquiring) its lock.
   * @example
   * ```ts
   * if (await createLock(pool, 'cron:nightly').tryAcquire()) await runNightly()
   * ```
   */
  async tryAcquire(options?: AcquireOptions): Promise<boolean> {
    return this.#take(options, true)
  }

  /**
   * Waits until the lock is granted and resolves to this handle. With `timeoutMs` it rejects with
   * `LockTimeoutError` when time runs out, the wait for a pooled connection included; with
   * `signal` it rejects with `signal.reason` when aborted, and the wait in Postgres is cancelled.
   * Neither leaves the lock held.
   *
   * It resolves to this handle typed as held, so its `db` is the driver's handle, not `undefined`.
   *
   * @throws `AlreadyHeldError` if this handle holds (or is acquiring) its lock.
   * @example
   * ```ts
   * const lock = await createLock(pool, 'job:7').acquire({ timeoutMs: 5_000 })
   * await lock.db.query('SELECT 1') // the connection that holds the lock
   * ```
   */
  async acquire(options?: AcquireOptions): Promise<this & HeldLock<Db>> {
    await this.#take(options, false)
    return this as this & HeldLock<Db>
  }

  /**
   * Releases the lock. Resolves `true` when it released it, `false` (sending no SQL) when the
   * handle did not hold it or the lock had been lost. If the lock is lost while the unlock is in
   * flight, it resolves `false` as soon as the loss is known, without waiting for the driver to
   * answer a statement on a dead connection. A pooled connection goes back to its pool
   * only after Postgres confirmed the unlock; otherwise it is closed, which also drops the lock.
   * In transaction scope the lock ends with the transaction: `release()` sends no SQL, and
   * calling it is optional (a handle left unreleased never blocks a later transaction).
   *
   * On a pool, the next handle queued in memory for the same key is let into Postgres as the
   * unlock is sent, on a connection of its own: Postgres hands it the lock as soon as the unlock
   * lands (or first to a waiter of another process), one round trip instead of two.
   *
   * @throws `ReleaseFailedError` when the unlock failed on a connection you passed in; the lock
   * is still held and you may call `release()` again.
   * @example
   * ```ts
   * await lock.release()
   * ```
   */
  async release(): Promise<boolean> {
    const holding = this.#holding
    if (this.#releasing) return false
    if (holding === undefined || holding.settled) {
      // forgets the `db` of a lock that was lost
      if (!this.#acquiring) this.#holding = undefined
      return false
    }
    if (this.scope === 'transaction') {
      this.#holding = undefined
      await holding.endQuietly()
      return false
    }
    this.#releasing = true
    try {
      const trace = this.#trace
      const released = await (trace === undefined ? holding.unlock() : trace.unlock(holding as Holding<unknown>))
      if (!holding.lost.aborted) this.#holding = undefined
      return released
    } catch (error) {
      if (!(error instanceof ReleaseFailedError)) this.#holding = undefined
      throw error
    } finally {
      this.#releasing = false
    }
  }

  /** Releases the lock at the end of an `await using` block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release()
  }

  /** Validates one acquire, then makes it: traced, from here in the caller's context, when something listens. */
  #take(options: AcquireOptions | undefined, noWait: boolean): Promise<boolean> {
    const spec = this.#spec
    const wait = resolveWait(options, spec, noWait)
    if (this.#acquiring || (this.#holding !== undefined && !this.#holding.settled)) throw new AlreadyHeldError(spec.details)
    if (!tracing()) {
      this.#trace = undefined
      return this.#attempt(wait)
    }
    const trace = LockTrace.start(spec, wait, this.#executor, noWait ? 'tryAcquire' : 'acquire')
    this.#trace = trace
    const attempt = this.#attempt(wait)
    trace.returned()
    return attempt
  }

  /** The acquire {@link #take} validated; `#trace` is its trace, read where used (no local kept across its awaits). */
  async #attempt(wait: Wait): Promise<boolean> {
    const spec = this.#spec
    let holding: Holding<Db> | undefined
    try {
      wait.signal?.throwIfAborted()
      this.#holding = undefined
      const transaction = this.scope === 'transaction'
      if (transaction && this.#executor.inTransaction?.() === false) throw new NotInTransaction()
      const take: Take = transaction
        ? {
            framing: { kind: 'savepoint', name: nextSavepoint(), keepOpen: wait.signal !== undefined },
            mark: nextMark(),
            keepSavepoint: wait.signal !== undefined,
          }
        : { framing: SESSION }
      this.#acquiring = true
      try {
        holding = await acquire(this.#executor, spec, wait, take)
      } finally {
        this.#acquiring = false
      }
    } catch (error) {
      const failure = error instanceof NotInTransaction ? notInTransaction(error, spec.details) : error
      this.#trace?.failed(failure)
      throw failure
    }
    if (holding === undefined) {
      this.#trace?.busy()
      return false
    }
    this.#holding = holding
    this.#abort = holding.lost
    const held = holding
    held.watch(spec.keepAliveMs, (error) => {
      // isHeld first ends quietly a lock whose transaction was over: its connection failing loses nothing
      if (this.#holding === held && this.isHeld) held.lose(error, true)
    })
    if (held.mark !== undefined) {
      const { connection } = held
      const physical = connection.connectionKey ?? this.#executor.queueKey
      held.transaction = tieToTransaction({
        physical,
        mark: held.mark,
        connection,
        tickets: [held.ticket, held.onConnection],
        current: () => this.#holding === held && !held.settled,
        end: () => held.endQuietly(),
      })
    }
    this.#trace?.granted(held as Holding<unknown>)
    return true
  }
}

function notInTransaction(cause: NotInTransaction, details: PgLockErrorDetails): UnsupportedError {
  return new UnsupportedError(
    `transaction scope needs a transaction, and the connection passed to createLock is not inside one: use withLock(db, key, fn, { scope: 'transaction' }) or BEGIN first`,
    { ...details, cause },
  )
}
