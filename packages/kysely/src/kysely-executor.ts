import { randomUUID } from 'node:crypto'
import {
  InvalidArgumentError,
  isConnectionFailure,
  type LockConnection,
  type LockExecutor,
  type LockScope,
  type Row,
  trackLoss,
  UnsupportedError,
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
 * What `lease.db` is for a handle in a scope: on an instance, a `Kysely` bound to the lock's
 * connection (session scope) or the `Transaction` that pglock opened (transaction scope); on a
 * `Transaction`, that `Transaction`. (A session `lease.db` passed back in with transaction scope
 * is typed as a `Transaction` but stays the connection-bound `Kysely` it is: pglock sends `BEGIN`
 * on it.)
 *
 * @example
 * ```ts
 * type Pinned = KyselyLeaseDb<Kysely<Database>, 'session'>      // Kysely<Database>
 * type Tx = KyselyLeaseDb<Kysely<Database>, 'transaction'>      // Transaction<Database>
 * ```
 */
export type KyselyLeaseDb<H, S extends LockScope = LockScope> =
  H extends Transaction<infer DB>
    ? Transaction<DB>
    : H extends Kysely<infer DB>
      ? S extends 'transaction'
        ? Transaction<DB>
        : Kysely<DB>
      : never

/**
 * How often a held lock's connection is probed. Kysely hides the driver's connection events, so a
 * probe failing for want of a connection is how pglock learns that a lock was lost.
 */
const PROBE_INTERVAL_MS = 1_000
/** How long a connection whose lock state is unknown gets to drop its locks before its backend is terminated. */
const RESET_BOUND_MS = 1_000

/** Runs SQL text on one connection; resolves to the rows as the dialect returns them. */
type Run = (sql: string) => Promise<readonly unknown[]>

/** Which backend a connection is: its pid, and when it started (a pid alone may be reused). */
interface Backend {
  readonly pid: number
  readonly started: string
}

/** The `lease.db` handles pglock gave out, and the instance their connections came from. */
const instances = new WeakMap<object, Kysely<any>>()
/** Backends by connection. PostgresDialect keeps one connection object per pg client, so they last. */
const backends = new WeakMap<DatabaseConnection, Backend>()

const tagPrefix = `pglock:${randomUUID()}:`
let tags = 0

const BACKEND_SQL = 'SELECT pid, backend_start::text AS started FROM pg_catalog.pg_stat_activity WHERE pid = pg_backend_pid()'

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

/**
 * Runs through the handle's own connection provider, which queues behind its other queries.
 * Async, as a finished `Transaction` throws from `provideConnection` itself.
 */
function runThrough(db: Kysely<any>): Run {
  return async (sql) =>
    db.getExecutor().provideConnection(async (connection) => (await connection.executeQuery(CompiledQuery.raw(sql))).rows)
}

/**
 * Whether Kysely refused a statement because the `Transaction` it was sent through has ended:
 * its transaction locks ended with it, so nothing was lost. Kysely says so only in its message.
 */
function transactionOver(error: unknown): boolean {
  return /^Transaction is already (committed|rolled back)$/.test(String((error as Error | null)?.message))
}

function connectionOf(db: Kysely<any>): Promise<DatabaseConnection> {
  return db.getExecutor().provideConnection(async (connection) => connection)
}

/**
 * Signals a backend from another connection. Kysely does not say which backend a connection is,
 * and asking it costs a round trip, so pglock finds the backend by the tag at the head of its
 * own statement text, which Postgres shows in `pg_stat_activity` to every role allowed to signal
 * it (the same role); or, once a probe has learnt it, by pid and start time.
 */
function signalSql(fn: 'pg_cancel_backend' | 'pg_terminate_backend', target: { tag: string; active: boolean } | Backend): string {
  const which =
    'tag' in target
      ? `${target.active ? `state = 'active' AND ` : ''}query LIKE '/* ${target.tag} */%'`
      : `pid = ${target.pid | 0} AND backend_start::text = '${target.started.replace(/'/g, "''")}'`
  return `SELECT ${fn}(pid) FROM pg_catalog.pg_stat_activity WHERE pid <> pg_backend_pid() AND ${which}`
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

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref())

interface Wiring<Db extends Kysely<any>> {
  /** The handle bound to the connection; pglock's statements go through its provider, queued with the caller's. */
  readonly db: Db
  /** The connection, where pglock checked it out itself: its backend is remembered by it. */
  readonly connection: DatabaseConnection | undefined
  /**
   * The connection, however the handle reached it: a `Transaction` and those derived from it
   * (`trx.withSchema()`, a controlled transaction's `savepoint()`) are distinct objects on one.
   */
  readonly scope: DatabaseConnection
  /** The instance the connection came from, whose other connections can signal it; unknown for a `Transaction` the caller opened. */
  readonly instance: Kysely<any> | undefined
  /** Set for a connection pglock checked out itself: gives it back (to the instance, or to the transaction that Kysely ends). */
  readonly unpin: (() => Promise<void>) | undefined
  /** The connection is in a transaction pglock opened through Kysely, which ends it. */
  readonly transaction?: true
}

function lockConnection<Db extends Kysely<any>>({ db, connection, scope, instance, unpin, transaction }: Wiring<Db>): LockConnection<Db> {
  const run = runThrough(db)
  const loss = trackLoss()
  let watchers = 0
  let released = false
  let timer: NodeJS.Timeout | undefined
  let probing = false
  let running: string | undefined
  let answered: string | undefined
  /** Sends pglock's statement under a fresh tag, remembering it while the server may be running it. */
  const tagged: Run = async (sql) => {
    const tag = `${tagPrefix}${(tags += 1)}`
    running = tag
    try {
      const rows = await run(`/* ${tag} */ ${sql}`)
      answered = tag
      return rows
    } catch (error) {
      // reported while `running` still names the statement, so that a cancel can find it on the server
      if (isConnectionFailure(error)) loss.report(error)
      else answered = tag
      throw error
    } finally {
      if (running === tag) running = undefined
    }
  }
  const watch = () => {
    if (timer !== undefined || probing || watchers === 0 || loss.lost || released) return
    timer = setTimeout(probe, PROBE_INTERVAL_MS)
    timer.unref()
  }
  const probe = () => {
    timer = undefined
    probing = true
    const learn = connection !== undefined && !backends.has(connection)
    run(learn ? BACKEND_SQL : 'SELECT 1').then(
      (rows) => {
        const row = rows[0] as { pid?: unknown; started?: unknown } | undefined
        if (learn && typeof row?.pid === 'number' && typeof row.started === 'string')
          backends.set(connection, { pid: row.pid, started: row.started })
        probing = false
        watch()
      },
      (error: unknown) => {
        probing = false
        if (transactionOver(error)) return
        if (isConnectionFailure(error)) loss.report(error)
        else watch()
      },
    )
  }
  /** Drops every session advisory lock the connection holds; true when done or when the connection is gone. */
  const unlockAll = async () => {
    for (const sql of ['SELECT pg_advisory_unlock_all()', 'ROLLBACK; SELECT pg_advisory_unlock_all()']) {
      try {
        await tagged(sql)
        return true
      } catch (error) {
        if (isConnectionFailure(error)) return true
      }
    }
    return false
  }
  /**
   * What stands in for closing a connection, which Kysely cannot do: drop its session advisory
   * locks so that it goes back to the pool holding none. A connection that does not manage to
   * within a second (blackholed, or stuck behind a statement) or refuses, or whose locks end only
   * with its transaction, has its backend terminated from another connection; it is given back
   * only once it has failed for that (or after another second), so that no one borrows it first.
   */
  const reset = async (through: Kysely<any>) => {
    const dropping = transaction ? undefined : unlockAll()
    if (dropping !== undefined && (await Promise.race([dropping, delay(RESET_BOUND_MS).then(() => false)]))) return
    const backend = connection === undefined ? undefined : backends.get(connection)
    const target = backend ?? (answered === undefined ? undefined : { tag: answered, active: false })
    if (target !== undefined) await runThrough(through)(signalSql('pg_terminate_backend', target)).catch(() => undefined)
    if (dropping !== undefined) await Promise.race([dropping, delay(RESET_BOUND_MS)])
  }
  return {
    db,
    owned: unpin !== undefined,
    scope,
    query: (sql) => lastRows(tagged, sql),
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
        const signalled = await runThrough(instance)(signalSql('pg_cancel_backend', { tag, active: true })).catch(() => undefined)
        if (signalled === undefined || signalled.length > 0) return
        await delay(wait)
      }
    },
    onLost(listener) {
      if (loss.lost) return loss.onLost(listener)
      const stop = loss.onLost(listener)
      watchers += 1
      watch()
      return () => {
        stop()
        watchers -= 1
        if (watchers === 0) {
          clearTimeout(timer)
          timer = undefined
        }
      }
    },
    async release({ destroy }) {
      if (released) return
      released = true
      loss.clear()
      clearTimeout(timer)
      if (unpin === undefined) return
      if (destroy && !loss.lost && instance !== undefined) await reset(instance)
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
      resolve(lockConnection({ db, connection, scope: connection, instance, unpin }))
      await held
    })
    pinned.catch(reject)
  })
}

/**
 * Runs `body` in a transaction Kysely opens, so that `lease.db` is Kysely's own `Transaction`.
 * The core watches the connection until Kysely's `COMMIT` or `ROLLBACK` settles, and destroys it
 * if it is lost meanwhile: Kysely would wait forever for the answer of a blackholed connection.
 */
function runInTransaction<T>(instance: Kysely<any>, body: (connection: LockConnection<Kysely<any>>) => Promise<T>): Promise<T> {
  return instance.transaction().execute(async (db) => {
    instances.set(db, instance)
    const connection = await connectionOf(db)
    return body(lockConnection({ db, connection, scope: connection, instance, unpin: async () => undefined, transaction: true }))
  })
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
      connect: async () => lockConnection({ db, connection: undefined, scope: await connectionOf(db), instance, unpin: undefined }),
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
