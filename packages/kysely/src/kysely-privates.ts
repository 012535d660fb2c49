/**
 * Every undocumented Kysely member pglock reaches (`getExecutor()`, `provideConnection()`,
 * `adapter`; `@internal` in 0.28 to 0.30), each checked by shape before any SQL, and the statement
 * tags by which pglock finds its statement in `pg_stat_activity`.
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { UnsupportedError } from '@pglock/core'
import type { DatabaseConnection, Kysely } from 'kysely'

let version: string | undefined

/**
 * The installed Kysely version, as `kysely 0.29.9` (or `kysely` when unreadable). Kysely 0.29
 * exports no `package.json`, so this finds it next to the resolved entry point.
 *
 * @example
 * ```ts
 * kyselyName() // 'kysely 0.28.19'
 * ```
 */
export function kyselyName(): string {
  version ??= readVersion()
  return version === '' ? 'kysely' : `kysely ${version}`
}

function readVersion(): string {
  try {
    // esbuild gives the ESM build a `require` stand-in without `resolve`, so tell the builds apart by `__filename`
    const entry = createRequire(typeof __filename === 'string' ? __filename : import.meta.url).resolve('kysely')
    for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
      try {
        const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
        if (manifest.name === 'kysely') return manifest.version ?? ''
      } catch {}
    }
  } catch {}
  return ''
}

/**
 * The error for a member this Kysely lacks.
 *
 * @example
 * ```ts
 * throw unsupported('Kysely#getExecutor()', 'reach the connection a lock is held on')
 * ```
 */
export function unsupported(member: string, purpose: string): UnsupportedError {
  return new UnsupportedError(
    `${kyselyName()} has no ${member}, which @pglock/kysely needs to ${purpose}; ` +
      'it supports kysely 0.28 to 0.30 (check for a newer @pglock/kysely)',
  )
}

/**
 * Lends the `DatabaseConnection` a handle runs on for the length of `consumer`, queued behind the
 * handle's other queries. Its shape is Kysely's `ControlConnectionProvider` (0.29).
 */
export type ConnectionSource = <T>(consumer: (connection: DatabaseConnection) => Promise<T>) => Promise<T>

interface Executor {
  readonly adapter: object
  provideConnection<T>(consumer: (connection: DatabaseConnection) => Promise<T>): Promise<T>
}

const executors = new WeakMap<Kysely<any>, Executor>()

/** `remember` false for a handle made for one checkout: a WeakMap entry per lock costs more than the lookup. */
function executorOf(db: Kysely<any>, remember = true): Executor {
  let executor = executors.get(db)
  if (executor !== undefined) return executor
  const getExecutor = (db as { getExecutor?: unknown }).getExecutor
  if (typeof getExecutor !== 'function') throw unsupported('Kysely#getExecutor()', 'reach the connection a lock is held on')
  const candidate = getExecutor.call(db) as Partial<Executor> | null | undefined
  if (typeof candidate?.provideConnection !== 'function') {
    throw unsupported('QueryExecutor#provideConnection()', 'reach the connection a lock is held on')
  }
  if (typeof candidate.adapter !== 'object' || candidate.adapter === null) {
    throw unsupported('QueryExecutor#adapter', 'tell which handles share one Kysely instance')
  }
  executor = candidate as Executor
  if (remember) executors.set(db, executor)
  return executor
}

/**
 * Checks, before any SQL, every member pglock will reach on `db`; throws `UnsupportedError` when
 * one is missing.
 *
 * @example
 * ```ts
 * checkHandle(db) // throws UnsupportedError on a Kysely without getExecutor()
 * ```
 */
export function checkHandle(db: Kysely<any>): void {
  executorOf(db)
}

/**
 * How pglock reaches the connection behind `db`: through its executor's connection provider,
 * which queues behind the handle's other queries. `remember` false: `db` lives for one checkout.
 *
 * @example
 * ```ts
 * const pid = await connectionsOf(db)((connection) => connection.executeQuery(CompiledQuery.raw('SELECT 1')))
 * ```
 */
export function connectionsOf(db: Kysely<any>, remember = true): ConnectionSource {
  const executor = executorOf(db, remember)
  return (consumer) => {
    // a finished `Transaction` throws from `provideConnection` itself, even inside a timer
    try {
      return executor.provideConnection(consumer)
    } catch (error) {
      return Promise.reject(error)
    }
  }
}

/**
 * One object per `new Kysely()`, shared by the handles derived from it (`db.withSchema()`,
 * `db.withPlugin()`), so that locks taken through any of them queue together.
 *
 * @example
 * ```ts
 * instanceScope(db) === instanceScope(db.withSchema('app')) // true
 * ```
 */
export function instanceScope(db: Kysely<any>): object {
  return executorOf(db).adapter
}

const tagPrefix = `pglock:${randomUUID()}:`
let tags = 0

/**
 * A tag no other statement of this process carries: Kysely does not say which backend a
 * connection is, so pglock finds its statement by its tag in `pg_stat_activity`.
 *
 * @example
 * ```ts
 * const tag = nextTag() // 'pglock:<uuid>:1'
 * ```
 */
export function nextTag(): string {
  tags += 1
  return tagPrefix + tags
}

/**
 * `sql` under `tag`, where {@link signalTaggedSql} finds it.
 *
 * @example
 * ```ts
 * const text = tagged(nextTag(), 'SELECT pg_advisory_lock(1)')
 * ```
 */
export function tagged(tag: string, sql: string): string {
  return `/* ${tag} */ ${sql}`
}

/**
 * Signals, from another connection, the backend whose statement carries `tag`; with `active`, only
 * while it runs. Its rows are the backends signalled.
 *
 * @example
 * ```ts
 * const signalled = await run(signalTaggedSql('pg_cancel_backend', tag, true))
 * ```
 */
export function signalTaggedSql(fn: 'pg_cancel_backend' | 'pg_terminate_backend', tag: string, active: boolean): string {
  const state = active ? `state = 'active' AND ` : ''
  return `SELECT ${fn}(pid) FROM pg_catalog.pg_stat_activity WHERE pid <> pg_backend_pid() AND ${state}query LIKE '/* ${tag} */%'`
}
