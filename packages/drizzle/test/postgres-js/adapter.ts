import { fileURLToPath } from 'node:url'
import * as lib from '@pglock/drizzle/postgres-js'
import type { AdapterUnderTest } from '@pglock/testing'
import { sql } from 'drizzle-orm'
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js'
import type { Sql, TransactionSql } from 'postgres'
import postgresJs, { closeHooks } from '../../../postgres-js/test/adapter.ts'
import { sessionClient } from '../node-postgres/adapter.ts'

/**
 * Drizzle over a postgres.js `Sql` under the conformance suite, its `tx` and a nested `tx.transaction()`. The `Sql` is opened
 * as the postgres.js adapter's tests open theirs, so it shares their capabilities but one: no
 * single connection, since Drizzle's postgres-js driver cannot wrap a `ReservedSql` (it reads the
 * options only a `Sql` has).
 */
const adapter: AdapterUnderTest = {
  name: 'drizzle-postgres-js',
  module: fileURLToPath(import.meta.url),
  lib,
  caps: { ...postgresJs.caps, singleConnection: false },
  async openPool(options) {
    const { db: client, close } = await postgresJs.openPool(options)
    return { db: drizzle({ client: client as Sql }), close }
  },
  inTransaction: (db, body) => (db as PostgresJsDatabase).transaction((tx) => body(tx)),
  listenerCount: (tx) => closeHooks(sessionClient(tx) as TransactionSql),
  inSavepoint: (tx, body) =>
    (tx as Parameters<Parameters<PostgresJsDatabase['transaction']>[0]>[0]).transaction((savepoint) => body(savepoint)),
  async query(db, text) {
    return [...(await (db as PostgresJsDatabase).execute(sql.raw(text)))]
  },
}

export default adapter
