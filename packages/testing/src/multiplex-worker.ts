/**
 * A worker process of the multiplexed process test: loads an adapter under test, multiplexes one
 * pool, and runs `cycles` lock cycles from a few concurrent tasks, each on a key picked at random
 * among `keys` that every process shares. Inside the lock it records the server's clock on entry
 * and exit and increments the key's counter row, through the pool (a multiplexed lease has no
 * `db`). Exits 0 when every cycle ran.
 */
import type { AdapterUnderTest } from './adapter.ts'

/** What the suite tells a worker, as JSON in `PGLOCK_MULTIPLEX_WORKER`. */
export interface MultiplexWorkerOptions {
  readonly url: string
  readonly adapter: string
  readonly applicationName: string
  /** the keys are `${prefix}:${n}` for n in [0, keys) */
  readonly prefix: string
  readonly keys: number
  readonly counters: string
  readonly intervals: string
  readonly worker: number
  readonly cycles: number
}

/** Concurrent tasks per process: fewer than the pool's connections, which waiting locks and the work inside locks share. */
const TASKS = 4
const options = JSON.parse(process.env.PGLOCK_MULTIPLEX_WORKER ?? '{}') as MultiplexWorkerOptions
const adapter = (await import(options.adapter)).default as AdapterUnderTest
const pool = await adapter.openPool({ url: options.url, applicationName: options.applicationName, max: TASKS + 3 })
const locks = (adapter.lib.multiplex as NonNullable<AdapterUnderTest['lib']['multiplex']>)(pool.db)
const tick = () => new Promise((resolve) => setImmediate(resolve))
let next = 0
try {
  await Promise.all(
    Array.from({ length: TASKS }, async () => {
      while (next < options.cycles) {
        next += 1
        const n = Math.floor(Math.random() * options.keys)
        await locks.withLock(`${options.prefix}:${n}`, async () => {
          const [entry] = await adapter.query(
            pool.db,
            `INSERT INTO ${options.intervals} (key, started) VALUES (${n}, clock_timestamp()) RETURNING id`,
          )
          const [before] = await adapter.query(pool.db, `SELECT value FROM ${options.counters} WHERE id = ${n}`)
          await tick()
          await adapter.query(pool.db, `UPDATE ${options.counters} SET value = ${Number(before?.value) + 1} WHERE id = ${n}`)
          await adapter.query(pool.db, `UPDATE ${options.intervals} SET ended = clock_timestamp() WHERE id = ${entry?.id}`)
        })
      }
    }),
  )
} finally {
  await pool.close()
}
