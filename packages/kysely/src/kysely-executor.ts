import { randomUUID } from 'node:crypto'
import {
  InvalidArgumentError,
  isConnectionFailure,
  type LeaseFn,
  type Lock,
  type LockConnection,
  type LockExecutor,
  type LockKey,
  type LockOptions,
  type Row,
  type TryWithLockResult,
  UnsupportedError,
  type WithLockOptions,
} from '@pglock/core'
import { CompiledQuery, type DatabaseConnection, type Kysely, type Transaction } from 'kysely'

/**
 * A Kysely handle pglock can lock with: a `Kysely` instance, a `Transaction`, or a `lease.db`
 * that pglock handed out.
 *
 * @example
 * ```ts
 * const handle: KyselyHandle = db            // or a `trx` inside db.transaction().execute(...)
 * ```
 */
export type KyselyHandle = Kysely<any>

/**
 * What `lease.db` is for a given handle: the same `Transaction` for a transaction; for an
 * instance, a `Kysely` bound to the lock's connection (session scope) or the `Transaction` that
 * pglock opened (transaction scope).
 *
 * @example
 * ```ts
 * type LeaseDb = KyselyLeaseDb<Kysely<Database>>   // Kysely<Database>
 * ```
 */
export type KyselyLeaseDb<H extends KyselyHandle> =
  H extends Transaction<infer DB> ? Transaction<DB> : H extends Kysely<infer DB> ? Kysely<DB> : never

/** @internal The core's lock functions, typed so that `lease.db` keeps the database type of the handle passed in. */
export interface KyselyLockFunctions {
  createLock<H extends KyselyHandle>(db: H, key: LockKey, options?: LockOptions): Lock<KyselyLeaseDb<H>>
  withLock<H extends KyselyHandle, T>(db: H, key: LockKey, fn: LeaseFn<KyselyLeaseDb<H>, T>, options?: WithLockOptions): Promise<T>
  tryWithLock<H extends KyselyHandle, T>(
    db: H,
    key: LockKey,
    fn: LeaseFn<KyselyLeaseDb<H>, T>,
    options?: WithLockOptions,
  ): Promise<TryWithLockResult<T>>
}

/**
 * How often a held lock's connection is probed with `SELECT 1`. Kysely hides the driver's
 * connection events, so a probe failing for want of a connection is how pglock learns that a
 * lock was lost.
 */
const PROBE_INTERVAL_MS = 1_000

/** Runs SQL text on one connection; resolves to the rows as the dialect returns them. */
type Run = (sql: string) => Promise<readonly unknown[]>

/** The `lease.db` handles pglock gave out, and the instance their connections came from. */
const instances = new WeakMap<object, Kysely<any>>()

const tagPrefix = `pglock:${randomUUID()}:`
let tags = 0

function isKysely(db: unknown): db is Kysely<any> {
  const candidate = db as Partial<Kysely<any>> | null
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.getExecutor === 'function' &&
    typeof candidate.connection === 'function' &&
    typeof candidate.transaction === 'function' &&
    typeof candidate.isTransaction === 'boolean'
  )
}

function runOn(connection: DatabaseConnection): Run {
  return async (sql) => (await connection.executeQuery(CompiledQuery.raw(sql))).rows
}

/** Runs through the handle's own connection provider, which queues behind its other queries. */
function runThrough(db: Kysely<any>): Run {
  return (sql) => db.getExecutor().provideConnection(async (connection) => (await connection.executeQuery(CompiledQuery.raw(sql))).rows)
}

function connectionOf(db: Kysely<any>): Promise<DatabaseConnection> {
  return db.getExecutor().provideConnection(async (connection) => connection)
}

/**
 * Signals, from another connection, the backend whose current or last statement is the one
 * pglock tagged `tag`. Kysely does not tell pglock which backend a connection is, but Postgres
 * shows every backend's statement text to roles allowed to signal it (the same role), so a tag
 * at the head of the text finds it without asking the connection for its pid first.
 */
function signalSql(fn: 'pg_cancel_backend' | 'pg_terminate_backend', tag: string, activeOnly: boolean): string {
  return (
    `SELECT ${fn}(pid) FROM pg_catalog.pg_stat_activity WHERE pid <> pg_backend_pid()` +
    `${activeOnly ? ` AND state = 'active'` : ''} AND query LIKE '/* ${tag} */%'`
  )
}

/**
 * Runs pglock's SQL text and resolves to the rows of its last statement. Both dialects send
 * several statements in one round trip, but PostgresDialect keeps the result of none of them
 * (node-postgres answers with an array that Kysely does not read), while kysely-postgres-js
 * answers with one array of rows per statement. So a text that opens or runs inside a
 * transaction block (`BEGIN`, `SAVEPOINT`) and ends in a `SELECT` goes in two round trips: all
 * but the last statement, then the last alone; inside a transaction block that changes nothing
 * but latency. Other texts go whole: a session lock under `lock_timeout` needs the implicit
 * transaction of one multi-statement query, and pglock reads no rows from it.
 */
async function lastRows(run: Run, sql: string): Promise<readonly Row[]> {
  const statements = sql
    .split(';')
    .map((statement) => statement.trim())
    .filter((statement) => statement !== '')
  const last = statements[statements.length - 1] ?? ''
  if (statements.length > 1 && /^(BEGIN|SAVEPOINT)\b/i.test(statements[0] ?? '') && /^SELECT\b/i.test(last)) {
    await run(statements.slice(0, -1).join('; '))
    return (await run(last)) as readonly Row[]
  }
  const rows = await run(sql)
  const perStatement = statements.length > 1 && rows.length === statements.length && rows.every(Array.isArray)
  return (perStatement ? rows[rows.length - 1] : rows) as readonly Row[]
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

interface Wiring<Db> {
  readonly db: Db
  readonly run: Run
  /** The instance the connection came from, whose other connections can signal it; unknown for a `Transaction` the caller opened. */
  readonly instance: Kysely<any> | undefined
  /** Set for a connection pglock pinned itself: gives it back to the instance. */
  readonly unpin: (() => Promise<void>) | undefined
}

function lockConnection<Db>({ db, run, instance, unpin }: Wiring<Db>): LockConnection<Db> {
  const listeners = new Set<(cause: unknown) => void>()
  let lost: { cause: unknown } | undefined
  let released = false
  let timer: NodeJS.Timeout | undefined
  let probing = false
  let running: string | undefined
  let last = ''
  const tagged: Run = async (sql) => {
    const tag = `${tagPrefix}${(tags += 1)}`
    running = last = tag
    try {
      return await run(`/* ${tag} */ ${sql}`)
    } finally {
      if (running === tag) running = undefined
    }
  }
  const fail = (cause: unknown) => {
    if (lost !== undefined) return
    lost = { cause }
    for (const listener of [...listeners]) listener(cause)
  }
  const watch = () => {
    if (timer !== undefined || probing || listeners.size === 0 || lost !== undefined || released) return
    timer = setTimeout(probe, PROBE_INTERVAL_MS)
    timer.unref()
  }
  const probe = () => {
    timer = undefined
    probing = true
    run('SELECT 1').then(
      () => {
        probing = false
        watch()
      },
      (error: unknown) => {
        probing = false
        if (isConnectionFailure(error)) fail(error)
        else watch()
      },
    )
  }
  /**
   * What stands in for closing a connection, which Kysely cannot do: drop every session
   * advisory lock it holds (after rolling back a failed transaction), so that it goes back to
   * the pool holding none. A connection that failed is dropped by the driver's pool on its own.
   * Only when a live connection refuses both is its backend terminated, from another connection.
   */
  const reset = async (through: Kysely<any>) => {
    for (const sql of ['SELECT pg_advisory_unlock_all()', 'ROLLBACK; SELECT pg_advisory_unlock_all()']) {
      try {
        await tagged(sql)
        return
      } catch (error) {
        if (isConnectionFailure(error)) return
      }
    }
    await runThrough(through)(signalSql('pg_terminate_backend', last, false)).catch(() => undefined)
  }
  return {
    db,
    owned: unpin !== undefined,
    async query(sql) {
      try {
        return await lastRows(tagged, sql)
      } catch (error) {
        if (isConnectionFailure(error)) fail(error)
        throw error
      }
    },
    /**
     * The statement may not have reached the server yet when the abort comes, and a cancel that
     * arrives before it would be lost: so this asks again, briefly, until Postgres shows it running.
     */
    async cancel() {
      if (instance === undefined) {
        throw new UnsupportedError(
          'cannot cancel a wait on a Kysely Transaction that pglock did not open: no other connection is reachable',
        )
      }
      const tag = running
      for (let wait = 1; tag !== undefined && running === tag && wait <= 512; wait *= 2) {
        const signalled = await runThrough(instance)(signalSql('pg_cancel_backend', tag, true)).catch(() => undefined)
        if (signalled === undefined || signalled.length > 0) return
        await delay(wait)
      }
    },
    onLost(listener) {
      if (lost !== undefined) {
        listener(lost.cause)
        return () => undefined
      }
      listeners.add(listener)
      watch()
      return () => {
        listeners.delete(listener)
        if (listeners.size === 0) {
          clearTimeout(timer)
          timer = undefined
        }
      }
    },
    async release({ destroy }) {
      if (released) return
      released = true
      listeners.clear()
      clearTimeout(timer)
      if (unpin === undefined) return
      if (destroy && lost === undefined && instance !== undefined) await reset(instance)
      await unpin()
    },
  }
}

/**
 * Pins one connection of `instance` for a session lock. Kysely lends a connection only for the
 * length of a callback (`db.connection().execute(fn)`), so the callback stays open until the
 * lock's connection is released.
 */
function pin(instance: Kysely<any>): Promise<LockConnection<Kysely<any>>> {
  return new Promise((resolve, reject) => {
    const pinned: Promise<void> = instance.connection().execute(async (db) => {
      const connection = await connectionOf(db)
      instances.set(db, instance)
      let unpinned!: () => void
      const held = new Promise<void>((done) => (unpinned = done))
      const unpin = async () => {
        unpinned()
        await pinned.catch(() => undefined)
      }
      resolve(lockConnection({ db, run: runOn(connection), instance, unpin }))
      await held
    })
    pinned.catch(reject)
  })
}

/**
 * Runs `body` in a transaction Kysely opens, so that `lease.db` is Kysely's own `Transaction`.
 * When `body` throws, Kysely rolls back; if that rollback fails too (the connection died, which
 * is how a lock gets lost), Kysely reports the rollback's error, and this reports `body`'s.
 */
async function runInTransaction<T>(instance: Kysely<any>, body: (connection: LockConnection<Kysely<any>>) => Promise<T>): Promise<T> {
  let failure: { error: unknown } | undefined
  try {
    return await instance.transaction().execute(async (db) => {
      instances.set(db, instance)
      const connection = lockConnection({ db, run: runOn(await connectionOf(db)), instance, unpin: undefined })
      try {
        return await body(connection)
      } catch (error) {
        failure = { error }
        throw error
      } finally {
        await connection.release({ destroy: false })
      }
    })
  } catch (error) {
    throw failure === undefined ? error : failure.error
  }
}

/**
 * Describes a Kysely handle to the core. A `Kysely` instance is a pool: a session lock pins one
 * of its connections through `db.connection()`, and `withLock` in transaction scope runs through
 * `db.transaction()`. A `Transaction`, or a `lease.db` pglock handed out, is one connection that
 * pglock never ends. Handles are told apart by shape; no driver is imported.
 *
 * @example
 * ```ts
 * import { bindExecutor } from '@pglock/core'
 * import { kyselyExecutor } from '@pglock/kysely'
 *
 * const { withLock } = bindExecutor(kyselyExecutor)
 * ```
 */
export function kyselyExecutor<H extends KyselyHandle>(db: H): LockExecutor<KyselyLeaseDb<H>> {
  if (!isKysely(db)) {
    throw new InvalidArgumentError(
      `db must be a Kysely instance or Transaction, got ${db === null ? 'null' : typeof db === 'object' ? (Object.getPrototypeOf(db)?.constructor?.name ?? 'an object') : typeof db}`,
    )
  }
  return executorFor(db) as unknown as LockExecutor<KyselyLeaseDb<H>>
}

function executorFor(db: Kysely<any>): LockExecutor<Kysely<any>> {
  const instance = instances.get(db)
  if (db.isTransaction || instance !== undefined) {
    return {
      kind: 'connection',
      scope: db,
      connect: async () => lockConnection({ db, run: runThrough(db), instance, unpin: undefined }),
      inTransaction: () => (db.isTransaction ? true : undefined),
    }
  }
  return {
    kind: 'pool',
    // one object per `new Kysely()`, shared by `db.withSchema()`, `db.withPlugin()` and the like
    scope: db.getExecutor().adapter,
    connect: () => pin(db),
    transaction: (body) => runInTransaction(db, body),
  }
}
