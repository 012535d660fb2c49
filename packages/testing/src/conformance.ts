import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { type LockKey, LockLostError, LockTimeoutError, PgLockError, pgLocksRow, resolveLockId, type WithLockOptions } from '@pglock/core'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest, Opened } from './adapter.ts'
import { describePoolWait } from './conformance-pool-wait.ts'
import { FaultProxy } from './fault-proxy.ts'
import { Observer } from './observer.ts'
import type {} from './provided-context.ts'

const WORKER = fileURLToPath(new URL('./process-worker.ts', import.meta.url))

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Resolves with the reason once `signal` aborts, or rejects after `timeoutMs`. */
export function aborted(signal: AbortSignal, timeoutMs = 5_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve(signal.reason)
    const timer = setTimeout(() => reject(new Error(`signal did not abort within ${timeoutMs} ms`)), timeoutMs)
    signal.addEventListener('abort', () => {
      clearTimeout(timer)
      resolve(signal.reason)
    })
  })
}

/** Settles a promise into a value, so that tests can assert on either outcome. */
async function outcome<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await promise }
  } catch (error) {
    return { ok: false, error }
  }
}

/**
 * The conformance suite: every behaviour DESIGN.md promises, against a real Postgres, for one
 * adapter. Each adapter's test file calls it once with its factories and capability flags.
 *
 * @example
 * ```ts
 * import { describeConformance } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeConformance(adapter)
 * ```
 */
export function describeConformance(adapter: AdapterUnderTest): void {
  const { lib, caps } = adapter
  const prefix = `pglock-test:${adapter.name}:${randomBytes(4).toString('hex')}`
  let url = ''
  let observer: Observer
  let serial = 0

  beforeAll(() => {
    url = inject('databaseUrl')
    observer = new Observer(url)
  })
  afterAll(async () => {
    await observer.close()
  })

  const key = (label: string): string => {
    serial += 1
    return `${prefix}:${label}:${serial}`
  }

  /** Opens a handle for this test, and checks at its end that it leaked nothing. */
  async function open(kind: 'pool' | 'connection' = 'pool', max = 5, through = url): Promise<Opened<any> & { applicationName: string }> {
    const applicationName = `pglock-t-${randomBytes(5).toString('hex')}`
    const options = { url: through, applicationName, max }
    const opened =
      kind === 'pool'
        ? await adapter.openPool(options)
        : await (adapter.openConnection as NonNullable<typeof adapter.openConnection>)(options)
    onTestFinished(async () => {
      try {
        await observer.until('no advisory lock or open transaction is left behind', async () => {
          const locks = await observer.locksOf(applicationName)
          const backends = await observer.backends(applicationName)
          return locks.length === 0 && backends.every((backend) => backend.state !== 'idle in transaction')
        })
      } finally {
        await opened.close()
      }
    })
    return { ...opened, applicationName }
  }

  const pid = async (db: unknown): Promise<number> => Number((await adapter.query(db, 'SELECT pg_backend_pid() AS pid'))[0]?.pid)

  describe(`${adapter.name}: conformance`, () => {
    describe('mutual exclusion', () => {
      it('lets one withLock run at a time across separate pools', async () => {
        const pools = [await open(), await open()]
        const k = key('exclusive')
        let inside = 0
        let most = 0
        await Promise.all(
          Array.from({ length: 24 }, (_, i) =>
            lib.withLock((pools[i % 2] as Opened<unknown>).db, k, async () => {
              inside += 1
              most = Math.max(most, inside)
              await sleep(2)
              inside -= 1
            }),
          ),
        )
        expect(most).toBe(1)
      })

      it('loses no update when OS processes increment one row under withLock', async () => {
        const table = `pglock_counter_${randomBytes(4).toString('hex')}`
        await observer.query(`CREATE TABLE ${table} (id int PRIMARY KEY, value int NOT NULL)`)
        await observer.query(`INSERT INTO ${table} VALUES (1, 0)`)
        try {
          const processes = 3
          const increments = 25
          const k = key('processes')
          const exits = Array.from({ length: processes }, () => runWorker({ url, table, key: k, increments, adapter: adapter.module }))
          const codes = await Promise.all(exits)
          expect(codes).toEqual(Array(processes).fill(0))
          const [row] = await observer.query<{ value: number }>(`SELECT value FROM ${table} WHERE id = 1`)
          expect(row?.value).toBe(processes * increments)
        } finally {
          await observer.query(`DROP TABLE ${table}`)
        }
      }, 60_000)
    })

    describe('tryAcquire and isHeld', () => {
      it.skipIf(!caps.sessionOnPool)('answers false while another pool holds the lock and true after release', async () => {
        const [a, b] = [await open(), await open()]
        const k = key('try')
        const first = lib.createLock(a.db, k)
        const second = lib.createLock(b.db, k)
        expect(first.isHeld).toBe(false)
        expect(await first.tryAcquire()).toBe(true)
        expect(first.isHeld).toBe(true)
        expect(await observer.holders(k)).toHaveLength(1)
        expect(await second.tryAcquire()).toBe(false)
        expect(second.isHeld).toBe(false)
        expect(await first.release()).toBe(true)
        expect(first.isHeld).toBe(false)
        expect(await second.tryAcquire()).toBe(true)
        expect(await second.release()).toBe(true)
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.sessionOnPool)('holds the lock on the connection lease.db queries run on', async () => {
        const pool = await open()
        const k = key('db')
        const lock = await lib.createLock(pool.db, k).acquire()
        expect(await observer.holders(k)).toEqual([await pid(lock.db)])
        await lock.release()
      })

      it('tryWithLock runs fn when free and reports acquired false when taken', async () => {
        const [a, b] = [await open(), await open()]
        const k = key('try-with')
        const result = await lib.withLock(a.db, k, () => lib.tryWithLock(b.db, k, () => 'ran'))
        expect(result).toEqual({ acquired: false })
        expect(await lib.tryWithLock(b.db, k, () => 'ran')).toEqual({ acquired: true, value: 'ran' })
      })
    })

    describe('shared mode', () => {
      it.skipIf(!caps.sessionOnPool)('lets shared holders coexist and keeps an exclusive one out until all leave', async () => {
        const [a, b, c] = [await open(), await open(), await open()]
        const k = key('shared')
        const reader1 = lib.createLock(a.db, k, { mode: 'shared' })
        const reader2 = lib.createLock(b.db, k, { mode: 'shared' })
        const writer = lib.createLock(c.db, k)
        expect(await reader1.tryAcquire()).toBe(true)
        expect(await reader2.tryAcquire()).toBe(true)
        expect((await observer.locks(k)).map((row) => row.mode)).toEqual(['ShareLock', 'ShareLock'])
        expect(await writer.tryAcquire()).toBe(false)
        await reader1.release()
        expect(await writer.tryAcquire()).toBe(false)
        await reader2.release()
        expect(await writer.tryAcquire()).toBe(true)
        expect(await lib.tryWithLock(a.db, k, () => 1, { mode: 'shared' })).toEqual({ acquired: false })
        await writer.release()
      })

      it('runs shared withLock calls on one pool side by side', async () => {
        const pool = await open()
        const k = key('shared-pool')
        let inside = 0
        let most = 0
        let allInside: () => void = () => undefined
        const together = new Promise<void>((resolve) => {
          allInside = resolve
        })
        await Promise.all(
          Array.from({ length: 3 }, () =>
            lib.withLock(
              pool.db,
              k,
              async () => {
                inside += 1
                most = Math.max(most, inside)
                if (inside === 3) allInside()
                // Waits for the other holders rather than a fixed time, which a loaded machine outlasts; gives up if they never come.
                await Promise.race([together, sleep(5_000)])
                inside -= 1
              },
              { mode: 'shared' },
            ),
          ),
        )
        expect(most).toBe(3)
      })
    })

    describe('transaction scope', () => {
      it('holds the lock inside fn and drops it at commit', async () => {
        const pool = await open()
        const k = key('xact')
        const seen = await lib.withLock(pool.db, k, async ({ db }) => ({ holders: await observer.holders(k), pid: await pid(db) }), {
          scope: 'transaction',
        })
        expect(seen.holders).toEqual([seen.pid])
        expect(await observer.locks(k)).toEqual([])
      })

      it('commits work done through lease.db when fn resolves and rolls it back when fn throws', async () => {
        const pool = await open()
        const table = `pglock_tx_${randomBytes(4).toString('hex')}`
        await observer.query(`CREATE TABLE ${table} (v int)`)
        try {
          const k = key('rollback')
          const failure = new Error('fn failed')
          await expect(
            lib.withLock(
              pool.db,
              k,
              async ({ db }) => {
                await adapter.query(db, `INSERT INTO ${table} VALUES (1)`)
                throw failure
              },
              { scope: 'transaction' },
            ),
          ).rejects.toBe(failure)
          expect(await observer.query(`SELECT v FROM ${table}`)).toEqual([])
          await lib.withLock(pool.db, k, ({ db }) => adapter.query(db, `INSERT INTO ${table} VALUES (2)`), { scope: 'transaction' })
          expect(await observer.query(`SELECT v FROM ${table}`)).toEqual([{ v: 2 }])
          expect(await observer.locks(k)).toEqual([])
        } finally {
          await observer.query(`DROP TABLE ${table}`)
        }
      })

      it('refuses createLock with transaction scope on a pool, before any SQL', async () => {
        const pool = await open()
        expect(() => lib.createLock(pool.db, key('pool-xact'), { scope: 'transaction' })).toThrow(
          expect.objectContaining({ code: 'UNSUPPORTED' }),
        )
      })

      it.skipIf(!caps.transactionHandle)('takes a lock inside a caller transaction that lasts until it ends', async () => {
        const pool = await open()
        const k = key('in-tx')
        await (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool.db, async (tx) => {
          const lock = lib.createLock(tx, k, { scope: 'transaction' })
          expect(await lock.tryAcquire()).toBe(true)
          expect(await observer.holders(k)).toEqual([await pid(tx)])
          expect(await lock.release()).toBe(false)
          expect(await observer.holders(k)).toHaveLength(1)
        })
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.transactionHandle)(
        'ends a transaction lock with its transaction, so later transactions on the connection take the key without release()',
        async () => {
          const pool = await open('pool', 1) // one connection: every transaction runs on it
          const k = key('unreleased')
          const inTransaction = adapter.inTransaction as NonNullable<typeof adapter.inTransaction>
          for (let round = 0; round < 3; round += 1) {
            await inTransaction(pool.db, async (tx) => {
              const lock = await lib.createLock(tx, k, { scope: 'transaction' }).acquire({ timeoutMs: 2_000 })
              expect(lock.isHeld).toBe(true)
              expect(await observer.holders(k)).toEqual([await pid(tx)])
              expect(await lib.createLock(tx, k, { scope: 'transaction' }).tryAcquire()).toBe(false)
            })
            expect(await observer.locks(k)).toEqual([])
          }
          const tried = await inTransaction(pool.db, (tx) => lib.createLock(tx, k, { scope: 'transaction' }).tryAcquire())
          expect(tried).toBe(true)
          // the pool lends that connection again: its lock there excludes a handle on lease.db, as always
          const reentered = await lib.withLock(pool.db, k, ({ db }) => lib.createLock(db, k).tryAcquire(), { timeoutMs: 2_000 })
          expect(reentered).toBe(false)
        },
      )

      it.skipIf(!caps.singleConnection)(
        'ends a transaction lock at COMMIT on a connection the caller drives with BEGIN and COMMIT',
        async () => {
          const connection = await open('connection')
          const k = key('begin-commit')
          for (let round = 0; round < 2; round += 1) {
            await adapter.query(connection.db, 'BEGIN')
            const lock = await lib.createLock(connection.db, k, { scope: 'transaction' }).acquire({ timeoutMs: 2_000 })
            expect(lock.isHeld).toBe(true)
            await adapter.query(connection.db, 'COMMIT')
            expect(await observer.locks(k)).toEqual([])
            if (caps.tellsTransactionEnd) expect(lock.isHeld).toBe(false)
          }
        },
      )

      it.skipIf(!caps.transactionHandle)(
        'leaves no listener on the connection after 1,000 transaction locks, released or not',
        async () => {
          const pool = await open('pool', 1)
          const inTransaction = adapter.inTransaction as NonNullable<typeof adapter.inTransaction>
          const warnings: Error[] = []
          const onWarning = (warning: Error) => warnings.push(warning)
          process.on('warning', onWarning)
          try {
            const counts = await inTransaction(pool.db, async (tx) => {
              const before = await adapter.listenerCount?.(tx)
              for (let i = 0; i < 1_000; i += 1) {
                const lock = await lib.createLock(tx, key('listeners'), { scope: 'transaction' }).acquire()
                await lock.release()
              }
              return { before, after: await adapter.listenerCount?.(tx) }
            })
            expect(counts.after).toBe(counts.before)
            const seen: number[] = []
            for (let i = 0; i < 200; i += 1) {
              await inTransaction(pool.db, async (tx) => {
                await lib.createLock(tx, key('listeners-unreleased'), { scope: 'transaction' }).acquire()
                seen.push((await adapter.listenerCount?.(tx)) ?? 0)
              })
            }
            // a lock left unreleased keeps its listeners only until a later transaction takes a lock
            expect(Math.max(...seen)).toBe(seen[0])
            await sleep(10) // process warnings are emitted on the next tick
          } finally {
            process.off('warning', onWarning)
          }
          expect(warnings.map((warning) => warning.name)).not.toContain('MaxListenersExceededWarning')
        },
      )

      it.skipIf(!caps.transactionHandle)('leaves the caller transaction usable after a transaction-scope timeout', async () => {
        const [a, b] = [await open(), await open()]
        const k = key('in-tx-timeout')
        const holder = await lib.createLock(a.db, k).acquire()
        const value = await (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(b.db, async (tx) => {
          const lock = lib.createLock(tx, k, { scope: 'transaction' })
          await expect(lock.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
          return (await adapter.query(tx, 'SELECT 41 + 1 AS answer'))[0]?.answer
        })
        expect(value).toBe(42)
        await holder.release()
      })

      it.skipIf(!caps.transactionHandle)(
        'reports the driver error, holding nothing, inside a transaction that already failed',
        async () => {
          const pool = await open()
          const k = key('failed-tx')
          for (const scope of ['session', 'transaction'] as const) {
            const failure = await outcome(
              (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool.db, async (tx) => {
                await adapter.query(tx, 'SELECT 1 / 0').catch(() => undefined)
                await lib.createLock(tx, k, { scope }).acquire()
              }),
            )
            expect(failure.ok).toBe(false)
            // the lock statement's own 25P02, or the first failure where the driver reports that (postgres.js)
            expect(['25P02', '22012']).toContain((failure as { error: { code?: unknown } }).error.code)
          }
          expect(await observer.locks(k)).toEqual([])
          expect(await lib.withLock(pool.db, k, () => 'usable')).toBe('usable')
        },
      )

      it.skipIf(!caps.singleConnection)('refuses a transaction-scope acquire on a connection outside a transaction', async () => {
        const connection = await open('connection')
        const lock = lib.createLock(connection.db, key('no-tx'), { scope: 'transaction' })
        await expect(lock.acquire()).rejects.toMatchObject({ code: 'UNSUPPORTED' })
        expect(lock.isHeld).toBe(false)
      })
    })

    describe('timeouts', () => {
      for (const scope of ['session', 'transaction'] as const) {
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

    describePoolWait(adapter, { open, key })

    describe('abort', () => {
      for (const scope of ['session', 'transaction'] as const) {
        it(`cancels the wait in Postgres, not just the promise (${scope} scope)`, async () => {
          const [a, b] = [await open(), await open()]
          const k = key(`abort-${scope}`)
          await lib.withLock(a.db, k, async () => {
            const controller = new AbortController()
            const waiting = outcome(lib.withLock(b.db, k, () => 'ran', { scope, signal: controller.signal }))
            await observer.until('the second pool waits in Postgres', async () => (await observer.waiters(k)).length === 1)
            const reason = new Error('caller gave up')
            controller.abort(reason)
            expect(await waiting).toEqual({ ok: false, error: reason })
            expect(await observer.waiters(k)).toEqual([])
          })
          expect(await lib.withLock(b.db, k, () => 'usable', { scope })).toBe('usable')
        })
      }

      it('rejects at once with the reason of an already aborted signal', async () => {
        const pool = await open()
        const reason = new Error('too late')
        await expect(lib.withLock(pool.db, key('pre-aborted'), () => 1, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
      })

      for (const scope of ['session', 'transaction'] as const) {
        it(`never leaves a lock held when abort or timeout races the grant (${scope} scope)`, async () => {
          const [a, b] = [await open(), await open()]
          const k = key(`race-${scope}`)
          const rounds = 40
          let granted = 0
          let refused = 0
          for (let round = 0; round < rounds; round += 1) {
            const holder = await lib.createLock(a.db, k).acquire()
            const controller = new AbortController()
            const byTimeout = round % 2 === 0
            const waiter = outcome(
              lib.withLock(b.db, k, () => 'ran', byTimeout ? { scope, timeoutMs: 15 } : { scope, signal: controller.signal }),
            )
            if (byTimeout) await sleep(13 + (round % 5))
            else {
              await observer.until('the waiter waits in Postgres', async () => (await observer.waiters(k)).length === 1)
              setTimeout(() => controller.abort(new Error('raced')), (round >> 1) % 3)
              await sleep(round % 3)
            }
            await holder.release()
            const result = await waiter
            if (result.ok) granted += 1
            else {
              refused += 1
              expect(result.error instanceof LockTimeoutError || (result.error as Error).message === 'raced').toBe(true)
            }
            expect(await observer.locks(k)).toEqual([])
          }
          expect(granted + refused).toBe(rounds)
        }, 60_000)
      }
    })

    describe('lost locks', () => {
      it.skipIf(!caps.sessionOnPool || !caps.survivesConnectionLoss)(
        'aborts lock.signal with LockLostError when the holding backend is terminated',
        async () => {
          const pool = await open()
          const k = key('lost')
          const lock = await lib.createLock(pool.db, k).acquire()
          const held = lock.db
          const [holder] = await observer.holders(k)
          await observer.terminate(holder as number)
          const reason = await aborted(lock.signal)
          expect(reason).toBeInstanceOf(LockLostError)
          expect(reason).toMatchObject({ code: 'LOST', key: k })
          expect(lock.isHeld).toBe(false)
          expect(lock.db).toBe(held) // still the handle it was typed as; its queries fail as the driver fails them
          expect(await lock.release()).toBe(false)
          expect(lock.db).toBeUndefined()
          expect(await lib.withLock(pool.db, k, () => 'pool still works')).toBe('pool still works')
        },
      )

      for (const scope of ['session', 'transaction'] as const) {
        it.skipIf(!caps.survivesConnectionLoss)(
          `aborts lease.signal and rejects withLock with LockLostError when the holder dies (${scope} scope)`,
          async () => {
            const pool = await open()
            const k = key(`lost-lease-${scope}`)
            const result = await outcome(
              lib.withLock(
                pool.db,
                k,
                async ({ signal }) => {
                  const [holder] = await observer.holders(k)
                  await observer.terminate(holder as number)
                  await aborted(signal)
                  return 'finished anyway'
                },
                { scope },
              ),
            )
            expect(result.ok).toBe(false)
            expect((result as { error: unknown }).error).toBeInstanceOf(LockLostError)
            expect(await lib.withLock(pool.db, k, () => 'pool still works', { scope })).toBe('pool still works')
          },
        )

        it.skipIf(!caps.survivesConnectionLoss)(
          `hands fn an already aborted lease.signal when it reads it only after the loss (${scope} scope)`,
          async () => {
            const pool = await open()
            const k = key(`lost-unread-${scope}`)
            let late: AbortSignal | undefined
            const result = await outcome(
              lib.withLock(
                pool.db,
                k,
                async (lease) => {
                  const [holder] = await observer.holders(k)
                  await observer.terminate(holder as number)
                  await sleep(1_200) // past the slowest detection: Kysely probes once a second
                  late = lease.signal
                  return 'finished anyway'
                },
                { scope },
              ),
            )
            expect(late?.aborted).toBe(true)
            expect(late?.reason).toBeInstanceOf(LockLostError)
            expect(result.ok).toBe(false)
            expect((result as { error: unknown }).error).toBeInstanceOf(LockLostError)
          },
        )
      }
    })

    describe('one connection', () => {
      it.skipIf(!caps.singleConnection)('holds 25 locks on one connection with no driver warning, and leaves no listener', async () => {
        const connection = await open('connection')
        const warnings: Error[] = []
        const onWarning = (warning: Error) => warnings.push(warning)
        process.on('warning', onWarning)
        try {
          const before = await adapter.listenerCount?.(connection.db)
          const locks = await Promise.all(Array.from({ length: 25 }, (_, i) => lib.createLock(connection.db, key(`many-${i}`)).acquire()))
          expect((await Promise.all(locks.map((lock) => lock.release()))).every(Boolean)).toBe(true)
          expect(await adapter.listenerCount?.(connection.db)).toBe(before)
          await sleep(10) // process warnings are emitted on the next tick
        } finally {
          process.off('warning', onWarning)
        }
        expect(warnings.map((warning) => `${warning.name}: ${warning.message}`)).toEqual([])
      })

      it.skipIf(!caps.singleConnection)('does not let two handles on one connection both hold an exclusive lock', async () => {
        const connection = await open('connection')
        const k = key('same-connection')
        const first = lib.createLock(connection.db, k)
        const second = lib.createLock(connection.db, k)
        expect(await first.tryAcquire()).toBe(true)
        expect(await second.tryAcquire()).toBe(false)
        await expect(second.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
        const waiting = second.acquire()
        await sleep(20)
        expect(second.isHeld).toBe(false)
        expect(await first.release()).toBe(true)
        await waiting
        expect(second.isHeld).toBe(true)
        expect(await observer.holders(k)).toEqual([await pid(connection.db)])
        expect(await second.release()).toBe(true)
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.singleConnection)(
        'reports RELEASE_FAILED and keeps the lock when the caller left its transaction failed',
        async () => {
          const connection = await open('connection')
          const k = key('release-failed')
          const lock = await lib.createLock(connection.db, k).acquire()
          await adapter.query(connection.db, 'BEGIN')
          await adapter.query(connection.db, 'SELECT 1 / 0').catch(() => undefined)
          await expect(lock.release()).rejects.toMatchObject({ code: 'RELEASE_FAILED', key: k })
          expect(lock.isHeld).toBe(true)
          expect(await observer.holders(k)).toHaveLength(1)
          await adapter.query(connection.db, 'ROLLBACK')
          expect(await lock.release()).toBe(true)
          expect(await observer.locks(k)).toEqual([])
        },
      )

      it.skipIf(!caps.singleConnection)('runs withLock on a connection the caller owns without closing it', async () => {
        const connection = await open('connection')
        const k = key('own-connection')
        expect(await lib.withLock(connection.db, k, ({ db }) => pid(db))).toBe(await pid(connection.db))
        expect(await lib.withLock(connection.db, k, () => 'again', { scope: 'transaction' })).toBe('again')
        expect(await adapter.query(connection.db, 'SELECT 1 AS one')).toEqual([{ one: 1 }])
      })

      it.skipIf(!caps.singleConnection)('keeps locking on a connection after DISCARD ALL drops its prepared statements', async () => {
        const connection = await open('connection')
        const k = key('discard-all')
        const lock = lib.createLock(connection.db, k)
        for (let round = 0; round < 3; round += 1) {
          await lock.acquire()
          expect(await observer.holders(k)).toEqual([await pid(connection.db)])
          expect(await lock.release()).toBe(true)
          expect(await lock.tryAcquire()).toBe(true)
          expect(await lock.release()).toBe(true)
          await adapter.query(connection.db, 'DISCARD ALL')
        }
        expect(await observer.locks(k)).toEqual([])
      })
    })

    describe('handles that reach one connection through different objects', () => {
      const inTransaction = <T>(pool: unknown, body: (tx: unknown) => Promise<T>) =>
        (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool, body)
      const inSavepoint = <T>(tx: unknown, body: (savepoint: unknown) => Promise<T>) =>
        (adapter.inSavepoint as NonNullable<typeof adapter.inSavepoint>)(tx, body)

      it.skipIf(!caps.sessionOnPool)('does not let a handle on lease.db take the session lock that lease holds', async () => {
        const pool = await open()
        const k = key('lease-session')
        const outer = await lib.createLock(pool.db, k).acquire()
        const inner = lib.createLock(outer.db, k)
        expect(await inner.tryAcquire()).toBe(false)
        await expect(inner.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
        expect(await lib.tryWithLock(outer.db, k, () => 'inner')).toEqual({ acquired: false })
        expect(inner.isHeld).toBe(false)
        expect(await observer.holders(k)).toEqual([await pid(outer.db)])
        expect(await outer.release()).toBe(true)
        expect(await observer.locks(k)).toEqual([])
      })

      it('does not let a handle on lease.db take the transaction lock withLock holds', async () => {
        const pool = await open()
        const k = key('lease-transaction')
        const seen = await lib.withLock(
          pool.db,
          k,
          async ({ db }) => ({
            tried: await lib.createLock(db, k, { scope: 'transaction' }).tryAcquire(),
            nested: await lib.tryWithLock(db, k, () => 'inner', { scope: 'transaction' }),
            holders: await observer.holders(k),
            pid: await pid(db),
          }),
          { scope: 'transaction' },
        )
        expect(seen).toEqual({ tried: false, nested: { acquired: false }, holders: [seen.pid], pid: seen.pid })
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.savepointHandle)("does not let a savepoint's handle take the lock its transaction's handle holds", async () => {
        const pool = await open()
        const k = key('tx-then-savepoint')
        await inTransaction(pool.db, async (tx) => {
          await lib.createLock(tx, k, { scope: 'transaction' }).acquire()
          await inSavepoint(tx, async (savepoint) => {
            const inner = lib.createLock(savepoint, k, { scope: 'transaction' })
            expect(await inner.tryAcquire()).toBe(false)
            await expect(inner.acquire({ timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
            expect(await lib.tryWithLock(savepoint, k, () => 'inner', { scope: 'transaction' })).toEqual({ acquired: false })
          })
          expect(await observer.holders(k)).toEqual([await pid(tx)])
        })
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.savepointHandle)("does not let a transaction's handle take the lock one of its savepoints holds", async () => {
        const pool = await open()
        const k = key('savepoint-then-tx')
        await inTransaction(pool.db, (tx) =>
          inSavepoint(tx, async (savepoint) => {
            await lib.createLock(savepoint, k, { scope: 'transaction' }).acquire()
            expect(await lib.createLock(tx, k, { scope: 'transaction' }).tryAcquire()).toBe(false)
            expect(await lib.tryWithLock(tx, k, () => 'outer', { scope: 'transaction' })).toEqual({ acquired: false })
            expect(await observer.holders(k)).toEqual([await pid(tx)])
          }),
        )
        expect(await observer.locks(k)).toEqual([])
      })

      it.skipIf(!caps.savepointHandle)(
        "makes a savepoint's handle wait for its transaction's handle, and take the lock once released",
        async () => {
          const pool = await open()
          const k = key('savepoint-waits')
          await inTransaction(pool.db, async (tx) => {
            const outer = await lib.createLock(tx, k).acquire()
            await inSavepoint(tx, async (savepoint) => {
              const inner = lib.createLock(savepoint, k)
              const waiting = inner.acquire()
              await sleep(50)
              expect(inner.isHeld).toBe(false)
              expect(await outer.release()).toBe(true)
              await waiting
              expect(inner.isHeld).toBe(true)
              expect(await observer.holders(k)).toEqual([await pid(savepoint)])
              expect(await inner.release()).toBe(true)
              expect(await observer.locks(k)).toEqual([])
            })
          })
        },
      )

      it.skipIf(!caps.savepointHandle)('does not let a savepoint of lease.db take the transaction lock withLock holds', async () => {
        const pool = await open()
        const k = key('lease-savepoint')
        const seen = await lib.withLock(
          pool.db,
          k,
          ({ db }) =>
            inSavepoint(db, async (savepoint) => ({
              tried: await lib.createLock(savepoint, k, { scope: 'transaction' }).tryAcquire(),
              holders: await observer.holders(k),
              pid: await pid(db),
            })),
          { scope: 'transaction' },
        )
        expect(seen).toEqual({ tried: false, holders: [seen.pid], pid: seen.pid })
        expect(await observer.locks(k)).toEqual([])
      })
    })

    describe('handle state', () => {
      it('rejects acquire on a handle that holds its lock with ALREADY_HELD', async () => {
        const pool = await open()
        const lock = caps.sessionOnPool ? lib.createLock(pool.db, key('held')) : undefined
        if (lock === undefined) return
        await lock.acquire()
        await expect(lock.acquire()).rejects.toMatchObject({ code: 'ALREADY_HELD' })
        await expect(lock.tryAcquire()).rejects.toMatchObject({ code: 'ALREADY_HELD' })
        await lock.release()
      })

      it('resolves release false without SQL when not held', async () => {
        const pool = await open()
        const lock = lib.createLock(pool.db, key('not-held'))
        await pool.close()
        expect(await lock.release()).toBe(false)
      })

      it.skipIf(!caps.sessionOnPool)('releases at the end of an await using block', async () => {
        const pool = await open()
        const k = key('using')
        {
          await using held = await lib.createLock(pool.db, k).acquire()
          expect(held.isHeld).toBe(true)
          expect(await observer.holders(k)).toHaveLength(1)
        }
        expect(await observer.locks(k)).toEqual([])
      })
    })

    describe('keys', () => {
      const invalid: [string, unknown][] = [
        ['NaN', Number.NaN],
        ['1.5', 1.5],
        ['2^64', 2n ** 64n],
        ['2^53', 2 ** 53],
        ['a pair out of int32', [2 ** 31, 0]],
        ['a pair of three', [1, 2, 3]],
        ['null', null],
        ['undefined', undefined],
        ['an object', { id: 1 }],
      ]
      for (const [label, bad] of invalid) {
        it(`refuses ${label} as a key with INVALID_KEY before any SQL`, async () => {
          const pool = await open()
          await pool.close()
          expect(() => lib.createLock(pool.db, bad as LockKey)).toThrow(PgLockError)
          expect(() => lib.createLock(pool.db, bad as LockKey)).toThrow(expect.objectContaining({ code: 'INVALID_KEY' }))
          await expect(lib.withLock(pool.db, bad as LockKey, () => 1)).rejects.toMatchObject({ code: 'INVALID_KEY' })
        })
      }

      it('refuses a malformed fn or options to withLock with INVALID_ARGUMENT before any SQL', async () => {
        const pool = await open()
        await pool.close()
        const k = key('bad-arguments')
        const malformed: [unknown, unknown][] = [
          ['not a function', undefined],
          ['not a function', { scope: 'transaction' }],
          [() => 1, 'fast'],
          [() => 1, null],
          [() => 1, { scope: 'global' }],
          [() => 1, { mode: 'upgrade' }],
          [() => 1, { timeoutMs: -1 }],
          [() => 1, { scope: 'transaction', timeoutMs: Number.NaN }],
          [() => 1, { signal: 'abort' }],
        ]
        for (const [fn, options] of malformed) {
          await expect(lib.withLock(pool.db, k, fn as () => number, options as WithLockOptions)).rejects.toMatchObject({
            code: 'INVALID_ARGUMENT',
          })
        }
      })

      it('hashes string keys like Python postgresql-lock and reproduces postgres-lock 0.1 on request', async () => {
        const pool = await open()
        const expected = {
          'sha1-int64': -464685171814670893n,
          'postgres-lock-0.1': 142468548502040132n,
        } as const
        for (const [keyHash, id] of Object.entries(expected) as [keyof typeof expected, bigint][]) {
          const rows = await lib.withLock(
            pool.db,
            'shared-identifier',
            async ({ db }) =>
              observer.query<{ classid: string; objid: string }>(
                `SELECT classid::int8 AS classid, objid::int8 AS objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND pid = ${await pid(db)}`,
              ),
            { keyHash },
          )
          const row = pgLocksRow({ kind: 'int64', value: id })
          expect(rows).toEqual([{ classid: String(row.classid), objid: String(row.objid) }])
        }
      })

      it('locks integer, bigint and pair keys under the ids Postgres would use', async () => {
        const pool = await open()
        const base = Number.parseInt(randomBytes(3).toString('hex'), 16)
        const keys: LockKey[] = [base, -BigInt(base) * 2n ** 32n - 1n, [base, -base]]
        for (const k of keys) {
          const holders = await lib.withLock(pool.db, k, () => observer.holders(k))
          expect(holders).toHaveLength(1)
          expect(resolveLockId(k).kind).toBe(Array.isArray(k) ? 'pair' : 'int64')
        }
      })
    })

    describe('round trips', () => {
      it('costs one round trip to take a session lock and one to release it', async () => {
        const proxy = await FaultProxy.start(url)
        onTestFinished(() => proxy.close())
        const pool = await open('pool', 2, proxy.url)
        const k = key('round-trips')
        // Every connection of the pool runs each statement once first: a driver may prepare a
        // statement on a connection in a round trip of its own (postgres.js asks the server for
        // its parameter types before it first binds them), which is paid once per connection.
        const both = [lib.createLock(pool.db, key('round-trips-a')), lib.createLock(pool.db, key('round-trips-b'))]
        await Promise.all(both.map((lock) => lock.acquire()))
        await Promise.all(both.map((lock) => lock.release()))
        await Promise.all(both.map((lock) => lock.tryAcquire()))
        await Promise.all(both.map((lock) => lock.release()))
        // and one transaction lock: over an ORM, pglock learns the class of its `tx` from the ORM's own first transaction
        await lib.withLock(pool.db, key('round-trips-a'), () => undefined, { scope: 'transaction' })
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
        expect(await counted(() => lib.withLock(pool.db, k, () => undefined, { scope: 'transaction' }))).toBe(caps.beginWithLock ? 2 : 3)
      })
    })

    describe('pools under load', () => {
      it('leaks no connection and no lock after many concurrent withLock cycles', async () => {
        const pool = await open('pool', 10)
        const keys = Array.from({ length: 5 }, (_, i) => key(`load-${i}`))
        let done = 0
        await Promise.all(
          Array.from({ length: 200 }, (_, i) =>
            lib.withLock(
              pool.db,
              keys[i % keys.length] as string,
              async ({ db }) => {
                await adapter.query(db, 'SELECT 1')
                done += 1
              },
              { scope: i % 3 === 0 ? 'transaction' : 'session', mode: i % 5 === 0 ? 'shared' : 'exclusive' },
            ),
          ),
        )
        expect(done).toBe(200)
        const backends = await observer.backends(pool.applicationName)
        expect(backends.length).toBeLessThanOrEqual(10)
        expect(backends.filter((backend) => backend.state !== 'idle')).toEqual([])
        for (const k of keys) expect(await observer.locks(k)).toEqual([])
      }, 60_000)

      for (const scope of ['session', 'transaction'] as const) {
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
            lib.withLock(pool.db, k, async ({ db }) => {
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

  function runWorker(options: { url: string; table: string; key: string; increments: number; adapter: string }): Promise<number | null> {
    return new Promise((resolve, reject) => {
      const child = fork(WORKER, [], {
        execArgv: ['--import', 'tsx'],
        env: { ...process.env, PGLOCK_WORKER: JSON.stringify(options) },
        stdio: 'inherit',
      })
      child.on('error', reject)
      child.on('exit', (code) => resolve(code))
    })
  }
}
