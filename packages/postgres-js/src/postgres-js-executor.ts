import { type LockScope, UnsupportedError } from '@pglock/core'
import {
  type CancelOutcome,
  isConnectionFailure,
  type LockConnection,
  type LockExecutor,
  lastRows,
  type PreparedStatement,
  type Row,
  wrongHandle,
} from '@pglock/core/adapter'
import type { ReservedSql, Sql, TransactionSql } from 'postgres'
import { brokenHandles, isTransactionSql } from './handles.js'
import { PinLoss } from './pin-loss.js'
import { type Endpoint, endpointOf, nameHandleV4, pinV4 } from './pin-v4.js'
import {
  asV3Connection,
  type BackendKey,
  backendKeyOf,
  type CloseHook,
  CONNECTION_CLOSED,
  cancelV3,
  cancelV3Backend,
  cannotCancel,
  type DriverQuery,
  driverName,
  generationOf,
  hookClose,
  keepErrorsOwn,
  onexecuteOption,
  unhookClose,
  type V3Connection,
} from './privates.js'

/**
 * A postgres.js handle pglock can lock with: a `Sql` (a pool), a `ReservedSql` or a `TransactionSql`.
 *
 * @example
 * ```ts
 * function lockFor(db: PostgresJsHandle, job: number) {
 *   return createLock(db, ['job', job].join(':'))
 * }
 * ```
 */
export type PostgresJsHandle = Sql<any> | ReservedSql<any> | TransactionSql<any>

/**
 * What `lease.db` is for a handle in a scope: on a `Sql`, the `ReservedSql` pinned for a session
 * lock or the `TransactionSql` of `sql.begin()` for a transaction lock; else the handle itself.
 *
 * @example
 * ```ts
 * type Pinned = PostgresJsLeaseDb<Sql, 'session'>      // ReservedSql
 * type Tx = PostgresJsLeaseDb<Sql, 'transaction'>      // TransactionSql
 * ```
 */
export type PostgresJsLeaseDb<H, S extends LockScope = LockScope> =
  H extends ReservedSql<any>
    ? H
    : H extends TransactionSql<any>
      ? H
      : H extends Sql<infer T extends Record<string, unknown>>
        ? S extends 'transaction'
          ? TransactionSql<T>
          : ReservedSql<T>
        : never

/** A 3.4 statement: `state` is the backend key it was sent to, `null` until it is written. */
type RawQuery = DriverQuery & PromiseLike<readonly unknown[]> & { readonly state: BackendKey | null }

/** Query options, with 3.4's `onexecute` that its types leave out. */
type SendOptions = Readonly<Record<string, unknown>>

function isQueryFunction(db: unknown): db is PostgresJsHandle {
  return typeof db === 'function' && typeof (db as Sql).unsafe === 'function'
}

/** Marks a statement pglock sent as answered or failed. */
const SETTLED: unique symbol = Symbol('pglock.settled')

function isSettled(query: RawQuery): boolean {
  return (query as { [SETTLED]?: true })[SETTLED] === true
}

function markSettled(query: RawQuery): void {
  ;(query as { [SETTLED]?: true })[SETTLED] = true
}

/** The connection each `TransactionSql` runs on: a transaction and its savepoints are handles on one. */
const transactionConnections = new WeakMap<TransactionSql<any>, V3Connection>()

/** How many empty statements pglock sends to learn a transaction's connection before it goes without. */
const LEARN_ATTEMPTS = 3

/**
 * Learns a `TransactionSql`'s connection from an empty statement's `onexecute`. 3.4 skips
 * `onexecute` for a statement written while the socket is congested, so it tries again.
 */
async function learnConnection(transaction: TransactionSql<any>): Promise<void> {
  for (let attempt = 1; attempt <= LEARN_ATTEMPTS; attempt += 1) {
    if (transactionConnections.has(transaction) || brokenHandles.has(transaction)) return
    const outcome = await new Promise<'named' | 'unnamed' | 'failed'>((resolve) => {
      const named = onexecuteOption((connection) => {
        if (connection instanceof UnsupportedError) return resolve('failed')
        transactionConnections.set(transaction, connection)
        resolve('named')
      })
      const query = keepErrorsOwn(transaction.unsafe('', [], named) as unknown as RawQuery)
      query.then(
        () => resolve('unnamed'),
        () => resolve('failed'),
      )
    })
    if (outcome !== 'unnamed') return
  }
}

/** Connections pglock gave up on that postgres.js has not yet closed, per pool. */
const closingConnections = new WeakMap<object, Set<Promise<void>>>()
/** How many there are in every pool: while none, a checkout skips the lookup. */
let closingCount = 0

/** How long a connection pglock gave up on delays the next checkout; a blackholed one may never close. */
const CLOSE_WAIT_MS = 1_000

function closing(pool: object, closed: Promise<void>): void {
  let pending = closingConnections.get(pool)
  if (pending === undefined) closingConnections.set(pool, (pending = new Set()))
  let timer: ReturnType<typeof setTimeout> | undefined
  const expired = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, CLOSE_WAIT_MS)
    ;(timer as { unref?: () => void }).unref?.()
  })
  const settled: Promise<void> = Promise.race([closed, expired]).then(() => {
    clearTimeout(timer)
    if (pending.delete(settled)) closingCount -= 1
  })
  pending.add(settled)
  closingCount += 1
}

/** 3.4 drops a `reserve()` queued while a connection closes, which then never settles (porsager/postgres#1195). */
function untilClosed(pool: object): Promise<unknown> | undefined {
  if (closingCount === 0) return undefined
  const pending = closingConnections.get(pool)
  return pending !== undefined && pending.size > 0 ? Promise.all(pending) : undefined
}

async function untilSent(query: RawQuery): Promise<void> {
  while (query.state === null && !isSettled(query)) await new Promise((resolve) => setTimeout(resolve, 5))
}

/**
 * Cancels a 3.4 statement once it is on the wire (cancelling a queued one stalls a reserved
 * connection), never one already answered (3.4 would keep that request pending forever).
 */
async function cancelQuery(query: RawQuery): Promise<void> {
  await null
  await untilSent(query)
  if (isSettled(query)) return
  await cancelV3(query)
}

/**
 * A pinned postgres.js connection.
 *
 * @example
 * ```ts
 * const connection = pinPostgresJs(tx, tx, { owned: false })
 * if (!connection.lost) await connection.query('SELECT 1')
 * ```
 */
export interface PostgresJsConnection<Db> extends LockConnection<Db> {
  /** Whether the connection failed or closed while pinned; no statement may be sent on it then. */
  readonly lost: boolean
  /**
   * A `ReservedSql` itself; for a `TransactionSql`, the postgres.js connection it and its
   * savepoints share, once a statement has named it.
   */
  readonly connectionKey: object | undefined
}

/** How a connection is pinned: `release` says whether pglock gives an owned one back with `handle.release()`. */
export interface PinOptions {
  readonly owned: boolean
  readonly release?: boolean | undefined
  readonly pool?: object | undefined
  readonly prepare?: boolean | undefined
  /** Where to send a CancelRequest on 4.x, read once per pool from `pool`'s options. */
  readonly endpoint?: Endpoint | undefined
}

/** One per lock, so a class: an object literal with getters costs far more to build. */
class V3Pin<Db> extends PinLoss implements PostgresJsConnection<Db> {
  readonly db: Db
  readonly owned: boolean
  readonly #handle: ReservedSql<any> | TransactionSql<any>
  readonly #transaction: TransactionSql<any> | undefined
  readonly #giveBack: boolean
  readonly #pool: object | undefined
  /** Query options naming the connection to `onexecute`, as text and as a prepared statement, until it is named. */
  readonly #asText: SendOptions
  readonly #prepared: SendOptions
  #raw: V3Connection | undefined
  #refused: UnsupportedError | undefined
  #hook: CloseHook | undefined
  #running: RawQuery | undefined
  #released = false
  #closed = false
  #markClosed: (() => void) | undefined

  constructor(handle: ReservedSql<any> | TransactionSql<any>, db: Db, owned: boolean, giveBack: boolean, pool: object | undefined) {
    super()
    this.db = db
    this.owned = owned
    this.#handle = handle
    this.#transaction = isTransactionSql(handle) ? handle : undefined
    this.#giveBack = giveBack
    this.#pool = pool
    const onexecute = (connection: unknown): true => {
      this.#onexecute(asV3Connection(connection))
      return true
    }
    this.#asText = { onexecute }
    this.#prepared = { onexecute, prepare: true }
    if (!owned && brokenHandles.has(handle)) this.report(brokenHandles.get(handle))
  }

  /** An owned transaction's connection is its own: another handle on it learns it with a statement of its own. */
  get connectionKey(): object | undefined {
    if (this.#transaction === undefined) return this.#handle
    return this.owned ? this.#raw : transactionConnections.get(this.#transaction)
  }

  query(sql: string): Promise<readonly Row[]> {
    return this.#send(sql, NO_VALUES, this.#raw === undefined ? this.#asText : AS_TEXT)
  }

  protected executeStatement({ text, values }: PreparedStatement): Promise<readonly Row[]> {
    return this.#raw === undefined ? this.#executeThenLearn(text, values) : this.#send(text, values, PREPARED)
  }

  async cancel(): Promise<CancelOutcome> {
    const query = this.#running
    if (query === undefined) return
    if (cannotCancel(query)) return false
    if (!this.lost) return cancelQuery(query).catch(() => undefined)
    const backend = backendKeyOf(query)
    if (backend !== null) await cancelV3Backend(query, backend).catch(() => undefined)
  }

  release({ destroy }: { readonly destroy: boolean }): void {
    this.#released = true
    const raw = this.#raw
    if (this.owned && !this.#closed && raw !== undefined && (destroy || this.lost)) {
      raw.terminate()
      if (this.#pool !== undefined) closing(this.#pool, new Promise((resolve) => (this.#markClosed = resolve)))
      return
    }
    if (raw !== undefined && this.#hook !== undefined) unhookClose(raw, this.#hook)
    if (this.#giveBack && !this.#closed && !this.lost) (this.#handle as ReservedSql<any>).release()
  }

  #fail(cause: unknown): void {
    if (!this.owned && !this.lost) brokenHandles.set(this.#handle, cause)
    if (this.#transaction !== undefined) transactionConnections.delete(this.#transaction)
    this.report(cause)
  }

  #onexecute(connection: V3Connection | UnsupportedError): void {
    if (connection instanceof UnsupportedError) {
      this.#refused ??= connection
      return
    }
    if (this.#transaction !== undefined && !this.owned && !this.lost) transactionConnections.set(this.#transaction, connection)
    if (this.#raw === undefined && !this.#released) {
      this.#raw = connection
      this.#hook = hookClose(connection, this)
    }
  }

  [CONNECTION_CLOSED](cause: unknown): void {
    this.#closed = true
    this.#markClosed?.()
    this.#fail(cause ?? new Error('postgres.js connection closed'))
  }

  async #send(sql: string, values: readonly (string | null)[], options: SendOptions): Promise<readonly Row[]> {
    if (this.lost) throw this.cause
    const query = this.#handle.unsafe(sql, values as string[], options as never) as unknown as RawQuery
    if (this.#transaction !== undefined) keepErrorsOwn(query)
    this.#running = query
    try {
      return lastRows(await query)
    } catch (error) {
      if (isConnectionFailure(error)) this.#fail(error)
      throw error
    } finally {
      markSettled(query)
      if (this.#running === query) this.#running = undefined
      if (this.#refused !== undefined) this.#fail(this.#refused)
    }
  }

  /** 3.4 calls `onexecute` for neither half of a prepared statement's first run, so an empty statement names the connection. */
  async #executeThenLearn(text: string, values: readonly (string | null)[]): Promise<readonly Row[]> {
    try {
      return await this.#send(text, values, this.#prepared)
    } finally {
      if (this.#raw === undefined && !this.lost && !this.#released) await this.#send('', NO_VALUES, this.#asText).catch(noop)
    }
  }
}

/** A pin that runs the bare lock calls as named prepared statements. */
class PreparedV3Pin<Db> extends V3Pin<Db> {
  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    return this.executeStatement(statement)
  }
}

const NO_VALUES: readonly string[] = []
/** Once the pin knows its connection: 3.4's `onexecute` has nothing more to say. */
const AS_TEXT: SendOptions = {}
const PREPARED: SendOptions = { prepare: true }
const NOT_OWNED: PinOptions = { owned: false }
const noop = (): void => undefined

/**
 * Pins the connection behind a `ReservedSql` or `TransactionSql` for a lock, with `db` as its
 * `lease.db`. An owned connection released with `destroy`, or after it failed, is closed; a
 * handle pglock does not own is lost from the start if its connection failed before.
 *
 * @param options - `release`: give an owned `ReservedSql` back; `pool`: the `Sql` it came from;
 * `prepare`: send the bare lock calls as named prepared statements (on 4.x, in transactions too).
 * @example
 * ```ts
 * const reserved = await sql.reserve()
 * const connection = pinPostgresJs(reserved, reserved, { owned: true, release: true, pool: sql })
 * ```
 */
export function pinPostgresJs<Db>(handle: ReservedSql<any> | TransactionSql<any>, db: Db, options: PinOptions): PostgresJsConnection<Db> {
  const { owned, release = false, pool, prepare = false } = options
  if (generationOf(handle, pool) === 4) {
    return pinV4(handle, db, owned, release, prepare, pool === undefined ? undefined : (options.endpoint ?? endpointOf(pool)))
  }
  return prepare && !isTransactionSql(handle)
    ? new PreparedV3Pin(handle, db, owned, release, pool)
    : new V3Pin(handle, db, owned, release, pool)
}

/**
 * The core's side of one transaction lock inside `sql.begin()`'s callback. After a loss the
 * callback never settles: 3.4 fails `sql.begin()` by itself and would throw from a timer on a
 * `ROLLBACK` into the closed connection. The pin still knows the loss, so nothing listens for it here.
 */
function settleUnlessLost<Db, T>(connection: PostgresJsConnection<Db>, body: (connection: LockConnection<Db>) => Promise<T>): Promise<T> {
  return body(connection).then(
    (value) => (connection.lost ? new Promise<T>(noop) : value),
    (error: unknown) => {
      if (!connection.lost) throw error
      return new Promise<T>(noop)
    },
  )
}

/**
 * Runs `body` in a transaction that `begin` opens with `sql.begin()` (directly or through an ORM),
 * with `lease.db` the `db` it passes. After a loss the callback never settles: 3.4 fails
 * `sql.begin()` by itself and would throw from a timer on a `ROLLBACK` into the closed connection.
 *
 * @param pool - the `Sql` the transaction runs on.
 * @example
 * ```ts
 * const executor: LockExecutor<PgTransaction> = {
 *   kind: 'pool',
 *   queueKey: sql,
 *   transaction: (body) => runInPostgresJsTransaction((callback) => db.transaction((tx) => callback(tx._.session.client, tx)), body, sql),
 * }
 * ```
 */
export function runInPostgresJsTransaction<Db, T>(
  begin: (callback: (transaction: TransactionSql<any>, db: Db) => Promise<T>) => Promise<unknown>,
  body: (connection: LockConnection<Db>) => Promise<T>,
  pool?: object,
): Promise<T> {
  const options = pool === undefined ? OWNED : transactionOptionsOf(pool)
  return Promise.resolve(begin((transaction, db) => settleUnlessLost(pinPostgresJs(transaction, db, options), body))) as Promise<T>
}

const OWNED: PinOptions = { owned: true }
/** The pin options of transactions on each pool, made once per pool. */
const poolTransactionOptions = new WeakMap<object, PinOptions>()

function transactionOptionsOf(pool: object): PinOptions {
  let options = poolTransactionOptions.get(pool)
  if (options === undefined) {
    poolTransactionOptions.set(pool, (options = { owned: true, pool, prepare: prepares(pool), endpoint: endpointOf(pool) }))
  }
  return options
}

/** Prepared statements are postgres.js's default; `prepare: false` is for transaction-pooling proxies. */
function prepares(pool: object): boolean {
  return (pool as { options?: { prepare?: unknown } }).options?.prepare !== false
}

/** 3.4 never settles a `reserve()` that opens a connection while `fetch_types` is false (porsager/postgres#751). */
function reserveNeverSettles(sql: Sql<any>): boolean {
  return (sql as { options?: { fetch_types?: unknown } }).options?.fetch_types === false && generationOf(sql as never) === 3
}

function reserveRefused(): UnsupportedError {
  return new UnsupportedError(
    `${driverName()} never settles sql.reserve() on a new connection while fetch_types is false ` +
      '(https://github.com/porsager/postgres/issues/751), and a session lock on a Sql reserves one. ' +
      'Keep fetch_types on, lock in transaction scope, or use postgres.js 4',
  )
}

/** A postgres.js handle is a function: anything else reads as its kind, a function as what it is not. */
function notAHandle(db: unknown) {
  return wrongHandle(
    'a postgres.js Sql, ReservedSql or TransactionSql',
    db,
    typeof db === 'function' ? 'a function that is not a postgres.js sql' : undefined,
  )
}

/**
 * Describes a postgres.js handle to the core. A `Sql` lends each session lock a connection of
 * its own (`sql.reserve()`) and runs transaction locks in `sql.begin()`; a `ReservedSql` or
 * `TransactionSql` is one connection that pglock never closes.
 *
 * @example
 * ```ts
 * import { bindExecutor } from '@pglock/core/adapter'
 * import { postgresJsExecutor } from '@pglock/postgres-js'
 *
 * const { withLock } = bindExecutor(postgresJsExecutor)
 * ```
 */
export function postgresJsExecutor<H extends PostgresJsHandle>(db: H): LockExecutor<PostgresJsLeaseDb<H>> {
  return executorFor(db) as LockExecutor<PostgresJsLeaseDb<H>>
}

/** One statement through any handle: a `Sql` runs it on a connection of its pool. */
const queryThrough =
  (handle: Sql<any> | ReservedSql<any> | TransactionSql<any>) =>
  async (sql: string): Promise<readonly Row[]> =>
    lastRows(await handle.unsafe(sql))

function executorFor(db: unknown): LockExecutor<unknown> {
  if (!isQueryFunction(db)) throw notAHandle(db)
  if (typeof (db as { release?: unknown }).release === 'function') {
    const reserved = db as ReservedSql<any>
    return {
      kind: 'connection',
      adapter: 'postgres-js',
      queueKey: db,
      query: queryThrough(reserved),
      async connect() {
        if (generationOf(reserved) === 4) await nameHandleV4(reserved)
        return pinPostgresJs(reserved, reserved, NOT_OWNED)
      },
    }
  }
  if (typeof (db as { savepoint?: unknown }).savepoint === 'function') {
    const transaction = db as TransactionSql<any>
    return {
      kind: 'connection',
      adapter: 'postgres-js',
      queueKey: db,
      query: queryThrough(transaction),
      async connect() {
        await (generationOf(transaction) === 4 ? nameHandleV4(transaction) : learnConnection(transaction))
        return pinPostgresJs(transaction, transaction, NOT_OWNED)
      },
      inTransaction: () => true,
    }
  }
  const sql = db as Sql<any>
  let executor = poolExecutors.get(sql)
  if (executor === undefined) poolExecutors.set(sql, (executor = poolExecutor(sql)))
  return executor
}

/** A `Sql`'s executor, built once: it holds nothing of one lock. */
const poolExecutors = new WeakMap<Sql<any>, LockExecutor<unknown>>()

function poolExecutor(sql: Sql<any>): LockExecutor<unknown> {
  if (typeof sql.reserve !== 'function' || typeof sql.begin !== 'function') {
    throw notAHandle(sql)
  }
  const prepare = prepares(sql)
  const begin = sql.begin as (callback: (transaction: TransactionSql<any>) => Promise<unknown>) => Promise<unknown>
  const reservedOptions: PinOptions = { owned: true, release: true, pool: sql, prepare, endpoint: endpointOf(sql) }
  const transactionOptions = transactionOptionsOf(sql)
  let refused: UnsupportedError | null | undefined
  const pin = (reserved: ReservedSql<any>): LockConnection<unknown> => {
    try {
      return pinPostgresJs(reserved, reserved, reservedOptions)
    } catch (error) {
      reserved.release()
      throw error
    }
  }
  return {
    kind: 'pool',
    adapter: 'postgres-js',
    queueKey: sql,
    query: queryThrough(sql),
    connect() {
      refused ??= reserveNeverSettles(sql) ? reserveRefused() : null
      if (refused !== null) return Promise.reject(refused)
      const closing = untilClosed(sql)
      return closing === undefined ? sql.reserve().then(pin) : closing.then(() => sql.reserve()).then(pin)
    },
    transaction: <T>(body: (connection: LockConnection<unknown>) => Promise<T>) =>
      begin.call(sql, (transaction) => settleUnlessLost(pinPostgresJs(transaction, transaction, transactionOptions), body)) as Promise<T>,
  }
}
