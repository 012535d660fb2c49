import { randomBytes } from 'node:crypto'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { FaultProxy } from '../fault-proxy.ts'
import { runWorker } from '../processes.ts'
import { describeFeature, scopesOf } from './helpers.ts'

/** OS processes and cycles of each, all on one key, in the fencing test: as the issue asked, in every run. */
const FENCED_PROCESSES = 8
const FENCED_CYCLES = 200

/**
 * Fencing tokens: `fencing: true` gives each grant a `bigint` larger than every earlier holder's,
 * in the lock's own round trip; a transaction that has written before the lock is refused one.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeFencing } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeFencing(adapter)
 * ```
 */
export function describeFencing(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, open, url, observer }) => {
    describe('fencing tokens', () => {
      it('grow across holders of any key, in every form and scope', async () => {
        const pool = await open('pool', 2)
        const tokens: (bigint | undefined)[] = []
        tokens.push(await lib.withLock(pool.db, key('fence-a'), ({ fencingToken }) => fencingToken, { fencing: true }))
        tokens.push(
          await lib.withLock(pool.db, key('fence-b'), ({ fencingToken }) => fencingToken, { fencing: true, scope: scopesOf(caps).at(-1) }),
        )
        const tried = await lib.tryWithLock(pool.db, key('fence-a'), ({ fencingToken }) => fencingToken, { fencing: true })
        tokens.push(tried.acquired ? tried.value : undefined)
        tokens.push(await lib.withLock(pool.db, key('fence-c'), ({ fencingToken }) => fencingToken, { fencing: true, timeoutMs: 1_000 }))
        if (caps.sessionOnPool) {
          const lock = await lib.createLock(pool.db, key('fence-a'), { fencing: true }).acquire()
          tokens.push(lock.fencingToken)
          await lock.release()
          tokens.push(lib.createLock(pool.db, key('fence-a')).fencingToken)
          expect(tokens.pop(), 'no token before an acquire').toBeUndefined()
        }
        for (const token of tokens) expect(typeof token).toBe('bigint')
        const sorted = [...(tokens as bigint[])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
        expect(tokens).toEqual(sorted)
        expect(new Set(tokens).size).toBe(tokens.length)
        expect(await lib.withLock(pool.db, key('fence-a'), ({ fencingToken }) => fencingToken)).toBeUndefined()
      })

      it.skipIf(!caps.sessionOnPool)('comes with a try only when it acquired', async () => {
        const [a, b] = [await open('pool', 1), await open('pool', 1)]
        const k = key('fence-try')
        const holder = await lib.createLock(a.db, k, { fencing: true }).acquire()
        const busy = lib.createLock(b.db, k, { fencing: true })
        expect(await busy.tryAcquire()).toBe(false)
        expect(busy.fencingToken).toBeUndefined()
        const first = holder.fencingToken as bigint
        await holder.release()
        expect(await busy.tryAcquire()).toBe(true)
        expect(busy.fencingToken as bigint).toBeGreaterThan(first)
        await busy.release()
      })

      it('cost no round trip of their own', async () => {
        const proxy = await FaultProxy.start(url)
        onTestFinished(() => proxy.close())
        const pool = await open('pool', 1, proxy.url)
        const k = key('fence-trips')
        // warm the connection: a driver may prepare a statement in a round trip of its own, once
        for (const fencing of [false, true]) {
          await lib.withLock(pool.db, k, () => undefined, { fencing })
          await lib.tryWithLock(pool.db, k, () => undefined, { fencing })
          await lib.withLock(pool.db, k, () => undefined, { fencing, scope: scopesOf(caps).at(-1) })
        }
        const counted = async (fencing: boolean) => {
          const before = proxy.roundTrips
          await lib.withLock(pool.db, k, () => undefined, { fencing })
          await lib.tryWithLock(pool.db, k, () => undefined, { fencing })
          await lib.withLock(pool.db, k, () => undefined, { fencing, timeoutMs: 1_000 })
          await lib.withLock(pool.db, k, () => undefined, { fencing, scope: scopesOf(caps).at(-1) })
          return proxy.roundTrips - before
        }
        expect(await counted(true)).toBe(await counted(false))
      })

      it.skipIf(!caps.transactionHandle)(
        'is refused in a transaction that has a transaction id already, leaving nothing held and the transaction usable',
        async () => {
          const pool = await open()
          const k = key('fence-late')
          const inTransaction = adapter.inTransaction as NonNullable<typeof adapter.inTransaction>
          await inTransaction(pool.db, async (tx) => {
            await adapter.query(tx, 'SELECT pg_current_xact_id()')
            const refused = lib.createLock(tx, k, { scope: 'transaction', fencing: true }).acquire()
            await expect(refused).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/fencing: true needs/) })
            expect(await observer.locks(k)).toEqual([])
            expect(await adapter.query(tx, 'SELECT 1 AS one')).toEqual([{ one: 1 }])
            const tried = lib.createLock(tx, k, { scope: 'transaction', fencing: true }).tryAcquire()
            await expect(tried).rejects.toMatchObject({ code: 'UNSUPPORTED' })
            expect(await adapter.query(tx, 'SELECT 1 AS one')).toEqual([{ one: 1 }])
            const plain = lib.createLock(tx, k, { scope: 'transaction' })
            expect(await plain.tryAcquire()).toBe(true)
          })
          expect(await observer.locks(k)).toEqual([])
        },
      )

      for (const scope of scopesOf(adapter.caps)) {
        it(`${FENCED_PROCESSES} processes x ${FENCED_CYCLES} cycles on one key: tokens in commit order strictly increase (${scope} scope)`, async () => {
          const table = `pglock_fenced_${randomBytes(4).toString('hex')}`
          const k = key(`fence-processes-${scope}`)
          const applicationName = `${adapter.name.slice(0, 20)}-fence-${randomBytes(3).toString('hex')}`
          await observer.query(`CREATE TABLE ${table} (id bigserial PRIMARY KEY, worker int NOT NULL, token xid8 NOT NULL)`)
          onTestFinished(() => observer.query(`DROP TABLE ${table}`).then(() => undefined))
          const codes = await Promise.all(
            Array.from({ length: FENCED_PROCESSES }, (_, worker) =>
              runWorker({
                url,
                adapter: adapter.module,
                applicationName,
                key: k,
                counter: '',
                intervals: '',
                worker,
                cycles: FENCED_CYCLES,
                scope,
                mode: 'exclusive',
                fenced: table,
              }),
            ),
          )
          expect(codes).toEqual(Array(FENCED_PROCESSES).fill(0))
          // rows were inserted one holder at a time, so id order is the holders' order
          const [summary] = await observer.query<{ rows: string; workers: string; decreases: string }>(
            `SELECT count(*) AS rows, count(DISTINCT worker) AS workers,
                    count(*) FILTER (WHERE token <= previous) AS decreases
               FROM (SELECT worker, token, lag(token) OVER (ORDER BY id) AS previous FROM ${table}) t`,
          )
          expect(Number(summary?.rows)).toBe(FENCED_PROCESSES * FENCED_CYCLES)
          expect(Number(summary?.workers)).toBe(FENCED_PROCESSES)
          expect(Number(summary?.decreases), 'no holder got a token at or below an earlier holder’s').toBe(0)
          expect(await observer.locks(k)).toEqual([])
        }, 300_000)
      }
    })
  })
}
