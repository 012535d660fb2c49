import type { ReservedSql, TransactionSql } from 'postgres'

export function isTransactionSql(handle: ReservedSql<any> | TransactionSql<any>): handle is TransactionSql<any> {
  return typeof (handle as { savepoint?: unknown }).savepoint === 'function'
}

/**
 * `ReservedSql` and `TransactionSql` handles whose connection failed, and why. postgres.js 3.4
 * keeps such a handle pointing at a connection that its pool may reconnect for others, and a
 * reserved one queues every statement after the first failure forever: pglock refuses them instead.
 */
export const brokenHandles = new WeakMap<ReservedSql<any> | TransactionSql<any>, unknown>()
