import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { describeFeature, outcome, scopesOf } from './helpers.ts'

/**
 * `timeoutMs`: rejects with `LockTimeoutError` on time, and `0` is a single try.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeTimeouts } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeTimeouts(adapter)
 * ```
 */
export function describeTimeouts(adapter: AdapterUnderTest): void {
  const { lib } = adapter
  describeFeature(adapter, ({ key, observer, open }) => {
    describe('timeouts', () => {
      for (const scope of scopesOf(adapter.caps)) {
        it(`rejects with LockTimeoutError close to timeoutMs and leaves nothing waiting (${scope} scope)`, async () => {
          const [a, b] = [await open(), await open()]
          const k = key(`timeout-${scope}`)
          await lib.withLock(a.db, k, async () => {
            const started = performance.now()
            const result = await outcome(lib.withLock(b.db, k, () => 'ran', { scope, timeoutMs: 300 }))
            const elapsed = performance.now() - started
            expect(result.ok).toBe(false)
            expect(result.ok ? undefined : result.error).toBeInstanceOf(LockTimeoutError)
            expect((result as { error: LockTimeoutError }).error).toMatchObject({ code: 'TIMEOUT', timeoutMs: 300, key: k })
            expect(elapsed).toBeGreaterThanOrEqual(290)
            expect(elapsed).toBeLessThan(2_000)
            expect(await observer.waiters(k)).toEqual([])
          })
          expect(await lib.withLock(b.db, k, () => 'usable', { scope })).toBe('usable')
        })
      }

      it('treats timeoutMs 0 as a single try', async () => {
        const [a, b] = [await open(), await open()]
        const k = key('timeout-zero')
        await lib.withLock(a.db, k, async () => {
          await expect(lib.withLock(b.db, k, () => 1, { timeoutMs: 0 })).rejects.toBeInstanceOf(LockTimeoutError)
        })
        expect(await lib.withLock(b.db, k, () => 1, { timeoutMs: 0 })).toBe(1)
      })
    })
  })
}
