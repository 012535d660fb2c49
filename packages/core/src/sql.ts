import type { PreparedStatement } from './executor.js'
import { type LockId, pgLocksRow } from './keys.js'
import type { LockMode } from './types.js'

/** The SQLSTATE Postgres raises when `lock_timeout` elapses. */
export const LOCK_NOT_AVAILABLE = '55P03'
/** The SQLSTATE of a statement cancelled by request. */
export const QUERY_CANCELED = '57014'
/** The SQLSTATE of `SAVEPOINT` outside a transaction block. */
export const NO_ACTIVE_SQL_TRANSACTION = '25P01'

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
  return id.kind === 'pair' ? `'${id.value[0] | 0}'::int4, '${id.value[1] | 0}'::int4` : `'${BigInt.asIntN(64, id.value)}'::int8`
}

function call(fn: LockFunction, id: LockId, mode: LockMode): string {
  return `${FUNCTION_NAMES[fn]}${mode === 'shared' ? '_shared' : ''}(${literal(id)})`
}

type PreparedFunction = 'lock' | 'try' | 'unlock'

const PREPARED_COLUMN: Record<PreparedFunction, string> = { lock: '', try: ' AS acquired', unlock: ' AS released' }

/** Name and text of every prepared lock call, by function, mode and id kind: built once. */
const PREPARED: Record<string, { readonly name: string; readonly text: string }> = {}
for (const fn of ['lock', 'try', 'unlock'] as const) {
  for (const mode of ['exclusive', 'shared'] as const) {
    for (const [kind, parameters] of [
      ['int64', '$1::int8'],
      ['pair', '$1::int4, $2::int4'],
    ] as const) {
      const name = `${FUNCTION_NAMES[fn]}${mode === 'shared' ? '_shared' : ''}`
      PREPARED[`${fn} ${mode} ${kind}`] = { name: `pglock_${name}_${kind}`, text: `SELECT ${name}(${parameters})${PREPARED_COLUMN[fn]}` }
    }
  }
}

function preparedCall(fn: PreparedFunction, id: LockId, mode: LockMode): PreparedStatement {
  const { name, text } = PREPARED[`${fn} ${mode} ${id.kind}`] as { name: string; text: string }
  return {
    name,
    text,
    values: id.kind === 'pair' ? [String(id.value[0] | 0), String(id.value[1] | 0)] : [String(BigInt.asIntN(64, id.value))],
  }
}

/**
 * The statement that takes a session lock, as a prepared statement, when the plan is the bare
 * call (no `lock_timeout`, savepoint or `BEGIN` around it); else `undefined`.
 */
export function preparedAcquire(plan: AcquirePlan): PreparedStatement | undefined {
  if (plan.scope !== 'session' || plan.begin || plan.savepoint !== undefined) return undefined
  if (plan.attempt) return preparedCall('try', plan.id, plan.mode)
  return plan.timeoutMs === undefined ? preparedCall('lock', plan.id, plan.mode) : undefined
}

/** {@link unlockSql} as a prepared statement. */
export function preparedUnlock(id: LockId, mode: LockMode): PreparedStatement {
  return preparedCall('unlock', id, mode)
}

/** Wraps a blocking lock statement in a local `lock_timeout`, restoring the previous value after it. */
function withLockTimeout(statement: string, timeoutMs: number | undefined): string[] {
  if (timeoutMs === undefined) return [statement]
  return [
    `SELECT set_config('pglock.lock_timeout', current_setting('lock_timeout'), true)`,
    `SET LOCAL lock_timeout = ${Math.max(1, Math.ceil(timeoutMs))}`,
    statement,
    `SELECT set_config('lock_timeout', current_setting('pglock.lock_timeout'), true)`,
  ]
}

/** How the statement that takes a lock is framed. */
export interface AcquirePlan {
  readonly id: LockId
  readonly mode: LockMode
  readonly scope: 'session' | 'transaction'
  /** `true` for the non-blocking `pg_try_*` form, which answers in column `acquired`. */
  readonly attempt: boolean
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
}

/**
 * The SQL text that takes a lock. One round trip however it is framed: `BEGIN`, a savepoint and
 * a `lock_timeout` all travel with the lock call itself.
 */
export function acquireSql(plan: AcquirePlan): string {
  const transaction = plan.scope === 'transaction'
  const fn: LockFunction = plan.attempt ? (transaction ? 'try_xact' : 'try') : transaction ? 'xact' : 'lock'
  const statement = `SELECT ${call(fn, plan.id, plan.mode)}${plan.attempt ? ' AS acquired' : ''}`
  const parts = plan.attempt ? [statement] : withLockTimeout(statement, plan.timeoutMs)
  const { savepoint } = plan
  if (savepoint !== undefined) {
    parts.unshift(`SAVEPOINT ${savepoint.name}`)
    if (!savepoint.keepOpen) {
      if (plan.attempt) parts.splice(1, 0, `RELEASE SAVEPOINT ${savepoint.name}`)
      else parts.push(`RELEASE SAVEPOINT ${savepoint.name}`)
    }
  }
  if (plan.begin) parts.unshift('BEGIN')
  return parts.join('; ')
}

/** Undoes a failed `acquireSql` with a savepoint: the caller's transaction is usable again. */
export function rollbackToSavepointSql(savepoint: string): string {
  return `ROLLBACK TO SAVEPOINT ${savepoint}; RELEASE SAVEPOINT ${savepoint}`
}

/** Releases a session lock; answers in column `released`. */
export function unlockSql(id: LockId, mode: LockMode): string {
  return `SELECT ${call('unlock', id, mode)} AS released`
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
