/**
 * A worker process of the process suite: loads an adapter under test and runs `cycles` lock
 * cycles on one key. Writers (exclusive) increment a counter row; readers (shared) read it twice
 * and record whether it stayed put. Every cycle records, inside the lock, the server's clock when
 * it got in and when it is about to leave, so that the suite can check that no exclusive holder
 * ever overlapped another holder. Exits 0 when every cycle ran.
 */
import type { AdapterUnderTest } from './adapter.ts'

/** What the suite tells a worker, as JSON in `PGLOCK_CYCLE_WORKER`. */
export interface CycleWorkerOptions {
  readonly url: string
  readonly adapter: string
  readonly applicationName: string
  readonly key: string
  readonly counter: string
  readonly intervals: string
  readonly worker: number
  readonly cycles: number
  readonly scope: 'session' | 'transaction'
  /** `exclusive`: every cycle writes; `shared`: one cycle in four writes, the others read under a shared lock. */
  readonly mode: 'exclusive' | 'shared'
  /** Instead: take each lock with `fencing: true` and insert its token into this table (columns `worker`, `token`). */
  readonly fenced?: string | undefined
}

const options = JSON.parse(process.env.PGLOCK_CYCLE_WORKER ?? '{}') as CycleWorkerOptions
const adapter = (await import(options.adapter)).default as AdapterUnderTest
const pool = await adapter.openPool({ url: options.url, applicationName: options.applicationName, max: 2 })
const tick = () => new Promise((resolve) => setImmediate(resolve))
try {
  const { fenced } = options
  for (let cycle = 0; fenced !== undefined && cycle < options.cycles; cycle += 1) {
    await adapter.lib.withLock(
      pool.db,
      options.key,
      ({ db, fencingToken }) => adapter.query(db, `INSERT INTO ${fenced} (worker, token) VALUES (${options.worker}, '${fencingToken}')`),
      { scope: options.scope, fencing: true },
    )
  }
  for (let cycle = 0; fenced === undefined && cycle < options.cycles; cycle += 1) {
    const writer = options.mode === 'exclusive' || (cycle + options.worker) % 4 === 0
    await adapter.lib.withLock(
      pool.db,
      options.key,
      async ({ db }) => {
        const [entry] = await adapter.query(
          db,
          `INSERT INTO ${options.intervals} (worker, writer, started) VALUES (${options.worker}, ${writer}, clock_timestamp()) RETURNING id`,
        )
        const [before] = await adapter.query(db, `SELECT value FROM ${options.counter} WHERE id = 1`)
        await tick()
        if (writer) {
          await adapter.query(db, `UPDATE ${options.counter} SET value = ${Number(before?.value) + 1} WHERE id = 1`)
        }
        const [after] = await adapter.query(db, `SELECT value FROM ${options.counter} WHERE id = 1`)
        const stable = writer || Number(after?.value) === Number(before?.value)
        await adapter.query(db, `UPDATE ${options.intervals} SET ended = clock_timestamp(), stable = ${stable} WHERE id = ${entry?.id}`)
      },
      { scope: options.scope, mode: writer ? 'exclusive' : 'shared' },
    )
  }
} finally {
  await pool.close()
}
