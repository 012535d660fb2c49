import type { Attributes } from '@opentelemetry/api'
import type { LockTraceBase } from './channels.js'

/** OpenTelemetry's database convention: which database the operation concerns. */
export const ATTR_DB_SYSTEM_NAME = 'db.system.name'
/** OpenTelemetry's general convention: the class of error an operation ended with. */
export const ATTR_ERROR_TYPE = 'error.type'
/** The lock id Postgres sees: a decimal int64, or `classid,objid` for a pair of int32 keys. */
export const ATTR_LOCK_ID = 'pglock.lock.id'
/** The string key, or what `captureKey` made of it; absent unless asked for. */
export const ATTR_LOCK_KEY = 'pglock.lock.key'
export const ATTR_LOCK_MODE = 'pglock.lock.mode'
export const ATTR_LOCK_SCOPE = 'pglock.lock.scope'
/** How a held lock ended: `released`, `lost`, or `failed` (its release failed). */
export const ATTR_LOCK_END = 'pglock.lock.end'
/** The pglock package that ran the lock: `pg`, `postgres-js`, `kysely`, ... */
export const ATTR_ADAPTER = 'pglock.adapter'
/** `withLock`, `tryWithLock`, `acquire` or `tryAcquire`. */
export const ATTR_OPERATION = 'pglock.operation'
/** How an acquire attempt settled: `acquired`, `busy`, `timeout`, `aborted` or `error`. */
export const ATTR_ACQUIRE_OUTCOME = 'pglock.acquire.outcome'
export const ATTR_TIMEOUT_MS = 'pglock.acquire.timeout_ms'
/** The Postgres backend pid of the lock's connection, as `pg_locks.pid` shows it. */
export const ATTR_BACKEND_PID = 'pglock.backend.pid'

export const SPAN_ACQUIRE = 'pglock.acquire'
export const SPAN_HOLD = 'pglock.hold'

/** The lock id as `pg_locks` lets one find it. */
export function formatLockId(id: LockTraceBase['lockId']): string {
  return typeof id === 'bigint' ? id.toString() : `${id[0]},${id[1]}`
}

/** A low-cardinality `error.type`: the driver's or pglock's code, else the error's name. */
export function errorType(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const { code, name } = error as { code?: unknown; name?: unknown }
    if (typeof code === 'string' && code !== '') return code
    if (typeof name === 'string' && name !== '') return name
  }
  return '_OTHER'
}

/** The attributes every span and metric point of a lock carries, none of them per-key. */
export function commonAttributes(message: LockTraceBase): Attributes {
  return {
    [ATTR_DB_SYSTEM_NAME]: 'postgresql',
    [ATTR_LOCK_MODE]: message.mode,
    [ATTR_LOCK_SCOPE]: message.scope,
    [ATTR_ADAPTER]: message.adapter,
  }
}
