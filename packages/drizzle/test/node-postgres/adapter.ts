import { fileURLToPath } from 'node:url'
import * as lib from '@pglock/drizzle/node-postgres'
import type { AdapterUnderTest } from '@pglock/testing'
import { sql } from 'drizzle-orm'
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres'
import type pg from 'pg'
import nodePostgres from '../../../pg/test/adapter.ts'

/** The driver's handle under a Drizzle `tx`: a `PoolClient`, or a postgres.js `TransactionSql`. */
export const sessionClient = (tx: unknown): unknown => (tx as { _: { session: { client: unknown } } })._.session.client

/**
 * Drizzle over a node-postgres `Pool` (and over one `Client`) under the conformance suite, and its
 * `tx`. Pools and clients are opened as the pg adapter's tests open theirs; only the transaction
 * scope differs, since Drizzle opens its transactions itself.
 */
const adapter: AdapterUnderTest = {
  name: 'drizzle-node-postgres',
  module: fileURLToPath(import.meta.url),
  lib,
  caps: { ...nodePostgres.caps, savepointHandle: true },
  async openPool(options) {
    const { db: pool, close } = await nodePostgres.openPool(options)
    return { db: drizzle({ client: pool as pg.Pool }), close }
  },
  async openConnection(options) {
    const { db: client, close } = await (nodePostgres.openConnection as NonNullable<AdapterUnderTest['openConnection']>)(options)
    return { db: drizzle({ client: client as pg.Client }), close }
  },
  async inTransaction(db, body) {
    // as node-postgres asks of a checked-out client: its connection may die under the loss tests
    let client: pg.PoolClient | undefined
    const ignore = () => undefined
    try {
      return await (db as NodePgDatabase).transaction((tx) => {
        client = sessionClient(tx) as pg.PoolClient
        client.on('error', ignore)
        return body(tx)
      })
    } finally {
      client?.off('error', ignore)
    }
  },
  listenerCount(tx) {
    const client = sessionClient(tx) as pg.PoolClient
    return client.listenerCount('error') + client.listenerCount('end')
  },
  inSavepoint: (tx, body) =>
    (tx as Parameters<Parameters<NodePgDatabase['transaction']>[0]>[0]).transaction((savepoint) => body(savepoint)),
  async query(db, text) {
    return (await (db as NodePgDatabase).execute(sql.raw(text))).rows
  },
}

export default adapter
