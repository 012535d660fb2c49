import { randomBytes } from 'node:crypto'
import type { LockKey } from '@pglock/core'
import { afterAll, beforeAll, expect, inject, onTestFinished } from 'vitest'
import type { AdapterUnderTest, Opened } from './adapter.ts'
import { Observer } from './observer.ts'

/** How long closing a pool or connection may take before the test calls it a leak. */
const CLOSE_BOUND_MS = 10_000

/** Scale of the reliability suites: small counts under `pnpm test`, large under `pnpm test:soak`. */
export const SOAK = process.env.PGLOCK_SOAK === '1'

/**
 * Picks the quick count under `pnpm test` and the soak count under `pnpm test:soak`
 * (`PGLOCK_SOAK=1`). Both run the same code, so the soak is never skipped, only scaled.
 *
 * @example
 * ```ts
 * const rounds = scaled(50, 1_000)
 * ```
 */
export function scaled<T>(quick: T, soak: T): T {
  return SOAK ? soak : quick
}

/** A handle a test opened through a {@link Bench}, tagged with its own `application_name`. */
export interface BenchHandle extends Opened<any> {
  readonly applicationName: string
  /** the pool size it was opened with (1 for a single connection) */
  readonly max: number
}

/** Options of {@link Bench.open}. */
export interface BenchOpenOptions {
  readonly kind?: 'pool' | 'connection'
  readonly max?: number
  /** the URL to connect through (a fault proxy, a pgbouncer), the test database by default */
  readonly url?: string
  /** skip the end-of-test check for locks and open transactions (the server may be down) */
  readonly unchecked?: boolean
  /**
   * The handle reaches Postgres through a pooler (PgBouncer), whose server connections outlive
   * the handle and keep its `application_name`: closing it need not end them.
   */
  readonly throughPooler?: boolean
}

/**
 * Per-file test bench of the reliability suites: an {@link Observer}, fresh keys, handles that
 * are checked for leaks when their test ends, and a file-level check (run in `afterAll`) that no
 * key the file used is still locked and no backend it opened is still connected.
 *
 * Each handle gets a fresh `application_name`, so `pg_stat_activity` tells its backends apart.
 * At the end of its test: no advisory lock held or awaited by its backends, none of them
 * `idle in transaction`; then it is closed, which must finish within 10 s (a pool with a client
 * still checked out never finishes `end()` in node-postgres), and afterwards none of its backends
 * may remain.
 */
export class Bench {
  readonly adapter: AdapterUnderTest
  readonly prefix: string
  #url = ''
  #observer: Observer | undefined
  #serial = 0
  readonly #keys = new Set<string>()
  readonly #applications = new Set<string>()

  constructor(adapter: AdapterUnderTest, suite: string) {
    this.adapter = adapter
    this.prefix = `pglock-rel:${adapter.name}:${suite}:${randomBytes(4).toString('hex')}`
  }

  /** The test database URL, from vitest's `inject('databaseUrl')`. */
  get url(): string {
    return this.#url
  }

  get observer(): Observer {
    if (this.#observer === undefined) throw new Error('Bench used outside its describe block')
    return this.#observer
  }

  /**
   * Registers the bench's hooks in the enclosing `describe`. `url` names another database than
   * the shared test database (a private server the suite started in an earlier `beforeAll`).
   */
  install(url: () => string = () => inject('databaseUrl')): this {
    beforeAll(() => {
      this.#url = url()
      this.#observer = new Observer(this.#url)
    })
    afterAll(async () => {
      try {
        await this.checkFileLeaks()
      } finally {
        await this.#observer?.close()
      }
    })
    return this
  }

  /** A key no other test uses; remembered for the file-level leak check. */
  key(label: string): string {
    this.#serial += 1
    const key = `${this.prefix}:${label}:${this.#serial}`
    this.#keys.add(key)
    return key
  }

  /** A fresh `application_name`, remembered for the file-level leak check. */
  applicationName(): string {
    const name = `pglock-r-${randomBytes(5).toString('hex')}`
    this.#applications.add(name)
    return name
  }

  /** Opens a pool (or one connection) for the current test and checks it for leaks when the test ends. */
  async open(options: BenchOpenOptions = {}): Promise<BenchHandle> {
    const { kind = 'pool', max = 5, url = this.#url, unchecked = false, throughPooler = false } = options
    const applicationName = this.applicationName()
    const openOptions = { url, applicationName, max, throughPooler }
    const opened =
      kind === 'pool'
        ? await this.adapter.openPool(openOptions)
        : await (this.adapter.openConnection as NonNullable<AdapterUnderTest['openConnection']>)(openOptions)
    const handle: BenchHandle = { ...opened, applicationName, max: kind === 'pool' ? max : 1 }
    onTestFinished(async () => {
      try {
        if (!unchecked) await this.expectClean(applicationName)
      } finally {
        await this.expectClosed(handle, { backendsEnd: !throughPooler })
      }
    })
    return handle
  }

  /** Waits (bounded) until no backend of `applicationName` holds or awaits an advisory lock or sits idle in a transaction. */
  async expectClean(applicationName: string): Promise<void> {
    let seen = ''
    try {
      await this.observer.until('no advisory lock or open transaction is left behind', async () => {
        const locks = await this.observer.locksOf(applicationName)
        const open = (await this.observer.backends(applicationName)).filter((backend) => backend.state?.startsWith('idle in transaction'))
        seen = JSON.stringify({ locks, idleInTransaction: open })
        return locks.length === 0 && open.length === 0
      })
    } catch (error) {
      throw new Error(`leak in ${applicationName}: ${seen}`, { cause: error })
    }
  }

  /** Closes a handle within a bound and (unless told otherwise) waits until none of its backends remain. */
  async expectClosed(handle: BenchHandle, options: { readonly backendsEnd?: boolean } = {}): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const bound = new Promise<'stuck'>((resolve) => {
      timer = setTimeout(() => resolve('stuck'), CLOSE_BOUND_MS)
    })
    const closed = await Promise.race([handle.close().then(() => 'closed' as const), bound]).finally(() => clearTimeout(timer))
    expect(closed, `closing ${handle.applicationName} (a connection still checked out keeps a pool from ending)`).toBe('closed')
    if (options.backendsEnd === false) return
    await this.observer.until(
      `no backend of ${handle.applicationName} remains`,
      async () => (await this.observer.backends(handle.applicationName)).length === 0,
    )
  }

  /**
   * Proves that no connection of `handle` is stuck checked out: `handle.max` locks on distinct keys
   * must all be held at once. A pool that leaked one connection can hold only `max - 1`.
   */
  async expectAllConnectionsUsable(handle: BenchHandle, timeoutMs = 5_000): Promise<void> {
    const { lib } = this.adapter
    let inside = 0
    let release: () => void = () => undefined
    const everyone = new Promise<void>((resolve) => {
      release = resolve
    })
    const keys = Array.from({ length: handle.max }, (_, i) => this.key(`usable-${i}`))
    let timer: NodeJS.Timeout | undefined
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`only ${inside} of ${handle.max} connections of ${handle.applicationName} could hold a lock`)),
        timeoutMs,
      )
    })
    const all = Promise.all(
      keys.map((key) =>
        lib.withLock(handle.db, key, async () => {
          inside += 1
          if (inside === handle.max) release()
          await everyone
        }),
      ),
    )
    try {
      await Promise.race([all, stuck])
    } finally {
      clearTimeout(timer)
      release()
      await all.catch(() => undefined)
    }
  }

  /** File-level leak check: no key of this file locked, no backend of this file connected (waits up to 5 s for them to go). */
  async checkFileLeaks(): Promise<void> {
    const observer = this.observer
    const leftovers = async () => {
      const locked: string[] = []
      for (const key of this.#keys) if ((await observer.locks(key as LockKey)).length > 0) locked.push(key)
      const connected: string[] = []
      for (const name of this.#applications) if ((await observer.backends(name)).length > 0) connected.push(name)
      return { locked, connected }
    }
    await observer
      .until('the file left no lock and no backend behind', async () => {
        const { locked, connected } = await leftovers()
        return locked.length === 0 && connected.length === 0
      })
      .catch(() => undefined)
    expect(await leftovers(), 'locks or backends left behind by this file').toEqual({ locked: [], connected: [] })
  }
}

/**
 * Settles a promise within `ms`, so that a test can assert on either outcome and never waits
 * forever: resolves `{ state: 'pending' }` if it has not settled by then.
 */
export async function settleWithin<T>(
  promise: Promise<T>,
  ms: number,
): Promise<{ state: 'fulfilled'; value: T } | { state: 'rejected'; error: unknown } | { state: 'pending' }> {
  let timer: NodeJS.Timeout | undefined
  const pending = new Promise<{ state: 'pending' }>((resolve) => {
    timer = setTimeout(() => resolve({ state: 'pending' }), ms)
  })
  return Promise.race([
    promise.then(
      (value) => ({ state: 'fulfilled' as const, value }),
      (error: unknown) => ({ state: 'rejected' as const, error }),
    ),
    pending,
  ]).finally(() => clearTimeout(timer))
}

export { abortedWithin } from './within.ts'
