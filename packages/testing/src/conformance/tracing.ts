import { AsyncLocalStorage } from 'node:async_hooks'
import { channel, tracingChannel } from 'node:diagnostics_channel'
import { type LockKey, LockLostError, LockTimeoutError, resolveLockId } from '@pglock/core'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { aborted, describeFeature, outcome, scopesOf, sleep } from './helpers.ts'

/** One event a subscriber saw: `<channel>:<event>` (or `lost`), and a copy of its context as it was then. */
interface Seen {
  readonly name: string
  readonly context: Record<string, unknown>
}

/**
 * Subscribes to every pglock channel until the test ends and records the events of lock `key`
 * (other tests' locks may be traced meanwhile).
 */
function record(key: LockKey): Seen[] {
  const seen: Seen[] = []
  const push = (name: string, context: object) => {
    if ((context as { key?: unknown }).key === key) seen.push({ name, context: { ...context } })
  }
  for (const traced of ['acquire', 'run', 'release'] as const) {
    const channels = tracingChannel<unknown, object>(`pglock:${traced}`)
    const subscribers = {
      start: (context: object) => push(`${traced}:start`, context),
      end: (context: object) => push(`${traced}:end`, context),
      asyncStart: (context: object) => push(`${traced}:asyncStart`, context),
      asyncEnd: (context: object) => push(`${traced}:asyncEnd`, context),
      error: (context: object) => push(`${traced}:error`, context),
    }
    channels.subscribe(subscribers)
    onTestFinished(() => channels.unsubscribe(subscribers))
  }
  const lost = (message: unknown) => push('lost', message as object)
  channel('pglock:lost').subscribe(lost)
  onTestFinished(() => void channel('pglock:lost').unsubscribe(lost))
  return seen
}

const names = (seen: readonly Seen[], prefix = '') => seen.map(({ name }) => name).filter((name) => name.startsWith(prefix))

function only(seen: readonly Seen[], name: string, where: (context: Record<string, unknown>) => boolean = () => true) {
  const found = seen.filter((event) => event.name === name && where(event.context))
  expect(found, `one ${name} event`).toHaveLength(1)
  return (found[0] as Seen).context
}

const TRACE = ['start', 'end', 'asyncStart', 'asyncEnd']

/** The adapter name an adapter under test reports in `LockExecutor.adapter`, from its test name (multiplexed or not). */
function adapterName(test: string): string {
  const name = test.replace(/ multiplexed$/, '')
  if (name.startsWith('kysely')) return 'kysely'
  return name.replace(/^drizzle-/, 'drizzle/')
}

/**
 * Runs `body` while this process's uncaught exceptions are collected instead of failing the run:
 * diagnostics_channel reports a subscriber's error as one, on the next tick.
 */
async function collectingUncaught<T>(body: () => Promise<T>): Promise<{ value: T; uncaught: unknown[] }> {
  const saved = process.listeners('uncaughtException')
  const uncaught: unknown[] = []
  const collect = (error: unknown) => void uncaught.push(error)
  process.removeAllListeners('uncaughtException')
  process.on('uncaughtException', collect)
  try {
    const value = await body()
    await sleep(50)
    return { value, uncaught }
  } finally {
    process.off('uncaughtException', collect)
    for (const listener of saved) process.on('uncaughtException', listener)
  }
}

/**
 * Tracing: a subscriber to `pglock:acquire`, `pglock:run`, `pglock:release` and `pglock:lost`
 * sees each acquire (every outcome), `withLock`'s function, each release and each loss, with the
 * lock, the adapter and the pid Postgres shows, `start` in the caller's async context; a throwing
 * subscriber breaks no lock. Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeTracing } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeTracing(adapter)
 * ```
 */
export function describeTracing(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  const name = adapterName(adapter.name)
  describeFeature(adapter, ({ key, observer, open }) => {
    describe('tracing channels', () => {
      it.skipIf(!caps.sessionOnPool)('traces a session withLock as acquire, run and release, with the pid pg_locks shows', async () => {
        const pool = await open()
        const k = key('trace-session')
        const seen = record(k)
        let holders: number[] = []
        expect(
          await lib.withLock(pool.db, k, async () => {
            holders = await observer.holders(k)
            return 'value'
          }),
        ).toBe('value')
        expect(names(seen)).toEqual([
          ...TRACE.map((event) => `acquire:${event}`),
          ...TRACE.map((event) => `run:${event}`),
          ...TRACE.map((event) => `release:${event}`),
        ])
        expect(holders).toHaveLength(1)
        const lock = { key: k, lockId: resolveLockId(k).value, mode: 'exclusive', scope: 'session', adapter: name }
        expect(only(seen, 'acquire:start')).toEqual({
          ...lock,
          pid: undefined,
          operation: 'withLock',
          timeoutMs: undefined,
          outcome: undefined,
          waitedMs: undefined,
        })
        const acquired = only(seen, 'acquire:asyncEnd')
        expect(acquired).toMatchObject({ ...lock, pid: holders[0], outcome: 'acquired', result: true })
        expect(acquired.waitedMs).toBeGreaterThanOrEqual(0)
        expect(only(seen, 'run:asyncEnd')).toMatchObject({ ...lock, pid: holders[0], result: 'value' })
        const released = only(seen, 'release:asyncEnd')
        expect(released).toMatchObject({ ...lock, pid: holders[0], released: true, result: true })
        expect(released.heldMs).toBeGreaterThanOrEqual(0)
        expect(await observer.holders(k)).toEqual([])
      })

      it.skipIf(caps.transactionScope === false)(
        'traces a transaction-scoped withLock, committed and rolled back, as acquire, run and release',
        async () => {
          const pool = await open()
          const k = key('trace-transaction')
          const seen = record(k)
          expect(await lib.withLock(pool.db, k, () => 'committed', { scope: 'transaction', mode: 'shared' })).toBe('committed')
          const failure = new Error('fn failed')
          const rolledBack = await outcome(
            lib.withLock(
              pool.db,
              k,
              async () => {
                throw failure
              },
              { scope: 'transaction', mode: 'shared' },
            ),
          )
          expect(rolledBack).toEqual({ ok: false, error: failure })
          const acquire = TRACE.map((event) => `acquire:${event}`)
          const release = TRACE.map((event) => `release:${event}`)
          expect(names(seen)).toEqual([
            ...[...acquire, ...TRACE.map((event) => `run:${event}`), ...release],
            ...[...acquire, 'run:start', 'run:end', 'run:error', 'run:asyncStart', 'run:asyncEnd', ...release],
          ])
          const lock = {
            key: k,
            lockId: resolveLockId(k).value,
            mode: 'shared',
            scope: 'transaction',
            adapter: name,
            pid: expect.any(Number),
          }
          for (const event of seen.filter(({ name }) => name === 'acquire:asyncEnd')) {
            expect(event.context).toMatchObject({ ...lock, outcome: 'acquired' })
          }
          expect(only(seen, 'run:error')).toMatchObject({ ...lock, error: failure })
          for (const event of seen.filter(({ name }) => name === 'release:asyncEnd')) {
            expect(event.context).toMatchObject({ ...lock, released: true })
            expect(event.context.heldMs).toBeGreaterThanOrEqual(0)
          }
          expect(await observer.holders(k)).toEqual([])
        },
      )

      it.skipIf(!caps.survivesConnectionLoss)('reports each outcome of a failed acquire: busy, timeout, aborted, error', async () => {
        const [holder, other] = [await open(), await open()]
        const k = key('trace-outcomes')
        const seen = record(k)
        const results = await lib.withLock(holder.db, k, async () => {
          const busy = await lib.tryWithLock(other.db, k, () => 'never')
          const timeout = await outcome(lib.withLock(other.db, k, () => 'never', { timeoutMs: 200 }))
          const controller = new AbortController()
          const abort = new Error('caller gave up')
          setTimeout(() => controller.abort(abort), 100)
          const abortion = await outcome(lib.withLock(other.db, k, () => 'never', { signal: controller.signal }))
          const waiting = outcome(lib.withLock(other.db, k, () => 'never', { scope: scopesOf(caps).at(-1) }))
          await observer.until('a waiter in Postgres', async () => (await observer.waiters(k)).length === 1)
          await observer.terminate((await observer.waiters(k))[0] as number)
          return { busy, timeout, abortion, abort, failed: await waiting }
        })
        expect(results.busy).toEqual({ acquired: false })
        expect(results.timeout.ok ? undefined : results.timeout.error).toBeInstanceOf(LockTimeoutError)
        expect(results.abortion).toEqual({ ok: false, error: results.abort })
        expect(results.failed.ok).toBe(false)
        const ends = seen.filter(({ name }) => name === 'acquire:asyncEnd').map(({ context }) => context)
        expect(ends.map(({ operation, outcome }) => `${operation} ${outcome}`)).toEqual([
          'withLock acquired',
          'tryWithLock busy',
          'withLock timeout',
          'withLock aborted',
          'withLock error',
        ])
        expect(ends[1]).toMatchObject({ result: false, pid: undefined, adapter: name })
        expect(ends[2]).toMatchObject({ timeoutMs: 200, error: results.timeout.ok ? undefined : results.timeout.error })
        expect(ends[2]?.waitedMs).toBeGreaterThanOrEqual(190)
        expect(ends[3]).toMatchObject({ error: results.abort })
        expect(ends[3]?.waitedMs).toBeGreaterThanOrEqual(90)
        expect(ends[4]).toMatchObject({ scope: scopesOf(caps).at(-1), error: results.failed.ok ? undefined : results.failed.error })
        expect(names(seen, 'acquire:error')).toHaveLength(3)
        expect(names(seen, 'run:')).toHaveLength(4)
        expect(await observer.holders(k)).toEqual([])
      })

      it.skipIf(!caps.sessionOnPool)('traces lock.acquire(), lock.tryAcquire() and lock.release()', async () => {
        const pool = await open()
        const k = key('trace-handle')
        const seen = record(k)
        const lock = await lib.createLock(pool.db, k).acquire()
        const [pid] = await observer.holders(k)
        expect(await lib.createLock(pool.db, k).tryAcquire()).toBe(false)
        await sleep(20)
        expect(await lock.release()).toBe(true)
        expect(await lock.release()).toBe(false)
        const ends = seen.filter(({ name }) => name === 'acquire:asyncEnd').map(({ context }) => context)
        expect(ends).toMatchObject([
          { operation: 'acquire', outcome: 'acquired', pid, timeoutMs: undefined, adapter: name, result: true },
          { operation: 'tryAcquire', outcome: 'busy', pid: undefined, result: false },
        ])
        const released = only(seen, 'release:asyncEnd')
        expect(released).toMatchObject({ key: k, pid, released: true, scope: 'session' })
        expect(released.heldMs).toBeGreaterThanOrEqual(15)
        expect(names(seen, 'release:')).toEqual(TRACE.map((event) => `release:${event}`))
      })

      it.skipIf(!caps.sessionOnPool || !caps.survivesConnectionLoss)(
        'publishes one pglock:lost for a lock lost while held, and no release for it',
        async () => {
          const pool = await open()
          const k = key('trace-lost')
          const seen = record(k)
          const lock = await lib.createLock(pool.db, k).acquire()
          const [pid] = await observer.holders(k)
          await observer.terminate(pid as number)
          const reason = await aborted(lock.signal)
          expect(await lock.release()).toBe(false)
          const lost = only(seen, 'lost')
          expect(lost).toMatchObject({ key: k, lockId: resolveLockId(k).value, pid, adapter: name, scope: 'session', error: reason })
          expect(lost.error).toBeInstanceOf(LockLostError)
          expect(lost.heldMs).toBeGreaterThanOrEqual(0)
          expect(names(seen, 'release:')).toEqual([])
        },
      )

      it.skipIf(!caps.survivesConnectionLoss)('publishes pglock:lost for a withLock lock lost while fn runs', async () => {
        const pool = await open()
        const k = key('trace-lost-lease')
        const seen = record(k)
        const result = await outcome(
          lib.withLock(
            pool.db,
            k,
            async ({ signal }) => {
              await observer.terminate((await observer.holders(k))[0] as number)
              await aborted(signal)
            },
            { scope: scopesOf(caps).at(-1) },
          ),
        )
        expect(result.ok ? undefined : result.error).toBeInstanceOf(LockLostError)
        const lost = only(seen, 'lost')
        expect(lost).toMatchObject({ key: k, scope: scopesOf(caps).at(-1), adapter: name })
        expect(lost.error).toBeInstanceOf(LockLostError)
        expect(names(seen, 'release:')).toEqual([])
      })

      it("publishes acquire's start in the caller's async context, and makes run's bound store active in fn", async () => {
        const pool = await open()
        const k = key('trace-context')
        const caller = new AsyncLocalStorage<string>()
        const atStart: (string | undefined)[] = []
        const start = tracingChannel('pglock:acquire').start
        const onStart = (context: unknown) => void ((context as { key: LockKey }).key === k && atStart.push(caller.getStore()))
        start.subscribe(onStart)
        onTestFinished(() => void start.unsubscribe(onStart))
        const inFn = new AsyncLocalStorage<LockKey>()
        const run = tracingChannel<unknown, { key: LockKey }>('pglock:run')
        run.start.bindStore(inFn, (context) => context.key)
        onTestFinished(() => void run.start.unbindStore(inFn))
        const running = caller.run('caller 1', () =>
          lib.withLock(pool.db, k, async ({ db = pool.db }) => {
            await adapter.query(db, 'SELECT 1')
            return [inFn.getStore(), caller.getStore()]
          }),
        )
        expect(atStart).toEqual(['caller 1']) // published before withLock returned
        const seenInFn = await running
        await caller.run('caller 2', () => lib.tryWithLock(pool.db, k, () => 'ok', { scope: scopesOf(caps).at(-1) }))
        expect(atStart).toEqual(['caller 1', 'caller 2'])
        expect(seenInFn).toEqual([k, 'caller 1'])
      })

      it('breaks no lock when a subscriber throws: Node reports its error as uncaught, the lock works and is released', async () => {
        const pool = await open()
        const k = key('trace-throwing')
        const thrown = new Error('subscriber failed')
        const fail = () => {
          throw thrown
        }
        const subscribers = { start: fail, end: fail, asyncStart: fail, asyncEnd: fail, error: fail }
        const traced = ['acquire', 'run', 'release'].map((name) => tracingChannel(`pglock:${name}`))
        for (const channels of traced) channels.subscribe(subscribers)
        channel('pglock:lost').subscribe(fail)
        onTestFinished(() => {
          for (const channels of traced) channels.unsubscribe(subscribers)
          channel('pglock:lost').unsubscribe(fail)
        })
        const { value, uncaught } = await collectingUncaught(async () => [
          await lib.withLock(pool.db, k, async () => (await observer.holders(k)).length, {
            scope: caps.sessionOnPool ? 'session' : 'transaction',
          }),
          await lib.tryWithLock(pool.db, k, async () => (await observer.holders(k)).length, { scope: scopesOf(caps).at(-1) }),
        ])
        expect(value).toEqual([1, { acquired: true, value: 1 }])
        expect(uncaught.length).toBeGreaterThanOrEqual(16)
        expect(uncaught.every((error) => error === thrown)).toBe(true)
        expect(await observer.holders(k)).toEqual([])
      })
    })
  })
}
