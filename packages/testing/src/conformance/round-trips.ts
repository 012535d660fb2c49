import { describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { FaultProxy } from '../fault-proxy.ts'
import { describeFeature } from './helpers.ts'

/**
 * Round trips, counted by a proxy: one to take a session lock, one to release it.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeRoundTrips } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeRoundTrips(adapter)
 * ```
 */
export function describeRoundTrips(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, open, url }) => {
    describe('round trips', () => {
      it('costs one round trip to take a session lock and one to release it', async () => {
        const proxy = await FaultProxy.start(url)
        onTestFinished(() => proxy.close())
        const pool = await open('pool', 2, proxy.url)
        const k = key('round-trips')
        // Warm every connection first: a driver may prepare a statement in a round trip of its own,
        // once per connection (postgres.js asks for parameter types before it first binds them).
        const both = [lib.createLock(pool.db, key('round-trips-a')), lib.createLock(pool.db, key('round-trips-b'))]
        await Promise.all(both.map((lock) => lock.acquire()))
        await Promise.all(both.map((lock) => lock.release()))
        await Promise.all(both.map((lock) => lock.tryAcquire()))
        await Promise.all(both.map((lock) => lock.release()))
        // and one transaction lock: over an ORM, pglock learns the class of its `tx` from the ORM's own first transaction
        if (caps.transactionScope !== false) await lib.withLock(pool.db, key('round-trips-a'), () => undefined, { scope: 'transaction' })
        const counted = async (action: () => Promise<unknown>) => {
          const before = proxy.roundTrips
          await action()
          return proxy.roundTrips - before
        }
        const lock = lib.createLock(pool.db, k)
        expect(await counted(() => lock.acquire())).toBe(1)
        expect(await counted(() => lock.release())).toBe(1)
        expect(await counted(() => lock.tryAcquire())).toBe(1)
        expect(await counted(() => lock.release())).toBe(1)
        expect(await counted(() => lib.withLock(pool.db, k, () => undefined, { timeoutMs: 1_000 }))).toBe(2)
        if (caps.transactionScope !== false) {
          expect(await counted(() => lib.withLock(pool.db, k, () => undefined, { scope: 'transaction' }))).toBe(caps.beginWithLock ? 2 : 3)
        }
      })
    })
  })
}
