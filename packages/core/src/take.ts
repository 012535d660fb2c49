import type { Pinned } from './connection.js'
import { LockTableFullError, ReleaseFailedError, StandbyError, UnsupportedError } from './errors.js'
import type { PreparedStatement, Row } from './executor.js'
import { type LockSpec, timedOut, type Wait } from './options.js'
import { acquireSql, IN_RECOVERY, preparedLock, rollbackToSavepointSql, unlockIfHeldSql, XID_ASSIGNED } from './sql.js'
import {
  IN_FAILED_SQL_TRANSACTION,
  INVALID_TEXT_REPRESENTATION,
  LOCK_NOT_AVAILABLE,
  NO_ACTIVE_SQL_TRANSACTION,
  OUT_OF_SHARED_MEMORY,
  QUERY_CANCELED,
  sqlState,
} from './sqlstate.js'
import { tracing } from './tracing.js'
import { DeadlineExceeded, remainingMs } from './wait.js'

/** @internal Raised when a savepoint shows that no transaction is open. */
export class NotInTransaction extends Error {
  constructor() {
    super('no transaction is open on this connection')
  }
}

/** How a lock statement is framed, which decides how a failed one is undone. */
export type Framing =
  /** a session lock: a failed wait may still have been granted, so unlock it if held */
  | { readonly kind: 'session' }
  /** `BEGIN` sent with the lock: roll the whole transaction back */
  | { readonly kind: 'begin' }
  /** inside the caller's transaction, under a savepoint (kept open when the caller must decide later) */
  | { readonly kind: 'savepoint'; readonly name: string; readonly keepOpen: boolean }
  /** inside a transaction the driver manages: throwing makes the driver roll back */
  | { readonly kind: 'driver-transaction' }

/** @internal The framing of every session lock. */
export const SESSION: Framing = { kind: 'session' }

/**
 * The first row a granted lock statement answered: `pid` is the backend holding the lock, when the
 * statement said (session locks do); `tx` the mark of the transaction it lives in, when asked for
 * (see `tx-marks.ts`); `fence` the fencing token, as decimal text, when asked for.
 */
export type Granted = Row

/** Which refusal of the lock statement's guard (see `sql.ts`) a failure is, if it is one. */
function refusal(error: unknown): typeof IN_RECOVERY | typeof XID_ASSIGNED | undefined {
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 3; e = (e as { cause?: unknown }).cause, depth += 1) {
    if (sqlState(e) !== INVALID_TEXT_REPRESENTATION) continue
    const message = String((e as { message?: unknown }).message)
    if (message.includes(IN_RECOVERY)) return IN_RECOVERY
    if (message.includes(XID_ASSIGNED)) return XID_ASSIGNED
  }
  return undefined
}

/** A granted row of a try (`acquired`, or with fencing a token only when acquired). */
function acquired(row: Row | undefined): boolean {
  return row?.acquired === true || typeof row?.fence === 'string'
}

const NO_ROW: Row = Object.freeze({})
/** Runs `sql` again while a late cancel request keeps hitting it; a cancel is delivered once. */
async function queryPastCancel(connection: Pinned<unknown>, sql: string): Promise<readonly Row[]> {
  for (let round = 1; ; round += 1) {
    try {
      return await connection.query(sql)
    } catch (error) {
      if (sqlState(error) !== QUERY_CANCELED || round >= 3) throw error
    }
  }
}

/**
 * Leaves the connection as it was before a failed or abandoned lock statement: nothing held,
 * the caller's transaction usable. A connection whose state cannot be restored is destroyed if
 * owned; on a connection the caller owns, the failure is reported as `RELEASE_FAILED`. A
 * connection that was lost holds nothing: its session ends with it, so there is nothing to undo.
 */
async function undo(connection: Pinned<unknown>, spec: LockSpec, framing: Framing, failure: unknown): Promise<void> {
  // a lock the lock table had no room for was never taken
  if (
    framing.kind === 'driver-transaction' ||
    sqlState(failure) === IN_FAILED_SQL_TRANSACTION ||
    sqlState(failure) === OUT_OF_SHARED_MEMORY
  )
    return
  if (connection.lost) {
    await connection.release(true, failure)
    return
  }
  if (framing.kind === 'savepoint' && sqlState(failure) === NO_ACTIVE_SQL_TRANSACTION) return
  // the guard refused before the lock call: a session holds nothing to undo
  if (framing.kind === 'session' && refusal(failure) !== undefined) return
  const sql =
    framing.kind === 'session'
      ? unlockIfHeldSql(spec.id, spec.mode)
      : framing.kind === 'begin'
        ? 'ROLLBACK'
        : rollbackToSavepointSql(framing.name)
  try {
    await queryPastCancel(connection, sql)
  } catch (error) {
    connection.failed(error)
    if (connection.owned || connection.lost) {
      await connection.release(true, error)
      return
    }
    throw new ReleaseFailedError(
      `could not undo a failed lock attempt on the connection you passed in; it may still hold the lock: ${String((error as Error)?.message ?? error)}`,
      { ...spec.details, cause: error },
    )
  }
}

function failureFor(error: unknown, spec: LockSpec, wait: Wait, framing: Framing): unknown {
  if (wait.signal?.aborted) return wait.signal.reason
  const refused = refusal(error)
  if (refused === IN_RECOVERY) return new StandbyError({ ...spec.details, cause: error })
  if (refused === XID_ASSIGNED) return xidAssigned(spec, error)
  if (framing.kind === 'savepoint' && sqlState(error) === NO_ACTIVE_SQL_TRANSACTION) return new NotInTransaction()
  if (sqlState(error) === LOCK_NOT_AVAILABLE || error instanceof DeadlineExceeded) return timedOut(spec, wait, error)
  if (sqlState(error) === OUT_OF_SHARED_MEMORY) return new LockTableFullError({ ...spec.details, cause: error })
  return error
}

/**
 * @internal Takes a lock on a pinned connection in one round trip. Resolves to {@link Granted}
 * when granted, `false` when the non-blocking form found it taken; rejects with
 * `LockTimeoutError`, the abort reason, or the driver's error, having first undone whatever the
 * failed statement may have left (Postgres can grant a lock and still report a timeout or a cancel).
 * If the connection dies while the statement waits, the wait is cancelled on the server too:
 * Postgres does not notice a vanished client while it waits for a lock, and would otherwise grant
 * the lock to the dead session when it frees up.
 */
export function takeLock(
  connection: Pinned<unknown>,
  spec: LockSpec,
  wait: Wait,
  framing: Framing,
  mark?: string,
): Promise<Granted | false> {
  const left = remainingMs(wait.deadline)
  const noWait = wait.noWait || (left !== undefined && left < 1)
  const { signal } = wait
  if (signal?.aborted) return Promise.reject(signal.reason)
  let cancelled: Promise<void> | undefined
  const onAbort =
    signal === undefined
      ? undefined
      : () => {
          cancelled = connection.cancel().then((sent) => {
            // nothing can stop the wait on the server: closing the connection ends it instead
            if (sent === false && connection.owned) return connection.releaseQuietly(true, signal.reason)
          }, noop)
        }
  if (onAbort !== undefined) signal?.addEventListener('abort', onAbort, { once: true })
  let sent: Promise<readonly Row[]>
  try {
    sent = connection.send(lockStatement(connection, spec, framing, noWait, noWait ? undefined : left, mark, wait.fencing))
    // while the statement waits, a lost connection also cancels the wait on the server
    connection.cancelOnLoss = true
  } catch (error) {
    sent = Promise.reject(error)
  }
  // `then` rather than `await`: the granted path, nearly every lock, makes no promise of its own
  return sent.then<Granted | false, Granted | false>(
    (rows) => {
      stopWaiting(connection, signal, onAbort)
      const row = rows[0]
      if (!signal?.aborted && (!noWait || acquired(row))) {
        if (!wait.fencing || typeof row?.fence === 'string') return row ?? NO_ROW
        return notGranted(connection, spec, wait, framing, undefined, noToken(spec), cancelled)
      }
      return notGranted(connection, spec, wait, framing, rows, undefined, cancelled)
    },
    (error: unknown) => {
      // while still waiting, so that a connection failure also cancels the wait on the server
      connection.failed(error)
      stopWaiting(connection, signal, onAbort)
      return notGranted(connection, spec, wait, framing, undefined, error, cancelled)
    },
  )
}

function xidAssigned(spec: LockSpec, cause: unknown): UnsupportedError {
  return new UnsupportedError(
    "fencing: true needs a transaction that has written nothing before the lock (it has a transaction id already, and a token taken now could be older than the last holder's): take the lock first in the transaction, or let withLock open the transaction",
    { ...spec.details, cause },
  )
}

/** The lock was granted but the driver dropped the row with its token: refused rather than unfenced. */
function noToken(spec: LockSpec): UnsupportedError {
  return new UnsupportedError('fencing: true, but the driver returned no fencing token with the lock', spec.details)
}

/** The lock statement answered or failed: a loss or an abort no longer cancels it. */
function stopWaiting(connection: Pinned<unknown>, signal: AbortSignal | undefined, onAbort: (() => void) | undefined): void {
  connection.cancelOnLoss = false
  if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
}

/**
 * The statement that takes the lock: the bare call, prepared where the driver prepares, in session
 * scope or in a transaction the driver opened; else SQL text.
 */
function lockStatement(
  connection: Pinned<unknown>,
  spec: LockSpec,
  framing: Framing,
  noWait: boolean,
  timeoutMs: number | undefined,
  mark: string | undefined,
  fencing: boolean,
): string | PreparedStatement {
  const session = framing.kind === 'session'
  // a transaction lock answers its backend only for traces, which name it: one column less otherwise
  const pid = !session && tracing()
  const bare = session || (framing.kind === 'driver-transaction' && mark === undefined && !pid)
  if (bare && connection.prepares && (noWait || timeoutMs === undefined)) return preparedLock(spec.id, spec.mode, noWait, !session, fencing)
  return acquireSql({
    id: spec.id,
    mode: spec.mode,
    scope: framing.kind === 'session' ? 'session' : 'transaction',
    noWait,
    timeoutMs,
    begin: framing.kind === 'begin',
    savepoint: framing.kind === 'savepoint' ? { name: framing.name, keepOpen: framing.keepOpen } : undefined,
    mark,
    pid,
    fencing,
  })
}

/** The lock statement answered "not granted", or failed, or was aborted: undo what it may have left, then say why. */
async function notGranted(
  connection: Pinned<unknown>,
  spec: LockSpec,
  wait: Wait,
  framing: Framing,
  rows: readonly Row[] | undefined,
  failure: unknown,
  cancelled: Promise<void> | undefined,
): Promise<false> {
  if (rows !== undefined && !wait.signal?.aborted) {
    if (framing.kind === 'begin' || (framing.kind === 'savepoint' && framing.keepOpen)) await undo(connection, spec, framing, undefined)
    if (wait.noWait) return false
    throw timedOut(spec, wait)
  }
  await cancelled
  // a try that answered "not acquired" took nothing: nothing to undo, and on a connection that
  // carries other holds of the same key (multiplexed shared locks), an undo would end one of theirs
  if (rows?.[0]?.acquired !== false || framing.kind !== 'session') await undo(connection, spec, framing, failure)
  throw failureFor(failure, spec, wait, framing)
}

const noop = () => undefined

/** @internal Ends the savepoint a lock was taken under, keeping the lock in the transaction. */
export async function keepSavepoint(connection: Pinned<unknown>, name: string): Promise<void> {
  await connection.query(`RELEASE SAVEPOINT ${name}`)
}
