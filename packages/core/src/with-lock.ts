import { InvalidArgumentError, LockTimeoutError, type PgLockErrorDetails } from './errors.js'
import type { LockConnection, LockExecutor } from './executor.js'
import { enterGate } from './gate.js'
import { type Framing, NotInTransaction, nextSavepoint, takeLock, watchConnection } from './hold.js'
import { type LockId, lockIdToken, resolveLockId } from './keys.js'
import { LazyAbort } from './lazy-abort.js'
import { Lock } from './lock.js'
import { resolveAcquireOptions, resolveLockOptions } from './options.js'
import { rollbackToSavepointSql } from './sql.js'
import type { Lease, LockKey, LockMode, TryWithLockResult, WithLockOptions } from './types.js'
import { checkOut, DeadlineExceeded } from './wait.js'

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
    throw error
  }
  if (!(await lock.release())) lock.signal.throwIfAborted()
  return { acquired: true, value }
}

async function runInTransaction<Db, T>(run: Run<Db, T>): Promise<TryWithLockResult<T>> {
  const { executor, signal, deadline, attempt } = run
  const exclusive = run.mode === 'exclusive' || executor.kind === 'connection'
  const ticket = await enterGate(executor.scope, lockIdToken(run.id), exclusive, { attempt, signal, deadline })
  if (ticket === undefined) return { acquired: false }
  const ending: Ending = { leaveGate: executor.kind === 'pool' ? () => ticket.leave() : undefined }
  try {
    if (executor.kind === 'pool' && executor.transaction !== undefined) {
      return await executor.transaction((connection) => holdWhileRunning(run, connection, { kind: 'driver-transaction' }, deadline, ending))
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
 * Postgres grants it the lock when the transaction ends, one round trip sooner.
 */
interface Ending {
  readonly leaveGate: (() => void) | undefined
}

/** Takes the transaction lock, runs `fn`, then commits (or releases the savepoint) or rolls back. */
async function holdWhileRunning<Db, T>(
  run: Run<Db, T>,
  connection: LockConnection<Db>,
  framing: Framing,
  deadline: number | undefined,
  ending: Ending,
): Promise<TryWithLockResult<T>> {
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
  const lost = new LazyAbort()
  const stopWatching = watchConnection(connection, run.keepAliveMs, (error) => lost.abort(error), run.details)
  let value: T
  try {
    value = await run.fn(new LockLease(connection.db, lost))
  } catch (error) {
    stopWatching()
    ending.leaveGate?.()
    await finish(connection, framing, false).catch(() => undefined)
    throw error
  }
  stopWatching()
  ending.leaveGate?.()
  try {
    await finish(connection, framing, true)
  } catch (error) {
    lost.throwIfAborted()
    throw error
  }
  lost.throwIfAborted()
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
