import type { PreparedStatement } from './executor.js'
import { type LockId, pgLocksRow } from './keys.js'
import { markSql } from './tx-marks.js'
import type { LockMode } from './types.js'

type LockFunction = 'lock' | 'try' | 'xact' | 'try_xact' | 'unlock'

const FUNCTION_NAMES: Record<LockFunction, string> = {
  lock: 'pg_advisory_lock',
  try: 'pg_try_advisory_lock',
  xact: 'pg_advisory_xact_lock',
  try_xact: 'pg_try_advisory_xact_lock',
  unlock: 'pg_advisory_unlock',
}

/** A lock id as SQL literals: only integers validated by `resolveLockId` ever reach here. */
function literal(id: LockId): string {
  const values = valuesOf(id)
  return id.kind === 'pair' ? `'${values[0]}'::int4, '${values[1]}'::int4` : `'${values[0]}'::int8`
}

function call(fn: LockFunction, id: LockId, mode: LockMode): string {
  return `${FUNCTION_NAMES[fn]}${mode === 'shared' ? '_shared' : ''}(${literal(id)})`
}

type PreparedFunction = 'lock' | 'try' | 'xact' | 'try_xact' | 'unlock'

/** What pglock's guard raises with, as invalid integer input (SQLSTATE 22P02), on a server in recovery. */
export const IN_RECOVERY = 'pglock: the server is in recovery'
/** What the guard raises with when `fencing` finds the transaction holding an xid already. */
export const XID_ASSIGNED = 'pglock: the transaction has an xid already'

/**
 * The one-time filter every lock statement carries, which Postgres evaluates before the lock call:
 * on a standby it raises, so nothing is taken there and the rest of the message is skipped. With
 * fencing it also refuses a transaction that has an xid already: its token could be older than the
 * last holder's.
 */
const GUARD = ` WHERE (CASE WHEN pg_is_in_recovery() THEN '${IN_RECOVERY}' END)::int4 IS NULL`
const FENCED_GUARD = ` WHERE (CASE WHEN pg_is_in_recovery() THEN '${IN_RECOVERY}' WHEN pg_current_xact_id_if_assigned() IS NOT NULL THEN '${XID_ASSIGNED}' END)::int4 IS NULL`

/**
 * The fencing token: an xid, assigned after the grant (the lock call comes first). A transactional
 * WAL record gives that xid first, so that the transaction's commit is a durable one (flushed, and
 * acknowledged by a synchronous standby): an xid that wrote nothing commits asynchronously, and a
 * crash or a failover could hand it out again.
 */
const TOKEN = "(CASE WHEN pg_logical_emit_message(true, 'pglock', '') IS NOT NULL THEN pg_current_xact_id()::text END)"

function guard(fencing: boolean): string {
  return fencing ? FENCED_GUARD : GUARD
}

/** The columns of a lock statement: a try answers `acquired`, or with fencing a token only when it acquired. */
function lockColumns(lock: string, noWait: boolean, fencing: boolean): string {
  if (!fencing) return noWait ? `${lock} AS acquired` : lock
  return noWait ? `CASE WHEN ${lock} THEN ${TOKEN} END AS fence` : `${lock}, ${TOKEN} AS fence`
}

/**
 * Name and text of every prepared lock call, by function, mode, id kind and fencing: built when
 * first asked. Like their text forms, each session call answers `pid`, and the unlock unlocks only
 * on the backend given as its first parameter (or anywhere, when that is null). Each text uses each
 * parameter once, in order, so that a driver may send it as a tagged template (postgres.js 4).
 */
type Prepared = { readonly name: string; readonly text: string }
const PREPARED = new Map<string, Prepared>()

function prepared(fn: PreparedFunction, mode: LockMode, kind: LockId['kind'], fencing: boolean): Prepared {
  const id = `${fn} ${mode} ${kind} ${fencing}`
  let statement = PREPARED.get(id)
  if (statement === undefined) {
    // the unlock checks its backend (`$1`) before the id's parameters come
    const first = fn === 'unlock' ? 2 : 1
    const parameters = kind === 'int64' ? `$${first}::int8` : `$${first}::int4, $${first + 1}::int4`
    const name = `${FUNCTION_NAMES[fn]}${mode === 'shared' ? '_shared' : ''}`
    const lock = `${name}(${parameters})`
    const noWait = fn === 'try' || fn === 'try_xact'
    const session = fn !== 'xact' && fn !== 'try_xact'
    const text =
      fn === 'unlock'
        ? `SELECT CASE WHEN pg_backend_pid() = COALESCE($1::int4, pg_backend_pid()) THEN ${lock} END AS released, pg_backend_pid() AS pid`
        : `SELECT ${lockColumns(lock, noWait, fencing)}${session ? ', pg_backend_pid() AS pid' : ''}${guard(fencing)}`
    statement = { name: `pglock_${name}_${kind}${fencing ? '_fenced' : ''}`, text }
    PREPARED.set(id, statement)
  }
  return statement
}

/** The lock id as statement parameters, kept for the id last asked: a lock's unlock follows its lock. */
let lastId: LockId | undefined
let lastValues: readonly string[] = []

/** @internal Hands over an int64 id's decimal text, where the caller has it already. */
export function primeValues(id: LockId, decimal: string): void {
  lastId = id
  lastValues = [decimal]
}

function valuesOf(id: LockId): readonly string[] {
  if (id !== lastId) {
    lastValues = id.kind === 'pair' ? [String(id.value[0] | 0), String(id.value[1] | 0)] : [String(id.value)]
    lastId = id
  }
  return lastValues
}

/** The statement last built for each prepared function: a lock's next cycle usually asks the same again. */
const lastCall = {} as Record<
  PreparedFunction,
  { id: LockId; mode: LockMode; pid: number | undefined; fencing: boolean; statement: PreparedStatement }
>

function preparedCall(fn: PreparedFunction, id: LockId, mode: LockMode, pid?: number, fencing = false): PreparedStatement {
  const last = lastCall[fn]
  if (last !== undefined && last.id === id && last.mode === mode && last.pid === pid && last.fencing === fencing) return last.statement
  const { name, text } = prepared(fn, mode, id.kind, fencing)
  const values = valuesOf(id)
  const statement: PreparedStatement =
    fn === 'unlock'
      ? { name, text, values: [pid !== undefined && Number.isSafeInteger(pid) ? String(pid) : null, ...values] }
      : { name, text, values }
  lastCall[fn] = { id, mode, pid, fencing, statement }
  return statement
}

/** The bare statement that takes a session or transaction lock (`noWait`: the try form), as a prepared statement. */
export function preparedLock(id: LockId, mode: LockMode, noWait: boolean, transaction: boolean, fencing: boolean): PreparedStatement {
  return preparedCall(transaction ? (noWait ? 'try_xact' : 'xact') : noWait ? 'try' : 'lock', id, mode, undefined, fencing)
}

/** {@link unlockSql} as a prepared statement. */
export function preparedUnlock(id: LockId, mode: LockMode, pid?: number): PreparedStatement {
  return preparedCall('unlock', id, mode, pid)
}

/** Wraps a blocking lock statement in a local `lock_timeout`, restoring the previous value after it. */
function withLockTimeout(statement: string, timeoutMs: number | undefined): string[] {
  if (timeoutMs === undefined) return [statement]
  return [
    `SELECT set_config('pglock.lock_timeout', current_setting('lock_timeout'), true)`,
    `SET LOCAL lock_timeout = ${Math.max(1, Math.ceil(timeoutMs))}`,
    statement,
    // the saved value, or (sent apart, as some drivers must, after the save ended) the current one
    `SELECT set_config('lock_timeout', COALESCE(NULLIF(current_setting('pglock.lock_timeout', true), ''), current_setting('lock_timeout')), true)`,
  ]
}

/**
 * A session lock under a `lock_timeout`, as one statement: the subquery saves the setting and sets
 * the timeout before the lock call waits, and the last column puts the setting back (which matters
 * inside a caller's transaction; elsewhere the statement's own transaction ends it). One statement
 * answers with its rows on every driver, where some drop the rows of a text of several.
 */
function sessionLockWithin(lock: string, timeoutMs: number, fencing: boolean): string {
  const timeout = Math.max(1, Math.ceil(timeoutMs))
  return (
    `SELECT ${lockColumns(lock, false, fencing)}, pg_backend_pid() AS pid, set_config('lock_timeout', t.saved, true) AS restored` +
    ` FROM (SELECT current_setting('lock_timeout') AS saved, set_config('lock_timeout', '${timeout}', true) OFFSET 0) t${guard(fencing)}`
  )
}

/** How the statement that takes a lock is framed. */
export interface AcquirePlan {
  readonly id: LockId
  readonly mode: LockMode
  readonly scope: 'session' | 'transaction'
  /** `true` for the non-blocking `pg_try_*` form, which answers in column `acquired`. */
  readonly noWait: boolean
  /** For blocking forms: the `lock_timeout` to wait under, in ms (at least 1). */
  readonly timeoutMs?: number | undefined
  /** Open a transaction in the same round trip (`BEGIN; ...`). */
  readonly begin?: boolean | undefined
  /**
   * Inside a caller's transaction: take the lock under this savepoint, so that a timeout or a
   * cancel can be undone with `ROLLBACK TO SAVEPOINT`, leaving the transaction usable.
   * `SAVEPOINT` also fails (SQLSTATE 25P01) outside a transaction block, which tells the core
   * that no transaction is open.
   */
  readonly savepoint?: { readonly name: string; readonly keepOpen: boolean } | undefined
  /** Transaction scope: answer `pid` too (session scope always does), for a traced lock. */
  readonly pid?: boolean | undefined
  /** Answer in column `fence` a fencing token taken after the grant (for a try: only when acquired). */
  readonly fencing?: boolean | undefined
  /**
   * Transaction scope on a caller's transaction: answer in column `tx` the mark of the transaction
   * the lock was taken in, setting it to this fresh value if the transaction has none yet.
   */
  readonly mark?: string | undefined
}

/** `BEGIN` and the transaction lock, in one round trip: the usual transaction lock, nothing around it. */
function beginWithLock(id: LockId, mode: LockMode, pid: boolean, fencing: boolean): string {
  const columns = `${lockColumns(call('xact', id, mode), false, fencing)}${pid ? ', pg_backend_pid() AS pid' : ''}`
  return `BEGIN; SELECT ${columns}${guard(fencing)}`
}

/**
 * The last text {@link acquireSql} built for a plan without a savepoint or a mark (whose names are
 * new each time): a lock's next acquire usually asks for the same text again.
 */
let lastAcquire: { plan: AcquirePlan; sql: string } | undefined

function samePlan(a: AcquirePlan, b: AcquirePlan): boolean {
  return (
    a.id === b.id &&
    a.mode === b.mode &&
    a.scope === b.scope &&
    a.noWait === b.noWait &&
    a.timeoutMs === b.timeoutMs &&
    a.begin === b.begin &&
    a.pid === b.pid &&
    a.fencing === b.fencing
  )
}

/**
 * The SQL text that takes a lock. One round trip however it is framed: `BEGIN`, a savepoint and
 * a `lock_timeout` all travel with the lock call itself, and the guard (see {@link GUARD}) with the
 * lock statement. In session scope (and for a traced transaction lock) its last statement also
 * answers `pid`, the backend that took the lock, and with fencing `fence`, the token: later
 * statements check they run there, and traces name it.
 */
export function acquireSql(plan: AcquirePlan): string {
  if (plan.savepoint !== undefined || plan.mark !== undefined) return buildAcquireSql(plan)
  if (lastAcquire === undefined || !samePlan(lastAcquire.plan, plan)) lastAcquire = { plan, sql: buildAcquireSql(plan) }
  return lastAcquire.sql
}

function buildAcquireSql(plan: AcquirePlan): string {
  const transaction = plan.scope === 'transaction'
  const fencing = plan.fencing === true
  // the usual transaction lock: BEGIN sent with the lock, nothing around it
  if (
    transaction &&
    plan.begin &&
    !plan.noWait &&
    plan.timeoutMs === undefined &&
    plan.savepoint === undefined &&
    plan.mark === undefined
  ) {
    return beginWithLock(plan.id, plan.mode, plan.pid === true, fencing)
  }
  const fn: LockFunction = plan.noWait ? (transaction ? 'try_xact' : 'try') : transaction ? 'xact' : 'lock'
  if (!transaction && !plan.noWait && plan.timeoutMs !== undefined && plan.savepoint === undefined && !plan.begin) {
    return sessionLockWithin(call(fn, plan.id, plan.mode), plan.timeoutMs, fencing)
  }
  // a try is always the last statement, so its token can sit on it; a wait's goes on the last statement
  const statement = `SELECT ${lockColumns(call(fn, plan.id, plan.mode), plan.noWait, fencing && plan.noWait)}`
  const parts = plan.noWait ? [statement] : withLockTimeout(statement, plan.timeoutMs)
  const { savepoint } = plan
  if (savepoint !== undefined) {
    parts.unshift(`SAVEPOINT ${savepoint.name}`)
    if (!savepoint.keepOpen) {
      // a try stays last, to answer: its guard runs alone before the savepoint goes, so that a
      // refusal can still be rolled back to it
      if (plan.noWait) parts.splice(1, 0, `SELECT 1 AS guarded${guard(fencing)}`, `RELEASE SAVEPOINT ${savepoint.name}`)
      else parts.push(`RELEASE SAVEPOINT ${savepoint.name}`)
    }
  }
  const guardedAlone = plan.noWait && savepoint !== undefined && !savepoint.keepOpen
  if (plan.begin) parts.unshift('BEGIN')
  if (transaction && plan.mark !== undefined) {
    if (plan.noWait) parts[parts.length - 1] += `, ${markSql(plan.mark)} AS tx`
    else parts.push(`SELECT ${markSql(plan.mark)} AS tx`)
  }
  if (fencing && !plan.noWait) {
    if (parts[parts.length - 1]?.startsWith('SELECT ')) parts[parts.length - 1] += `, ${TOKEN} AS fence`
    else parts.push(`SELECT ${TOKEN} AS fence`)
  }
  // the backend, when the last statement can say it (not after RELEASE SAVEPOINT)
  if ((!transaction || plan.pid === true) && parts[parts.length - 1]?.startsWith('SELECT '))
    parts[parts.length - 1] += ', pg_backend_pid() AS pid'
  if (!guardedAlone) {
    const at = parts.findIndex((part) => part.startsWith(statement))
    parts[at] += guard(fencing)
  }
  return parts.join('; ')
}

let savepoints = 0

/** @internal A savepoint name unique within this process. */
export function nextSavepoint(): string {
  savepoints += 1
  return `pglock_${savepoints}`
}

/** Undoes a failed `acquireSql` with a savepoint: the caller's transaction is usable again. */
export function rollbackToSavepointSql(savepoint: string): string {
  return `ROLLBACK TO SAVEPOINT ${savepoint}; RELEASE SAVEPOINT ${savepoint}`
}

/**
 * Releases a session lock; answers in column `released`, and in `pid` the backend it ran on.
 * Given the backend that took the lock, it unlocks only there: on any other backend (the
 * connection's session changed, as behind a transaction-pooling proxy) `released` is null and
 * nothing is unlocked, so a lock another client holds on that backend is left alone.
 */
export function unlockSql(id: LockId, mode: LockMode, pid?: number): string {
  const last = lastUnlock
  if (last !== undefined && last.id === id && last.mode === mode && last.pid === pid) return last.sql
  const unlock = call('unlock', id, mode)
  const sql =
    pid === undefined || !Number.isSafeInteger(pid)
      ? `SELECT ${unlock} AS released, pg_backend_pid() AS pid`
      : `SELECT CASE WHEN pg_backend_pid() = ${pid} THEN ${unlock} END AS released, pg_backend_pid() AS pid`
  lastUnlock = { id, mode, pid, sql }
  return sql
}

/** The last unlock text built: a lock's unlock follows its lock, on the same backend as last time. */
let lastUnlock: { id: LockId; mode: LockMode; pid: number | undefined; sql: string } | undefined

/** A keep-alive probe; answers in `pid` the backend it ran on. */
export const PROBE_SQL = 'SELECT pg_backend_pid() AS pid'

/** @internal Reads the `pid` column pglock's statements answer, if there is one. */
export function pidOf(row: Readonly<Record<string, unknown>> | undefined): number | undefined {
  const value = row?.pid
  const pid = typeof value === 'number' ? value : typeof value === 'string' || typeof value === 'bigint' ? Number(value) : Number.NaN
  return Number.isSafeInteger(pid) ? pid : undefined
}

/**
 * Releases a session lock only if this backend holds it, so that it raises no warning when it
 * does not. Used after a failed or cancelled wait, where Postgres may have granted the lock and
 * still reported an error.
 */
export function unlockIfHeldSql(id: LockId, mode: LockMode): string {
  const row = pgLocksRow(id)
  return (
    `SELECT ${call('unlock', id, mode)} AS released FROM pg_catalog.pg_locks` +
    ` WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted` +
    ` AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())` +
    ` AND classid = ${row.classid} AND objid = ${row.objid} AND objsubid = ${row.objsubid}` +
    ` AND mode = '${mode === 'shared' ? 'ShareLock' : 'ExclusiveLock'}'`
  )
}
