import { InvalidArgumentError, type LockScope, UnsupportedError } from '@pglock/core'
import {
  isConnectionFailure,
  type LockConnection,
  type LockExecutor,
  type PreparedStatement,
  type Row,
  runInDriverTransaction,
} from '@pglock/core/adapter'
import { CompiledQuery, type DatabaseConnection, type Kysely, type QueryResult, type Transaction } from 'kysely'
import { mayRefuse, refuseUnsettling } from './kysely-dialects.js'
import { forgetNames, probed, probeNames, runNamed, takesNames } from './kysely-prepared.js'
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
import { learnStatements, runText, type TextContext, takesSeveral } from './kysely-statements.js'

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

/** The probe timer ticks this many times per {@link PROBE_INTERVAL_MS}. */
const PROBE_TICKS = 5

/** What every connection of one class shares; a pool's connections are all of one. */
class ConnectionClass {
  constructor(
    /** The connections' prototype, for {@link takesSeveral}. */
    readonly kind: object,
    /** Kysely 0.29's connection-level cancel. */
    readonly cancels: boolean,
  ) {}
}

/** Learnt on an instance's first checkout, by `instanceScope`: later ones need not ask for the connection before their first statement. */
const connectionClasses = new WeakMap<object, ConnectionClass>()
/** Instances whose connections turned out to differ in class: each of their checkouts sees its connection first. */
const mixedClasses = new WeakSet<object>()

/** Kysely lends a connection only for a callback's length: the callback waits on {@link held} until release. */
class Pin {
  /** The callback's end: the connection is back in the pool. */
  pinned: Promise<void> = DONE
  readonly held: Promise<void>
  #unpinned!: () => void

  constructor() {
    this.held = new Promise((done) => (this.#unpinned = done))
  }

  unpin(): Promise<void> {
    this.#unpinned()
    return this.pinned.then(ignore, ignore)
  }
}

/**
 * One checkout. pglock finds its statement on the server by a tag in its text (works behind
 * PgBouncer and after the client died), else by backend and exact text (kysely-postgres-js 5),
 * else, with no other connection known, by Kysely's connection-level cancel, which is the least
 * reliable.
 */
class KyselyConnection<Db extends Kysely<any>> implements LockConnection<Db>, TextContext, ConnectionClass {
  readonly db: Db
  readonly owned: boolean
  kind: object
  cancels: boolean
  readonly inBlock: boolean
  /** Unknown until its first statement where the class of the instance's connections is known. */
  #scope: DatabaseConnection | undefined
  readonly #connections: ConnectionSource
  /** Whose other connections can signal this one; unknown for a caller's `Transaction`. */
  readonly #instance: Kysely<any> | undefined
  /** Kysely gives a transaction's connection back itself, when it ends. */
  readonly #pin: Pin | undefined
  readonly #transaction: boolean
  // the core subscribes once per checkout and remembers the loss: this only tells it, and stops probing
  #lost = false
  #listener: ((cause: unknown) => void) | undefined
  #probing = false
  #sent: Sent | undefined
  #answered: string | undefined
  #learning: Promise<Backend | undefined> | undefined
  #learnt: Backend | undefined
  /** Awaited by the release: the caller may end the instance next, which a cancel still connecting would stall. */
  #cancellations: Set<Promise<void>> | undefined

  /**
   * One timer for every held lock's probe rather than one armed and cleared per checkout. The
   * connections it watches are a list threaded through them, so that watching hashes and
   * allocates nothing; each is probed on the {@link PROBE_TICKS}th tick after it asked.
   */
  static #first: KyselyConnection<Kysely<any>> | undefined
  static #ticks = 0
  static #ticker: NodeJS.Timeout | undefined
  #previous: KyselyConnection<Kysely<any>> | undefined
  #next: KyselyConnection<Kysely<any>> | undefined
  /** The tick this connection is probed on; 0 while it is not watched. */
  #due = 0

  /**
   * `scope` (`trx.withSchema()` and a savepoint are distinct handles on one connection), else the
   * class its connections have, for a connection pglock owns. `transaction`: one pglock opened.
   */
  constructor(
    db: Db,
    connections: ConnectionSource,
    scope: DatabaseConnection | ConnectionClass,
    instance: Kysely<any> | undefined,
    pin: Pin | undefined,
    transaction: boolean,
  ) {
    this.db = db
    this.owned = pin !== undefined || transaction
    if (scope instanceof ConnectionClass) {
      this.kind = scope.kind
      this.cancels = scope.cancels
    } else {
      refuseUnsettling(scope)
      this.#scope = scope
      this.kind = Object.getPrototypeOf(scope) ?? scope
      this.cancels = typeof (scope as DatabaseConnection & ConnectionControl).cancelQuery === 'function'
    }
    this.inBlock = transaction || db.isTransaction
    this.#connections = connections
    this.#instance = instance
    this.#pin = pin
    this.#transaction = transaction
  }

  get connectionKey(): DatabaseConnection | undefined {
    return this.#scope
  }

  /** The connection a lazily pinned checkout runs on, seen by its first statement or probe. */
  #adopt(connection: DatabaseConnection): void {
    this.#scope = connection
    const kind = Object.getPrototypeOf(connection) ?? connection
    if (kind === this.kind) return
    this.kind = kind
    this.cancels = typeof (connection as DatabaseConnection & ConnectionControl).cancelQuery === 'function'
    if (this.#instance === undefined) return
    const scope = instanceScope(this.#instance)
    mixedClasses.add(scope)
    connectionClasses.delete(scope)
  }

  query(sql: string): Promise<readonly Row[]> {
    const text = new Sent()
    this.#sent = text
    if (takesSeveral(this.kind) !== undefined && !sql.includes(';')) return this.#exec(text, sql, true)
    return this.#send(text, sql)
  }

  /** A bare session call as a named statement (see {@link PreparedKyselyConnection}). */
  executeNamed(statement: PreparedStatement): Promise<readonly Row[]> {
    const text = new Sent()
    this.#sent = text
    return this.#exec(text, statement.text, true, statement)
  }

  async #send(text: Sent, sql: string): Promise<readonly Row[]> {
    const run = (statement: string) => this.#exec(text, statement, false)
    try {
      if (takesSeveral(this.kind) === undefined) await learnStatements(run, this)
      return await runText(run, sql, this)
    } finally {
      this.#end(text)
    }
  }

  #end(text: Sent): void {
    text.end()
    if (this.#sent === text) this.#sent = undefined
  }

  /** With `last`, the text ends with this statement; `named`: it runs as that prepared statement, untagged. */
  async #exec(text: Sent, sql: string, last: boolean, named?: PreparedStatement): Promise<readonly Row[]> {
    const tag = named === undefined && takesSeveral(this.kind) !== false ? nextTag() : undefined
    const statement = tag === undefined ? sql : tagged(tag, sql)
    text.tag = tag
    text.statement = statement
    try {
      const { rows } = await this.#connections((connection) => this.#run(connection, text, tag, statement, named))
      if (named !== undefined) this.#checkBackend(rows)
      this.#answered = tag
      return rows as readonly Row[]
    } catch (error) {
      // reported while `sent` still names the text and its statement, so that a cancel can find it on the server
      if (isConnectionFailure(error)) this.#report(error)
      else this.#answered = tag
      throw error
    } finally {
      // only microtasks pass between the driver's answer and here, so no cancel sees `running` stale
      text.running = false
      text.tag = undefined
      if (last) this.#end(text)
    }
  }

  #run(
    connection: DatabaseConnection & ConnectionControl,
    text: Sent,
    tag: string | undefined,
    statement: string,
    named: PreparedStatement | undefined,
  ): Promise<QueryResult<unknown>> {
    if (this.#scope === undefined) this.#adopt(connection)
    if (this.cancels && !collected.has(connection)) return this.#collectThenRun(connection, text, tag, statement, named)
    if (named !== undefined && !probed(connection)) return this.#probeThenRun(connection, text, tag, statement, named)
    if (tag === undefined && this.#instance !== undefined && this.#learning === undefined)
      this.#learnBackend(connection, named !== undefined)
    text.running = true
    text.begin()
    return named === undefined ? connection.executeQuery(CompiledQuery.raw(statement)) : runNamed(connection, named)
  }

  /**
   * The backend an untagged statement runs on, for a cancel to find it. Not awaited: both dialects
   * send it ahead of the statement, postgres.js in the same round trip. A named statement's
   * connection learns it once: its backend is checked against each answer (see {@link #checkBackend}).
   */
  #learnBackend(connection: DatabaseConnection, once: boolean): void {
    const known = once ? backends.get(connection) : undefined
    if (known !== undefined) {
      this.#learnt = known
      this.#learning = Promise.resolve(known)
      return
    }
    this.#learning = connection.executeQuery(CompiledQuery.raw(BACKEND_SQL)).then(({ rows }) => {
      const backend = backendOf(rows)
      if (once && backend !== undefined) backends.set(connection, backend)
      return (this.#learnt = backend)
    }, ignore)
  }

  /** A named statement answered from another backend than the one learnt: a pooling proxy, where names cannot be kept. */
  #checkBackend(rows: readonly unknown[]): void {
    const pid = (rows[0] as { pid?: unknown } | undefined)?.pid
    const scope = this.#scope
    if (typeof pid !== 'number' || scope === undefined) return
    const known = backends.get(scope)
    if (known === undefined || known.pid === pid) return
    backends.delete(scope)
    forgetNames(scope)
  }

  /** A connection's first named statement: a probe decides whether names go through, and learns its backend. */
  async #probeThenRun(
    connection: DatabaseConnection & ConnectionControl,
    text: Sent,
    tag: string | undefined,
    statement: string,
    named: PreparedStatement,
  ): Promise<QueryResult<unknown>> {
    const backend = backendOf((await probeNames(connection, BACKEND_SQL)).rows)
    if (backend !== undefined) backends.set(connection, backend)
    return this.#run(connection, text, tag, statement, named)
  }

  async #collectThenRun(
    connection: DatabaseConnection & ConnectionControl,
    text: Sent,
    tag: string | undefined,
    statement: string,
    named: PreparedStatement | undefined,
  ): Promise<QueryResult<unknown>> {
    await connection.collectSessionInfo?.()
    collected.add(connection)
    return this.#run(connection, text, tag, statement, named)
  }

  #report(cause: unknown): void {
    this.#lost = true
    this.#listener?.(cause)
  }

  cancel(): Promise<void> {
    const text = this.#sent
    if (text === undefined) return DONE
    const instance = this.#instance
    if (instance === undefined && !this.cancels) {
      return Promise.reject(
        new UnsupportedError(
          `cannot cancel a wait on a Kysely Transaction that pglock did not open with ${kyselyName()}, which cannot cancel on the connection: no other connection is reachable`,
        ),
      )
    }
    const cancelling = instance !== undefined ? this.#cancelFrom(instance, text) : this.#cancelOnConnection(text)
    const pending = (this.#cancellations ??= new Set())
    pending.add(cancelling)
    void cancelling.finally(() => pending.delete(cancelling)).catch(ignore)
    return cancelling
  }

  /** Asks again, briefly, as the statement may not have reached the server when the abort comes. */
  async #cancelFrom(through: Kysely<any>, text: Sent): Promise<void> {
    // read at once where the text has a statement: a failed one is forgotten as soon as its error is reported
    if (text.statement === undefined) await text.begun()
    const { statement, tag } = text
    const backend = tag === undefined ? await Promise.race([this.#learning, delay(CANCEL_DELIVERY_BOUND_MS)]) : undefined
    if (statement === undefined) return
    if (tag === undefined && backend === undefined) return this.cancels && !this.#lost ? this.#cancelOnConnection(text) : undefined
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
  async #cancelOnConnection(text: Sent): Promise<void> {
    const instance = this.#instance
    const lender: ConnectionSource =
      instance !== undefined
        ? connectionsOf(instance)
        : () =>
            Promise.reject(
              new UnsupportedError(`${kyselyName()} found no control connection, and a Transaction the caller opened lends none`),
            )
    await text.begun()
    const control = this.#scope as DatabaseConnection & ConnectionControl
    for (let attempt = 0, wait = CANCEL_RETRY_MS; !text.done && attempt < CANCEL_ATTEMPTS; attempt += 1, wait *= 2) {
      if (text.running) await Promise.race([control.cancelQuery?.(lender).catch(ignore), delay(CANCEL_DELIVERY_BOUND_MS)])
      await Promise.race([text.ended(), delay(wait)])
    }
  }

  #watch(): void {
    if (this.#probing || this.#listener === undefined || this.#lost) return
    if (this.#due === 0) {
      this.#next = KyselyConnection.#first
      if (this.#next !== undefined) this.#next.#previous = this
      KyselyConnection.#first = this
    }
    this.#due = KyselyConnection.#ticks + PROBE_TICKS
    if (KyselyConnection.#ticker !== undefined) return
    KyselyConnection.#ticker = setInterval(() => KyselyConnection.#tick(), PROBE_INTERVAL_MS / PROBE_TICKS)
    KyselyConnection.#ticker.unref()
  }

  #unwatch(): void {
    if (this.#due === 0) return
    this.#due = 0
    const previous = this.#previous
    const next = this.#next
    if (previous === undefined) KyselyConnection.#first = next
    else previous.#next = next
    if (next !== undefined) next.#previous = previous
    this.#previous = undefined
    this.#next = undefined
  }

  static #tick(): void {
    const ticks = ++KyselyConnection.#ticks
    if (KyselyConnection.#first === undefined) {
      clearInterval(KyselyConnection.#ticker)
      KyselyConnection.#ticker = undefined
      return
    }
    for (let connection: KyselyConnection<Kysely<any>> | undefined = KyselyConnection.#first; connection !== undefined; ) {
      const next: KyselyConnection<Kysely<any>> | undefined = connection.#next
      if (connection.#due <= ticks) {
        connection.#unwatch()
        connection.#probe()
      }
      connection = next
    }
  }

  /** Kysely hides the driver's connection events, so a failing probe is how a loss is heard. */
  #probe(): void {
    this.#probing = true
    const scope = this.#scope
    const learn = this.owned && (scope === undefined || !backends.has(scope))
    this.#connections((connection) => {
      if (this.#scope === undefined) this.#adopt(connection)
      return connection.executeQuery(CompiledQuery.raw(learn ? BACKEND_SQL : 'SELECT 1'))
    }).then(
      ({ rows }) => {
        const backend = learn ? backendOf(rows) : undefined
        if (backend !== undefined && this.#scope !== undefined) backends.set(this.#scope, backend)
        this.#probing = false
        this.#watch()
      },
      (error: unknown) => {
        this.#probing = false
        if (transactionOver(error)) return
        if (isConnectionFailure(error)) this.#report(error)
        else this.#watch()
      },
    )
  }

  onLost(subscriber: (cause: unknown) => void): () => void {
    this.#listener = subscriber
    this.#watch()
    return () => {
      if (this.#listener === subscriber) this.#listener = undefined
      this.#unwatch()
    }
  }

  release({ destroy }: { readonly destroy: boolean }): Promise<void> | undefined {
    this.#unwatch()
    if ((this.#cancellations !== undefined && this.#cancellations.size > 0) || (destroy && !this.#lost && this.owned)) {
      return this.#releaseAfter(destroy)
    }
    return this.#pin?.unpin()
  }

  async #releaseAfter(destroy: boolean): Promise<void> {
    if (this.#cancellations !== undefined && this.#cancellations.size > 0) {
      await Promise.race([Promise.allSettled(this.#cancellations), delay(RESET_BOUND_MS)])
    }
    if (!this.owned) return
    if (destroy && !this.#lost && this.#instance !== undefined) await this.#reset(this.#instance)
    await this.#pin?.unpin()
  }

  async #unlockAll(): Promise<boolean> {
    for (const sql of ['SELECT pg_advisory_unlock_all()', 'ROLLBACK; SELECT pg_advisory_unlock_all()']) {
      try {
        await this.query(sql)
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
  async #reset(through: Kysely<any>): Promise<void> {
    const dropping = this.#transaction ? undefined : this.#unlockAll()
    if (dropping !== undefined && (await Promise.race([dropping, delay(RESET_BOUND_MS).then(() => false)]))) return
    const backend = this.#learnt ?? (this.#scope === undefined ? undefined : backends.get(this.#scope))
    const sql =
      backend !== undefined
        ? signalBackendSql('pg_terminate_backend', backend)
        : this.#answered !== undefined
          ? signalTaggedSql('pg_terminate_backend', this.#answered, false)
          : undefined
    if (sql !== undefined) await runThrough(through)(sql).catch(ignore)
    if (dropping !== undefined) await Promise.race([dropping, delay(RESET_BOUND_MS)])
  }
}

/** A checkout outside a transaction block whose class takes named statements: the bare session calls run prepared. */
class PreparedKyselyConnection<Db extends Kysely<any>> extends KyselyConnection<Db> {
  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    return this.executeNamed(statement)
  }
}

/** A session checkout (`transaction` false) or a handle's connection, prepared where its class allows. */
function checkout<Db extends Kysely<any>>(
  db: Db,
  connections: ConnectionSource,
  scope: DatabaseConnection | ConnectionClass,
  instance: Kysely<any> | undefined,
  pin: Pin | undefined,
): KyselyConnection<Db> {
  const kind = scope instanceof ConnectionClass ? scope.kind : (Object.getPrototypeOf(scope) ?? scope)
  const Connection = !db.isTransaction && takesNames(kind) ? PreparedKyselyConnection : KyselyConnection
  return new Connection(db, connections, scope, instance, pin, false)
}

/** `known`: the class of the instance's connections, when the connection need not be seen before the lock statement. */
function pin(instance: Kysely<any>, known: ConnectionClass | undefined): Promise<LockConnection<Kysely<any>>> {
  const pinning = new Pin()
  return new Promise((resolve, reject) => {
    pinning.pinned = instance.connection().execute((db) => {
      instances.set(db, instance)
      const connections = connectionsOf(db, false)
      if (known !== undefined) {
        resolve(checkout(db, connections, known, instance, pinning))
        return pinning.held
      }
      return connections(itself).then((scope) => {
        const connection = checkout(db, connections, scope, instance, pinning)
        learnClass(instance, connection)
        resolve(connection)
        return pinning.held
      })
    })
    pinning.pinned.catch(reject)
  })
}

function learnClass(instance: Kysely<any>, { kind, cancels }: ConnectionClass): void {
  const scope = instanceScope(instance)
  if (!mixedClasses.has(scope)) connectionClasses.set(scope, new ConnectionClass(kind, cancels))
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
function runInTransaction<T>(
  instance: Kysely<any>,
  known: ConnectionClass | undefined,
  body: (connection: LockConnection<Kysely<any>>) => Promise<T>,
): Promise<T> {
  return runInDriverTransaction<KyselyConnection<Transaction<any>>, Kysely<any>, T>(
    (callback) =>
      instance.transaction().execute((db) => {
        instances.set(db, instance)
        const connections = connectionsOf(db, false)
        if (known !== undefined) return callback(new KyselyConnection(db, connections, known, instance, undefined, true))
        return connections(itself).then((scope) => {
          const connection = new KyselyConnection(db, connections, scope, instance, undefined, true)
          learnClass(instance, connection)
          return callback(connection)
        })
      }),
    opened,
    body,
    'settle',
  )
}

const opened = <C>(connection: C) => connection

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

/** An instance's executor holds nothing per call: made once, not per lock. */
const pools = new WeakMap<Kysely<any>, KyselyPool>()

/** A `Kysely` instance: session locks pin one of its connections, transaction scope runs in `db.transaction()`. */
class KyselyPool implements LockExecutor<Kysely<any>> {
  readonly kind = 'pool'
  readonly adapter = 'kysely'
  readonly queueKey: object
  readonly #db: Kysely<any>

  constructor(db: Kysely<any>) {
    this.#db = db
    this.queueKey = instanceScope(db)
    this.query = runThrough(db) as (sql: string) => Promise<readonly Row[]>
  }

  /** Where a dialect may be refused, every checkout shows its connection before any statement. */
  #known(): ConnectionClass | undefined {
    return mayRefuse() ? undefined : connectionClasses.get(this.queueKey)
  }

  // properties, not methods: the core may call them detached
  readonly connect = (): Promise<LockConnection<Kysely<any>>> => pin(this.#db, this.#known())

  readonly query: (sql: string) => Promise<readonly Row[]>

  readonly transaction = <T>(body: (connection: LockConnection<Kysely<any>>) => Promise<T>): Promise<T> => {
    if (!mayRefuse()) return runInTransaction(this.#db, this.#known(), body)
    return checkDialect(this.#db).then(() => runInTransaction(this.#db, undefined, body))
  }
}

function executorFor(db: Kysely<any>): LockExecutor<Kysely<any>> {
  const cached = pools.get(db)
  if (cached !== undefined) return cached
  checkHandle(db)
  const instance = instances.get(db)
  if (db.isTransaction || instance !== undefined) {
    return {
      kind: 'connection',
      adapter: 'kysely',
      queueKey: db,
      connect: async () => {
        const connections = connectionsOf(db)
        return checkout(db, connections, await connections(itself), instance, undefined)
      },
      inTransaction: () => (db.isTransaction ? true : undefined),
      query: runThrough(db) as (sql: string) => Promise<readonly Row[]>,
    }
  }
  const pool = new KyselyPool(db)
  pools.set(db, pool)
  return pool
}
