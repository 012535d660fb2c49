import type { ReservedSql, TransactionSql } from 'postgres'

export function isTransactionSql(handle: ReservedSql<any> | TransactionSql<any>): handle is TransactionSql<any> {
  return typeof (handle as { savepoint?: unknown }).savepoint === 'function'
}

/** Handles whose connection failed, and why: 3.4 may reconnect it for others, so pglock refuses them. */
export const brokenHandles = new WeakMap<ReservedSql<any> | TransactionSql<any>, unknown>()
