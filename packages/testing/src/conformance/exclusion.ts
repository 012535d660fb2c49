import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest, Opened } from '../adapter.ts'
import { describeFeature, sleep } from './helpers.ts'

const WORKER = fileURLToPath(new URL('../process-worker.ts', import.meta.url))

/**
 * Mutual exclusion across pools and OS processes, `tryAcquire`/`isHeld`, and shared mode.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeExclusion } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeExclusion(adapter)
 * ```
 */
export function describeExclusion(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, observer, open, pid, url }) => {
    describe('mutual exclusion', () => {
      it('lets one withLock run at a time across separate pools', async () => {
        const pools = [await open(), await open()]
        const k = key('exclusive')
        let inside = 0
        let most = 0
        await Promise.all(
          Array.from({ length: 24 }, (_, i) =>
            lib.withLock((pools[i % 2] as Opened<unknown>).db, k, async () => {
              inside += 1
              most = Math.max(most, inside)
              await sleep(2)
              inside -= 1
            }),
          ),
        )
        expect(most).toBe(1)
      })

      it('loses no update when OS processes increment one row under withLock', async () => {
        const table = `pglock_counter_${randomBytes(4).toString('hex')}`
        await observer.query(`CREATE TABLE ${table} (id int PRIMARY KEY, value int NOT NULL)`)
        await observer.query(`INSERT INTO ${table} VALUES (1, 0)`)
        try {
          const processes = 3
          const increments = 25
          const k = key('processes')
          const exits = Array.from({ length: processes }, () => runWorker({ url, table, key: k, increments, adapter: adapter.module }))
          const codes = await Promise.all(exits)
          expect(codes).toEqual(Array(processes).fill(0))
          const [row] = await observer.query<{ value: number }>(`SELECT value FROM ${table} WHERE id = 1`)
          expect(row?.value).toBe(processes * increments)
        } finally {
          await observer.query(`DROP TABLE ${table}`)
        }
      }, 60_000)
    })

    describe('tryAcquire and isHeld', () => {
      it.skipIf(!caps.sessionOnPool)('answers false while another pool holds the lock and true after release', async () => {
        const [a, b] = [await open(), await open()]
        const k = key('try')
        const first = lib.createLock(a.db, k)
        const second = lib.createLock(b.db, k)
        expect(first.isHeld).toBe(false)
        expect(await first.tryAcquire()).toBe(true)
        expect(first.isHeld).toBe(true)
        expect(await observer.holders(k)).toHaveLength(1)
        expect(await second.tryAcquire()).toBe(false)
        expect(second.isHeld).toBe(false)
        expect(await first.release()).toBe(true)
        expect(first.isHeld).toBe(false)
        expect(await second.tryAcquire()).toBe(true)
        expect(await second.release()).toBe(true)
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.sessionOnPool || caps.leaseDb === false)('holds the lock on the connection lease.db queries run on', async () => {
        const pool = await open()
        const k = key('db')
        const lock = await lib.createLock(pool.db, k).acquire()
        expect(await observer.holders(k)).toEqual([await pid(lock.db)])
        await lock.release()
      })

      it('tryWithLock runs fn when free and reports acquired false when taken', async () => {
        const [a, b] = [await open(), await open()]
        const k = key('try-with')
        const result = await lib.withLock(a.db, k, () => lib.tryWithLock(b.db, k, () => 'ran'))
        expect(result).toEqual({ acquired: false })
        expect(await lib.tryWithLock(b.db, k, () => 'ran')).toEqual({ acquired: true, value: 'ran' })
      })
    })

    describe('shared mode', () => {
      it.skipIf(!caps.sessionOnPool)('lets shared holders coexist and keeps an exclusive one out until all leave', async () => {
        const [a, b, c] = [await open(), await open(), await open()]
        const k = key('shared')
        const reader1 = lib.createLock(a.db, k, { mode: 'shared' })
        const reader2 = lib.createLock(b.db, k, { mode: 'shared' })
        const writer = lib.createLock(c.db, k)
        expect(await reader1.tryAcquire()).toBe(true)
        expect(await reader2.tryAcquire()).toBe(true)
        expect((await observer.locks(k)).map((row) => row.mode)).toEqual(['ShareLock', 'ShareLock'])
        expect(await writer.tryAcquire()).toBe(false)
        await reader1.release()
        expect(await writer.tryAcquire()).toBe(false)
        await reader2.release()
        expect(await writer.tryAcquire()).toBe(true)
        expect(await lib.tryWithLock(a.db, k, () => 1, { mode: 'shared' })).toEqual({ acquired: false })
        await writer.release()
      })

      it('runs shared withLock calls on one pool side by side', async () => {
        const pool = await open()
        const k = key('shared-pool')
        let inside = 0
        let most = 0
        let allInside: () => void = () => undefined
        const together = new Promise<void>((resolve) => {
          allInside = resolve
        })
        await Promise.all(
          Array.from({ length: 3 }, () =>
            lib.withLock(
              pool.db,
              k,
              async () => {
                inside += 1
                most = Math.max(most, inside)
                if (inside === 3) allInside()
                // Waits for the other holders rather than a fixed time, which a loaded machine outlasts; gives up if they never come.
                await Promise.race([together, sleep(5_000)])
                inside -= 1
              },
              { mode: 'shared' },
            ),
          ),
        )
        expect(most).toBe(3)
      })
    })
  })
}

/** Runs one increment loop in an OS process of its own: exclusion must hold between processes, not only promises. */
function runWorker(options: { url: string; table: string; key: string; increments: number; adapter: string }): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = fork(WORKER, [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, PGLOCK_WORKER: JSON.stringify(options) },
      stdio: 'inherit',
    })
    child.on('error', reject)
    child.on('exit', (code) => resolve(code))
  })
}
