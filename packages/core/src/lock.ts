import {
  AlreadyHeldError,
  describeKey,
  LockLostError,
  LockTimeoutError,
  type PgLockErrorDetails,
  ReleaseFailedError,
  UnsupportedError,
} from './errors.js'
import type { LockConnection, LockExecutor } from './executor.js'
import { claimConnectionGate, enterConnectionGate, enterGate, type GateTicket, type Recheck } from './gate.js'
import {
  type Framing,
  isConnectionFailure,
  keepSavepoint,
  NotInTransaction,
  nextSavepoint,
  send,
  sessionMovedReason,
  sqlState,
  takeLock,
  watchConnection,
} from './hold.js'
import { type LockId, lockIdToken, resolveLockId } from './keys.js'
import { LazyAbort } from './lazy-abort.js'
import { type ResolvedLockOptions, resolveAcquireOptions, resolveLockOptions } from './options.js'
import { CURRENT_MARK_SQL, IN_FAILED_SQL_TRANSACTION, pidOf, preparedUnlock, QUERY_CANCELED, unlockSql } from './sql.js'
import type { AcquireOptions, LockKey, LockMode, LockOptions, LockScope } from './types.js'
import { checkOut, DeadlineExceeded, untilLost } from './wait.js'

interface Held<Db> {
  readonly connection: LockConnection<Db>
  readonly ticket: GateTicket
  /** the place in the gate of the connection itself, where other handles on it queue */
  readonly onConnection: GateTicket
  readonly stopWatching: () => void
  /** the backend that took the lock, when the lock statement said (session scope) */
  readonly pid: number | undefined
  /** for a lock in a caller's transaction: that transaction, which ends the lock unseen */
  transaction?: TransactionHold
}

/** A transaction lock on a caller's connection, which ends when its transaction does. */
interface TransactionHold {
  /** the mark Postgres keeps for the transaction while it lasts (see `acquireSql`) */
  readonly mark: string
  /** the physical connection, where later transactions run */
  readonly connection: object
  /** settles the handle: its transaction is over */
  readonly end: () => void
}

/**
 * The transaction locks taken on each physical connection and not released. A lock taken in a
 * later transaction there ends every one of them that carries another mark.
 */
const transactionHolds = new WeakMap<object, Set<TransactionHold>>()

const MARK_PREFIX = Math.random().toString(36).slice(2, 10)
let marks = 0

/**
 * @internal Ends the transaction locks left unreleased on a connection fresh from its pool: a
 * pool lends a connection only once the transaction that used it is over.
 */
export function endTransactionLocks(physical: object | undefined): void {
  const holds = physical === undefined ? undefined : transactionHolds.get(physical)
  if (holds !== undefined) for (const hold of [...holds]) hold.end()
}

/** A transaction mark unique within this process (only `[a-z0-9.]`, as it travels as a literal). */
function nextMark(): string {
  marks += 1
  return `${MARK_PREFIX}.${marks}`
}

type State = 'idle' | 'acquiring' | 'held' | 'releasing'

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
  readonly #keepAliveMs: number | undefined
  readonly #details: PgLockErrorDetails
  #state: State = 'idle'
  #held: Held<Db> | undefined
  #abort = new LazyAbort()
  /** `db` of a lock that was lost, kept until release or the next acquire: its queries fail as the driver's */
  #lostDb: Db | undefined

  /** @internal Use your adapter's `createLock`. */
  constructor(executor: LockExecutor<Db>, key: LockKey, options: LockOptions | undefined) {
    const details: PgLockErrorDetails = { key }
    const resolved: ResolvedLockOptions = resolveLockOptions(options, details)
    this.id = resolveLockId(key, options)
    this.key = key
    this.scope = resolved.scope
    this.mode = resolved.mode
    this.#details = { key, mode: resolved.mode, scope: resolved.scope }
    this.#keepAliveMs = resolved.keepAliveMs
    this.#executor = executor
    if (resolved.scope === 'transaction' && executor.kind === 'pool') {
      throw new UnsupportedError(
        `transaction scope needs a transaction: use withLock(db, key, fn, { scope: 'transaction' }), which opens one, or pass createLock a client or transaction that is inside one`,
        this.#details,
      )
    }
    if (resolved.scope === 'session' && executor.connect === undefined) {
      throw new UnsupportedError(
        `session scope needs one connection kept from acquire to release, and this handle cannot pin one: use withLock(db, key, fn, { scope: 'transaction' })`,
        this.#details,
      )
    }
  }

  /** Whether this handle holds its lock now. Becomes false on release and when the lock is lost. */
  get isHeld(): boolean {
    const held = this.#held
    if (held !== undefined && this.#transactionOver(held)) void this.#end(held)
    return this.#state === 'held' || this.#state === 'releasing'
  }

  /**
   * Whether the caller's transaction a lock was taken in is over, where the driver can say so
   * without a statement (node-postgres: the client is idle, in no transaction at all).
   */
  #transactionOver(held: Held<Db>): boolean {
    return held.transaction !== undefined && this.#executor.inTransaction?.() === false
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
    return this.#held?.connection.db ?? this.#lostDb
  }

  /**
   * Takes the lock if it is free, without waiting. Resolves `true` when taken, `false` when
   * another holder has it (nothing is left held or checked out).
   *
   * @throws `AlreadyHeldError` if this handle holds (or is acquiring) its lock.
   * @example
   * ```ts
   * if (await createLock(pool, 'cron:nightly').tryAcquire()) await runNightly()
   * ```
   */
  async tryAcquire(options?: { readonly signal?: AbortSignal | undefined }): Promise<boolean> {
    const { signal } = resolveAcquireOptions(options, this.#details)
    return this.#take(true, undefined, signal)
  }

  /**
   * Waits until the lock is granted and resolves to this handle. With `timeoutMs` it rejects with
   * `LockTimeoutError` when time runs out; with `signal` it rejects with `signal.reason` when
   * aborted, and the wait in Postgres is cancelled. Neither leaves the lock held.
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
    const { timeoutMs, signal } = resolveAcquireOptions(options, this.#details)
    await this.#take(false, timeoutMs, signal)
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
    this.#lostDb = undefined
    const held = this.#held
    if (this.#state !== 'held' || held === undefined) return false
    this.#state = 'releasing'
    if (this.scope === 'transaction') {
      await this.#end(held)
      return false
    }
    if (held.connection.owned) held.ticket.leave()
    let released: boolean
    try {
      released = await untilLost(this.#unlock(held), this.#abort)
    } catch (error) {
      if (error instanceof SessionMoved) return this.#moved(held, error)
      if (this.#state !== 'releasing') return false
      if (isConnectionFailure(error)) {
        this.#lose(
          held,
          new LockLostError(`lock ${describeKey(this.key)} was lost: its connection failed`, { ...this.#details, cause: error }),
          true,
        )
        return false
      }
      if (!held.connection.owned) {
        this.#state = 'held'
        throw new ReleaseFailedError(`could not release lock ${describeKey(this.key)}: ${String((error as Error)?.message ?? error)}`, {
          ...this.#details,
          cause: error,
        })
      }
      await held.connection.release({ destroy: true, cause: error })
      this.#settle(held)
      return true
    }
    if (this.#state !== 'releasing') return false
    held.stopWatching()
    if (!released) {
      this.#lose(held, new LockLostError(`lock ${describeKey(this.key)} was no longer held when released`, this.#details), false)
      return false
    }
    await held.connection.release({ destroy: false })
    this.#settle(held)
    return true
  }

  /**
   * The unlock ran on another backend than the one holding the lock, so it unlocked nothing: the
   * connection does not keep its session. Reported loudly, never as a release.
   */
  async #moved(held: Held<Db>, moved: SessionMoved): Promise<never> {
    const reason = sessionMovedReason(moved.heldOn, moved.now)
    const unsupported = new UnsupportedError(`could not release session lock ${describeKey(this.key)}: ${reason}`, this.#details)
    held.stopWatching()
    await held.connection.release({ destroy: true, cause: unsupported })
    this.#settle(held)
    this.#abort.abort(new LockLostError(`lock ${describeKey(this.key)} was lost: ${reason}`, { ...this.#details, cause: unsupported }))
    throw unsupported
  }

  /** Releases the lock at the end of an `await using` block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release()
  }

  async #unlock(held: Held<Db>): Promise<boolean> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const { connection } = held
        const statement =
          connection.execute === undefined ? unlockSql(this.id, this.mode, held.pid) : preparedUnlock(this.id, this.mode, held.pid)
        const [row] = await send(connection, statement)
        const now = pidOf(row)
        if (held.pid !== undefined && now !== undefined && now !== held.pid) throw new SessionMoved(held.pid, now)
        return row?.released === true
      } catch (error) {
        if (sqlState(error) !== QUERY_CANCELED || attempt >= 2) throw error
      }
    }
  }

  async #take(attempt: boolean, timeoutMs: number | undefined, signal: AbortSignal | undefined): Promise<boolean> {
    if (this.#state !== 'idle') throw new AlreadyHeldError(this.#details)
    signal?.throwIfAborted()
    this.#lostDb = undefined
    if (this.scope === 'transaction' && this.#executor.inTransaction?.() === false) throw this.#explain(new NotInTransaction(), timeoutMs)
    this.#state = 'acquiring'
    let deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs
    const { scope } = this.#executor
    const token = lockIdToken(this.id)
    let ticket: GateTicket | undefined
    let connection: LockConnection<Db> | undefined
    let onConnection: GateTicket | undefined
    const refuse = async () => {
      await connection?.release({ destroy: false })
      onConnection?.leave()
      ticket?.leave()
      this.#state = 'idle'
      return false
    }
    try {
      ticket = await enterGate(scope, token, this.#gateExclusive(), { attempt, signal, deadline })
      if (ticket === undefined) return refuse()
      const checkout = await checkOut(this.#executor, signal, deadline)
      connection = checkout.connection
      deadline = checkout.deadline
      if (!connection.owned) {
        onConnection = await enterConnectionGate(connection, scope, token, { attempt, signal, deadline })
        if (onConnection === undefined) return refuse()
      }
      const framing = this.#framing(signal)
      const granted = await takeLock(connection, {
        id: this.id,
        mode: this.mode,
        framing,
        attempt,
        deadline,
        timeoutMs,
        signal,
        details: this.#details,
        mark: framing.kind === 'savepoint' ? nextMark() : undefined,
      })
      if (!granted) return refuse()
      if (onConnection === undefined) {
        endTransactionLocks(connection.scope)
        onConnection = claimConnectionGate(connection, scope, token)
      }
      if (framing.kind === 'savepoint' && framing.keepOpen) await keepSavepoint(connection, framing.name)
      this.#abort = new LazyAbort()
      const held: Held<Db> = { connection, ticket, onConnection, pid: granted.pid, stopWatching: this.#watch(connection, granted.pid) }
      this.#held = held
      this.#state = 'held'
      if (granted.mark !== undefined) this.#endWithTransaction(held, granted.mark)
      return true
    } catch (error) {
      await refuse()
      throw this.#explain(error, timeoutMs)
    }
  }

  #explain(error: unknown, timeoutMs: number | undefined): unknown {
    if (error instanceof DeadlineExceeded) return new LockTimeoutError(timeoutMs ?? 0, this.#details)
    if (error instanceof NotInTransaction) {
      return new UnsupportedError(
        `transaction scope needs a transaction, and the connection passed to createLock is not inside one: use withLock(db, key, fn, { scope: 'transaction' }) or BEGIN first`,
        { ...this.#details, cause: error },
      )
    }
    return error
  }

  /**
   * On a single connection, Postgres cannot tell two handles apart, so shared handles queue
   * behind each other too; on a pool each handle has its own connection and shared ones coexist.
   */
  #gateExclusive(): boolean {
    return this.mode === 'exclusive' || this.#executor.kind === 'connection'
  }

  #framing(signal: AbortSignal | undefined): Framing {
    if (this.scope === 'session') return { kind: 'session' }
    return { kind: 'savepoint', name: nextSavepoint(), keepOpen: signal !== undefined }
  }

  #watch(connection: LockConnection<Db>, pid: number | undefined): () => void {
    return watchConnection(
      connection,
      this.#keepAliveMs,
      (error) => {
        const held = this.#held
        // isHeld first ends quietly a lock whose transaction was over: its connection failing loses nothing
        if (held !== undefined && this.isHeld) this.#lose(held, error, true)
      },
      this.#details,
      pid,
    )
  }

  /**
   * Ties a lock taken in a caller's transaction to that transaction, which may end (`COMMIT`,
   * `ROLLBACK`) without a word to pglock. Locks of earlier transactions on the connection end
   * now, as this one runs in another; a handle that finds the lock's place taken in memory asks
   * Postgres whether the holder's transaction still runs.
   */
  #endWithTransaction(held: Held<Db>, mark: string): void {
    const physical = held.connection.scope ?? this.#executor.scope
    let holds = transactionHolds.get(physical)
    if (holds === undefined) transactionHolds.set(physical, (holds = new Set()))
    for (const other of [...holds]) if (other.mark !== mark) other.end()
    const hold: TransactionHold = { mark, connection: physical, end: () => void this.#end(held) }
    holds.add(hold)
    held.transaction = hold
    let checking: Promise<void> | undefined
    const recheck: Recheck = (via) => (checking ??= this.#recheck(held, mark, via ?? held.connection).finally(() => (checking = undefined)))
    held.ticket.recheckWith(recheck)
    held.onConnection.recheckWith(recheck)
  }

  /** Ends the handle if the transaction its lock was taken in is over; asks through `via`, on the same connection. */
  async #recheck(held: Held<Db>, mark: string, via: NonNullable<Parameters<Recheck>[0]>): Promise<void> {
    let current: unknown
    try {
      const [row] = await via.query(CURRENT_MARK_SQL)
      current = row?.tx
    } catch (error) {
      // a failed transaction still holds its locks until it is rolled back
      if (sqlState(error) === IN_FAILED_SQL_TRANSACTION) return
    }
    if (current !== mark && this.#held === held) await this.#end(held)
  }

  /** Settles a transaction lock that ended with its transaction, letting go of its connection. */
  async #end(held: Held<Db>): Promise<void> {
    if (this.#held !== held) return
    this.#settle(held)
    await Promise.resolve(held.connection.release({ destroy: false })).catch(() => undefined)
  }

  #lose(held: Held<Db>, error: LockLostError, destroy: boolean): void {
    void Promise.resolve(held.connection.release({ destroy, cause: error })).catch(() => undefined)
    this.#settle(held)
    this.#lostDb = held.connection.db
    this.#abort.abort(error)
  }

  #settle(held: Held<Db>): void {
    held.stopWatching()
    if (held.transaction !== undefined) transactionHolds.get(held.transaction.connection)?.delete(held.transaction)
    this.#held = undefined
    this.#state = 'idle'
    held.onConnection.leave()
    held.ticket.leave()
  }
}

/** Thrown by `#unlock` when the unlock ran on another backend than the one holding the lock. */
class SessionMoved extends Error {
  constructor(
    readonly heldOn: number,
    readonly now: number,
  ) {
    super(`the connection moved from backend ${heldOn} to backend ${now}`)
  }
}
