import { describeKey, InvalidArgumentError, LockLostError, LockTimeoutError, type PgLockErrorDetails } from './errors.js'
import type { LockConnection, LockExecutor } from './executor.js'
import { claimConnectionGate, enterConnectionGate, enterGate, type GateTicket, NO_TICKET } from './gate.js'
import { type Framing, isConnectionFailure, NotInTransaction, nextSavepoint, takeLock, watchConnection } from './hold.js'
import { type LockId, lockIdToken, resolveLockId } from './keys.js'
import { LazyAbort } from './lazy-abort.js'
import { endTransactionLocks, Lock } from './lock.js'
import { resolveAcquireOptions, resolveLockOptions } from './options.js'
import { rollbackToSavepointSql } from './sql.js'
import type { Lease, LockKey, LockMode, TryWithLockResult, WithLockOptions } from './types.js'
import { checkOut, DeadlineExceeded, interruptible, untilLost } from './wait.js'

/**
 * The lease `withLock` hands to `fn`. `signal` is a getter on the prototype, so that its
 * `AbortSignal` is made only if `fn` reads it (destructuring reads it; spreading the lease does not).
 */
class LockLease<Db> implements Lease<Db> {
  readonly db: Db
  readonly #lost: { readonly signal: AbortSignal }

  constructor(db: Db, lost: { readonly signal: AbortSignal }) {
    this.db = db
    this.#lost = lost
  }

  get signal(): AbortSignal {
    return this.#lost.signal
  }
}

/** @internal The function a user passes to `withLock`. */
export type LeaseFn<Db, T> = (lease: Lease<Db>) => T | PromiseLike<T>

interface Run<Db, T> {
  readonly executor: LockExecutor<Db>
  readonly id: LockId
  readonly mode: LockMode
  readonly keepAliveMs: number | undefined
  readonly timeoutMs: number | undefined
  readonly signal: AbortSignal | undefined
  readonly deadline: number | undefined
  readonly attempt: boolean
  readonly details: PgLockErrorDetails
  readonly fn: LeaseFn<Db, T>
}

/**
 * @internal Runs `fn` while holding the lock `key` on `executor`'s database: the engine behind
 * every adapter's `withLock` (`attempt: false`) and `tryWithLock` (`attempt: true`).
 */
export async function runWithLock<Db, T>(
  executor: LockExecutor<Db>,
  key: LockKey,
  fn: LeaseFn<Db, T>,
  options: WithLockOptions | undefined,
  attempt: boolean,
): Promise<TryWithLockResult<T>> {
  const scope = (options as { readonly scope?: unknown } | null | undefined)?.scope
  if (scope === undefined || scope === 'session') {
    const lock = new Lock(executor, key, options)
    const { timeoutMs, signal } = resolveAcquireOptions(options, { key, mode: lock.mode, scope: lock.scope })
    checkFn(fn, { key, mode: lock.mode, scope: lock.scope })
    return runInSession(lock, fn, attempt, timeoutMs, signal)
  }
  const resolved = resolveLockOptions(options, { key })
  const details: PgLockErrorDetails = { key, mode: resolved.mode, scope: resolved.scope }
  const id = resolveLockId(key, options)
  const { timeoutMs, signal } = resolveAcquireOptions(options, details)
  checkFn(fn, details)
  signal?.throwIfAborted()
  const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs
  const run: Run<Db, T> = {
    executor,
    id,
    mode: resolved.mode,
    keepAliveMs: resolved.keepAliveMs,
    timeoutMs,
    signal,
    deadline,
    attempt,
    details,
    fn,
  }
  try {
    return await runInTransaction(run)
  } catch (error) {
    if (error instanceof DeadlineExceeded) throw new LockTimeoutError(timeoutMs ?? 0, details)
    throw error
  }
}

function checkFn(fn: unknown, details: PgLockErrorDetails): void {
  if (typeof fn !== 'function') {
    throw new InvalidArgumentError(`fn must be a function, got ${fn === null ? 'null' : typeof fn}`, details)
  }
}

async function runInSession<Db, T>(
  lock: Lock<Db>,
  fn: LeaseFn<Db, T>,
  attempt: boolean,
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
): Promise<TryWithLockResult<T>> {
  if (attempt ? !(await lock.tryAcquire({ signal })) : !(await lock.acquire({ timeoutMs, signal }))) return { acquired: false }
  let value: T
  try {
    value = await fn(new LockLease(lock.db as Db, lock))
  } catch (error) {
    await lock.release().catch(() => undefined)
    throw lock.signal.aborted ? lostWhileRunning(lock.signal.reason, error) : error
  }
  if (!(await lock.release())) lock.signal.throwIfAborted()
  return { acquired: true, value }
}

/**
 * What `withLock` rejects with when the lock was lost while `fn` ran and `fn` threw `error`: the
 * loss, with `fn`'s error as its `cause` (a driver error on the dead connection, usually), so that
 * a lost lock reads the same whatever `fn` did with the driver's error. Decided once the unlock or
 * rollback has said whether the connection is gone: the driver may reject `fn`'s statement before
 * the adapter reports the loss.
 */
function lostWhileRunning(loss: unknown, error: unknown): unknown {
  if (error === loss || !(loss instanceof LockLostError)) return loss
  return new LockLostError(loss.message, { key: loss.key, mode: loss.mode, scope: loss.scope, cause: error })
}

/** The loss of a transaction lock whose connection failed under pglock's own `COMMIT`, `ROLLBACK`, or the driver's. */
function connectionFailed(details: PgLockErrorDetails, cause: unknown): LockLostError {
  return new LockLostError(
    `lock ${describeKey(details.key)} was lost: the connection holding it failed (${String((cause as Error)?.message ?? cause)})`,
    { ...details, cause },
  )
}

async function runInTransaction<Db, T>(run: Run<Db, T>): Promise<TryWithLockResult<T>> {
  const { executor, signal, deadline, attempt } = run
  const exclusive = run.mode === 'exclusive' || executor.kind === 'connection'
  const ticket = await enterGate(executor.scope, lockIdToken(run.id), exclusive, { attempt, signal, deadline })
  if (ticket === undefined) return { acquired: false }
  const ending: Ending = { leaveGate: executor.kind === 'pool' ? () => ticket.leave() : undefined }
  try {
    if (executor.transaction !== undefined && (executor.kind === 'pool' || executor.inTransaction?.() === false)) {
      return await inDriverTransaction(run, executor.transaction, ending)
    }
    const checkout = await checkOut(executor, signal, deadline)
    try {
      return await inOpenOrNewTransaction(run, checkout.connection, checkout.deadline, ending)
    } finally {
      await checkout.connection.release({ destroy: false })
    }
  } finally {
    ticket.leave()
  }
}

/**
 * Runs the lock and `fn` inside a transaction the driver opens. When they fail, their failure is
 * what `withLock` reports, even if the driver then fails too: its `ROLLBACK` on a connection that
 * died (which is how the lock was lost) would otherwise replace `LockLostError`, and postgres.js
 * rejects `sql.begin()` as soon as the connection closes, before `fn` has even returned. A loss
 * after `fn` returned stops the wait for the driver's commit, which a dead connection never ends.
 * Once `fn` has run, a driver failing for its connection (its own `COMMIT` or `ROLLBACK`, or
 * `sql.begin()` seeing the socket close) means the lock was lost, even before the adapter says so.
 */
async function inDriverTransaction<Db, T>(
  run: Run<Db, T>,
  transaction: NonNullable<LockExecutor<Db>['transaction']>,
  ending: Ending,
): Promise<TryWithLockResult<T>> {
  const driver: DriverTransactionWatch = { abandoned: new AbortController(), stop: () => undefined, lost: undefined }
  let held: Promise<TryWithLockResult<T>> | undefined
  try {
    const ended = transaction(
      (connection) => (held = holdWhileRunning(run, connection, { kind: 'driver-transaction' }, run.deadline, { ...ending, driver })),
    )
    return await interruptible(ended, { signal: driver.abandoned.signal, abandon: () => undefined })
  } catch (error) {
    if (held === undefined) throw error
    const failure = await held.then(
      () => undefined,
      (reason: unknown) => ({ reason }),
    )
    const { lost } = driver
    if (lost === undefined || (failure !== undefined && failure.reason instanceof LockLostError)) {
      throw failure === undefined ? error : failure.reason
    }
    const loss = lost.aborted
      ? lost.reason
      : error !== failure?.reason && isConnectionFailure(error)
        ? connectionFailed(run.details, error)
        : undefined
    if (loss === undefined) throw failure === undefined ? error : failure.reason
    throw failure === undefined ? loss : lostWhileRunning(loss, failure.reason)
  } finally {
    driver.stop()
  }
}

async function inOpenOrNewTransaction<Db, T>(
  run: Run<Db, T>,
  connection: LockConnection<Db>,
  deadline: number | undefined,
  ending: Ending,
): Promise<TryWithLockResult<T>> {
  if (run.executor.kind === 'connection' && run.executor.inTransaction?.() !== false) {
    try {
      return await holdWhileRunning(run, connection, { kind: 'savepoint', name: nextSavepoint(), keepOpen: true }, deadline, ending)
    } catch (error) {
      if (!(error instanceof NotInTransaction)) throw error
    }
  }
  return holdWhileRunning(run, connection, { kind: 'begin' }, deadline, ending)
}

/**
 * How a transaction lock ends. On a pool, `leaveGate` lets the next handle queued in memory for
 * the key into Postgres as `COMMIT` (or `ROLLBACK`) is sent, on a connection of its own:
 * Postgres grants it the lock when the transaction ends, one round trip sooner. Where the driver
 * ends the transaction itself, `driver` keeps the lock watched until its commit or rollback
 * settles, and a loss after `fn` returned abandons that wait.
 */
interface Ending {
  readonly leaveGate: (() => void) | undefined
  readonly driver?: DriverTransactionWatch
}

interface DriverTransactionWatch {
  readonly abandoned: AbortController
  stop: () => void
  /** Set once the lock is granted and `fn` is about to run: aborted when the lock is lost. */
  lost: LazyAbort | undefined
}

/**
 * Takes the transaction lock, runs `fn`, then commits (or releases the savepoint) or rolls back,
 * holding a place in the gate of the connection itself meanwhile (see `LockConnection.scope`):
 * waited for before the lock statement on a connection the caller passed in, taken once the lock
 * is granted on one pglock owns.
 */
async function holdWhileRunning<Db, T>(
  run: Run<Db, T>,
  connection: LockConnection<Db>,
  framing: Framing,
  deadline: number | undefined,
  ending: Ending,
): Promise<TryWithLockResult<T>> {
  const { scope } = run.executor
  const token = lockIdToken(run.id)
  let onConnection: GateTicket | undefined = NO_TICKET
  if (!connection.owned)
    onConnection = await enterConnectionGate(connection, scope, token, { attempt: run.attempt, signal: run.signal, deadline })
  if (onConnection === undefined) return { acquired: false }
  try {
    const granted = await takeLock(connection, {
      id: run.id,
      mode: run.mode,
      framing,
      attempt: run.attempt,
      deadline,
      timeoutMs: run.timeoutMs,
      signal: run.signal,
      details: run.details,
    })
    if (!granted) return { acquired: false }
    if (connection.owned) {
      endTransactionLocks(connection.scope)
      onConnection = claimConnectionGate(connection, scope, token)
    }
    return await runHolding(run, connection, framing, ending)
  } finally {
    onConnection.leave()
  }
}

/**
 * Runs `fn` under a granted transaction lock, then ends what `holdWhileRunning` began. Once the
 * connection is lost, nothing more is sent on it: an owned connection is destroyed at once, and a
 * commit or rollback still in flight is abandoned (the driver may never answer it), so that
 * `withLock` cannot stay pending. It waits for `fn` itself, though: `withLock` never settles while
 * `fn` still runs.
 */
async function runHolding<Db, T>(
  run: Run<Db, T>,
  connection: LockConnection<Db>,
  framing: Framing,
  ending: Ending,
): Promise<TryWithLockResult<T>> {
  const { driver } = ending
  const lost = new LazyAbort()
  let ran = false
  const stopWatching = watchConnection(
    connection,
    run.keepAliveMs,
    (error) => {
      lost.abort(error)
      if (ran) driver?.abandoned.abort(error)
      void Promise.resolve(connection.release({ destroy: true, cause: error })).catch(() => undefined)
    },
    run.details,
  )
  const stop = driver === undefined ? stopWatching : () => undefined
  if (driver !== undefined) {
    driver.stop = stopWatching
    driver.lost = lost
  }
  /** Whether a failure of pglock's own `COMMIT` or `ROLLBACK` shows the lock lost; if so, reported as lost. */
  const lostBy = (failure: unknown): boolean => {
    if (!lost.aborted && isConnectionFailure(failure)) lost.abort(connectionFailed(run.details, failure))
    return lost.aborted
  }
  let value: T
  try {
    const db = framing.kind === 'begin' && connection.transactionDb !== undefined ? connection.transactionDb() : connection.db
    value = await run.fn(new LockLease(db, lost))
  } catch (error) {
    ran = true
    ending.leaveGate?.()
    const gone = lost.aborted || (await untilLost(finish(connection, framing, false), lost).then(() => false, lostBy))
    stop()
    if (!gone) throw error
    const failure = lostWhileRunning(lost.reason, error)
    driver?.abandoned.abort(failure)
    throw failure
  }
  ran = true
  ending.leaveGate?.()
  try {
    if (lost.aborted) driver?.abandoned.abort(lost.reason)
    lost.throwIfAborted()
    await untilLost(finish(connection, framing, true), lost)
  } catch (error) {
    if (lostBy(error)) throw lost.reason
    throw error
  } finally {
    stop()
  }
  return { acquired: true, value }
}

/**
 * Ends what `holdWhileRunning` began: commit (or release the savepoint) or roll back. A
 * connection left in an unknown state by a failure here is closed if pglock owns it.
 */
async function finish(connection: LockConnection<unknown>, framing: Framing, commit: boolean): Promise<void> {
  const sql =
    framing.kind === 'begin'
      ? commit
        ? 'COMMIT'
        : 'ROLLBACK'
      : framing.kind === 'savepoint'
        ? commit
          ? `RELEASE SAVEPOINT ${framing.name}`
          : rollbackToSavepointSql(framing.name)
        : undefined
  if (sql === undefined) return
  try {
    await connection.query(sql)
  } catch (error) {
    await connection.release({ destroy: true, cause: error })
    throw error
  }
}
