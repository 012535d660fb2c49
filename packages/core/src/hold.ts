import { LockLostError, LockTimeoutError, type PgLockErrorDetails, ReleaseFailedError } from './errors.js'
import type { LockConnection, PreparedStatement, Row } from './executor.js'
import type { LockId } from './keys.js'
import {
  type AcquirePlan,
  acquireSql,
  IN_FAILED_SQL_TRANSACTION,
  LOCK_NOT_AVAILABLE,
  NO_ACTIVE_SQL_TRANSACTION,
  PROBE_SQL,
  pidOf,
  preparedAcquire,
  QUERY_CANCELED,
  rollbackToSavepointSql,
  unlockIfHeldSql,
} from './sql.js'
import type { LockMode } from './types.js'
import { DeadlineExceeded, remainingMs } from './wait.js'

/** @internal The SQLSTATE of a driver error, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/**
 * Whether a driver error means the connection itself failed (no SQLSTATE, a connection exception
 * `08xxx`, or an operator intervention `57P0x` such as a terminated backend), as opposed to a
 * statement that failed on a healthy connection. Adapters whose driver rejects a statement before
 * it reports the connection closed use it to report the loss first.
 *
 * @example
 * ```ts
 * isConnectionFailure(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })) // true
 * isConnectionFailure(Object.assign(new Error('lock timeout'), { code: '55P03' }))         // false
 * ```
 */
export function isConnectionFailure(error: unknown): boolean {
  const code = sqlState(error)
  return code === undefined || !/^[0-9A-Z]{5}$/.test(code) || code.startsWith('08') || code.startsWith('57P')
}

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

/** What one attempt to take a lock on a pinned connection needs to know. */
export interface TakeRequest {
  readonly id: LockId
  readonly mode: LockMode
  readonly framing: Framing
  /** the non-blocking form: resolves false instead of waiting */
  readonly attempt: boolean
  readonly deadline: number | undefined
  readonly timeoutMs: number | undefined
  readonly signal: AbortSignal | undefined
  readonly details: PgLockErrorDetails
  /** a fresh transaction mark, to learn which transaction a lock on a caller's transaction lives in */
  readonly mark?: string | undefined
}

let savepoints = 0

/** @internal A savepoint name unique within this process. */
export function nextSavepoint(): string {
  savepoints += 1
  return `pglock_${savepoints}`
}

/**
 * @internal Sends a statement pglock wrote: prepared through `execute` when it is one and the
 * driver has `execute`, else as text through `query`.
 */
export function send(connection: LockConnection<unknown>, statement: string | PreparedStatement): Promise<readonly Row[]> {
  return typeof statement === 'string'
    ? connection.query(statement)
    : (connection.execute as NonNullable<LockConnection<unknown>['execute']>)(statement)
}

async function runCancellable(
  connection: LockConnection<unknown>,
  statement: string | PreparedStatement,
  signal: AbortSignal | undefined,
): Promise<
  | { ok: true; rows: readonly Row[]; cancelled: Promise<void> | undefined }
  | { ok: false; error: unknown; cancelled: Promise<void> | undefined }
> {
  let cancelled: Promise<void> | undefined
  const onAbort = () => {
    cancelled = connection.cancel().catch(() => undefined)
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    return { ok: true, rows: await send(connection, statement), cancelled }
  } catch (error) {
    return { ok: false, error, cancelled }
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}

/** Runs `sql` again while a late cancel request keeps hitting it; a cancel is delivered once. */
async function queryPastCancel(connection: LockConnection<unknown>, sql: string): Promise<readonly Row[]> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await connection.query(sql)
    } catch (error) {
      if (sqlState(error) !== QUERY_CANCELED || attempt >= 3) throw error
    }
  }
}

/**
 * Leaves the connection as it was before a failed or abandoned lock statement: nothing held,
 * the caller's transaction usable. A connection whose state cannot be restored is destroyed if
 * owned; on a connection the caller owns, the failure is reported as `RELEASE_FAILED`. A
 * connection that was lost holds nothing: its session ends with it, so there is nothing to undo.
 */
async function undo(connection: LockConnection<unknown>, request: TakeRequest, failure: unknown, lost: () => boolean): Promise<void> {
  const { framing } = request
  if (framing.kind === 'driver-transaction' || sqlState(failure) === IN_FAILED_SQL_TRANSACTION) return
  if (lost()) {
    await connection.release({ destroy: true, cause: failure })
    return
  }
  if (framing.kind === 'savepoint' && sqlState(failure) === NO_ACTIVE_SQL_TRANSACTION) return
  const sql =
    framing.kind === 'session'
      ? unlockIfHeldSql(request.id, request.mode)
      : framing.kind === 'begin'
        ? 'ROLLBACK'
        : rollbackToSavepointSql(framing.name)
  try {
    await queryPastCancel(connection, sql)
  } catch (error) {
    if (connection.owned || lost()) {
      await connection.release({ destroy: true, cause: error })
      return
    }
    throw new ReleaseFailedError(
      `could not undo a failed lock attempt on the connection you passed in; it may still hold the lock: ${String((error as Error)?.message ?? error)}`,
      { ...request.details, cause: error },
    )
  }
}

function failureFor(error: unknown, request: TakeRequest): unknown {
  if (request.signal?.aborted) return request.signal.reason
  if (request.framing.kind === 'savepoint' && sqlState(error) === NO_ACTIVE_SQL_TRANSACTION) return new NotInTransaction()
  if (sqlState(error) === LOCK_NOT_AVAILABLE || error instanceof DeadlineExceeded) {
    return new LockTimeoutError(request.timeoutMs ?? 0, { ...request.details, cause: error })
  }
  return error
}

/**
 * A granted lock: `pid` is the backend holding it, when the lock statement said (session locks
 * do); `mark` the transaction it lives in, when the request asked (see {@link TakeRequest.mark}).
 */
export interface Granted {
  readonly pid: number | undefined
  readonly mark: string | undefined
}

function granted(row: Row | undefined): Granted {
  const mark = row?.tx
  return { pid: pidOf(row), mark: typeof mark === 'string' ? mark : undefined }
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
export async function takeLock(connection: LockConnection<unknown>, request: TakeRequest): Promise<Granted | false> {
  const left = remainingMs(request.deadline)
  const attempt = request.attempt || (left !== undefined && left < 1)
  const { framing } = request
  const plan: AcquirePlan = {
    id: request.id,
    mode: request.mode,
    scope: framing.kind === 'session' ? 'session' : 'transaction',
    attempt,
    timeoutMs: attempt ? undefined : left,
    begin: framing.kind === 'begin',
    savepoint: framing.kind === 'savepoint' ? { name: framing.name, keepOpen: framing.keepOpen } : undefined,
    mark: request.mark,
  }
  request.signal?.throwIfAborted()
  let lost = false
  let waiting = true
  const stopListening = connection.onLost(() => {
    lost = true
    if (waiting) void connection.cancel().catch(() => undefined)
  })
  try {
    const prepared = connection.execute === undefined ? undefined : preparedAcquire(plan)
    const outcome = await runCancellable(connection, prepared ?? acquireSql(plan), request.signal)
    waiting = false
    if (outcome.ok && !request.signal?.aborted) {
      if (!attempt || outcome.rows[0]?.acquired === true) return granted(outcome.rows[0])
      if (framing.kind === 'begin' || (framing.kind === 'savepoint' && framing.keepOpen))
        await undo(connection, request, undefined, () => lost)
      return attemptRefused(request)
    }
    await outcome.cancelled
    const failure = outcome.ok ? undefined : outcome.error
    await undo(connection, request, failure, () => lost)
    throw failureFor(failure, request)
  } finally {
    stopListening()
  }
}

function attemptRefused(request: TakeRequest): false {
  if (request.attempt) return false
  throw new LockTimeoutError(request.timeoutMs ?? 0, request.details)
}

/** @internal Ends the savepoint a lock was taken under, keeping the lock in the transaction. */
export async function keepSavepoint(connection: LockConnection<unknown>, name: string): Promise<void> {
  await connection.query(`RELEASE SAVEPOINT ${name}`)
}

/**
 * @internal Watches a held lock's connection: calls `onLost` once if the connection fails, ends,
 * or (with `keepAliveMs`) does not answer a probe in time, or answers it from another backend
 * than `pid`, the one holding the lock. Returns a function that stops watching.
 */
export function watchConnection(
  connection: LockConnection<unknown>,
  keepAliveMs: number | undefined,
  onLost: (error: LockLostError) => void,
  details: PgLockErrorDetails,
  pid?: number,
): () => void {
  let stopped = false
  let timer: ReturnType<typeof setTimeout> | undefined
  const lost = (cause: unknown, why: string) => {
    if (stopped) return
    stop()
    onLost(new LockLostError(`lock was lost: ${why}`, { ...details, cause }))
  }
  const unsubscribe = connection.onLost((cause) =>
    lost(cause, `the connection holding it failed (${String((cause as Error)?.message ?? cause)})`),
  )
  const probe = () => {
    if (stopped || keepAliveMs === undefined) return
    const overdue = setTimeout(() => lost(undefined, `the connection did not answer a probe within ${keepAliveMs} ms`), keepAliveMs)
    connection.query(PROBE_SQL).then(
      (rows) => {
        clearTimeout(overdue)
        const now = pidOf(rows[0])
        if (pid !== undefined && now !== undefined && now !== pid) return lost(undefined, sessionMovedReason(pid, now))
        if (!stopped) timer = setTimeout(probe, keepAliveMs)
      },
      (error: unknown) => {
        clearTimeout(overdue)
        lost(error, `a keep-alive probe failed (${String((error as Error)?.message ?? error)})`)
      },
    )
  }
  if (keepAliveMs !== undefined) timer = setTimeout(probe, keepAliveMs)
  function stop() {
    stopped = true
    if (timer !== undefined) clearTimeout(timer)
    unsubscribe()
  }
  return stop
}

/**
 * @internal Why a session lock cannot be trusted once its connection's statements run on another
 * backend than the one that took it, and what to do about it.
 */
export function sessionMovedReason(heldOn: number, now: number): string {
  return (
    `the lock was taken on backend ${heldOn} but the connection now runs on backend ${now}: something between ` +
    'pglock and Postgres hands this connection to other sessions (a pooler in transaction mode, such as PgBouncer ' +
    `with pool_mode = transaction). Backend ${heldOn} may hold the lock until that server connection closes. ` +
    "Session locks need a connection that keeps its session: connect to Postgres directly or through session pooling, or use scope: 'transaction'"
  )
}
