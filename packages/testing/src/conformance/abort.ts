import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { settleWithin } from '../bench.ts'
import { FaultProxy } from '../fault-proxy.ts'
import { describeFeature, outcome, scopesOf, sleep } from './helpers.ts'

/**
 * `signal`: cancels the wait in Postgres, and never leaves a lock held when abort or timeout races the grant.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeAbort } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeAbort(adapter)
 * ```
 */
export function describeAbort(adapter: AdapterUnderTest): void {
  const { lib } = adapter
  describeFeature(adapter, ({ key, observer, open, url }) => {
    /** Starts a `withLock` on `db` that waits in Postgres for `k`, then aborts it. */
    const abortWhileWaiting = async (db: unknown, k: string, scope: 'session' | 'transaction') => {
      const controller = new AbortController()
      const waiting = outcome(lib.withLock(db, k, () => 'ran', { scope, signal: controller.signal }))
      await observer.until('the second pool waits in Postgres', async () => (await observer.waiters(k)).length === 1)
      const reason = new Error('caller gave up')
      controller.abort(reason)
      return { waiting, reason }
    }

    describe('abort', () => {
      for (const scope of scopesOf(adapter.caps)) {
        it(`cancels the wait in Postgres, not just the promise (${scope} scope)`, async () => {
          const [a, b] = [await open(), await open()]
          const k = key(`abort-${scope}`)
          await lib.withLock(a.db, k, async () => {
            const { waiting, reason } = await abortWhileWaiting(b.db, k, scope)
            expect(await waiting).toEqual({ ok: false, error: reason })
            expect(await observer.waiters(k)).toEqual([])
          })
          expect(await lib.withLock(b.db, k, () => 'usable', { scope })).toBe('usable')
        })
      }

      for (const scope of scopesOf(adapter.caps)) {
        it(`settles an abort where the server gives no cancel key, as RDS Proxy, leaving nothing held (${scope} scope)`, async () => {
          const proxy = await FaultProxy.start(url)
          onTestFinished(() => proxy.close())
          proxy.withholdBackendKey = true
          const [a, b] = [await open(), await open('pool', 2, proxy.url)]
          const k = key(`abort-no-key-${scope}`)
          // a lock on each connection first: postgres.js 3.4 tells which connection a lock runs on only from its second.
          // Both keys held elsewhere, so that each of b's locks waits on a connection of its own (multiplexed ones too)
          const other = key('abort-no-key-other')
          let warming: Promise<unknown> | undefined
          await lib.withLock(a.db, k, () =>
            lib.withLock(a.db, other, async () => {
              warming = Promise.all([k, other].map((each) => lib.withLock(b.db, each, () => undefined, { scope })))
              await observer.until(
                'b waits for both keys',
                async () => (await observer.waiters(k)).length === 1 && (await observer.waiters(other)).length === 1,
              )
            }),
          )
          await warming
          await lib.withLock(a.db, k, async () => {
            const { waiting, reason } = await abortWhileWaiting(b.db, k, scope)
            // the lock is still held here: without a cancel, only closing the connection can end the wait
            expect(await settleWithin(waiting, 5_000)).toEqual({ state: 'fulfilled', value: { ok: false, error: reason } })
          })
          await observer.until('nothing holds or waits for the key', async () => (await observer.locks(k)).length === 0)
          expect(await lib.withLock(b.db, k, () => 'usable', { scope })).toBe('usable')
        })
      }

      it('rejects at once with the reason of an already aborted signal', async () => {
        const pool = await open()
        const reason = new Error('too late')
        await expect(lib.withLock(pool.db, key('pre-aborted'), () => 1, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
      })

      for (const scope of scopesOf(adapter.caps)) {
        it(`never leaves a lock held when abort or timeout races the grant (${scope} scope)`, async () => {
          const [a, b] = [await open(), await open()]
          const k = key(`race-${scope}`)
          const rounds = 40
          let granted = 0
          let refused = 0
          for (let round = 0; round < rounds; round += 1) {
            const holder = await lib.createLock(a.db, k).acquire()
            const controller = new AbortController()
            const byTimeout = round % 2 === 0
            const waiter = outcome(
              lib.withLock(b.db, k, () => 'ran', byTimeout ? { scope, timeoutMs: 15 } : { scope, signal: controller.signal }),
            )
            if (byTimeout) await sleep(13 + (round % 5))
            else {
              await observer.until('the waiter waits in Postgres', async () => (await observer.waiters(k)).length === 1)
              setTimeout(() => controller.abort(new Error('raced')), (round >> 1) % 3)
              await sleep(round % 3)
            }
            await holder.release()
            const result = await waiter
            if (result.ok) granted += 1
            else {
              refused += 1
              expect(result.error instanceof LockTimeoutError || (result.error as Error).message === 'raced').toBe(true)
            }
            expect(await observer.locks(k)).toEqual([])
          }
          expect(granted + refused).toBe(rounds)
        }, 60_000)
      }
    })
  })
}
