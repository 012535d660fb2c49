import { fileURLToPath } from 'node:url'
import * as lib from '@pglock/drizzle'
import type { AdapterUnderTest } from '@pglock/testing'
import { sql } from 'drizzle-orm'
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'

/**
 * Seconds `sql.end()` waits before it terminates what is left. It must have a bound: postgres.js
 * 3.4 never finishes a plain `end()` once a connection failed with a statement in flight
 * (porsager/postgres#1142), which is what every fault test does.
 */
const END_TIMEOUT_S = 0.2

/**
 * Drizzle over a postgres.js `Sql` under the conformance suite, and its `tx`. No single
 * connection: Drizzle's postgres-js driver cannot wrap a `ReservedSql` (it reads the options
 * only a `Sql` has).
 */
const adapter: AdapterUnderTest = {
  name: 'drizzle-postgres-js',
  module: fileURLToPath(import.meta.url),
  lib,
  caps: {
    sessionOnPool: true,
    singleConnection: false,
    transactionHandle: true,
    beginWithLock: false,
    poolRecovers: false,
    endedPoolRefuses: false,
  },
  async openPool({ url, applicationName, max, throughPooler = false }) {
    const client = postgres(url, {
      max,
      prepare: !throughPooler,
      connection: { application_name: applicationName },
      onnotice: () => undefined,
    })
    let closed: Promise<void> | undefined
    return { db: drizzle({ client }), close: () => (closed ??= client.end({ timeout: END_TIMEOUT_S })) }
  },
  inTransaction: (db, body) => (db as PostgresJsDatabase).transaction((tx) => body(tx)),
  async query(db, text) {
    return [...(await (db as PostgresJsDatabase).execute(sql.raw(text)))]
  },
}

export default adapter
