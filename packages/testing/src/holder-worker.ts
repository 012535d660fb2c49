/**
 * A worker process for the conformance suite's `listHolders` tests: loads an adapter under test,
 * opens a pool of one connection, reports that connection's `pg_backend_pid()`, then takes its
 * locks there in order (the first through `withLock`, the rest on `lease.db`) and holds them
 * until the parent says `release`. A waiter is a worker whose first lock is taken.
 */
import type { KeyHash, LockKey, LockMode } from '@pglock/core'
import type { AdapterUnderTest } from './adapter.ts'

/** A key as it crosses the IPC channel: bigints as decimal text. */
export type WireKey = string | number | { readonly int64: string } | readonly [number, number]

/** One lock a worker takes. */
export interface WorkerLock {
  readonly key: WireKey
  readonly keyHash?: Exclude<KeyHash, (key: string) => bigint>
  readonly mode?: LockMode
}

/** What the parent passes in `PGLOCK_HOLDER_WORKER`. */
export interface HolderWorkerOptions {
  readonly url: string
  readonly adapter: string
  readonly applicationName: string
  readonly locks: readonly WorkerLock[]
}

/** What the worker reports: its backend first, then that every lock is held. */
export type HolderWorkerMessage = { readonly pid: number } | { readonly held: true }

/**
 * A key from its wire form.
 *
 * @example
 * ```ts
 * fromWire({ int64: '-1' }) // -1n
 * ```
 */
export function fromWire(key: WireKey): LockKey {
  return typeof key === 'object' && !Array.isArray(key) ? BigInt((key as { int64: string }).int64) : (key as LockKey)
}

async function run(options: HolderWorkerOptions): Promise<void> {
  // the parent going away (a failed test) must not leave this process holding locks
  const orphaned = () => process.exit(2)
  process.on('disconnect', orphaned)
  const adapter = (await import(options.adapter)).default as AdapterUnderTest
  const pool = await adapter.openPool({ url: options.url, applicationName: options.applicationName, max: 1 })
  const released = new Promise<void>((resolve) => process.once('message', () => resolve()))
  const send = (message: HolderWorkerMessage) => process.send?.(message)
  try {
    const [first, ...rest] = options.locks
    if (first === undefined) throw new Error('a holder worker needs at least one lock')
    const [row] = await adapter.query(pool.db, 'SELECT pg_backend_pid() AS pid')
    send({ pid: Number(row?.pid) })
    await adapter.lib.withLock(
      pool.db,
      fromWire(first.key),
      // a multiplexed lease has no db: the rest go on the pool's one connection all the same
      async ({ db = pool.db }) => {
        const more = []
        for (const lock of rest) more.push(await adapter.lib.createLock(db, fromWire(lock.key), optionsOf(lock)).acquire())
        send({ held: true })
        await released
        for (const lock of more) await lock.release()
      },
      optionsOf(first),
    )
  } finally {
    await pool.close()
  }
  process.off('disconnect', orphaned)
  process.disconnect?.()
}

const optionsOf = ({ keyHash, mode }: WorkerLock) => ({ keyHash, mode })

if (process.env.PGLOCK_HOLDER_WORKER !== undefined) await run(JSON.parse(process.env.PGLOCK_HOLDER_WORKER) as HolderWorkerOptions)
