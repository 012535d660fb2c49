import { LockLostError, PgLockError } from '@pglock/core'
import { afterAll, describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { abortedWithin, Bench, type BenchHandle, scaled, settleWithin } from './bench.ts'
import { FaultProxy } from './fault-proxy.ts'
import { holdUntilReleased } from './races.ts'

/** How soon a reset connection must be reported: an event, not a benchmark, so the bound is generous. */
const RESET_BOUND_MS = 2_000
/** The keep-alive interval used against a blackholed connection, and the bound it must meet. */
const KEEP_ALIVE_MS = 200
const KEEP_ALIVE_BOUND_MS = 1_000
/** How long a promise may stay pending after a fault before the test calls it stuck. */
const SETTLE_BOUND_MS = 5_000

/** Rounds of the repeated-fault test: a few under `pnpm test`, 300 under `pnpm test:soak`. */
export const FAULT_ROUNDS = scaled(6, 300)

/** Counts the faults a file injected, for the run's figures. */
export class FaultTally {
  #count = 0
  add(n = 1): void {
    this.#count += n
  }
  get count(): number {
    return this.#count
  }
}

/**
 * Fault scenarios for one adapter, through an in-process {@link FaultProxy}: the holder's
 * connection reset, a blackholed holder found by `keepAliveMs`, a waiter's connection cut,
 * resets in the middle of a grant and of a release, and a server that refuses connections.
 * Every scenario asserts what a user sees (the signal, `isHeld`, `release()`, the promise's
 * outcome within a bound) and what Postgres sees (`pg_locks`), and ends with the pool usable.
 *
 * @example
 * ```ts
 * import { describeFaults } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeFaults(adapter)
 * ```
 */
export function describeFaults(adapter: AdapterUnderTest, tally = new FaultTally()): void {
  const { lib, caps } = adapter

  describe(`${adapter.name}: faults`, () => {
    const bench = new Bench(adapter, 'faults').install()
    afterAll(() => {
      console.log(`faults ${adapter.name}: ${tally.count} faults injected`)
    })

    async function proxy(): Promise<FaultProxy> {
      const started = await FaultProxy.start(bench.url)
      onTestFinished(() => started.close())
      return started
    }

    function inject<T extends number>(count: T): T {
      expect(count, 'the fault reached a connection').toBeGreaterThan(0)
      tally.add(count)
      return count
    }

    async function expectFreeSoon(key: string): Promise<void> {
      await bench.observer.until(
        `nobody holds or awaits ${key}`,
        async () => (await bench.observer.locks(key)).length === 0,
        SETTLE_BOUND_MS,
      )
    }

    describe.skipIf(!caps.survivesConnectionLoss)('holder connection reset', () => {
      it.skipIf(!caps.sessionOnPool)(`aborts lock.signal with LockLostError within ${RESET_BOUND_MS} ms`, async () => {
        const net = await proxy()
        const pool = await bench.open({ url: net.url, max: 2 })
        const key = bench.key('reset-holder')
        const lock = await lib.createLock(pool.db, key).acquire()
        expect(await bench.observer.holders(key)).toHaveLength(1)
        const lost = abortedWithin(lock.signal, RESET_BOUND_MS)
        inject(net.reset())
        const { reason, afterMs } = await lost
        expect(reason).toBeInstanceOf(LockLostError)
        expect(reason).toMatchObject({ code: 'LOST', key })
        expect(afterMs).toBeLessThan(RESET_BOUND_MS)
        expect(lock.isHeld).toBe(false)
        expect(await lock.release()).toBe(false)
        await expectFreeSoon(key)
        expect(await lib.withLock(pool.db, key, () => 'pool still works')).toBe('pool still works')
        await bench.expectAllConnectionsUsable(pool)
      })

      for (const scope of ['session', 'transaction'] as const) {
        it(`aborts lease.signal and rejects withLock with LockLostError (${scope} scope)`, async () => {
          const net = await proxy()
          const pool = await bench.open({ url: net.url, max: 2 })
          const key = bench.key(`reset-lease-${scope}`)
          let afterMs = Number.NaN
          const run = lib.withLock(
            pool.db,
            key,
            async ({ signal }) => {
              const lost = abortedWithin(signal, RESET_BOUND_MS)
              inject(net.reset())
              afterMs = (await lost).afterMs
              return 'finished anyway'
            },
            { scope },
          )
          const result = await settleWithin(run, SETTLE_BOUND_MS)
          expect(result).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
          expect(afterMs).toBeLessThan(RESET_BOUND_MS)
          await expectFreeSoon(key)
          expect(await lib.withLock(pool.db, key, () => 'pool still works', { scope })).toBe('pool still works')
        })
      }

      it.skipIf(!caps.singleConnection)('aborts the signal of a lock held on a single connection', async () => {
        const net = await proxy()
        const connection = await bench.open({ kind: 'connection', url: net.url })
        const key = bench.key('reset-connection')
        const lock = await lib.createLock(connection.db, key).acquire()
        const lost = abortedWithin(lock.signal, RESET_BOUND_MS)
        inject(net.reset())
        expect((await lost).reason).toBeInstanceOf(LockLostError)
        expect(lock.isHeld).toBe(false)
        expect(await lock.release()).toBe(false)
        await expectFreeSoon(key)
      })
    })

    describe.skipIf(!caps.survivesConnectionLoss)('blackholed holder', () => {
      it.skipIf(!caps.sessionOnPool)(
        `reports the lock lost within ${KEEP_ALIVE_BOUND_MS} ms with keepAliveMs ${KEEP_ALIVE_MS}`,
        async () => {
          const net = await proxy()
          const pool = await bench.open({ url: net.url, max: 2 })
          const key = bench.key('blackhole')
          const lock = await lib.createLock(pool.db, key, { keepAliveMs: KEEP_ALIVE_MS }).acquire()
          const lost = abortedWithin(lock.signal, KEEP_ALIVE_BOUND_MS * 3)
          inject(net.blackhole())
          const { reason, afterMs } = await lost
          expect(reason).toBeInstanceOf(LockLostError)
          expect(afterMs).toBeLessThan(KEEP_ALIVE_BOUND_MS)
          expect(afterMs).toBeGreaterThanOrEqual(KEEP_ALIVE_MS - 20)
          expect(lock.isHeld).toBe(false)
          expect(await settleWithin(lock.release(), SETTLE_BOUND_MS)).toEqual({ state: 'fulfilled', value: false })
          await expectFreeSoon(key)
          expect(await lib.withLock(pool.db, key, () => 'pool still works')).toBe('pool still works')
        },
      )

      it.skipIf(!caps.sessionOnPool)('settles a release sent into the blackhole within the keep-alive bound', async () => {
        const net = await proxy()
        const pool = await bench.open({ url: net.url, max: 2 })
        const key = bench.key('blackhole-release')
        const lock = await lib.createLock(pool.db, key, { keepAliveMs: KEEP_ALIVE_MS }).acquire()
        inject(net.blackhole())
        const result = await settleWithin(lock.release(), KEEP_ALIVE_BOUND_MS * 3)
        expect(result).toEqual({ state: 'fulfilled', value: false })
        expect(lock.signal.reason).toBeInstanceOf(LockLostError)
        expect(lock.isHeld).toBe(false)
        await expectFreeSoon(key)
      })

      it('reports it lost inside withLock too (transaction scope)', async () => {
        const net = await proxy()
        const pool = await bench.open({ url: net.url, max: 2 })
        const key = bench.key('blackhole-xact')
        const run = lib.withLock(
          pool.db,
          key,
          async ({ signal }) => {
            const lost = abortedWithin(signal, KEEP_ALIVE_BOUND_MS * 3)
            inject(net.blackhole())
            return lost
          },
          { scope: 'transaction', keepAliveMs: KEEP_ALIVE_MS },
        )
        const result = await settleWithin(run, SETTLE_BOUND_MS)
        expect(result).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
        await expectFreeSoon(key)
      })

      it.skipIf(!caps.sessionOnPool)('goes unnoticed without keepAliveMs: the driver sees no error (why the probe exists)', async () => {
        const net = await proxy()
        const pool = await bench.open({ url: net.url, max: 2 })
        const key = bench.key('blackhole-silent')
        const lock = await lib.createLock(pool.db, key).acquire()
        inject(net.blackhole())
        await new Promise((resolve) => setTimeout(resolve, KEEP_ALIVE_MS * 3))
        expect(lock.signal.aborted).toBe(false)
        expect(lock.isHeld).toBe(true)
        net.reset()
        await abortedWithin(lock.signal, RESET_BOUND_MS)
        expect(await lock.release()).toBe(false)
        await expectFreeSoon(key)
      })
    })

    describe.skipIf(!caps.survivesConnectionLoss)('waiter connection cut', () => {
      const waits = [
        { label: 'blocking', options: {} },
        { label: 'with timeoutMs', options: { timeoutMs: 30_000 } },
        { label: 'with a signal', options: { signal: new AbortController().signal } },
        { label: 'transaction scope', options: { scope: 'transaction' as const } },
      ]
      for (const { label, options } of waits) {
        it(`rejects the waiter and leaves no phantom hold (${label})`, async () => {
          const net = await proxy()
          const holderPool = await bench.open({ max: 2 })
          const waiterPool = await bench.open({ url: net.url, max: 2 })
          const key = bench.key(`cut-waiter-${label}`)
          const holder = await lib.createLock(holderPool.db, key).acquire()
          const waiter = lib.withLock(waiterPool.db, key, () => 'ran', options)
          await bench.observer.until('the waiter waits in Postgres', async () => (await bench.observer.waiters(key)).length === 1)
          inject(net.reset())
          const result = await settleWithin(waiter, RESET_BOUND_MS)
          expect(result.state).toBe('rejected')
          expect((result as { error: unknown }).error).not.toBeInstanceOf(PgLockError)
          await bench.observer.until(
            'the dead waiter’s backend stops waiting while the lock is still held',
            async () => (await bench.observer.waiters(key)).length === 0,
            RESET_BOUND_MS,
          )
          await holder.release()
          await expectFreeSoon(key)
          const next = await lib.createLock(waiterPool.db, key).acquire()
          expect(await bench.observer.holders(key)).toHaveLength(1)
          await next.release()
          await bench.expectAllConnectionsUsable(waiterPool)
        })
      }
    })

    describe('resets mid-statement', () => {
      it.skipIf(!caps.sessionOnPool || !caps.survivesConnectionLoss)(
        'rejects an acquire whose grant is cut in flight, and leaves nothing held',
        async () => {
          const net = await proxy()
          const pool = await bench.open({ url: net.url, max: 2 })
          const key = bench.key('cut-grant')
          await lib.withLock(pool.db, bench.key('warm'), () => undefined)
          net.latencyMs = 150
          const lock = lib.createLock(pool.db, key)
          const acquiring = lock.acquire()
          await bench.observer.until('Postgres granted the lock', async () => (await bench.observer.holders(key)).length === 1)
          inject(net.reset())
          const result = await settleWithin(acquiring, SETTLE_BOUND_MS)
          expect(result.state).toBe('rejected')
          expect(lock.isHeld).toBe(false)
          await expectFreeSoon(key)
          net.latencyMs = 0
          expect(await lib.withLock(pool.db, key, () => 'pool still works')).toBe('pool still works')
        },
      )

      it.skipIf(!caps.sessionOnPool)('settles a release whose unlock is cut in flight, and leaves nothing held', async () => {
        const net = await proxy()
        const pool = await bench.open({ url: net.url, max: 2 })
        const key = bench.key('cut-release')
        const lock = await lib.createLock(pool.db, key).acquire()
        net.latencyMs = 150
        const releasing = lock.release()
        await new Promise((resolve) => setTimeout(resolve, 20))
        inject(net.reset())
        const result = await settleWithin(releasing, SETTLE_BOUND_MS)
        expect(result.state).toBe('fulfilled')
        expect(lock.isHeld).toBe(false)
        await expectFreeSoon(key)
        net.latencyMs = 0
        expect(await lib.withLock(pool.db, key, () => 'pool still works')).toBe('pool still works')
        await bench.expectAllConnectionsUsable(pool)
      })
    })

    describe.skipIf(!caps.survivesConnectionLoss)('repeated faults', () => {
      it(`reports every loss and leaks nothing over ${FAULT_ROUNDS} rounds of holder resets and waiter cuts`, async () => {
        const net = await proxy()
        const direct = await bench.open({ max: 2 })
        const pool = await bench.open({ url: net.url, max: 3 })
        const key = bench.key('fault-rounds')
        for (let round = 0; round < FAULT_ROUNDS; round += 1) {
          const scope = round % 4 < 2 ? ('session' as const) : ('transaction' as const)
          if (round % 2 === 0) {
            const run = lib.withLock(
              pool.db,
              key,
              async ({ signal }) => {
                const lost = abortedWithin(signal, RESET_BOUND_MS)
                inject(net.reset())
                return lost
              },
              { scope },
            )
            expect(await settleWithin(run, SETTLE_BOUND_MS), `round ${round}`).toMatchObject({
              state: 'rejected',
              error: expect.any(LockLostError),
            })
          } else {
            const holder = await holdUntilReleased(adapter, direct.db, key)
            const waiter = lib.withLock(pool.db, key, () => 'ran', { scope })
            await bench.observer.until('the waiter waits in Postgres', async () => (await bench.observer.waiters(key)).length === 1)
            inject(net.reset())
            expect((await settleWithin(waiter, RESET_BOUND_MS)).state, `round ${round}`).toBe('rejected')
            await bench.observer.until('the dead waiter leaves the queue', async () => (await bench.observer.waiters(key)).length === 0)
            await holder.release()
          }
          await expectFreeSoon(key)
        }
        expect(await lib.withLock(pool.db, key, () => 'pool still works')).toBe('pool still works')
        await bench.expectAllConnectionsUsable(pool)
      }, 600_000)
    })

    describe('server unreachable', () => {
      /** Opens a pool through a proxy that refuses connections, and expects a lock in each scope to fail within the bound. */
      async function refused(label: string): Promise<{ net: FaultProxy; pool: BenchHandle; key: string }> {
        const net = await proxy()
        const pool = await bench.open({ url: net.url, max: 2 })
        const key = bench.key(label)
        net.refuseNew = true
        tally.add()
        for (const scope of ['session', 'transaction'] as const) {
          const result = await settleWithin(
            lib.withLock(pool.db, key, () => 'ran', { scope }),
            SETTLE_BOUND_MS,
          )
          expect(result.state, `a ${scope} lock`).toBe('rejected')
        }
        return { net, pool, key }
      }

      it('rejects acquires while connections are refused', async () => {
        await refused('refused')
      })

      it.skipIf(!caps.poolRecovers)('works again, every connection of the pool, once connections are accepted again', async () => {
        const { net, pool, key } = await refused('refused-then-back')
        net.refuseNew = false
        expect(await lib.withLock(pool.db, key, () => 'back')).toBe('back')
        await bench.expectAllConnectionsUsable(pool)
      })
    })
  })
}
