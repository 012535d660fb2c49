import * as lib from '@pglock/kysely'
import type { AdapterUnderTest, OpenOptions } from '@pglock/testing'
import { type Kysely, sql } from 'kysely'

/**
 * A Kysely dialect under the conformance suite. Kysely has no handle for one dedicated
 * connection that pglock can tell apart from the instance (`db.connection()` yields a `Kysely`
 * of the same shape), so `singleConnection` is off; a `Transaction` is the one-connection handle.
 */
export function kyselyAdapter(
  name: string,
  module: string,
  open: (options: OpenOptions) => { readonly db: Kysely<any>; readonly close?: () => Promise<void> },
  caps: Partial<AdapterUnderTest['caps']> = {},
): AdapterUnderTest {
  return {
    name,
    module,
    lib,
    caps: {
      sessionOnPool: true,
      singleConnection: false,
      transactionHandle: true,
      savepointHandle: false,
      beginWithLock: false,
      survivesConnectionLoss: true,
      poolRecovers: true,
      endedPoolRefuses: true,
      lostConnectionMayReturn: true,
      ...caps,
    },
    async openPool(options) {
      const { db, close = () => db.destroy() } = open(options)
      let closed: Promise<void> | undefined
      return { db, close: () => (closed ??= close()) }
    },
    inTransaction: (db, body) => (db as Kysely<any>).transaction().execute((trx) => body(trx)),
    async query(db, text) {
      return (await sql.raw<Record<string, unknown>>(text).execute(db as Kysely<any>)).rows
    },
  }
}
