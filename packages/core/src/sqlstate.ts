/** The SQLSTATE Postgres raises when `lock_timeout` elapses. */
export const LOCK_NOT_AVAILABLE = '55P03'
/** The SQLSTATE of a statement cancelled by request. */
export const QUERY_CANCELED = '57014'
/** The SQLSTATE of `SAVEPOINT` outside a transaction block. */
export const NO_ACTIVE_SQL_TRANSACTION = '25P01'
/** The SQLSTATE of any statement sent inside a transaction that has already failed. */
export const IN_FAILED_SQL_TRANSACTION = '25P02'

/** The SQLSTATE of invalid input for a type: pglock's lock guard raises it (see `sql.ts`). */
export const INVALID_TEXT_REPRESENTATION = '22P02'

/** @internal The SQLSTATE of a driver error, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

const SQLSTATE = /^[0-9A-Z]{5}$/

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
  return code === undefined || !SQLSTATE.test(code) || code.startsWith('08') || code.startsWith('57P')
}
