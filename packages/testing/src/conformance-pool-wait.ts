import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest, Opened } from './adapter.ts'

/** What the pool-wait tests borrow from the conformance suite: its leak-checked `open` and its keys. */
export interface PoolWaitContext {
  open(kind: 'pool', max: number): Promise<Opened<unknown>>
  key(label: string): string
}

/**
 * `timeoutMs` bounds the whole acquire, the wait for a pooled connection included: with the only
 * connection of a pool busy, `withLock` gives up on time, and the connection it was waiting for
 * goes back to its pool when it arrives late.
 *
 * @example
 * ```ts
 * describePoolWait(adapter, { open, key })
 * ```
 */
export function describePoolWait(adapter: AdapterUnderTest, { open, key }: PoolWaitContext): void {
  const { lib } = adapter
  describe('timeouts while the pool is exhausted', () => {
    for (const scope of ['session', 'transaction'] as const) {
      it(`counts the wait for a pooled connection in timeoutMs and leaves the pool intact (${scope} scope)`, async () => {
        const pool = await open('pool', 1)
        const k = key(`pool-wait-${scope}`)
        const busy = adapter.query(pool.db, 'SELECT pg_sleep(0.8)')
        await new Promise((resolve) => setTimeout(resolve, 50))
        const started = performance.now()
        const failure = await lib
          .withLock(pool.db, k, () => 'ran', { scope, timeoutMs: 200 })
          .then(
            () => undefined,
            (error: unknown) => error,
          )
        const elapsed = performance.now() - started
        expect(failure).toBeInstanceOf(LockTimeoutError)
        expect(failure).toMatchObject({ code: 'TIMEOUT', timeoutMs: 200, key: k })
        expect(elapsed).toBeGreaterThanOrEqual(190)
        expect(elapsed).toBeLessThan(600)
        await busy
        expect(await lib.withLock(pool.db, k, () => 'usable', { scope, timeoutMs: 2_000 })).toBe('usable')
        expect(await lib.withLock(pool.db, k, () => 'again', { scope })).toBe('again')
      })
    }
  })
}
