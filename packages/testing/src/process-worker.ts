/**
 * A worker process for the conformance suite: loads an adapter under test and increments one
 * row `increments` times, each read-modify-write under `withLock`, then exits 0.
 */
import type { AdapterUnderTest } from './adapter.ts'

interface WorkerOptions {
  readonly url: string
  readonly table: string
  readonly key: string
  readonly increments: number
  readonly adapter: string
}

const options = JSON.parse(process.env.PGLOCK_WORKER ?? '{}') as WorkerOptions
const adapter = (await import(options.adapter)).default as AdapterUnderTest
const pool = await adapter.openPool({ url: options.url, applicationName: 'pglock-test-worker', max: 2 })
try {
  for (let i = 0; i < options.increments; i += 1) {
    // a multiplexed lease has no db: its work goes through the pool
    await adapter.lib.withLock(pool.db, options.key, async ({ db = pool.db }) => {
      const [row] = await adapter.query(db, `SELECT value FROM ${options.table} WHERE id = 1`)
      await new Promise((resolve) => setImmediate(resolve))
      await adapter.query(db, `UPDATE ${options.table} SET value = ${Number(row?.value) + 1} WHERE id = 1`)
    })
  }
} finally {
  await pool.close()
}
