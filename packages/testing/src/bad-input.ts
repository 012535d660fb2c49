import { PgLockError } from '@pglock/core'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { Bench, type BenchHandle, settleWithin } from './bench.ts'
import { FaultProxy } from './fault-proxy.ts'

const SETTLE_BOUND_MS = 5_000

const BAD_HANDLES: [string, unknown][] = [
  ['null', null],
  ['undefined', undefined],
  ['a number', 42],
  ['a connection string', 'postgres://localhost/db'],
  ['a plain object', {}],
  ['an array', []],
  ['a function', () => undefined],
]

const BAD_LOCK_OPTIONS: [string, unknown, string][] = [
  ['a string', 'exclusive', 'INVALID_ARGUMENT'],
  ['a number', 42, 'INVALID_ARGUMENT'],
  ['null', null, 'INVALID_ARGUMENT'],
  ['an unknown scope', { scope: 'global' }, 'INVALID_ARGUMENT'],
  ['an unknown mode', { mode: 'write' }, 'INVALID_ARGUMENT'],
  ['keepAliveMs 0', { keepAliveMs: 0 }, 'INVALID_ARGUMENT'],
  ['a negative keepAliveMs', { keepAliveMs: -1 }, 'INVALID_ARGUMENT'],
  ['keepAliveMs NaN', { keepAliveMs: Number.NaN }, 'INVALID_ARGUMENT'],
  ['keepAliveMs Infinity', { keepAliveMs: Number.POSITIVE_INFINITY }, 'INVALID_ARGUMENT'],
  ['keepAliveMs as a string', { keepAliveMs: '100' }, 'INVALID_ARGUMENT'],
  ['an unknown keyHash', { keyHash: 'md5' }, 'INVALID_ARGUMENT'],
]

const BAD_WAIT_OPTIONS: [string, unknown][] = [
  ['a string', 'soon'],
  ['a number', 100],
  ['null', null],
  ['a negative timeoutMs', { timeoutMs: -1 }],
  ['timeoutMs -Infinity', { timeoutMs: Number.NEGATIVE_INFINITY }],
  ['timeoutMs NaN', { timeoutMs: Number.NaN }],
  ['timeoutMs Infinity', { timeoutMs: Number.POSITIVE_INFINITY }],
  ['a timeoutMs past 2^31 - 1', { timeoutMs: 2 ** 31 }],
  ['a huge timeoutMs', { timeoutMs: 1e15 }],
  ['timeoutMs as a string', { timeoutMs: '100' }],
  ['timeoutMs null', { timeoutMs: null }],
  ['a signal that is not an AbortSignal', { signal: { aborted: true } }],
  ['a signal given as a string', { signal: 'abort' }],
]

const BAD_FNS: [string, unknown][] = [
  ['undefined', undefined],
  ['null', null],
  ['a number', 42],
  ['a string', 'run'],
  ['an object', { run() {} }],
  ['a promise', Promise.resolve(1)],
]

/**
 * Bad input: every public function (`createLock`, `acquire`, `tryAcquire`, `withLock`,
 * `tryWithLock`) given wrong types and out-of-range values, ended pools and clients, and an
 * already-aborted signal. Each must fail with a clear error before any SQL: the handles talk to
 * Postgres through a {@link FaultProxy} whose round-trip counter must not move. Nothing may be
 * left held, waiting or checked out.
 *
 * @example
 * ```ts
 * import { describeBadInput } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeBadInput(adapter)
 * ```
 */
export function describeBadInput(adapter: AdapterUnderTest): void {
  const { lib, caps } = adapter

  describe(`${adapter.name}: bad input`, () => {
    const bench = new Bench(adapter, 'bad-input').install()

    /** A pool (and a connection) behind a proxy, warmed up so that a later round trip can only be pglock's. */
    async function setup(): Promise<{ proxy: FaultProxy; pool: BenchHandle; connection: BenchHandle | undefined }> {
      const proxy = await FaultProxy.start(bench.url)
      onTestFinished(() => proxy.close())
      const pool = await bench.open({ url: proxy.url, max: 2 })
      await lib.withLock(pool.db, bench.key('warm'), () => undefined)
      const connection = caps.singleConnection ? await bench.open({ kind: 'connection', url: proxy.url }) : undefined
      return { proxy, pool, connection }
    }

    /** Runs `action`, which must fail with a PgLockError of `code` and send nothing to Postgres. */
    async function refusedBeforeSql(proxy: FaultProxy, action: () => unknown, code: string, mentions?: RegExp): Promise<void> {
      const before = proxy.roundTrips
      let failure: unknown
      try {
        await action()
      } catch (error) {
        failure = error
      }
      expect(failure, 'it failed').toBeInstanceOf(PgLockError)
      expect(failure).toMatchObject({ code })
      if (mentions) expect((failure as Error).message).toMatch(mentions)
      expect(proxy.roundTrips - before, 'round trips to Postgres').toBe(0)
    }

    describe('driver handles', () => {
      for (const [label, bad] of BAD_HANDLES) {
        it(`refuses ${label} as db in every function, before any SQL`, async () => {
          const { proxy } = await setup()
          const key = bench.key('bad-db')
          await refusedBeforeSql(proxy, () => lib.createLock(bad, key), 'INVALID_ARGUMENT', /db must be/)
          await refusedBeforeSql(proxy, () => lib.withLock(bad, key, () => 1), 'INVALID_ARGUMENT', /db must be/)
          await refusedBeforeSql(proxy, () => lib.tryWithLock(bad, key, () => 1), 'INVALID_ARGUMENT', /db must be/)
          await refusedBeforeSql(proxy, () => lib.withLock(bad, key, () => 1, { scope: 'transaction' }), 'INVALID_ARGUMENT', /db must be/)
        })
      }
    })

    describe('lock options', () => {
      for (const [label, bad, code] of BAD_LOCK_OPTIONS) {
        it(`refuses ${label} as lock options, before any SQL`, async () => {
          const { proxy, pool } = await setup()
          const key = bench.key('bad-options')
          await refusedBeforeSql(proxy, () => lib.createLock(pool.db, key, bad as never), code)
          await refusedBeforeSql(proxy, () => lib.withLock(pool.db, key, () => 1, bad as never), code)
          await refusedBeforeSql(proxy, () => lib.tryWithLock(pool.db, key, () => 1, bad as never), code)
          expect(await bench.observer.locks(key)).toEqual([])
        })
      }
    })

    describe('wait options', () => {
      for (const [label, bad] of BAD_WAIT_OPTIONS) {
        it(`refuses ${label} as wait options, before any SQL`, async () => {
          const { proxy, pool, connection } = await setup()
          const key = bench.key('bad-wait')
          const withOptions = typeof bad === 'object' && bad !== null ? bad : undefined
          for (const db of [pool.db, ...(connection ? [connection.db] : [])]) {
            if (caps.sessionOnPool || db !== pool.db) {
              const lock = lib.createLock(db, key)
              await refusedBeforeSql(proxy, () => lock.acquire(bad as never), 'INVALID_ARGUMENT')
              if (bad === null || typeof bad !== 'object' || 'signal' in bad) {
                await refusedBeforeSql(proxy, () => lock.tryAcquire(bad as never), 'INVALID_ARGUMENT')
              }
              expect(lock.isHeld).toBe(false)
            }
            if (withOptions !== undefined) {
              for (const scope of ['session', 'transaction'] as const) {
                await refusedBeforeSql(proxy, () => lib.withLock(db, key, () => 1, { ...withOptions, scope }), 'INVALID_ARGUMENT')
                await refusedBeforeSql(proxy, () => lib.tryWithLock(db, key, () => 1, { ...withOptions, scope }), 'INVALID_ARGUMENT')
              }
            }
          }
          expect(await bench.observer.locks(key)).toEqual([])
          expect(await lib.withLock(pool.db, key, () => 'still usable')).toBe('still usable')
        })
      }

      it('accepts timeoutMs 0 and 2^31 - 1 as the bounds of the range', async () => {
        const { pool } = await setup()
        const key = bench.key('bounds')
        expect(await lib.withLock(pool.db, key, () => 'zero', { timeoutMs: 0 })).toBe('zero')
        expect(await lib.withLock(pool.db, key, () => 'max', { timeoutMs: 2 ** 31 - 1 })).toBe('max')
      })
    })

    describe('functions', () => {
      for (const [label, bad] of BAD_FNS) {
        it(`refuses ${label} as fn in withLock and tryWithLock, before any SQL`, async () => {
          const { proxy, pool } = await setup()
          const key = bench.key('bad-fn')
          for (const scope of ['session', 'transaction'] as const) {
            await refusedBeforeSql(
              proxy,
              () => lib.withLock(pool.db, key, bad as never, { scope }),
              'INVALID_ARGUMENT',
              /fn must be a function/,
            )
            await refusedBeforeSql(proxy, () => lib.tryWithLock(pool.db, key, bad as never, { scope }), 'INVALID_ARGUMENT', /fn must be/)
          }
          expect(await bench.observer.locks(key)).toEqual([])
        })
      }
    })

    describe('an already-aborted signal', () => {
      it('rejects with its reason in every function, before any SQL', async () => {
        const { proxy, pool, connection } = await setup()
        const key = bench.key('pre-aborted')
        const reason = new Error('aborted before the call')
        const signal = AbortSignal.abort(reason)
        for (const db of [pool.db, ...(connection ? [connection.db] : [])]) {
          const before = proxy.roundTrips
          const calls: (() => Promise<unknown>)[] = [
            () => lib.withLock(db, key, () => 1, { signal }),
            () => lib.withLock(db, key, () => 1, { signal, scope: 'transaction' }),
            () => lib.tryWithLock(db, key, () => 1, { signal }),
            () => lib.tryWithLock(db, key, () => 1, { signal, scope: 'transaction' }),
          ]
          if (caps.sessionOnPool || db !== pool.db) {
            calls.push(
              () => lib.createLock(db, key).acquire({ signal }),
              () => lib.createLock(db, key).tryAcquire({ signal }),
            )
          }
          for (const call of calls) await expect(call()).rejects.toBe(reason)
          expect(proxy.roundTrips - before, 'round trips to Postgres').toBe(0)
        }
        expect(await bench.observer.locks(key)).toEqual([])
      })
    })

    describe('ended pools and clients', () => {
      type Call = [string, (db: unknown, key: string) => Promise<unknown>]

      /** Ends a pool that has been used, then expects each call on it to fail with a readable error, opening no backend. */
      async function expectEndedPoolFails(label: string, calls: readonly Call[]): Promise<void> {
        const pool = await bench.open({ max: 2 })
        const key = bench.key(label)
        await lib.withLock(pool.db, key, () => undefined)
        await pool.close()
        await bench.observer.until(
          'the ended pool’s backends are gone',
          async () => (await bench.observer.backends(pool.applicationName)).length === 0,
        )
        for (const [name, call] of calls) {
          const result = await settleWithin(call(pool.db, key), SETTLE_BOUND_MS)
          expect(result.state, `${name} on an ended pool`).toBe('rejected')
          expect(String((result as { error: Error }).error?.message), `${name}: a readable message`).not.toBe('')
        }
        expect(await bench.observer.backends(pool.applicationName)).toEqual([])
      }

      it('fails every function in transaction scope on an ended pool with a clear error, without hanging', async () => {
        await expectEndedPoolFails('ended-pool-xact', [
          ['withLock', (db, key) => lib.withLock(db, key, () => 1, { scope: 'transaction' })],
          ['tryWithLock', (db, key) => lib.tryWithLock(db, key, () => 1, { scope: 'transaction' })],
        ])
      })

      it.skipIf(!caps.endedPoolRefuses)(
        'fails every function in session scope on an ended pool with a clear error, without hanging',
        async () => {
          await expectEndedPoolFails('ended-pool-session', [
            ['withLock', (db, key) => lib.withLock(db, key, () => 1)],
            ['tryWithLock', (db, key) => lib.tryWithLock(db, key, () => 1)],
            ...(caps.sessionOnPool
              ? ([
                  ['acquire', (db, key) => lib.createLock(db, key).acquire()],
                  ['tryAcquire', (db, key) => lib.createLock(db, key).tryAcquire()],
                ] satisfies Call[])
              : []),
          ])
        },
      )

      it.skipIf(!caps.singleConnection)('fails every function on an ended connection with a clear error, without hanging', async () => {
        const connection = await bench.open({ kind: 'connection' })
        const key = bench.key('ended-connection')
        await lib.withLock(connection.db, key, () => undefined)
        await connection.close()
        const calls: [string, () => Promise<unknown>][] = [
          ['withLock', () => lib.withLock(connection.db, key, () => 1)],
          ['withLock (transaction)', () => lib.withLock(connection.db, key, () => 1, { scope: 'transaction' })],
          ['tryWithLock', () => lib.tryWithLock(connection.db, key, () => 1)],
          ['acquire', () => lib.createLock(connection.db, key).acquire()],
          ['tryAcquire', () => lib.createLock(connection.db, key).tryAcquire()],
          ['acquire with timeoutMs', () => lib.createLock(connection.db, key).acquire({ timeoutMs: 100 })],
        ]
        for (const [name, call] of calls) {
          const result = await settleWithin(call(), SETTLE_BOUND_MS)
          expect(result.state, `${name} on an ended connection`).toBe('rejected')
          const error = (result as { error: Error }).error
          expect(error, `${name}: a closed connection holds nothing, so nothing failed to release`).not.toMatchObject({
            code: 'RELEASE_FAILED',
          })
          expect(String(error?.message)).not.toBe('')
        }
      })
    })
  })
}
