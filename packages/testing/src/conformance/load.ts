import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { describeFeature, scopesOf, sleep } from './helpers.ts'

/**
 * Pools under load: no leaked connection or lock, same-key waiters queued in memory, no starvation.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeLoad } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeLoad(adapter)
 * ```
 */
export function describeLoad(adapter: AdapterUnderTest): void {
  const { lib } = adapter
  describeFeature(adapter, ({ key, observer, open }) => {
    describe('pools under load', () => {
      const scopes = scopesOf(adapter.caps)
      it('leaks no connection and no lock after many concurrent withLock cycles', async () => {
        const pool = await open('pool', 10)
        const keys = Array.from({ length: 5 }, (_, i) => key(`load-${i}`))
        let done = 0
        await Promise.all(
          Array.from({ length: 200 }, (_, i) =>
            lib.withLock(
              pool.db,
              keys[i % keys.length] as string,
              async ({ db = pool.db }) => {
                await adapter.query(db, 'SELECT 1')
                done += 1
              },
              { scope: i % 3 === 0 ? scopes.at(-1) : 'session', mode: i % 5 === 0 ? 'shared' : 'exclusive' },
            ),
          ),
        )
        expect(done).toBe(200)
        const backends = await observer.backends(pool.applicationName)
        expect(backends.length).toBeLessThanOrEqual(10)
        expect(backends.filter((backend) => backend.state !== 'idle')).toEqual([])
        for (const k of keys) expect(await observer.locks(k)).toEqual([])
      }, 60_000)

      for (const scope of scopesOf(adapter.caps)) {
        it(`queues same-key waiters of a pool in memory, so none waits in Postgres while one holds (${scope} scope)`, async () => {
          const pool = await open('pool', 10)
          const k = key(`in-memory-${scope}`)
          let finishFirst: () => void = () => undefined
          const first = lib.withLock(pool.db, k, () => new Promise<void>((resolve) => (finishFirst = resolve)), { scope })
          await observer.until('the first holder is granted', async () => (await observer.holders(k)).length === 1)
          const seenInside: number[][] = []
          const rest = Array.from({ length: 5 }, () =>
            lib.withLock(pool.db, k, async () => void seenInside.push(await observer.waiters(k)), { scope }),
          )
          await sleep(100)
          expect(await observer.waiters(k)).toEqual([])
          finishFirst()
          await Promise.all([first, ...rest])
          expect(seenInside).toEqual([[], [], [], [], []])
          expect(await observer.locks(k)).toEqual([])
        })
      }

      it('does not starve the pool when many waiters share one key and fn needs another connection', async () => {
        const pool = await open('pool', 10)
        const k = key('starve')
        let done = 0
        await Promise.all(
          Array.from({ length: 200 }, () =>
            lib.withLock(pool.db, k, async ({ db = pool.db }) => {
              await adapter.query(db, 'SELECT 1')
              await adapter.query(pool.db, 'SELECT 2')
              done += 1
            }),
          ),
        )
        expect(done).toBe(200)
        expect((await observer.backends(pool.applicationName)).length).toBeLessThanOrEqual(10)
      }, 60_000)
    })
  })
}
