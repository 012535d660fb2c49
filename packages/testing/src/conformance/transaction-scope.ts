import { randomBytes } from 'node:crypto'
import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { describeFeature, outcome, scopesOf, sleep } from './helpers.ts'

/**
 * Transaction scope: the lock lives exactly as long as its transaction, in `withLock` and in a caller's transaction.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeTransactionScope } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeTransactionScope(adapter)
 * ```
 */
export function describeTransactionScope(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, observer, open, pid }) => {
    describe.skipIf(caps.transactionScope === false)('transaction scope', () => {
      it('holds the lock inside fn and drops it at commit', async () => {
        const pool = await open()
        const k = key('xact')
        const seen = await lib.withLock(pool.db, k, async ({ db }) => ({ holders: await observer.holders(k), pid: await pid(db) }), {
          scope: 'transaction',
        })
        expect(seen.holders).toEqual([seen.pid])
        expect(await observer.locks(k)).toEqual([])
      })

      it('commits work done through lease.db when fn resolves and rolls it back when fn throws', async () => {
        const pool = await open()
        const table = `pglock_tx_${randomBytes(4).toString('hex')}`
        await observer.query(`CREATE TABLE ${table} (v int)`)
        try {
          const k = key('rollback')
          const failure = new Error('fn failed')
          await expect(
            lib.withLock(
              pool.db,
              k,
              async ({ db }) => {
                await adapter.query(db, `INSERT INTO ${table} VALUES (1)`)
                throw failure
              },
              { scope: 'transaction' },
            ),
          ).rejects.toBe(failure)
          expect(await observer.query(`SELECT v FROM ${table}`)).toEqual([])
          await lib.withLock(pool.db, k, ({ db }) => adapter.query(db, `INSERT INTO ${table} VALUES (2)`), { scope: 'transaction' })
          expect(await observer.query(`SELECT v FROM ${table}`)).toEqual([{ v: 2 }])
          expect(await observer.locks(k)).toEqual([])
        } finally {
          await observer.query(`DROP TABLE ${table}`)
        }
      })

      it('refuses createLock with transaction scope on a pool, before any SQL', async () => {
        const pool = await open()
        expect(() => lib.createLock(pool.db, key('pool-xact'), { scope: 'transaction' })).toThrow(
          expect.objectContaining({ code: 'UNSUPPORTED' }),
        )
      })

      it.skipIf(!caps.transactionHandle)('takes a lock inside a caller transaction that lasts until it ends', async () => {
        const pool = await open()
        const k = key('in-tx')
        await (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool.db, async (tx) => {
          const lock = lib.createLock(tx, k, { scope: 'transaction' })
          expect(await lock.tryAcquire()).toBe(true)
          expect(await observer.holders(k)).toEqual([await pid(tx)])
          expect(await lock.release()).toBe(false)
          expect(await observer.holders(k)).toHaveLength(1)
        })
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.transactionHandle)(
        'ends a transaction lock with its transaction, so later transactions on the connection take the key without release()',
        async () => {
          const pool = await open('pool', 1) // one connection: every transaction runs on it
          const k = key('unreleased')
          const inTransaction = adapter.inTransaction as NonNullable<typeof adapter.inTransaction>
          for (let round = 0; round < 3; round += 1) {
            await inTransaction(pool.db, async (tx) => {
              const lock = await lib.createLock(tx, k, { scope: 'transaction' }).acquire({ timeoutMs: 2_000 })
              expect(lock.isHeld).toBe(true)
              expect(await observer.holders(k)).toEqual([await pid(tx)])
              expect(await lib.createLock(tx, k, { scope: 'transaction' }).tryAcquire()).toBe(false)
            })
            expect(await observer.locks(k)).toEqual([])
          }
          const tried = await inTransaction(pool.db, (tx) => lib.createLock(tx, k, { scope: 'transaction' }).tryAcquire())
          expect(tried).toBe(true)
          // the pool lends that connection again: its lock there excludes a handle on lease.db, as always
          const reentered = await lib.withLock(pool.db, k, ({ db }) => lib.createLock(db, k).tryAcquire(), { timeoutMs: 2_000 })
          expect(reentered).toBe(false)
        },
      )

      it.skipIf(!caps.singleConnection)(
        'ends a transaction lock at COMMIT on a connection the caller drives with BEGIN and COMMIT',
        async () => {
          const connection = await open('connection')
          const k = key('begin-commit')
          for (let round = 0; round < 2; round += 1) {
            await adapter.query(connection.db, 'BEGIN')
            const lock = await lib.createLock(connection.db, k, { scope: 'transaction' }).acquire({ timeoutMs: 2_000 })
            expect(lock.isHeld).toBe(true)
            await adapter.query(connection.db, 'COMMIT')
            expect(await observer.locks(k)).toEqual([])
            if (caps.tellsTransactionEnd) expect(lock.isHeld).toBe(false)
          }
        },
      )

      it.skipIf(!caps.transactionHandle)(
        'leaves no listener on the connection after 1,000 transaction locks, released or not',
        async () => {
          const pool = await open('pool', 1)
          const inTransaction = adapter.inTransaction as NonNullable<typeof adapter.inTransaction>
          const warnings: Error[] = []
          const onWarning = (warning: Error) => warnings.push(warning)
          process.on('warning', onWarning)
          try {
            const counts = await inTransaction(pool.db, async (tx) => {
              const before = await adapter.listenerCount?.(tx)
              for (let i = 0; i < 1_000; i += 1) {
                const lock = await lib.createLock(tx, key('listeners'), { scope: 'transaction' }).acquire()
                await lock.release()
              }
              return { before, after: await adapter.listenerCount?.(tx) }
            })
            expect(counts.after).toBe(counts.before)
            const seen: number[] = []
            for (let i = 0; i < 200; i += 1) {
              await inTransaction(pool.db, async (tx) => {
                await lib.createLock(tx, key('listeners-unreleased'), { scope: 'transaction' }).acquire()
                seen.push((await adapter.listenerCount?.(tx)) ?? 0)
              })
            }
            // a lock left unreleased keeps its listeners only until a later transaction takes a lock
            expect(Math.max(...seen)).toBe(seen[0])
            await sleep(10) // process warnings are emitted on the next tick
          } finally {
            process.off('warning', onWarning)
          }
          expect(warnings.map((warning) => warning.name)).not.toContain('MaxListenersExceededWarning')
        },
      )

      it.skipIf(!caps.transactionHandle)('leaves the caller transaction usable after a transaction-scope timeout', async () => {
        const [a, b] = [await open(), await open()]
        const k = key('in-tx-timeout')
        const holder = await lib.createLock(a.db, k).acquire()
        const value = await (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(b.db, async (tx) => {
          const lock = lib.createLock(tx, k, { scope: 'transaction' })
          await expect(lock.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
          return (await adapter.query(tx, 'SELECT 41 + 1 AS answer'))[0]?.answer
        })
        expect(value).toBe(42)
        await holder.release()
      })

      it.skipIf(!caps.transactionHandle)(
        'reports the driver error, holding nothing, inside a transaction that already failed',
        async () => {
          const pool = await open()
          const k = key('failed-tx')
          for (const scope of scopesOf(adapter.caps)) {
            const failure = await outcome(
              (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool.db, async (tx) => {
                await adapter.query(tx, 'SELECT 1 / 0').catch(() => undefined)
                await lib.createLock(tx, k, { scope }).acquire()
              }),
            )
            expect(failure.ok).toBe(false)
            // the lock statement's own 25P02, or the first failure where the driver reports that (postgres.js)
            expect(['25P02', '22012']).toContain((failure as { error: { code?: unknown } }).error.code)
          }
          expect(await observer.locks(k)).toEqual([])
          expect(await lib.withLock(pool.db, k, () => 'usable')).toBe('usable')
        },
      )

      it.skipIf(!caps.singleConnection)('refuses a transaction-scope acquire on a connection outside a transaction', async () => {
        const connection = await open('connection')
        const lock = lib.createLock(connection.db, key('no-tx'), { scope: 'transaction' })
        await expect(lock.acquire()).rejects.toMatchObject({ code: 'UNSUPPORTED' })
        expect(lock.isHeld).toBe(false)
      })
    })
  })
}
