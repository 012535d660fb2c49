import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { describeFeature, sleep } from './helpers.ts'

/**
 * Handles that reach one connection through different objects (lease.db, tx, savepoints), and a handle's own state.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeHandles } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeHandles(adapter)
 * ```
 */
export function describeHandles(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, observer, open, pid }) => {
    describe('handles that reach one connection through different objects', () => {
      const inTransaction = <T>(pool: unknown, body: (tx: unknown) => Promise<T>) =>
        (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool, body)
      const inSavepoint = <T>(tx: unknown, body: (savepoint: unknown) => Promise<T>) =>
        (adapter.inSavepoint as NonNullable<typeof adapter.inSavepoint>)(tx, body)

      it.skipIf(!caps.sessionOnPool || caps.leaseDb === false)(
        'does not let a handle on lease.db take the session lock that lease holds',
        async () => {
          const pool = await open()
          const k = key('lease-session')
          const outer = await lib.createLock(pool.db, k).acquire()
          const inner = lib.createLock(outer.db, k)
          expect(await inner.tryAcquire()).toBe(false)
          await expect(inner.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
          expect(await lib.tryWithLock(outer.db, k, () => 'inner')).toEqual({ acquired: false })
          expect(inner.isHeld).toBe(false)
          expect(await observer.holders(k)).toEqual([await pid(outer.db)])
          expect(await outer.release()).toBe(true)
          expect(await observer.locks(k)).toEqual([])
        },
      )

      it.skipIf(caps.leaseDb === false || caps.transactionScope === false)(
        'does not let a handle on lease.db take the transaction lock withLock holds',
        async () => {
          const pool = await open()
          const k = key('lease-transaction')
          const seen = await lib.withLock(
            pool.db,
            k,
            async ({ db }) => ({
              tried: await lib.createLock(db, k, { scope: 'transaction' }).tryAcquire(),
              nested: await lib.tryWithLock(db, k, () => 'inner', { scope: 'transaction' }),
              holders: await observer.holders(k),
              pid: await pid(db),
            }),
            { scope: 'transaction' },
          )
          expect(seen).toEqual({ tried: false, nested: { acquired: false }, holders: [seen.pid], pid: seen.pid })
          expect(await observer.locks(k)).toEqual([])
        },
      )

      it.skipIf(!caps.savepointHandle)("does not let a savepoint's handle take the lock its transaction's handle holds", async () => {
        const pool = await open()
        const k = key('tx-then-savepoint')
        await inTransaction(pool.db, async (tx) => {
          await lib.createLock(tx, k, { scope: 'transaction' }).acquire()
          await inSavepoint(tx, async (savepoint) => {
            const inner = lib.createLock(savepoint, k, { scope: 'transaction' })
            expect(await inner.tryAcquire()).toBe(false)
            await expect(inner.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
            expect(await lib.tryWithLock(savepoint, k, () => 'inner', { scope: 'transaction' })).toEqual({ acquired: false })
          })
          expect(await observer.holders(k)).toEqual([await pid(tx)])
        })
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.savepointHandle)("does not let a transaction's handle take the lock one of its savepoints holds", async () => {
        const pool = await open()
        const k = key('savepoint-then-tx')
        await inTransaction(pool.db, (tx) =>
          inSavepoint(tx, async (savepoint) => {
            await lib.createLock(savepoint, k, { scope: 'transaction' }).acquire()
            expect(await lib.createLock(tx, k, { scope: 'transaction' }).tryAcquire()).toBe(false)
            expect(await lib.tryWithLock(tx, k, () => 'outer', { scope: 'transaction' })).toEqual({ acquired: false })
            expect(await observer.holders(k)).toEqual([await pid(tx)])
          }),
        )
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.savepointHandle)(
        "makes a savepoint's handle wait for its transaction's handle, and take the lock once released",
        async () => {
          const pool = await open()
          const k = key('savepoint-waits')
          await inTransaction(pool.db, async (tx) => {
            const outer = await lib.createLock(tx, k).acquire()
            await inSavepoint(tx, async (savepoint) => {
              const inner = lib.createLock(savepoint, k)
              const waiting = inner.acquire()
              await sleep(50)
              expect(inner.isHeld).toBe(false)
              expect(await outer.release()).toBe(true)
              await waiting
              expect(inner.isHeld).toBe(true)
              expect(await observer.holders(k)).toEqual([await pid(savepoint)])
              expect(await inner.release()).toBe(true)
              expect(await observer.locks(k)).toEqual([])
            })
          })
        },
      )

      it.skipIf(!caps.savepointHandle)('does not let a savepoint of lease.db take the transaction lock withLock holds', async () => {
        const pool = await open()
        const k = key('lease-savepoint')
        const seen = await lib.withLock(
          pool.db,
          k,
          ({ db }) =>
            inSavepoint(db, async (savepoint) => ({
              tried: await lib.createLock(savepoint, k, { scope: 'transaction' }).tryAcquire(),
              holders: await observer.holders(k),
              pid: await pid(db),
            })),
          { scope: 'transaction' },
        )
        expect(seen).toEqual({ tried: false, holders: [seen.pid], pid: seen.pid })
        expect(await observer.locks(k)).toEqual([])
      })
    })

    describe('handle state', () => {
      it('rejects acquire on a handle that holds its lock with ALREADY_HELD', async () => {
        const pool = await open()
        const lock = caps.sessionOnPool ? lib.createLock(pool.db, key('held')) : undefined
        if (lock === undefined) return
        await lock.acquire()
        await expect(lock.acquire()).rejects.toMatchObject({ code: 'ALREADY_HELD' })
        await expect(lock.tryAcquire()).rejects.toMatchObject({ code: 'ALREADY_HELD' })
        await lock.release()
      })

      it('resolves release false without SQL when not held', async () => {
        const pool = await open()
        const lock = lib.createLock(pool.db, key('not-held'))
        await pool.close()
        expect(await lock.release()).toBe(false)
      })

      it.skipIf(!caps.sessionOnPool)('releases at the end of an await using block', async () => {
        const pool = await open()
        const k = key('using')
        {
          await using held = await lib.createLock(pool.db, k).acquire()
          expect(held.isHeld).toBe(true)
          expect(await observer.holders(k)).toHaveLength(1)
        }
        expect(await observer.locks(k)).toEqual([])
      })
    })
  })
}
