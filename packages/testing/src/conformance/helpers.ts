import { randomBytes } from 'node:crypto'
import type { LockKey, LockScope } from '@pglock/core'
import { afterAll, describe, inject, onTestFinished } from 'vitest'
import type { AdapterUnderTest, Capabilities, Opened } from '../adapter.ts'
import { Observer } from '../observer.ts'
import type {} from '../provided-context.ts'

/**
 * Resolves after `ms` milliseconds.
 *
 * @example
 * ```ts
 * await sleep(10) // let process warnings of this tick be emitted
 * ```
 */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Resolves with the reason once `signal` aborts, or rejects after `timeoutMs`.
 *
 * @example
 * ```ts
 * expect(await aborted(lock.signal)).toBeInstanceOf(LockLostError)
 * ```
 */
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

/**
 * Settles a promise into a value, so that tests can assert on either outcome.
 *
 * @example
 * ```ts
 * const result = await outcome(lib.withLock(db, key, fn, { timeoutMs: 300 }))
 * if (!result.ok) expect(result.error).toBeInstanceOf(LockTimeoutError)
 * ```
 */
export async function outcome<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await promise }
  } catch (error) {
    return { ok: false, error }
  }
}

/**
 * The scopes an adapter's locks take: both, or session scope alone where `caps.transactionScope`
 * is false (multiplexed locks).
 *
 * @example
 * ```ts
 * for (const scope of scopesOf(adapter.caps)) it(`times out (${scope} scope)`, async () => {})
 * ```
 */
export function scopesOf(caps: Capabilities): readonly LockScope[] {
  return caps.transactionScope === false ? ['session'] : ['session', 'transaction']
}

/** What the tests of one conformance feature share: the database, an observer, fresh keys and checked handles. */
export interface FeatureSuite {
  /** the test database URL */
  readonly url: string
  readonly observer: Observer
  /** A key no other test of this run uses. */
  key(label: string): string
  /** Opens a handle for this test, and checks at its end that it leaked nothing. */
  open(kind?: 'pool' | 'connection', max?: number, through?: string): Promise<Opened<any> & { applicationName: string }>
  /** The backend pid behind a handle, as Postgres reports it. */
  pid(db: unknown): Promise<number>
  /**
   * The backend holding a lock handle's lock: behind its `db`, or (a multiplexed lock, which has
   * none) the one `pg_locks` shows holding its key.
   */
  lockPid(lock: { readonly db?: unknown; readonly key: LockKey }): Promise<number>
}

/**
 * Declares one feature of the conformance suite under `<adapter>: conformance`, the title every
 * feature shares so that test names stay the same whether one feature runs or all of them.
 *
 * @example
 * ```ts
 * describeFeature(adapter, ({ key, open, observer }) => {
 *   describe('timeouts', () => {
 *     it('…', async () => {
 *       const pool = await open()
 *       await adapter.lib.withLock(pool.db, key('timeout'), async () => expect(await observer.holders(key('timeout'))).toEqual([]))
 *     })
 *   })
 * })
 * ```
 */
export function describeFeature(adapter: AdapterUnderTest, body: (suite: FeatureSuite) => void): void {
  describe(`${adapter.name}: conformance`, () => {
    // Created while collecting, so that tests can close over them; the pool connects on first use.
    const url = inject('databaseUrl')
    const observer = new Observer(url)
    const prefix = `pglock-test:${adapter.name}:${randomBytes(4).toString('hex')}`
    let serial = 0
    afterAll(async () => {
      await observer.close()
    })

    const key = (label: string): string => {
      serial += 1
      return `${prefix}:${label}:${serial}`
    }

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

    const lockPid = async (lock: { readonly db?: unknown; readonly key: LockKey }): Promise<number> =>
      lock.db === undefined ? Number((await observer.holders(lock.key))[0]) : pid(lock.db)

    body({ url, observer, key, open, pid, lockPid })
  })
}
