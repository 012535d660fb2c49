import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { describeFeature, outcome, scopesOf, sleep } from './helpers.ts'

/**
 * `timeoutMs` bounds the whole acquire, the wait for a pooled connection included: with the only
 * connection of a pool busy, `withLock` gives up on time, and the connection it was waiting for
 * goes back to its pool when it arrives late.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describePoolWait } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describePoolWait(adapter)
 * ```
 */
export function describePoolWait(adapter: AdapterUnderTest): void {
  const { lib } = adapter
  describeFeature(adapter, ({ key, open }) => {
    describe('timeouts while the pool is exhausted', () => {
      for (const scope of scopesOf(adapter.caps)) {
        it(`counts the wait for a pooled connection in timeoutMs and leaves the pool intact (${scope} scope)`, async () => {
          const pool = await open('pool', 1)
          const k = key(`pool-wait-${scope}`)
          const busy = adapter.query(pool.db, 'SELECT pg_sleep(0.8)')
          await sleep(50)
          const started = performance.now()
          const result = await outcome(lib.withLock(pool.db, k, () => 'ran', { scope, timeoutMs: 200 }))
          const elapsed = performance.now() - started
          expect(result.ok ? result.value : result.error).toBeInstanceOf(LockTimeoutError)
          expect(result.ok ? undefined : result.error).toMatchObject({ code: 'TIMEOUT', timeoutMs: 200, key: k })
          expect(elapsed).toBeGreaterThanOrEqual(190)
          expect(elapsed).toBeLessThan(600)
          await busy
          expect(await lib.withLock(pool.db, k, () => 'usable', { scope, timeoutMs: 2_000 })).toBe('usable')
          expect(await lib.withLock(pool.db, k, () => 'again', { scope })).toBe('again')
        })
      }

      it('bounds the try forms by timeoutMs too: they wait for a connection, never for the lock', async () => {
        const pool = await open('pool', 1)
        const k = key('pool-wait-try')
        const busy = adapter.query(pool.db, 'SELECT pg_sleep(0.6)')
        await sleep(50)
        const tried = await outcome(lib.tryWithLock(pool.db, k, () => 'ran', { timeoutMs: 100 }))
        expect(tried.ok ? tried.value : tried.error).toMatchObject({ code: 'TIMEOUT', timeoutMs: 100, key: k })
        const lock = lib.createLock(pool.db, k)
        const acquired = await outcome(lock.tryAcquire({ timeoutMs: 100 }))
        expect(acquired.ok ? acquired.value : acquired.error).toMatchObject({ code: 'TIMEOUT', timeoutMs: 100, key: k })
        expect(lock.isHeld).toBe(false)
        await busy
        expect(await lock.tryAcquire({ timeoutMs: 2_000 })).toBe(true)
        expect(await lock.release()).toBe(true)
      })
    })
  })
}
