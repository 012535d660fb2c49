import { InvalidArgumentError, type LockScope, UnsupportedError } from '@pglock/core'
import { isConnectionFailure, type LockConnection, type LockExecutor, runInDriverTransaction } from '@pglock/core/adapter'
import { CompiledQuery, type DatabaseConnection, type Kysely, type Transaction } from 'kysely'
import { mayRefuse, refuseUnsettling } from './kysely-dialects.js'
import {
  type ConnectionSource,
  checkHandle,
  connectionsOf,
  instanceScope,
  kyselyName,
  nextTag,
  signalTaggedSql,
  tagged,
} from './kysely-privates.js'
import { learnStatements, runText, takesSeveral } from './kysely-statements.js'

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

/** Kysely hides the driver's connection events, so a failing probe is how a loss is heard. */
const PROBE_INTERVAL_MS = 1_000
/** How long a connection whose lock state is unknown gets to drop its locks before its backend is terminated. */
const RESET_BOUND_MS = 1_000
const CANCEL_ATTEMPTS = 6
const CANCEL_RETRY_MS = 100
/** A control connection that cannot connect must not stall the abort. */
const CANCEL_DELIVERY_BOUND_MS = 1_000

/** Kysely 0.29's connection-level cancel (absent from 0.28's types). */
interface ConnectionControl {
  cancelQuery?(control: ConnectionSource): Promise<void>
  collectSessionInfo?(): Promise<void>
}

/** A pid alone may be reused, so its start time too. */
interface Backend {
  readonly pid: number
  readonly started: string
}

/** The `lease.db` handles pglock gave out, and the instance their connections came from. */
const instances = new WeakMap<object, Kysely<any>>()
/** Learnt by a held lock's probe; PostgresDialect keeps one connection object per pg client. */
const backends = new WeakMap<DatabaseConnection, Backend>()
const collected = new WeakSet<DatabaseConnection>()

const BACKEND_SQL = 'SELECT pid, backend_start::text AS started FROM pg_catalog.pg_stat_activity WHERE pid = pg_backend_pid()'

const literal = (text: string) => `'${text.replace(/'/g, "''")}'`

function signalBackendSql(fn: 'pg_cancel_backend' | 'pg_terminate_backend', backend: Backend, statement?: string): string {
  const running = statement === undefined ? '' : ` AND state = 'active' AND query = ${literal(statement)}`
  return `SELECT ${fn}(pid) FROM pg_catalog.pg_stat_activity WHERE pid <> pg_backend_pid() AND pid = ${backend.pid | 0} AND backend_start::text = ${literal(backend.started)}${running}`
}

function backendOf(rows: readonly unknown[]): Backend | undefined {
  const row = rows[0] as { pid?: unknown; started?: unknown } | undefined
  return typeof row?.pid === 'number' && typeof row.started === 'string' ? { pid: row.pid, started: row.started } : undefined
}

function isKysely(db: unknown): db is Kysely<any> {
  const candidate = db as Partial<Kysely<any>> | null
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.selectFrom === 'function' &&
    typeof candidate.connection === 'function' &&
    typeof candidate.transaction === 'function' &&
    typeof candidate.isTransaction === 'boolean'
  )
}

function runThrough(db: Kysely<any>): (sql: string) => Promise<readonly unknown[]> {
  const connections = connectionsOf(db)
  return async (sql) => connections(async (connection) => (await connection.executeQuery(CompiledQuery.raw(sql))).rows)
}

/** A `Transaction` that has ended took its locks with it: no loss. Kysely says so only in its message. */
function transactionOver(error: unknown): boolean {
  return /^Transaction is already (committed|rolled back)$/.test(String((error as Error | null)?.message))
}

const itself = async (connection: DatabaseConnection) => connection

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref())
const ignore = () => undefined
/** Kysely gives a transaction's connection back when the transaction ends. */
const NOTHING_TO_UNPIN = async () => undefined

/** Made only when a cancel waits, not for every statement. */
class Signal {
  readonly promise: Promise<void>
  resolve!: () => void
  constructor() {
    this.promise = new Promise((resolve) => (this.resolve = resolve))
  }
}

const DONE = Promise.resolve()

class Sent {
  statement: string | undefined
  tag: string | undefined
  running = false
  started = false
  done = false
  #started: Signal | undefined
  #ended: Signal | undefined

  begin(): void {
    this.started = true
    this.#started?.resolve()
  }

  end(): void {
    this.done = true
    this.#started?.resolve()
    this.#ended?.resolve()
  }

  begun(): Promise<void> {
    if (this.started || this.done) return DONE
    this.#started ??= new Signal()
    return this.#started.promise
  }

  ended(): Promise<void> {
    if (this.done) return DONE
    this.#ended ??= new Signal()
    return this.#ended.promise
  }
}

interface Wiring<Db extends Kysely<any>> {
  readonly db: Db
  readonly connections: ConnectionSource
  /** `trx.withSchema()` and a savepoint are distinct handles on one connection. */
  readonly scope: DatabaseConnection
  /** Whose other connections can signal this one; unknown for a caller's `Transaction`. */
  readonly instance: Kysely<any> | undefined
  readonly unpin: (() => Promise<void>) | undefined
  readonly transaction?: true
}

/**
 * pglock finds its statement on the server by a tag in its text (works behind PgBouncer and after
 * the client died), else by backend and exact text (kysely-postgres-js 5), else, with no other
 * connection known, by Kysely's connection-level cancel, which is the least reliable.
 */
function lockConnection<Db extends Kysely<any>>({ db, connections, scope, instance, unpin, transaction }: Wiring<Db>): LockConnection<Db> {
  refuseUnsettling(scope)
  const control = scope as DatabaseConnection & ConnectionControl
  const cancels = typeof control.cancelQuery === 'function'
  const context = { kind: Object.getPrototypeOf(scope) ?? scope, inBlock: transaction === true || db.isTransaction }
  // the core subscribes once per checkout and remembers the loss: this only tells it, and stops probing
  let lost = false
  let listener: ((cause: unknown) => void) | undefined
  const report = (cause: unknown) => {
    lost = true
    listener?.(cause)
  }
  let timer: NodeJS.Timeout | undefined
  let probing = false
  let sent: Sent | undefined
  let answered: string | undefined
  let learning: Promise<Backend | undefined> | undefined
  let learnt: Backend | undefined
  /** Awaited by the release: the caller may end the instance next, which a cancel still connecting would stall. */
  let cancellations: Set<Promise<void>> | undefined

  const exec = async (text: Sent, sql: string) => {
    const tag = takesSeveral(context.kind) !== false ? nextTag() : undefined
    const statement = tag === undefined ? sql : tagged(tag, sql)
    text.tag = tag
    text.statement = statement
    try {
      const rows = await connections(async (connection: DatabaseConnection & ConnectionControl) => {
        if (cancels && !collected.has(connection)) {
          await connection.collectSessionInfo?.()
          collected.add(connection)
        }
        if (tag === undefined && instance !== undefined && learning === undefined) {
          // not awaited: both dialects send it ahead of the statement, postgres.js in the same round trip
          learning = connection.executeQuery(CompiledQuery.raw(BACKEND_SQL)).then(({ rows }) => (learnt = backendOf(rows)), ignore)
        }
        text.running = true
        text.begin()
        try {
          return (await connection.executeQuery(CompiledQuery.raw(statement))).rows
        } finally {
          text.running = false
        }
      })
      answered = tag
      return rows
    } catch (error) {
      // reported while `sent` still names the text and its statement, so that a cancel can find it on the server
      if (isConnectionFailure(error)) report(error)
      else answered = tag
      throw error
    } finally {
      text.tag = undefined
    }
  }
  const send = async (sql: string) => {
    const text = new Sent()
    sent = text
    const run = (statement: string) => exec(text, statement)
    try {
      if (takesSeveral(context.kind) === undefined) await learnStatements(run, context)
      return await runText(run, sql, context)
    } finally {
      text.end()
      if (sent === text) sent = undefined
    }
  }
  /** Asks again, briefly, as the statement may not have reached the server when the abort comes. */
  const cancelFrom = async (through: Kysely<any>, text: Sent) => {
    // read at once where the text has a statement: a failed one is forgotten as soon as its error is reported
    if (text.statement === undefined) await text.begun()
    const { statement, tag } = text
    const backend = tag === undefined ? await Promise.race([learning, delay(CANCEL_DELIVERY_BOUND_MS)]) : undefined
    if (statement === undefined) return
    if (tag === undefined && backend === undefined) return cancels && !lost ? cancelOnConnection(text) : undefined
    const sql =
      tag !== undefined
        ? signalTaggedSql('pg_cancel_backend', tag, true)
        : signalBackendSql('pg_cancel_backend', backend as Backend, statement)
    // at least once: the client of a wait whose connection failed has already given up on it
    for (let wait = 1; ; wait *= 2) {
      const signalled = await runThrough(through)(sql).catch(ignore)
      if (signalled === undefined || signalled.length > 0 || wait > 512 || text.statement !== statement || text.done) return
      await delay(wait)
    }
  }
  /** Asks again while the statement runs: a request can reach the server before the statement does. */
  const cancelOnConnection = async (text: Sent) => {
    const lender: ConnectionSource =
      instance !== undefined
        ? connectionsOf(instance)
        : () =>
            Promise.reject(
              new UnsupportedError(`${kyselyName()} found no control connection, and a Transaction the caller opened lends none`),
            )
    await text.begun()
    for (let attempt = 0, wait = CANCEL_RETRY_MS; !text.done && attempt < CANCEL_ATTEMPTS; attempt += 1, wait *= 2) {
      if (text.running) await Promise.race([control.cancelQuery?.(lender).catch(ignore), delay(CANCEL_DELIVERY_BOUND_MS)])
      await Promise.race([text.ended(), delay(wait)])
    }
  }
  const watch = () => {
    if (timer !== undefined || probing || listener === undefined || lost) return
    timer = setTimeout(probe, PROBE_INTERVAL_MS)
    timer.unref()
  }
  const probe = () => {
    timer = undefined
    probing = true
    const learn = unpin !== undefined && !backends.has(scope)
    connections(async (connection) => (await connection.executeQuery(CompiledQuery.raw(learn ? BACKEND_SQL : 'SELECT 1'))).rows).then(
      (rows) => {
        const backend = learn ? backendOf(rows) : undefined
        if (backend !== undefined) backends.set(scope, backend)
        probing = false
        watch()
      },
      (error: unknown) => {
        probing = false
        if (transactionOver(error)) return
        if (isConnectionFailure(error)) report(error)
        else watch()
      },
    )
  }
  const unlockAll = async () => {
    for (const sql of ['SELECT pg_advisory_unlock_all()', 'ROLLBACK; SELECT pg_advisory_unlock_all()']) {
      try {
        await send(sql)
        return true
      } catch (error) {
        if (isConnectionFailure(error)) return true
      }
    }
    return false
  }
  /**
   * Kysely cannot close a connection: drop its locks, else terminate its backend from another
   * connection, and give it back only then, so that no one borrows it holding a lock.
   */
  const reset = async (through: Kysely<any>) => {
    const dropping = transaction ? undefined : unlockAll()
    if (dropping !== undefined && (await Promise.race([dropping, delay(RESET_BOUND_MS).then(() => false)]))) return
    const backend = learnt ?? backends.get(scope)
    const sql =
      backend !== undefined
        ? signalBackendSql('pg_terminate_backend', backend)
        : answered !== undefined
          ? signalTaggedSql('pg_terminate_backend', answered, false)
          : undefined
    if (sql !== undefined) await runThrough(through)(sql).catch(ignore)
    if (dropping !== undefined) await Promise.race([dropping, delay(RESET_BOUND_MS)])
  }
  return {
    db,
    owned: unpin !== undefined,
    connectionKey: scope,
    query: send,
    cancel() {
      const text = sent
      if (text === undefined) return Promise.resolve()
      if (instance === undefined && !cancels) {
        return Promise.reject(
          new UnsupportedError(
            `cannot cancel a wait on a Kysely Transaction that pglock did not open with ${kyselyName()}, which cannot cancel on the connection: no other connection is reachable`,
          ),
        )
      }
      const cancelling = instance !== undefined ? cancelFrom(instance, text) : cancelOnConnection(text)
      const pending = (cancellations ??= new Set())
      pending.add(cancelling)
      void cancelling.finally(() => pending.delete(cancelling)).catch(ignore)
      return cancelling
    },
    onLost(subscriber) {
      listener = subscriber
      watch()
      return () => {
        if (listener === subscriber) listener = undefined
        clearTimeout(timer)
        timer = undefined
      }
    },
    async release({ destroy }) {
      clearTimeout(timer)
      timer = undefined
      if (cancellations !== undefined && cancellations.size > 0) {
        await Promise.race([Promise.allSettled(cancellations), delay(RESET_BOUND_MS)])
      }
      if (unpin === undefined) return
      if (destroy && !lost && instance !== undefined) await reset(instance)
      await unpin()
    },
  }
}

/** Kysely lends a connection only for a callback's length, so the callback stays open until release. */
function pin(instance: Kysely<any>): Promise<LockConnection<Kysely<any>>> {
  return new Promise((resolve, reject) => {
    const pinned: Promise<void> = instance.connection().execute(async (db) => {
      const connections = connectionsOf(db, false)
      const connection = await connections(itself)
      instances.set(db, instance)
      let unpinned!: () => void
      const held = new Promise<void>((done) => (unpinned = done))
      const unpin = async () => {
        unpinned()
        await pinned.catch(ignore)
      }
      resolve(lockConnection({ db, connections, scope: connection, instance, unpin }))
      await held
    })
    pinned.catch(reject)
  })
}

const checkedDialects = new WeakMap<object, Promise<void>>()

/** Before a transaction: Kysely sends `BEGIN` before pglock sees its connection. Once per instance. */
async function checkDialect(instance: Kysely<any>): Promise<void> {
  if (!mayRefuse()) return
  const scope = instanceScope(instance)
  let checked = checkedDialects.get(scope)
  if (checked === undefined) {
    checked = connectionsOf(instance)(async (connection) => refuseUnsettling(connection))
    checkedDialects.set(scope, checked)
    // a checkout that failed says nothing of the dialect: ask again next time
    checked.catch(() => checkedDialects.delete(scope))
  }
  await checked
}

/** `lease.db` is Kysely's own `Transaction`; after a loss Kysely settles the callback and ends it itself. */
function runInTransaction<T>(instance: Kysely<any>, body: (connection: LockConnection<Kysely<any>>) => Promise<T>): Promise<T> {
  return runInDriverTransaction<Wiring<Transaction<any>>, Kysely<any>, T>(
    (callback) =>
      instance.transaction().execute(async (db) => {
        instances.set(db, instance)
        const connections = connectionsOf(db, false)
        return callback({ db, connections, scope: await connections(itself), instance, unpin: NOTHING_TO_UNPIN, transaction: true })
      }),
    lockConnection,
    body,
    'settle',
  )
}

/**
 * Describes a Kysely handle to the core. A `Kysely` instance is a pool: a session lock pins one
 * of its connections through `db.connection()`, and `withLock` in transaction scope runs through
 * `db.transaction()`. A `Transaction`, or a `lease.db` pglock handed out, is one connection that
 * pglock never ends. Handles are told apart by shape; no driver is imported.
 *
 * @example
 * ```ts
 * import { bindExecutor } from '@pglock/core/adapter'
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
  checkHandle(db)
  const instance = instances.get(db)
  if (db.isTransaction || instance !== undefined) {
    return {
      kind: 'connection',
      queueKey: db,
      connect: async () => {
        const connections = connectionsOf(db)
        return lockConnection({ db, connections, scope: await connections(itself), instance, unpin: undefined })
      },
      inTransaction: () => (db.isTransaction ? true : undefined),
    }
  }
  return {
    kind: 'pool',
    queueKey: instanceScope(db),
    connect: () => pin(db),
    transaction: async (body) => {
      await checkDialect(db)
      return runInTransaction(db, body)
    },
  }
}
