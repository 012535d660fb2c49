import { type Lease, type Lock, LockLostError, PgLockError, type WithLockOptions } from '@pglock/core'
import { afterAll, describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { abortedWithin, Bench, type BenchHandle, scaled, settleWithin } from './bench.ts'

/** Trials per loss point: 20 under `pnpm test`, 200 under `pnpm test:soak`... */
export const LOSS_TRIALS = scaled(20, 200)
/**
 * ...unless a point's trials take longer than this, as where a loss while idle is noticed only by
 * a probe (Kysely probes once a second): then at least {@link MIN_TRIALS}. The trials each point
 * ran are printed with its worst settle time.
 */
const LOSS_BUDGET_MS = scaled(5_000, 120_000)
const MIN_TRIALS = 5
/** How long a call may stay pending after the holder's backend was terminated before the test calls it stuck. */
const WATCHDOG_MS = 10_000
/** How long a statement on `lease.db` sleeps, so that the backend is surely in it when terminated. */
const SLEEP_SQL = 'SELECT pg_sleep(30)'

const noop = () => undefined
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const randomMs = (below: number) => Math.random() * below

/** One settled call: how it ended, and how long after the backend was terminated. */
type Settled = { state: 'fulfilled'; value: unknown } | { state: 'rejected'; error: unknown }

/**
 * Loss at every point of a held lock's life, over many trials: the holder's backend is
 * terminated (`pg_terminate_backend`, as an administrator or a failover would) while the lock is
 * idle, while a statement runs on `lease.db` (one long one, or a stream of short ones), while the
 * unlock or the `COMMIT` is in flight, in session and transaction scope, for `createLock` with
 * `release()` and for `withLock`. Every call must settle within {@link WATCHDOG_MS} (the worst
 * observed is printed per point), `withLock` must reject with `LockLostError` (with `fn`'s own
 * error as `cause` when `fn` threw), `pg_locks` must show the key free, and the pool must still
 * lend every one of its connections.
 *
 * Statements queued behind a `pg_sleep` on the lock's connection put the unlock or the `COMMIT`
 * deterministically in flight when the backend dies; a stream of short statements hits the
 * window between the driver failing a statement and reporting the connection closed.
 *
 * @example
 * ```ts
 * import { describeLossPoints } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeLossPoints(adapter)
 * ```
 */
export function describeLossPoints(adapter: AdapterUnderTest): void {
  const { lib, caps } = adapter

  describe.skipIf(!caps.survivesConnectionLoss)(`${adapter.name}: loss points`, () => {
    const bench = new Bench(adapter, 'loss-points').install()
    const worst = new Map<string, { trials: number; worstMs: number; outcomes: Map<string, number> }>()
    const seen = (point: string) => {
      let entry = worst.get(point)
      if (entry === undefined) worst.set(point, (entry = { trials: 0, worstMs: 0, outcomes: new Map() }))
      return entry
    }
    afterAll(() => {
      const rows = [...worst].map(([point, { trials, worstMs, outcomes }]) => {
        const counts = [...outcomes].map(([outcome, count]) => `${outcome} ${count}`).join(', ')
        return `  ${point}: ${trials} trials, worst ${worstMs.toFixed(0)} ms${counts === '' ? '' : ` (${counts})`}`
      })
      console.log(`loss points ${adapter.name}: every call settled, worst time from the backend's termination:\n${rows.join('\n')}`)
    })

    const holderPid = async (key: string): Promise<number> => {
      let pid: number | undefined
      await bench.observer.until(`a backend holds ${key}`, async () => {
        ;[pid] = await bench.observer.holders(key)
        return pid !== undefined
      })
      return pid as number
    }

    const untilSleeping = (pid: number) =>
      bench.observer.until(
        `backend ${pid} runs pg_sleep`,
        async () =>
          (
            await bench.observer.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query ILIKE '%pg_sleep%'`, [
              pid,
            ])
          ).length > 0,
      )

    /** Starts a long statement on `db` without waiting for it; its failure is expected. */
    const startSleeping = (db: unknown) => void adapter.query(db, SLEEP_SQL).catch(noop)

    /** Runs short statements on `db` until one fails; resolves to that failure. */
    const busy = async (db: unknown): Promise<unknown> => {
      for (;;) {
        try {
          await adapter.query(db, 'SELECT 1')
        } catch (error) {
          return error
        }
      }
    }

    /** Terminates `pid` and returns the time it was done, for the settle times. */
    const terminate = async (pid: number): Promise<number> => {
      await bench.observer.terminate(pid)
      return performance.now()
    }

    /** Waits for a call with the watchdog, records how long it took after `killedAt`, and fails the trial if it stays pending. */
    const settled = async (point: string, trial: number, call: Promise<unknown>, killedAt: () => number): Promise<Settled> => {
      const result = await settleWithin(call, WATCHDOG_MS)
      expect(result.state, `${point}, trial ${trial}: still pending ${WATCHDOG_MS} ms after the holder was terminated`).not.toBe('pending')
      const afterMs = Math.max(0, performance.now() - killedAt()) || 0
      const entry = seen(point)
      entry.trials += 1
      entry.worstMs = Math.max(entry.worstMs, afterMs)
      return result as Settled
    }

    const expectLost = (result: Settled, context: string): LockLostError => {
      expect(result, context).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
      const error = (result as { error: LockLostError }).error
      expect(error.code, context).toBe('LOST')
      return error
    }

    /**
     * The pool lends working connections after a loss: every one of them where the driver's pool
     * recovers. postgres.js 3.4's does not (`poolRecovers`): it replays the error of a backend
     * terminated mid-statement onto the next use of that connection object (porsager/postgres#1223);
     * a `sql.reserve()` that meets it rejects, and its request, left queued, later swallows a
     * connection. There a transaction lock, whose `sql.begin()` is a plain query, must work by the
     * second try; a session lock right after such a loss fails in most trials (the README's
     * postgres.js notes say so).
     */
    const expectPoolWorks = async (pool: BenchHandle, idleKilled: boolean) => {
      if (caps.poolRecovers) {
        // a connection whose backend died after it went back to the pool may fail its next use, once
        const mayFailOnce = idleKilled || caps.lostConnectionMayReturn === true
        const first = mayFailOnce ? await settleWithin(bench.expectAllConnectionsUsable(pool), WATCHDOG_MS) : undefined
        if (first?.state !== 'fulfilled') await bench.expectAllConnectionsUsable(pool)
        return
      }
      let result: Awaited<ReturnType<typeof settleWithin>> | undefined
      for (let attempt = 1; attempt <= 2 && result?.state !== 'fulfilled'; attempt += 1) {
        result = await settleWithin(
          lib.withLock(pool.db, bench.key('after'), () => 'works', { scope: 'transaction' }),
          WATCHDOG_MS,
        )
      }
      expect(result, 'a lock on the pool after the loss').toEqual({ state: 'fulfilled', value: 'works' })
    }

    /**
     * After each trial: the key free in `pg_locks`, the pool working, nothing left behind. Resolves
     * to the pool's closing, which may take a while (a postgres.js `Sql` waits out its end timeout
     * after a failure) and need not hold up the next trial.
     */
    const afterTrial = async (pool: BenchHandle, key: string, idleKilled = false): Promise<{ readonly closed: Promise<void> }> => {
      await bench.observer.until(`nobody holds or awaits ${key}`, async () => (await bench.observer.locks(key)).length === 0)
      await expectPoolWorks(pool, idleKilled)
      await bench.expectClean(pool.applicationName)
      return { closed: bench.expectClosed(pool) }
    }

    /**
     * Runs `body` for {@link LOSS_TRIALS} trials (fewer past {@link LOSS_BUDGET_MS}), each on a
     * fresh pool of two connections and a fresh key. `body` resolves `'idle killed'` when the
     * backend died only after its connection went back to the pool (the lock was released first).
     */
    const trials = async (body: (pool: BenchHandle, key: string, trial: number) => Promise<unknown>) => {
      const closing: Promise<void>[] = []
      const started = performance.now()
      try {
        for (let trial = 0; trial < LOSS_TRIALS; trial += 1) {
          if (trial >= MIN_TRIALS && performance.now() - started > LOSS_BUDGET_MS) break
          const pool = await bench.open({ max: 2 })
          const key = bench.key('loss')
          const idleKilled = (await body(pool, key, trial)) === 'idle killed'
          closing.push((await afterTrial(pool, key, idleKilled)).closed)
        }
      } finally {
        await Promise.all(closing)
      }
    }

    describe.skipIf(!caps.sessionOnPool)('createLock and release(), session scope', () => {
      const point = (name: string) => `createLock session, ${name}`

      it(`settles release() false after a loss while idle`, async () => {
        await trials(async (pool, key, trial) => {
          const lock = await lib.createLock(pool.db, key).acquire()
          const killedAt = await terminate(await holderPid(key))
          expect((await abortedWithin(lock.signal, WATCHDOG_MS)).reason).toBeInstanceOf(LockLostError)
          const result = await settled(point('idle'), trial, lock.release(), () => killedAt)
          expect(result).toEqual({ state: 'fulfilled', value: false })
          expect(lock.isHeld).toBe(false)
        })
      }, 120_000)

      it(`settles release() false when it races the termination`, async () => {
        await trials(async (pool, key, trial) => {
          const lock = await lib.createLock(pool.db, key).acquire()
          const pid = await holderPid(key)
          let killedAt = Number.NaN
          const killing = sleep(randomMs(3)).then(async () => (killedAt = await terminate(pid)))
          await sleep(randomMs(3))
          const releasing = lock.release()
          await killing
          const result = await settled(point('release racing the termination'), trial, releasing, () => killedAt)
          expect(result.state).toBe('fulfilled')
          expect(lock.isHeld).toBe(false)
          const released = (result as { value: unknown }).value === true
          const { outcomes } = seen(point('release racing the termination'))
          const outcome = released ? 'released first' : 'lost first'
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
          return released ? 'idle killed' : undefined
        })
      }, 120_000)

      it(`settles release() after a loss mid-query on lock.db`, async () => {
        await trials(async (pool, key, trial) => {
          const lock = await lib.createLock(pool.db, key).acquire()
          const pid = await holderPid(key)
          const query = adapter.query(lock.db, SLEEP_SQL)
          query.catch(noop)
          await untilSleeping(pid)
          const killedAt = await terminate(pid)
          expect((await settled(point('mid-query'), trial, query, () => killedAt)).state).toBe('rejected')
          const result = await settled(point('release after a loss mid-query'), trial, lock.release(), () => killedAt)
          expect(result).toEqual({ state: 'fulfilled', value: false })
          expect(lock.signal.reason).toBeInstanceOf(LockLostError)
        })
      }, 120_000)

      it(`settles release() after a loss amid a stream of statements on lock.db`, async () => {
        await trials(async (pool, key, trial) => {
          const lock = await lib.createLock(pool.db, key).acquire()
          const pid = await holderPid(key)
          const failed = busy(lock.db)
          await sleep(randomMs(20))
          const killedAt = await terminate(pid)
          await settled(point('stream of statements'), trial, failed, () => killedAt)
          const result = await settled(point('release after a stream of statements'), trial, lock.release(), () => killedAt)
          expect(result).toEqual({ state: 'fulfilled', value: false })
          expect(lock.isHeld).toBe(false)
        })
      }, 120_000)

      it(`settles release() false after a loss mid-unlock`, async () => {
        await trials(async (pool, key, trial) => {
          const lock: Lock<unknown> = await lib.createLock(pool.db, key).acquire()
          const pid = await holderPid(key)
          startSleeping(lock.db)
          await untilSleeping(pid)
          const releasing = lock.release()
          await sleep(5)
          const killedAt = await terminate(pid)
          const result = await settled(point('mid-unlock'), trial, releasing, () => killedAt)
          expect(result).toEqual({ state: 'fulfilled', value: false })
          expect(lock.signal.reason).toBeInstanceOf(LockLostError)
        })
      }, 120_000)
    })

    describe.skipIf(!caps.transactionHandle)('createLock and release(), transaction scope', () => {
      const point = (name: string) => `createLock transaction, ${name}`
      const options = { scope: 'transaction' } as const

      /**
       * Runs `body` inside the driver's own transaction on `pool`, which must settle too (how is the
       * driver's business: its `COMMIT` fails on the dead connection). Where the driver rejects by
       * itself, the callback stays pending after the loss, as it must there.
       */
      const inTransaction = async (pool: BenchHandle, body: (tx: unknown) => Promise<void>) => {
        const within = (tx: unknown) => body(tx).then(() => (caps.transactionRejectsOnLoss ? new Promise<void>(noop) : undefined))
        const run = (adapter.inTransaction as NonNullable<AdapterUnderTest['inTransaction']>)(pool.db, within)
        const result = await settleWithin(run, WATCHDOG_MS)
        expect(result.state, "the driver's own transaction, after the loss").not.toBe('pending')
      }

      it(`settles release() after a loss while idle`, async () => {
        await trials(async (pool, key, trial) => {
          await inTransaction(pool, async (tx) => {
            const lock = await lib.createLock(tx, key, options).acquire()
            const killedAt = await terminate(await holderPid(key))
            expect((await abortedWithin(lock.signal, WATCHDOG_MS)).reason).toBeInstanceOf(LockLostError)
            expect(await settled(point('idle'), trial, lock.release(), () => killedAt)).toEqual({ state: 'fulfilled', value: false })
          })
        })
      }, 120_000)

      it(`settles release() after a loss mid-query on the transaction`, async () => {
        await trials(async (pool, key, trial) => {
          await inTransaction(pool, async (tx) => {
            const lock = await lib.createLock(tx, key, options).acquire()
            const pid = await holderPid(key)
            const query = adapter.query(tx, SLEEP_SQL)
            query.catch(noop)
            await untilSleeping(pid)
            const killedAt = await terminate(pid)
            expect((await settled(point('mid-query'), trial, query, () => killedAt)).state).toBe('rejected')
            expect((await settled(point('release after a loss mid-query'), trial, lock.release(), () => killedAt)).state).toBe('fulfilled')
            expect(lock.isHeld).toBe(false)
          })
        })
      }, 120_000)
    })

    for (const scope of ['session', 'transaction'] as const) {
      describe(`withLock, ${scope} scope`, () => {
        const point = (name: string) => `withLock ${scope}, ${name}`
        const options: WithLockOptions = { scope }
        const end = scope === 'session' ? 'release' : 'commit'

        /** Runs withLock with `fn`, which learns the holder's pid first and may report when it terminated it. */
        const run = (pool: BenchHandle, key: string, fn: (lease: Lease<unknown>, pid: number) => Promise<unknown>) =>
          lib.withLock(pool.db, key, async (lease) => fn(lease, await holderPid(key)), options)

        it(`rejects with LockLostError after a loss while fn is idle`, async () => {
          await trials(async (pool, key, trial) => {
            let killedAt = Number.NaN
            const call = run(pool, key, async ({ signal }, pid) => {
              killedAt = await terminate(pid)
              await abortedWithin(signal, WATCHDOG_MS)
              return 'finished anyway'
            })
            expectLost(await settled(point('idle'), trial, call, () => killedAt), `trial ${trial}`)
          })
        }, 120_000)

        it(`rejects with LockLostError, fn's error as cause, after a loss mid-query on lease.db`, async () => {
          await trials(async (pool, key, trial) => {
            let killedAt = Number.NaN
            let thrown: unknown
            const call = run(pool, key, async ({ db }, pid) => {
              const query = adapter.query(db, SLEEP_SQL)
              query.catch(noop)
              await untilSleeping(pid)
              killedAt = await terminate(pid)
              try {
                return await query
              } catch (error) {
                thrown = error
                throw error
              }
            })
            const error = expectLost(await settled(point('mid-query'), trial, call, () => killedAt), `trial ${trial}`)
            expect(error.cause, `trial ${trial}`).toBe(thrown)
          })
        }, 120_000)

        it(`rejects with LockLostError after a loss amid a stream of statements on lease.db`, async () => {
          await trials(async (pool, key, trial) => {
            let killedAt = Number.NaN
            const call = run(pool, key, async ({ db }, pid) => {
              const failed = busy(db)
              await sleep(randomMs(20))
              killedAt = await terminate(pid)
              throw await failed
            })
            expectLost(await settled(point('stream of statements'), trial, call, () => killedAt), `trial ${trial}`)
          })
        }, 120_000)

        it(`rejects with LockLostError after a loss mid-${end}`, async () => {
          await trials(async (pool, key, trial) => {
            let killedAt = Number.NaN
            let killing: Promise<number> | undefined
            const call = run(pool, key, async ({ db }, pid) => {
              startSleeping(db)
              await untilSleeping(pid)
              killing = sleep(5).then(async () => (killedAt = await terminate(pid)))
              return 'returned before the loss'
            })
            expectLost(await settled(point(`mid-${end}`), trial, call, () => killedAt), `trial ${trial}`)
            await killing
          })
        }, 120_000)
      })

      /** Starts a long query on `db`, then terminates the lock holder's backend while it runs. */
      const killedMidQuery = async (db: unknown, key: string): Promise<{ readonly query: Promise<unknown> }> => {
        const pid = await holderPid(key)
        const query = adapter.query(db, SLEEP_SQL)
        query.catch(noop)
        await untilSleeping(pid)
        await bench.observer.terminate(pid)
        return { query } // wrapped, so that awaiting this does not await the query
      }

      describe(`withLock error when the holder dies mid-query (${scope} scope)`, () => {
        const options: WithLockOptions = { scope }

        it('rejects with LockLostError, with the driver error fn rethrew as cause', async () => {
          const pool = await bench.open({ max: 2 })
          const key = bench.key('mid-query-error')
          let thrown: unknown
          const call = lib.withLock(
            pool.db,
            key,
            async ({ db }) => {
              const { query } = await killedMidQuery(db, key)
              try {
                return await query
              } catch (error) {
                thrown = error
                throw error
              }
            },
            options,
          )
          const result = await settleWithin(call, WATCHDOG_MS)
          expect(result).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
          const error = (result as { error: LockLostError }).error
          expect(error).toMatchObject({ code: 'LOST', key, scope })
          expect(thrown).toBeDefined()
          expect(thrown).not.toBeInstanceOf(PgLockError)
          expect(error.cause).toBe(thrown)
          await (await afterTrial(pool, key)).closed
        })

        it('rejects with LockLostError when fn swallows the driver error and returns', async () => {
          const pool = await bench.open({ max: 2 })
          const key = bench.key('mid-query-swallowed')
          const call = lib.withLock(
            pool.db,
            key,
            async ({ db }) => {
              const { query } = await killedMidQuery(db, key)
              return query.then(
                () => 'answered',
                () => 'swallowed',
              )
            },
            options,
          )
          const result = await settleWithin(call, WATCHDOG_MS)
          expect(result).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
          await (await afterTrial(pool, key)).closed
        })

        it('rejects with the query error itself, untouched, when the connection is healthy', async () => {
          const pool = await bench.open({ max: 2 })
          const key = bench.key('healthy-query-error')
          let thrown: unknown
          const call = lib.withLock(
            pool.db,
            key,
            async ({ db }) => {
              try {
                return await adapter.query(db, 'SELEC 1')
              } catch (error) {
                thrown = error
                throw error
              }
            },
            options,
          )
          const result = await settleWithin(call, WATCHDOG_MS)
          expect(result.state).toBe('rejected')
          expect((result as { error: unknown }).error).toBe(thrown)
          expect(thrown).not.toBeInstanceOf(PgLockError)
          await (await afterTrial(pool, key)).closed
        })
      })
    }
  })
}
