import { fileURLToPath } from 'node:url'
import * as lib from '@pglock/pg'
import type { AdapterUnderTest } from '@pglock/testing'
import pg from 'pg'

/** node-postgres under the conformance suite: `Pool`, `Client`, and a `PoolClient` inside BEGIN. */
const adapter: AdapterUnderTest = {
  name: 'pg',
  module: fileURLToPath(import.meta.url),
  lib,
  caps: {
    sessionOnPool: true,
    singleConnection: true,
    transactionHandle: true,
    savepointHandle: false,
    beginWithLock: true,
    poolRecovers: true,
    endedPoolRefuses: true,
    survivesConnectionLoss: true,
    // getTransactionStatus() came in node-postgres 8.12
    tellsTransactionEnd: typeof (pg.Client.prototype as { getTransactionStatus?: unknown }).getTransactionStatus === 'function',
  },
  async openPool({ url, applicationName, max }) {
    const pool = new pg.Pool({ connectionString: url, application_name: applicationName, max })
    pool.on('error', () => undefined)
    let closed: Promise<void> | undefined
    return { db: pool, close: () => (closed ??= pool.end()) }
  },
  async openConnection({ url, applicationName }) {
    const client = new pg.Client({ connectionString: url, application_name: applicationName })
    client.on('error', () => undefined)
    await client.connect()
    let closed: Promise<void> | undefined
    return { db: client, close: () => (closed ??= client.end()) }
  },
  async inTransaction(pool, body) {
    const client = await (pool as pg.Pool).connect()
    // as node-postgres asks of a checked-out client: its connection may die under the loss tests
    const ignore = () => undefined
    client.on('error', ignore)
    try {
      await client.query('BEGIN')
      const value = await body(client)
      await client.query('COMMIT')
      return value
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined)
      throw error
    } finally {
      client.release()
      client.off('error', ignore)
    }
  },
  listenerCount: (tx) => (tx as pg.PoolClient).listenerCount('error') + (tx as pg.PoolClient).listenerCount('end'),
  async query(db, sql) {
    return (await (db as pg.Pool | pg.ClientBase).query(sql)).rows
  },
}

export default adapter
