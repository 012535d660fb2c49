import { randomBytes } from 'node:crypto'
import { LockLostError, LockTimeoutError, UnsupportedError } from '@pglock/core'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { abortedWithin, Bench, settleWithin } from './bench.ts'
import { type PgBouncer, startPgBouncer } from './pgbouncer.ts'

const SETTLE_BOUND_MS = 5_000

/**
 * pglock behind PgBouncer, started by the suite as the run's global setup resolved it (`resolvePgBouncer`:
 * an installed `pgbouncer` on a free loopback port, a container, or one installed with apt-get).
 * In transaction pooling, a client's statements run on whichever server connection is free, so
 * transaction-scope locks work (a transaction keeps its server connection) and session-scope
 * locks do not (the lock stays on the server connection that took it, which then serves other
 * clients). The suite shows transaction scope working (exclusion, timeout, abort) and session
 * scope misuse detected and reported: a release or keep-alive probe that lands on another server
 * connection fails loudly, never as a silent release. It also pins down what pglock cannot see,
 * and that session pooling is fine.
 *
 * @example
 * ```ts
 * import { describePgBouncer } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describePgBouncer(adapter)
 * ```
 */
export function describePgBouncer(adapter: AdapterUnderTest): void {
  const { lib, caps } = adapter

  describe(`${adapter.name}: behind PgBouncer`, () => {
    const bench = new Bench(adapter, 'pgbouncer').install()
    const runtime = inject('pgbouncer')
    let transactionPooling: PgBouncer | undefined
    beforeAll(async () => {
      transactionPooling = await startPgBouncer(bench.url, { poolMode: 'transaction', poolSize: 2, runtime })
    })
    afterAll(async () => {
      await transactionPooling?.stop()
    })

    const through = async (bouncer: PgBouncer | undefined = transactionPooling, max = 3) =>
      bench.open({ url: (bouncer as PgBouncer).url, max, throughPooler: true })
    const pidOf = async (db: unknown) => Number((await adapter.query(db, 'SELECT pg_backend_pid() AS pid'))[0]?.pid)

    /** Ends a lock stranded on a server connection (PgBouncer would keep it until that connection closes). */
    async function unstrand(pid: number, key: string): Promise<void> {
      await bench.observer.terminate(pid)
      await bench.observer.until(`the lock stranded on ${pid} is gone`, async () => (await bench.observer.locks(key)).length === 0)
    }

    describe('transaction pooling: transaction scope works', () => {
      it('holds the lock on the server connection of fn’s transaction, and drops it at commit', async () => {
        const pool = await through()
        const key = bench.key('xact')
        const seen = await lib.withLock(
          pool.db,
          key,
          async ({ db }) => ({ holders: await bench.observer.holders(key), pid: await pidOf(db) }),
          {
            scope: 'transaction',
          },
        )
        expect(seen.holders).toEqual([seen.pid])
        expect(await bench.observer.locks(key)).toEqual([])
      })

      it('keeps clients of the bouncer mutually exclusive: no update lost', async () => {
        const [a, b] = [await through(), await through()]
        const key = bench.key('xact-exclusion')
        const table = `pglock_bouncer_${randomBytes(4).toString('hex')}`
        await bench.observer.query(`CREATE TABLE ${table} (id int PRIMARY KEY, value int NOT NULL)`)
        await bench.observer.query(`INSERT INTO ${table} VALUES (1, 0)`)
        try {
          const increments = 40
          await Promise.all(
            Array.from({ length: increments }, (_, i) =>
              lib.withLock(
                (i % 2 === 0 ? a : b).db,
                key,
                async ({ db }) => {
                  const [row] = await adapter.query(db, `SELECT value FROM ${table} WHERE id = 1`)
                  await new Promise((resolve) => setImmediate(resolve))
                  await adapter.query(db, `UPDATE ${table} SET value = ${Number(row?.value) + 1} WHERE id = 1`)
                },
                { scope: 'transaction' },
              ),
            ),
          )
          expect((await bench.observer.query<{ value: number }>(`SELECT value FROM ${table}`))[0]?.value).toBe(increments)
          const busy = await lib.withLock(a.db, key, () => lib.tryWithLock(b.db, key, () => 'ran', { scope: 'transaction' }), {
            scope: 'transaction',
          })
          expect(busy).toEqual({ acquired: false })
        } finally {
          await bench.observer.query(`DROP TABLE ${table}`)
        }
      })

      it('times out with LockTimeoutError and leaves nothing waiting', async () => {
        const direct = await bench.open({ max: 2 })
        const pool = await through()
        const key = bench.key('xact-timeout')
        await lib.withLock(direct.db, key, async () => {
          const result = await settleWithin(
            lib.withLock(pool.db, key, () => 'ran', { scope: 'transaction', timeoutMs: 200 }),
            SETTLE_BOUND_MS,
          )
          expect(result).toMatchObject({ state: 'rejected', error: expect.any(LockTimeoutError) })
          expect(await bench.observer.waiters(key)).toEqual([])
        })
        expect(await lib.withLock(pool.db, key, () => 'usable', { scope: 'transaction' })).toBe('usable')
      })

      it('cancels the wait in Postgres when aborted, through the bouncer', async () => {
        const direct = await bench.open({ max: 2 })
        const pool = await through()
        const key = bench.key('xact-abort')
        await lib.withLock(direct.db, key, async () => {
          const controller = new AbortController()
          const waiting = lib.withLock(pool.db, key, () => 'ran', { scope: 'transaction', signal: controller.signal })
          await bench.observer.until('the waiter waits in Postgres', async () => (await bench.observer.waiters(key)).length === 1)
          const reason = new Error('caller gave up')
          controller.abort(reason)
          expect(await settleWithin(waiting, 2_000)).toEqual({ state: 'rejected', error: reason })
          expect(await bench.observer.waiters(key)).toEqual([])
        })
        expect(await lib.withLock(pool.db, key, () => 'usable', { scope: 'transaction' })).toBe('usable')
      })
    })

    describe('transaction pooling: session scope misuse is reported', () => {
      /**
       * Takes a session lock through the bouncer (`take`), then runs `whileMoved` while another
       * client's open transaction keeps the server connection holding the lock busy, so that the
       * holder's next statement runs on the other server connection. Resolves to the pid holding
       * the lock, which the caller must unstrand.
       */
      async function withSessionMoved(key: string, take: () => Promise<unknown>, whileMoved: () => Promise<void>): Promise<number> {
        const inTransaction = adapter.inTransaction as NonNullable<AdapterUnderTest['inTransaction']>
        await take()
        const [pid] = await bench.observer.holders(key)
        if (pid === undefined) throw new Error('the lock was not taken')
        const open = async () => {
          const client = await through()
          let opened: (pid: number) => void = () => undefined
          let close: () => void = () => undefined
          const ready = new Promise<number>((resolve) => {
            opened = resolve
          })
          const closing = new Promise<void>((resolve) => {
            close = resolve
          })
          const done = inTransaction(client.db, async (tx) => {
            opened(await pidOf(tx))
            await closing
          })
          const on = await Promise.race([ready, done.then(() => Number.NaN)])
          const end = async () => {
            close()
            await done
          }
          return { on, end }
        }
        try {
          const first = await open()
          if (first.on === pid) {
            await whileMoved()
            await first.end()
            return pid
          }
          const second = await open()
          expect(second.on, 'with the other server connection busy, a second transaction gets the one holding the lock').toBe(pid)
          await first.end()
          await whileMoved()
          await second.end()
          return pid
        } catch (error) {
          await unstrand(pid, key)
          throw error
        }
      }

      it.skipIf(!caps.sessionOnPool || !caps.transactionHandle)(
        'fails release() with UnsupportedError when the unlock lands on another server connection, never a silent release',
        async () => {
          const pool = await through(transactionPooling, 2)
          const key = bench.key('session-moved')
          const lock = lib.createLock(pool.db, key)
          let outcome: Awaited<ReturnType<typeof settleWithin>> | undefined
          const heldOn = await withSessionMoved(
            key,
            () => lock.acquire(),
            async () => {
              outcome = await settleWithin(lock.release(), SETTLE_BOUND_MS)
            },
          )
          onTestFinished(() => unstrand(heldOn, key))
          expect(outcome).toMatchObject({ state: 'rejected', error: expect.any(UnsupportedError) })
          const error = (outcome as { error: UnsupportedError }).error
          expect(error).toMatchObject({ code: 'UNSUPPORTED', key })
          expect(error.message).toMatch(/PgBouncer/)
          expect(error.message).toMatch(/scope: 'transaction'/)
          expect(lock.isHeld).toBe(false)
          expect(lock.signal.reason).toBeInstanceOf(LockLostError)
          expect(await bench.observer.holders(key), 'the lock stays on the server connection that took it').toEqual([heldOn])
        },
      )

      it.skipIf(!caps.transactionHandle)('rejects withLock in session scope with UnsupportedError when its session moved', async () => {
        const pool = await through(transactionPooling, 2)
        const key = bench.key('session-moved-with')
        let release: () => void = () => undefined
        const left = new Promise<void>((resolve) => {
          release = resolve
        })
        let run: Promise<unknown> | undefined
        let outcome: Awaited<ReturnType<typeof settleWithin>> | undefined
        const heldOn = await withSessionMoved(
          key,
          async () => {
            run = lib.withLock(pool.db, key, () => left)
            await bench.observer.until('the lock is taken', async () => (await bench.observer.holders(key)).length === 1)
          },
          async () => {
            release()
            outcome = await settleWithin(run as Promise<unknown>, SETTLE_BOUND_MS)
          },
        )
        onTestFinished(() => unstrand(heldOn, key))
        expect(outcome).toMatchObject({ state: 'rejected', error: expect.any(UnsupportedError) })
      })

      it.skipIf(!caps.sessionOnPool || !caps.transactionHandle)(
        'aborts lock.signal with LockLostError when a keep-alive probe lands on another server connection',
        async () => {
          const pool = await through(transactionPooling, 2)
          const key = bench.key('session-moved-probe')
          const lock = lib.createLock(pool.db, key, { keepAliveMs: 250 }) // long enough that a loaded machine answers the probe in time
          let lost: Awaited<ReturnType<typeof abortedWithin>> | undefined
          const heldOn = await withSessionMoved(
            key,
            () => lock.acquire(),
            async () => {
              lost = await abortedWithin(lock.signal, SETTLE_BOUND_MS)
            },
          )
          onTestFinished(() => unstrand(heldOn, key))
          expect(lost?.reason).toBeInstanceOf(LockLostError)
          expect(String((lost?.reason as Error | undefined)?.message)).toMatch(/PgBouncer/)
          expect(lock.isHeld).toBe(false)
          expect(await lock.release()).toBe(false)
        },
      )

      it.skipIf(!caps.sessionOnPool)('cannot tell two clients apart that the bouncer gives the same server connection', async () => {
        const single = await startPgBouncer(bench.url, { poolMode: 'transaction', poolSize: 1, runtime })
        onTestFinished(() => single.stop())
        const [a, b] = [await through(single, 1), await through(single, 1)]
        const key = bench.key('session-reentered')
        const first = await lib.createLock(a.db, key).acquire()
        const second = lib.createLock(b.db, key)
        expect(await second.tryAcquire(), 'Postgres lets the one server session re-enter its own lock').toBe(true)
        expect(await bench.observer.holders(key)).toHaveLength(1)
        expect(await first.release()).toBe(true)
        expect(await second.release()).toBe(true)
        expect(await bench.observer.locks(key)).toEqual([])
      })
    })

    describe('session pooling', () => {
      it.skipIf(!caps.sessionOnPool)('keeps session locks on their session: acquire, exclusion and release work', async () => {
        const sessionPooling = await startPgBouncer(bench.url, { poolMode: 'session', poolSize: 4, runtime })
        onTestFinished(() => sessionPooling.stop())
        const [a, b] = [await through(sessionPooling, 2), await through(sessionPooling, 2)]
        const key = bench.key('session-pooling')
        const first = await lib.createLock(a.db, key, { keepAliveMs: 50 }).acquire()
        expect(await lib.createLock(b.db, key).tryAcquire()).toBe(false)
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect(first.signal.aborted, 'probes keep answering from the same backend').toBe(false)
        expect(await first.release()).toBe(true)
        expect(await lib.withLock(b.db, key, () => 'next')).toBe('next')
        expect(await bench.observer.locks(key)).toEqual([])
      })
    })
  })
}
