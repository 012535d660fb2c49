import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { describeFeature, sleep } from './helpers.ts'

/**
 * Locks on one connection the caller owns: many at once, exclusion between handles, `RELEASE_FAILED`, `DISCARD ALL`.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeOneConnection } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeOneConnection(adapter)
 * ```
 */
export function describeOneConnection(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, observer, open, pid }) => {
    describe('one connection', () => {
      it.skipIf(!caps.singleConnection)('holds 25 locks on one connection with no driver warning, and leaves no listener', async () => {
        const connection = await open('connection')
        const warnings: Error[] = []
        const onWarning = (warning: Error) => warnings.push(warning)
        process.on('warning', onWarning)
        try {
          const before = await adapter.listenerCount?.(connection.db)
          const locks = await Promise.all(Array.from({ length: 25 }, (_, i) => lib.createLock(connection.db, key(`many-${i}`)).acquire()))
          expect((await Promise.all(locks.map((lock) => lock.release()))).every(Boolean)).toBe(true)
          expect(await adapter.listenerCount?.(connection.db)).toBe(before)
          await sleep(10) // process warnings are emitted on the next tick
        } finally {
          process.off('warning', onWarning)
        }
        expect(warnings.map((warning) => `${warning.name}: ${warning.message}`)).toEqual([])
      })

      it.skipIf(!caps.singleConnection)('does not let two handles on one connection both hold an exclusive lock', async () => {
        const connection = await open('connection')
        const k = key('same-connection')
        const first = lib.createLock(connection.db, k)
        const second = lib.createLock(connection.db, k)
        expect(await first.tryAcquire()).toBe(true)
        expect(await second.tryAcquire()).toBe(false)
        await expect(second.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
        const waiting = second.acquire()
        await sleep(20)
        expect(second.isHeld).toBe(false)
        expect(await first.release()).toBe(true)
        await waiting
        expect(second.isHeld).toBe(true)
        expect(await observer.holders(k)).toEqual([await pid(connection.db)])
        expect(await second.release()).toBe(true)
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.singleConnection)(
        'reports RELEASE_FAILED and keeps the lock when the caller left its transaction failed',
        async () => {
          const connection = await open('connection')
          const k = key('release-failed')
          const lock = await lib.createLock(connection.db, k).acquire()
          await adapter.query(connection.db, 'BEGIN')
          await adapter.query(connection.db, 'SELECT 1 / 0').catch(() => undefined)
          await expect(lock.release()).rejects.toMatchObject({ code: 'RELEASE_FAILED', key: k })
          expect(lock.isHeld).toBe(true)
          expect(await observer.holders(k)).toHaveLength(1)
          await adapter.query(connection.db, 'ROLLBACK')
          expect(await lock.release()).toBe(true)
          expect(await observer.locks(k)).toEqual([])
        },
      )

      it.skipIf(!caps.singleConnection)('runs withLock on a connection the caller owns without closing it', async () => {
        const connection = await open('connection')
        const k = key('own-connection')
        expect(await lib.withLock(connection.db, k, ({ db }) => pid(db))).toBe(await pid(connection.db))
        expect(await lib.withLock(connection.db, k, () => 'again', { scope: 'transaction' })).toBe('again')
        expect(await adapter.query(connection.db, 'SELECT 1 AS one')).toEqual([{ one: 1 }])
      })

      it.skipIf(!caps.singleConnection)('keeps locking on a connection after DISCARD ALL drops its prepared statements', async () => {
        const connection = await open('connection')
        const k = key('discard-all')
        const lock = lib.createLock(connection.db, k)
        for (let round = 0; round < 3; round += 1) {
          await lock.acquire()
          expect(await observer.holders(k)).toEqual([await pid(connection.db)])
          expect(await lock.release()).toBe(true)
          expect(await lock.tryAcquire()).toBe(true)
          expect(await lock.release()).toBe(true)
          await adapter.query(connection.db, 'DISCARD ALL')
        }
        expect(await observer.locks(k)).toEqual([])
      })
    })
  })
}
