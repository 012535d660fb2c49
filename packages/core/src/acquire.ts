import { checkOut } from './checkout.js'
import { Pinned } from './connection.js'
import type { LockExecutor } from './executor.js'
import { enterConnectionGate, enterConnectionGateNow, enterGate, enterGateNow, type GateTicket } from './gate.js'
import { Holding } from './holding.js'
import { multiplexers } from './multiplex-hook.js'
import { type LockSpec, timedOut, type Wait } from './options.js'
import { type Framing, type Granted, keepSavepoint, takeLock } from './take.js'
import { endTransactionLocks } from './tx-marks.js'
import { DeadlineExceeded } from './wait.js'

/**
 * @internal Enters the in-memory gate of the executor for the lock: the first step of every
 * acquire. On a single connection Postgres cannot tell two handles apart, so shared handles queue
 * behind each other too; on a pool each handle has its own connection and shared ones coexist.
 * `undefined` when `noWait` found it busy.
 */
export function enter(executor: LockExecutor<unknown>, spec: LockSpec, wait: Wait): GateTicket | Promise<GateTicket | undefined> {
  const exclusive = spec.mode === 'exclusive' || executor.kind === 'connection'
  return enterGateNow(executor.queueKey, spec.token, exclusive) ?? enterGate(executor.queueKey, spec.token, exclusive, wait)
}

/** What the last steps of an acquire take the lock under. */
export interface Take {
  readonly framing: Framing
  /** a fresh transaction mark, for a lock in a caller's transaction (see `tx-marks.ts`) */
  readonly mark?: string | undefined
  /** release the savepoint once the lock is granted (the lock then lives in the caller's transaction) */
  readonly keepSavepoint?: boolean | undefined
}

/** The lock statement's answer on an owned connection, made a {@link Holding}. */
function holdingOf<Db>(
  executor: LockExecutor<Db>,
  spec: LockSpec,
  ticket: GateTicket,
  connection: Pinned<Db>,
  take: Take,
  answer: Granted | false,
): Holding<Db> | Promise<Holding<Db>> | undefined {
  return answer === false ? undefined : held(executor, spec, ticket, connection, take, answer, undefined)
}

/** {@link hold} on a connection other handles may reach: its gate first (see `LockConnection.connectionKey`). */
async function holdShared<Db>(
  executor: LockExecutor<Db>,
  spec: LockSpec,
  wait: Wait,
  ticket: GateTicket,
  connection: Pinned<Db>,
  take: Take,
): Promise<Holding<Db> | undefined> {
  const onConnection =
    enterConnectionGateNow(connection, executor.queueKey, spec.token) ??
    (await enterConnectionGate(connection, executor.queueKey, spec.token, wait))
  if (onConnection === undefined) return undefined
  try {
    const granted = await takeLock(connection, spec, wait, take.framing, take.mark)
    if (!granted) {
      onConnection.leave()
      return undefined
    }
    const holding = held(executor, spec, ticket, connection, take, granted, onConnection)
    return holding instanceof Promise ? await holding : holding
  } catch (error) {
    onConnection.leave()
    throw error
  }
}

/** The lock is granted: keep the savepoint if asked. An owned connection's gate is claimed when its handle is first handed out (see `Holding.db`). */
function held<Db>(
  executor: LockExecutor<Db>,
  spec: LockSpec,
  ticket: GateTicket,
  connection: Pinned<Db>,
  take: Take,
  granted: Granted,
  entered: GateTicket | undefined,
): Holding<Db> | Promise<Holding<Db>> {
  if (entered === undefined) endTransactionLocks(connection.connectionKey)
  const holding = new Holding(connection, spec, take.framing, granted, ticket, entered, executor.queueKey)
  if (take.keepSavepoint !== true || take.framing.kind !== 'savepoint') return holding
  return keepSavepoint(connection, take.framing.name).then(
    () => holding,
    (error: unknown) => {
      if (entered === undefined) holding.onConnection.leave()
      throw error
    },
  )
}

/**
 * @internal The last steps of every acquire, on a pinned connection: the connection's gate, the
 * lock statement (undone if it fails), the claim. Resolves to the {@link Holding}, or `undefined`
 * when `noWait` found the lock taken; the connection and `ticket` stay the caller's either way.
 */
export function hold<Db>(
  executor: LockExecutor<Db>,
  spec: LockSpec,
  wait: Wait,
  ticket: GateTicket,
  connection: Pinned<Db>,
  take: Take,
): Promise<Holding<Db> | undefined> {
  if (!connection.owned) return holdShared(executor, spec, wait, ticket, connection, take)
  return takeLock(connection, spec, wait, take.framing, take.mark).then((answer) =>
    holdingOf(executor, spec, ticket, connection, take, answer),
  )
}

/**
 * @internal The acquire pipeline, the one that `Lock` and `withLock` in both scopes run: gate,
 * check-out, then {@link hold}. Resolves to the {@link Holding}, not yet watched, or `undefined`
 * when `noWait` found the lock taken; whatever it does not hand over is given back.
 */
export async function acquire<Db>(executor: LockExecutor<Db>, spec: LockSpec, wait: Wait, take: Take): Promise<Holding<Db> | undefined> {
  const multiplexed = multiplexers.get(executor)
  if (multiplexed !== undefined) return (await multiplexed(spec, wait)) as Holding<Db> | undefined
  let ticket: GateTicket | undefined
  let connection: Pinned<Db> | undefined
  try {
    const entered = enter(executor, spec, wait)
    ticket = entered instanceof Promise ? await entered : entered
    if (ticket === undefined) return undefined
    connection = new Pinned(await checkOut(executor, wait))
    const holding = await hold(executor, spec, wait, ticket, connection, take)
    if (holding !== undefined) return holding
  } catch (error) {
    return giveUp(error, spec, wait, ticket, connection)
  }
  return notTaken(ticket, connection)
}

/**
 * @internal An acquire that failed: the connection and the place in the gate are given back, and
 * a deadline that passed becomes the lock's timeout. Rejects with that error.
 */
export async function giveUp(
  error: unknown,
  spec: LockSpec,
  wait: Wait,
  ticket: GateTicket | undefined,
  connection: Pinned<unknown> | undefined,
): Promise<never> {
  await connection?.releaseQuietly(false)
  ticket?.leave()
  throw explain(error, spec, wait)
}

/** `noWait` found the lock taken: the connection and the place in the gate are given back. */
async function notTaken(ticket: GateTicket, connection: Pinned<unknown>): Promise<undefined> {
  await connection.release(false)
  ticket.leave()
  return undefined
}

/** @internal A deadline that passed in memory or while waiting for a connection is the lock's timeout. */
export function explain(error: unknown, spec: LockSpec, wait: Wait): unknown {
  return error instanceof DeadlineExceeded ? timedOut(spec, wait) : error
}
