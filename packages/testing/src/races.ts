import { LockTimeoutError } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { Bench, SOAK, scaled } from './bench.ts'

/** Rounds per combination of scope, race and handle: quick under `pnpm test`, 1,000 under `pnpm test:soak`. */
export const RACE_ROUNDS = scaled(15, 1_000)
/** The waiter's `timeoutMs` in timeout-vs-grant rounds; the holder releases within ±4 ms of it. */
const RACE_TIMEOUT_MS = 15

/** Holds `key` through `withLock` until `release()` is called (any adapter can do this). */
export async function holdUntilReleased(adapter: AdapterUnderTest, db: unknown, key: string): Promise<{ release(): Promise<void> }> {
  let inside: () => void = () => undefined
  let leave: () => void = () => undefined
  const entered = new Promise<void>((resolve) => {
    inside = resolve
  })
  const left = new Promise<void>((resolve) => {
    leave = resolve
  })
  const done = adapter.lib.withLock(db, key, async () => {
    inside()
    await left
  })
  await Promise.race([entered, done])
  return {
    async release() {
      leave()
      await done
    },
  }
}

const randomInt = (below: number) => Math.floor(Math.random() * below)

/**
 * Races at volume: a waiter whose abort or timeout fires within a few milliseconds of the
 * holder's release, round after round, in each scope, on a pool and on a single connection.
 * After every round Postgres must show nothing held or awaited for the key; after all rounds the
 * waiter's pool must have no connection stuck checked out and no backend busy or in a
 * transaction. Both outcomes of the race (granted, refused) are counted; in the soak each must
 * occur, which shows the rounds really hit the window.
 *
 * @example
 * ```ts
 * import { describeRaces } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeRaces(adapter)
 * ```
 */
export function describeRaces(adapter: AdapterUnderTest): void {
  const { lib, caps } = adapter

  describe(`${adapter.name}: races at volume`, () => {
    const bench = new Bench(adapter, 'races').install()
    const vias = caps.singleConnection ? (['pool', 'connection'] as const) : (['pool'] as const)

    for (const via of vias) {
      for (const scope of ['session', 'transaction'] as const) {
        for (const race of ['abort', 'timeout'] as const) {
          it(`${race} vs grant, ${RACE_ROUNDS} rounds, waiter on a ${via} (${scope} scope): nothing leaked`, async () => {
            const holderPool = await bench.open({ max: 2 })
            const waiter = await bench.open({ kind: via, max: 3 })
            const key = bench.key(`${race}-${via}-${scope}`)
            const reason = new Error('raced')
            let granted = 0
            let refused = 0
            const started = performance.now()
            for (let round = 0; round < RACE_ROUNDS; round += 1) {
              const holder = await holdUntilReleased(adapter, holderPool.db, key)
              const controller = new AbortController()
              const options = race === 'timeout' ? { scope, timeoutMs: RACE_TIMEOUT_MS } : { scope, signal: controller.signal }
              const waiting = lib
                .withLock(waiter.db, key, () => 'ran', options)
                .then(
                  () => 'granted' as const,
                  (error: unknown) => error,
                )
              if (race === 'timeout') {
                await new Promise((resolve) => setTimeout(resolve, RACE_TIMEOUT_MS - 4 + randomInt(9)))
              } else {
                await bench.observer.until('the waiter waits in Postgres', async () => (await bench.observer.waiters(key)).length === 1)
                setTimeout(() => controller.abort(reason), randomInt(4))
                await new Promise((resolve) => setTimeout(resolve, randomInt(4)))
              }
              await holder.release()
              const result = await waiting
              if (result === 'granted') granted += 1
              else {
                refused += 1
                if (race === 'timeout') expect(result).toBeInstanceOf(LockTimeoutError)
                else expect(result).toBe(reason)
              }
              const left = await bench.observer.locks(key)
              expect(left, `round ${round}: nothing held or awaited once the waiter settled`).toEqual([])
            }
            const seconds = ((performance.now() - started) / 1000).toFixed(1)
            console.log(
              `races ${adapter.name} ${race}/${via}/${scope}: ${RACE_ROUNDS} rounds, ${granted} granted, ${refused} refused, ${seconds} s`,
            )
            expect(granted + refused).toBe(RACE_ROUNDS)
            if (SOAK) {
              expect(granted, 'the waiter won some races').toBeGreaterThan(0)
              expect(refused, 'the waiter lost some races').toBeGreaterThan(0)
            }
            const backends = await bench.observer.backends(waiter.applicationName)
            expect(backends.length).toBeLessThanOrEqual(waiter.max)
            expect(backends.filter((backend) => backend.state !== 'idle')).toEqual([])
            await bench.expectAllConnectionsUsable(waiter)
          }, 600_000)
        }
      }
    }
  })
}
