import { acquire, enter, explain, hold, type Take } from './acquire.js'
import { checkOut, checkoutDeadline } from './checkout.js'
import { Pinned, RELEASED } from './connection.js'
import { LockLostError, type PgLockErrorDetails, UnsupportedError } from './errors.js'
import type { LockExecutor } from './executor.js'
import type { GateTicket } from './gate.js'
import type { Holding } from './holding.js'
import { LazyAbort } from './lazy-abort.js'
import { type LockRequest, resolveRequest } from './options.js'
import { nextSavepoint } from './sql.js'
import { isConnectionFailure } from './sqlstate.js'
import { NotInTransaction, SESSION } from './take.js'
import { LockTrace, tracing } from './tracing.js'
import type { Lease, LockKey, WithLockOptions } from './types.js'
import { interruptible, untilLost } from './wait.js'
import { connectionLostError } from './watch.js'

/**
 * The lease `withLock` hands to `fn`. `db`, `signal` and `fencingToken` are getters on the
 * prototype, so that nothing is made unless `fn` reads it (destructuring reads it; spreading the
 * lease does not): a driver's handle may cost to build (a Drizzle database on a pinned connection).
 * Own getters would let a spread copy them, but an object with accessors of its own costs V8 tens
 * of µs per lock to make.
 */
class LockLease<Db> implements Lease<Db> {
  readonly #holding: Holding<Db>

  constructor(holding: Holding<Db>) {
    this.#holding = holding
  }

  get db(): Db {
    return this.#holding.db
  }

  get signal(): AbortSignal {
    return this.#holding.lost.signal
  }

  get fencingToken(): bigint | undefined {
    return this.#holding.fencingToken
  }
}

/**
 * The lease of a multiplexed lock: the signal alone. Its connection carries other locks and is
 * never handed to user code, so the lease has no `db` at all, not even an `undefined` one.
 */
class SignalLease {
  readonly #holding: Holding<unknown>

  constructor(holding: Holding<unknown>) {
    this.#holding = holding
  }

  get signal(): AbortSignal {
    return this.#holding.lost.signal
  }

  get fencingToken(): bigint | undefined {
    return this.#holding.fencingToken
  }
}

/** @internal The function a user passes to `withLock`. */
export type LeaseFn<Db, T> = (lease: Lease<Db>) => T | PromiseLike<T>

/** A call's request; `trace` is set only on a traced call, so that an untraced one keeps its shape and size. */
type Request<Db, T> = LockRequest<LeaseFn<Db, T>> & { trace?: LockTrace }

/** @internal What the non-blocking form resolves to when the lock was taken; the blocking form never does. */
export const NOT_ACQUIRED: unique symbol = Symbol('pglock.notAcquired')
type Outcome<T> = T | typeof NOT_ACQUIRED
const SESSION_TAKE: Take = { framing: SESSION }
const DRIVER_TAKE: Take = { framing: { kind: 'driver-transaction' } }
const BEGIN_TAKE: Take = { framing: { kind: 'begin' } }
const noop = () => undefined

/** A plain value from `fn` is used as is, without the promises an `await` makes. */
function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as PromiseLike<T> | null)?.then === 'function'
}

/**
 * @internal Runs `fn` while holding the lock `key` on `executor`'s database: the engine behind
 * every adapter's `withLock` (`noWait: false`) and `tryWithLock` (`noWait: true`). Acquire, run
 * `fn`, end; in both scopes.
 */
export function runWithLock<Db, T>(
  executor: LockExecutor<Db>,
  key: LockKey,
  fn: LeaseFn<Db, T>,
  options: WithLockOptions | undefined,
  noWait: boolean,
): Promise<Outcome<T>> {
  if (tracing()) return traced(executor, key, fn, options, noWait)
  let request: Request<Db, T>
  try {
    request = resolveRequest(key, fn, options, noWait)
    request.signal?.throwIfAborted()
  } catch (error) {
    return Promise.reject(error)
  }
  return request.scope === 'session' ? inSession(executor, request) : inTransaction(executor, request)
}

/**
 * {@link runWithLock} while something listens on a pglock channel: the acquire is traced from here,
 * in the caller's context, to the grant (where `fn` starts) or to the call's failure or `busy`.
 */
function traced<Db, T>(
  executor: LockExecutor<Db>,
  key: LockKey,
  fn: LeaseFn<Db, T>,
  options: WithLockOptions | undefined,
  noWait: boolean,
): Promise<Outcome<T>> {
  let request: Request<Db, T>
  try {
    request = resolveRequest(key, fn, options, noWait)
  } catch (error) {
    return Promise.reject(error)
  }
  const trace = LockTrace.start(request, request, executor, noWait ? 'tryWithLock' : 'withLock')
  request.trace = trace
  let running: Promise<Outcome<T>>
  try {
    request.signal?.throwIfAborted()
    running = request.scope === 'session' ? inSession(executor, request) : inTransaction(executor, request)
  } catch (error) {
    running = Promise.reject(error)
  }
  trace.returned()
  return running.then(
    (outcome) => {
      if (outcome === NOT_ACQUIRED) trace.busy()
      return outcome
    },
    (error: unknown) => {
      trace.failed(error)
      throw error
    },
  )
}

/** Runs `fn` on the granted lock: through the trace when the call is traced. */
function runFn<Db, T>(request: Request<Db, T>, lease: LockLease<Db>, holding: Holding<Db>): T | PromiseLike<T> {
  const { trace } = request
  return trace === undefined ? request.fn(lease) : trace.run(request.fn, lease, holding as Holding<unknown>)
}

/** Unlocks a session lock: through the trace when the call is traced. */
function unlock<Db, T>(request: Request<Db, T>, holding: Holding<Db>): Promise<boolean> {
  const { trace } = request
  return trace === undefined ? holding.unlock() : trace.unlock(holding as Holding<unknown>)
}

/** Ends a transaction lock pglock framed: through the trace when the call is traced. */
function finish<Db, T>(request: Request<Db, T>, holding: Holding<Db>, commit: boolean): Promise<void> {
  const { trace } = request
  return trace === undefined ? holding.finish(commit) : trace.finish(holding as Holding<unknown>, commit)
}

async function inSession<Db, T>(executor: LockExecutor<Db>, request: Request<Db, T>): Promise<Outcome<T>> {
  if (executor.connect === undefined) {
    throw new UnsupportedError(
      `session scope needs one connection kept from acquire to release, and this handle cannot pin one: use withLock(db, key, fn, { scope: 'transaction' })`,
      request.details,
    )
  }
  const holding = await acquire(executor, request, request, SESSION_TAKE)
  if (holding === undefined) return NOT_ACQUIRED
  // nothing shows a loss before the unlock unless fn reads the signal, or a trace listens
  holding.watch(request.keepAliveMs, undefined, request.trace === undefined)
  let value: T
  try {
    // only a multiplexed lock's connection has no db (see `shared-connection.ts`)
    const lease = holding.connection.lendsDb ? new LockLease(holding) : (new SignalLease(holding) as unknown as LockLease<Db>)
    const out = runFn(request, lease, holding)
    value = isThenable(out) ? await out : out
  } catch (error) {
    await unlock(request, holding).catch(noop)
    throw holding.isLost ? lostWhileRunning(holding.lost.reason, error) : error
  }
  if (!(await unlock(request, holding))) holding.lost.throwIfAborted()
  return value
}

/**
 * The loss, with `fn`'s `error` as its `cause`, so a lost lock reads the same whatever `fn` did with
 * the driver's error. Decided after the unlock or rollback: the driver may fail `fn` before the loss is heard.
 */
function lostWhileRunning(loss: unknown, error: unknown): unknown {
  if (error === loss || !(loss instanceof LockLostError)) return loss
  return new LockLostError(loss.message, { key: loss.key, mode: loss.mode, scope: loss.scope, cause: error })
}

function inTransaction<Db, T>(executor: LockExecutor<Db>, request: Request<Db, T>): Promise<Outcome<T>> {
  // on a pool, one async step from gate to commit, whether pglock sends BEGIN or the driver does
  if (executor.kind === 'pool') {
    if (executor.transaction === undefined) return holdWhileRunning(executor, request, undefined, undefined, BEGIN_TAKE, LEAVE_GATE)
    return inDriverTransaction(executor, request, executor.transaction, undefined, true)
  }
  return inGivenTransaction(executor, request)
}

/** On the caller's connection: its own transaction (under a savepoint), one its driver opens, or a new one. */
async function inGivenTransaction<Db, T>(executor: LockExecutor<Db>, request: Request<Db, T>): Promise<Outcome<T>> {
  try {
    const entered = enter(executor, request, request)
    const ticket = entered instanceof Promise ? await entered : entered
    if (ticket === undefined) return NOT_ACQUIRED
    try {
      if (executor.transaction !== undefined && executor.inTransaction?.() === false) {
        return await inDriverTransaction(executor, request, executor.transaction, ticket, false)
      }
      const connection = new Pinned(await checkOut(executor, request))
      try {
        return await inOpenOrNewTransaction(executor, request, ticket, connection, KEEP_GATE)
      } finally {
        const releasing = connection.release(false)
        if (releasing !== RELEASED) await releasing
      }
    } finally {
      ticket.leave()
    }
  } catch (error) {
    throw explain(error, request, request)
  }
}

/**
 * Runs the lock and `fn` inside a transaction the driver opens. Their failure wins over the driver's
 * (a `ROLLBACK` on a dead connection would hide `LockLostError`); once `fn` has run, the driver failing
 * for its connection means the lock was lost, and a loss stops the wait for a commit that may never end.
 * The wait for the driver's connection counts against `timeoutMs` and `signal`.
 */
async function inDriverTransaction<Db, T>(
  executor: LockExecutor<Db>,
  request: Request<Db, T>,
  transaction: NonNullable<LockExecutor<Db>['transaction']>,
  given: GateTicket | undefined,
  leaveGate: boolean,
): Promise<Outcome<T>> {
  const driver: DriverTransactionWatch = { abandoned: new LazyAbort(), holding: undefined, ran: false }
  const ending: Ending = { leaveGate, driver }
  let ticket = given
  let held: Promise<Outcome<T>> | undefined
  let started: (() => void) | undefined
  let tooLate: { reason: unknown } | undefined
  try {
    if (ticket === undefined) {
      const entered = enter(executor, request, request)
      ticket = entered instanceof Promise ? await entered : entered
      if (ticket === undefined) return NOT_ACQUIRED
    }
    const onGate = ticket
    const ended = transaction((raw) => {
      if (tooLate !== undefined) return Promise.reject(tooLate.reason)
      started?.()
      held = holdWhileRunning(executor, request, onGate, new Pinned(raw), DRIVER_TAKE, ending)
      return held
    })
    const deadline = checkoutDeadline(request)
    if (held === undefined && (deadline !== undefined || request.signal !== undefined)) {
      const arrived = new Promise<void>((resolve) => (started = resolve))
      try {
        await interruptible(Promise.race([arrived, ended]), { signal: request.signal, deadline, abandon: noop })
      } catch (reason) {
        if (held === undefined) {
          tooLate = { reason }
          ended.catch(noop)
          throw reason
        }
      }
    }
    const outcome = await untilLost(ended, driver.abandoned)
    request.trace?.driverEnded(false)
    return outcome
  } catch (error) {
    const failure = explain(held === undefined ? error : await driverFailure(request, driver, held, error), request, request)
    request.trace?.driverEnded(true, failure)
    throw failure
  } finally {
    driver.holding?.stopWatching()
    if (given === undefined) ticket?.leave()
  }
}

/**
 * What a failed driver's transaction rejects with: the lock's and `fn`'s failure wins over the
 * driver's, and the driver failing for its connection once `fn` has run means the lock was lost.
 */
async function driverFailure<Db, T>(
  request: Request<Db, T>,
  driver: DriverTransactionWatch,
  held: Promise<Outcome<T>>,
  error: unknown,
): Promise<unknown> {
  const failure = await held.then(
    () => undefined,
    (reason: unknown) => ({ reason }),
  )
  const { holding } = driver
  if (holding === undefined || (failure !== undefined && failure.reason instanceof LockLostError)) {
    return failure === undefined ? error : failure.reason
  }
  const loss = holding.isLost
    ? holding.lost.reason
    : error !== failure?.reason && isConnectionFailure(error)
      ? // fn's own connection error says more than what the driver made of it (Kysely's can be a TypeError)
        connectionLostError(failure !== undefined && isConnectionFailure(failure.reason) ? failure.reason : error, request.details)
      : undefined
  if (loss === undefined) return failure === undefined ? error : failure.reason
  return failure === undefined ? loss : lostWhileRunning(loss, failure.reason)
}

function inOpenOrNewTransaction<Db, T>(
  executor: LockExecutor<Db>,
  request: Request<Db, T>,
  ticket: GateTicket,
  connection: Pinned<Db>,
  ending: Ending,
): Promise<Outcome<T>> {
  if (executor.inTransaction?.() !== false) {
    return inOpenTransaction(executor, request, ticket, connection, ending)
  }
  return holdWhileRunning(executor, request, ticket, connection, BEGIN_TAKE, ending)
}

/** Under a savepoint of the caller's transaction, or in a new one when it turns out there is none. */
async function inOpenTransaction<Db, T>(
  executor: LockExecutor<Db>,
  request: Request<Db, T>,
  ticket: GateTicket,
  connection: Pinned<Db>,
  ending: Ending,
): Promise<Outcome<T>> {
  try {
    const take: Take = { framing: { kind: 'savepoint', name: nextSavepoint(), keepOpen: true } }
    return await holdWhileRunning(executor, request, ticket, connection, take, ending)
  } catch (error) {
    if (!(error instanceof NotInTransaction)) throw error
  }
  return holdWhileRunning(executor, request, ticket, connection, BEGIN_TAKE, ending)
}

/**
 * How a transaction lock ends. On a pool, `leaveGate` lets the next waiter into Postgres as `COMMIT` is
 * sent (granted when the transaction ends, one round trip sooner). `driver` watches a driver's own commit.
 */
interface Ending {
  readonly leaveGate: boolean
  readonly driver?: DriverTransactionWatch
}

const LEAVE_GATE: Ending = { leaveGate: true }
const KEEP_GATE: Ending = { leaveGate: false }

interface DriverTransactionWatch {
  readonly abandoned: LazyAbort
  /** Set once the lock is granted and `fn` is about to run: watched until the driver's transaction ends. */
  holding: Holding<unknown> | undefined
  /** whether `fn` has run: a loss from then on also abandons the wait for the driver's commit */
  ran: boolean
}

/** Watches a lock in the driver's transaction: a loss once `fn` has run abandons the driver's commit too. */
function watchInDriverTransaction(holding: Holding<unknown>, keepAliveMs: number | undefined, driver: DriverTransactionWatch): void {
  holding.watch(keepAliveMs, (error) => {
    holding.lose(error, true)
    if (driver.ran) driver.abandoned.abort(error)
  })
  driver.holding = holding
}

/**
 * Takes the transaction lock on `connection`, runs `fn`, then ends the transaction (or savepoint).
 * After a loss, a commit or rollback in flight is abandoned (the driver may never answer it), but
 * `fn` itself is always awaited. Without `given` and `pinned`, it enters the gate and checks a
 * connection out itself, and gives both back.
 */
async function holdWhileRunning<Db, T>(
  executor: LockExecutor<Db>,
  request: Request<Db, T>,
  given: GateTicket | undefined,
  pinned: Pinned<Db> | undefined,
  take: Take,
  ending: Ending,
): Promise<Outcome<T>> {
  const { driver } = ending
  let holding: Holding<Db> | undefined
  try {
    holding =
      given === undefined || pinned === undefined
        ? await acquire(executor, request, request, take)
        : await hold(executor, request, request, given, pinned, take)
    if (holding === undefined) return NOT_ACQUIRED
    if (driver === undefined) holding.watch(request.keepAliveMs)
    else watchInDriverTransaction(holding, request.keepAliveMs, driver)
    let value: T
    try {
      const out = runFn(request, new LockLease(holding), holding)
      value = isThenable(out) ? await out : out
    } catch (error) {
      if (driver !== undefined) driver.ran = true
      if (ending.leaveGate) holding.ticket.leave()
      const gone =
        holding.isLost ||
        (await finish(request, holding, false).then(
          () => false,
          (failure: unknown) => lostBy(request.details, (holding as Holding<Db>).lost, failure),
        ))
      if (driver === undefined) holding.stopWatching()
      if (!gone) throw error
      const failure = lostWhileRunning(holding.lost.reason, error)
      driver?.abandoned.abort(failure)
      throw failure
    }
    if (driver !== undefined) driver.ran = true
    if (ending.leaveGate) holding.ticket.leave()
    try {
      if (holding.isLost) {
        driver?.abandoned.abort(holding.lost.reason)
        throw holding.lost.reason
      }
      await finish(request, holding, true)
    } catch (error) {
      if (lostBy(request.details, holding.lost, error)) throw holding.lost.reason
      throw error
    } finally {
      if (driver === undefined) holding.stopWatching()
    }
    return value
  } catch (error) {
    throw given === undefined ? explain(error, request, request) : error
  } finally {
    if (driver === undefined) holding?.settle()
    else {
      // the driver ends its transaction, and the watch lasts until it has; the connection is done with
      holding?.onConnection.leave()
      const releasing = pinned?.release(false)
      if (releasing !== undefined && releasing !== RELEASED) releasing.catch(noop)
    }
    // what `acquire` checked out and entered is given back here; a caller's connection and place stay its own
    if (pinned === undefined && holding !== undefined) {
      const releasing = holding.connection.release(false)
      if (releasing !== RELEASED) await releasing
      holding.ticket.leave()
    }
  }
}

/** Whether a failure of pglock's own `COMMIT` or `ROLLBACK` shows the lock lost; if so, reported as lost. */
function lostBy(details: PgLockErrorDetails, lost: LazyAbort, failure: unknown): boolean {
  if (!lost.aborted && isConnectionFailure(failure)) lost.abort(connectionLostError(failure, details))
  return lost.aborted
}
