import { fileURLToPath } from 'node:url'
import * as lib from '@pglock/drizzle'
import type { AdapterUnderTest } from '@pglock/testing'
import { sql } from 'drizzle-orm'
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres'
import pg from 'pg'

/** Drizzle over a node-postgres `Pool` under the conformance suite, and its `tx`. */
const adapter: AdapterUnderTest = {
  name: 'drizzle-node-postgres',
  module: fileURLToPath(import.meta.url),
  lib,
  caps: {
    sessionOnPool: true,
    singleConnection: true,
    transactionHandle: true,
    beginWithLock: false,
    poolRecovers: true,
    endedPoolRefuses: true,
    survivesTerminatedBackend: true,
  },
  async openPool({ url, applicationName, max }) {
    const pool = new pg.Pool({ connectionString: url, application_name: applicationName, max })
    pool.on('error', () => undefined)
    let closed: Promise<void> | undefined
    return { db: drizzle({ client: pool }), close: () => (closed ??= pool.end()) }
  },
  async openConnection({ url, applicationName }) {
    const client = new pg.Client({ connectionString: url, application_name: applicationName })
    client.on('error', () => undefined)
    await client.connect()
    let closed: Promise<void> | undefined
    return { db: drizzle({ client }), close: () => (closed ??= client.end()) }
  },
  inTransaction: (db, body) => (db as NodePgDatabase).transaction((tx) => body(tx)),
  async query(db, text) {
    return (await (db as NodePgDatabase).execute(sql.raw(text))).rows
  },
}

export default adapter
