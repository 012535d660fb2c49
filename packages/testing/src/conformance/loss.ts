import { LockLostError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { aborted, describeFeature, outcome, scopesOf, sleep } from './helpers.ts'

/**
 * Lost locks: a terminated holder aborts `lock.signal` / `lease.signal` with `LockLostError`.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeLoss } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeLoss(adapter)
 * ```
 */
export function describeLoss(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, observer, open }) => {
    describe('lost locks', () => {
      it.skipIf(!caps.sessionOnPool || !caps.survivesConnectionLoss)(
        'aborts lock.signal with LockLostError when the holding backend is terminated',
        async () => {
          const pool = await open()
          const k = key('lost')
          const lock = await lib.createLock(pool.db, k).acquire()
          const held = lock.db
          const [holder] = await observer.holders(k)
          await observer.terminate(holder as number)
          const reason = await aborted(lock.signal)
          expect(reason).toBeInstanceOf(LockLostError)
          expect(reason).toMatchObject({ code: 'LOST', key: k })
          expect(lock.isHeld).toBe(false)
          expect(lock.db).toBe(held) // still the handle it was typed as; its queries fail as the driver fails them
          expect(await lock.release()).toBe(false)
          expect(lock.db).toBeUndefined()
          expect(await lib.withLock(pool.db, k, () => 'pool still works')).toBe('pool still works')
        },
      )

      it.skipIf(!caps.sessionOnPool || caps.leaseDb === false)(
        'rejects withLock with LockLostError when fn unlocked the key through lease.db behind its back',
        async () => {
          // one connection, so that the next locks would get the same one back
          const pool = await open('pool', 1)
          const k = key('unlocked-behind')
          // the connection first prepares what each scope sends (postgres.js caches it per connection)
          for (const scope of scopesOf(adapter.caps)) await lib.withLock(pool.db, k, () => undefined, { scope })
          const result = await outcome(
            lib.withLock(pool.db, k, async ({ db }) => {
              await adapter.query(db, 'SELECT pg_advisory_unlock_all()')
              await adapter.query(db, 'DISCARD ALL')
              expect(await observer.holders(k)).toEqual([])
              return 'ran'
            }),
          )
          expect(result.ok).toBe(false)
          expect((result as { error: unknown }).error).toMatchObject({ code: 'LOST', key: k })
          // a session whose state pglock no longer knows is closed, not pooled: a driver's cache of
          // prepared statements would no longer match it (postgres.js fails a transaction's with 26000)
          for (const scope of scopesOf(adapter.caps)) {
            expect(await lib.withLock(pool.db, k, () => `pool still works (${scope})`, { scope })).toBe(`pool still works (${scope})`)
          }
          expect(await observer.holders(k)).toEqual([])
        },
      )

      for (const scope of scopesOf(adapter.caps)) {
        it.skipIf(!caps.survivesConnectionLoss)(
          `aborts lease.signal and rejects withLock with LockLostError when the holder dies (${scope} scope)`,
          async () => {
            const pool = await open()
            const k = key(`lost-lease-${scope}`)
            const result = await outcome(
              lib.withLock(
                pool.db,
                k,
                async ({ signal }) => {
                  const [holder] = await observer.holders(k)
                  await observer.terminate(holder as number)
                  await aborted(signal)
                  return 'finished anyway'
                },
                { scope },
              ),
            )
            expect(result.ok).toBe(false)
            expect((result as { error: unknown }).error).toBeInstanceOf(LockLostError)
            expect(await lib.withLock(pool.db, k, () => 'pool still works', { scope })).toBe('pool still works')
          },
        )

        it.skipIf(!caps.survivesConnectionLoss)(
          `hands fn an already aborted lease.signal when it reads it only after the loss (${scope} scope)`,
          async () => {
            const pool = await open()
            const k = key(`lost-unread-${scope}`)
            let late: AbortSignal | undefined
            let abortedWhenRead: boolean | undefined
            const result = await outcome(
              lib.withLock(
                pool.db,
                k,
                async (lease) => {
                  const [holder] = await observer.holders(k)
                  await observer.terminate(holder as number)
                  await sleep(1_200) // past the slowest detection: Kysely probes once a second
                  late = lease.signal
                  abortedWhenRead = late.aborted
                  return 'finished anyway'
                },
                { scope },
              ),
            )
            expect(abortedWhenRead).toBe(true)
            expect(late?.reason).toBeInstanceOf(LockLostError)
            expect(result.ok).toBe(false)
            expect((result as { error: unknown }).error).toBeInstanceOf(LockLostError)
          },
        )

        it.skipIf(!caps.survivesConnectionLoss)(
          `rejects withLock with LockLostError when fn never reads lease.signal (${scope} scope)`,
          async () => {
            const pool = await open()
            const k = key(`lost-never-read-${scope}`)
            const result = await outcome(
              lib.withLock(
                pool.db,
                k,
                async () => {
                  const [holder] = await observer.holders(k)
                  await observer.terminate(holder as number)
                  await sleep(200)
                  return 'finished anyway'
                },
                { scope },
              ),
            )
            expect(result.ok).toBe(false)
            expect((result as { error: unknown }).error).toMatchObject({ code: 'LOST', key: k })
            expect(await observer.holders(k)).toEqual([])
            expect(await lib.withLock(pool.db, k, () => 'pool still works', { scope })).toBe('pool still works')
          },
        )
      }
    })
  })
}
