import { type LockScope, UnsupportedError } from '@pglock/core'
import {
  isConnectionFailure,
  type LockConnection,
  type LockExecutor,
  lastRows,
  type PreparedStatement,
  type Row,
  runInDriverTransaction,
  trackLoss,
  wrongHandle,
} from '@pglock/core/adapter'
import type { ReservedSql, Sql, TransactionSql } from 'postgres'
import { brokenHandles, isTransactionSql } from './handles.js'
import { endpointOf, nameHandleV4, pinV4 } from './pin-v4.js'
import {
  type BackendKey,
  backendKeyOf,
  cancelV3,
  cancelV3Backend,
  type DriverQuery,
  generationOf,
  hookClose,
  keepErrorsOwn,
  onexecuteOption,
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

/** Query options as postgres.js reads them: 3.4's `onexecute` among them (the types leave it out). */
type SendOptions = Readonly<Record<string, unknown>>

function isQueryFunction(db: unknown): db is PostgresJsHandle {
  return typeof db === 'function' && typeof (db as Sql).unsafe === 'function'
}

/**
 * Marks a statement pglock sent as answered (or failed): a property of the query, cheaper per
 * statement than a `WeakSet` entry.
 */
const SETTLED: unique symbol = Symbol('pglock.settled')

function isSettled(query: RawQuery): boolean {
  return (query as { [SETTLED]?: true })[SETTLED] === true
}

function markSettled(query: RawQuery): void {
  ;(query as { [SETTLED]?: true })[SETTLED] = true
}

/**
 * The connection each `TransactionSql` pglock has seen runs on. postgres.js gives `sql.begin()` and
 * every savepoint inside it a handle of its own, and names their connection only to a statement's
 * `onexecute`: this is how pglock tells that two of them are one connection.
 */
const transactionConnections = new WeakMap<TransactionSql<any>, V3Connection>()

/** How many empty statements pglock sends to learn a transaction's connection before it goes without. */
const LEARN_ATTEMPTS = 3

/**
 * Learns the connection a `TransactionSql` runs on, unless pglock knows it, by sending an empty
 * statement through it: `onexecute` names the connection as the statement is written, and the lock
 * statement follows it on the wire without waiting for its answer. postgres.js skips `onexecute`
 * for a statement written while the socket is congested or its pipeline is full; another is sent
 * then. A transaction whose connection failed is left alone: the lock fails on it as before.
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

/**
 * Connections pglock took from a `Sql` and gave up on (closed, or saw fail) that postgres.js has
 * not yet closed, each for at most {@link CLOSE_WAIT_MS}.
 */
const closingConnections = new WeakMap<object, Set<Promise<void>>>()

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
    pending.delete(settled)
  })
  pending.add(settled)
}

/**
 * Waits until the connections pglock gave up on in `pool` have closed. postgres.js 3.4 hands a
 * `sql.reserve()` queued at the moment a connection closes to that connection's reconnect, which
 * drops it: the reserve never settles (porsager/postgres#1195). pglock's next session lock
 * right after a loss would otherwise be that reserve.
 */
function untilClosed(pool: object): Promise<unknown> | undefined {
  const pending = closingConnections.get(pool)
  return pending !== undefined && pending.size > 0 ? Promise.all(pending) : undefined
}

async function untilSent(query: RawQuery): Promise<void> {
  while (query.state === null && !isSettled(query)) await new Promise((resolve) => setTimeout(resolve, 5))
}

/**
 * Cancels a 3.4 statement, and resolves once the server has handled the request. A statement
 * already answered is left alone: 3.4 would keep such a request pending forever. One still queued
 * behind other statements on the connection is cancelled once it is sent: cancelling it before
 * stalls a reserved connection in 3.4.
 */
async function cancelQuery(query: RawQuery): Promise<void> {
  await null
  await untilSent(query)
  if (isSettled(query)) return
  await cancelV3(query)
}

/**
 * A pinned postgres.js connection, plus whether it has closed under pglock.
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
   * For a `ReservedSql`, the handle itself: postgres.js gives its connection no other handle. For
   * a `TransactionSql`, the postgres.js connection it runs on, which the transaction and each of
   * its savepoints share: known once pglock has sent a statement through this handle.
   */
  readonly connectionKey: object | undefined
}

/**
 * Pins the connection behind a `ReservedSql` or `TransactionSql` for a lock, with `db` as its
 * `lease.db`. For adapters layered on postgres.js (a Drizzle or Kysely database).
 *
 * A statement that fails because the connection did (postgres.js rejects it before telling the
 * pool the socket closed) reports the loss at once, so that pglock sends nothing more into it.
 * An owned connection released with `destroy`, or after it failed, is closed unless postgres.js
 * has already done so; once it has, pglock never touches it again, as the pool may be reconnecting it.
 * A handle pglock does not own is lost from the start if its connection failed before.
 *
 * @param giveBack - returns an owned connection to its pool (`reserved.release()`).
 * @param pool - the `Sql` an owned connection came from: pglock's next `reserve()` on it waits
 * until a connection it gave up on has closed.
 * @param prepare - send the bare session lock calls as named prepared statements, as postgres.js
 * does by default for tagged queries (leave it off when the `Sql` was made with `prepare: false`).
 * The first run of each on a connection costs one round trip more, for its parameter types.
 * @example
 * ```ts
 * const reserved = await sql.reserve()
 * const connection = pinPostgresJs(reserved, drizzle(reserved), { owned: true, giveBack: () => reserved.release() })
 * ```
 */
export function pinPostgresJs<Db>(
  handle: ReservedSql<any> | TransactionSql<any>,
  db: Db,
  options: {
    readonly owned: boolean
    readonly giveBack?: (() => void) | undefined
    readonly pool?: object | undefined
    readonly prepare?: boolean | undefined
  },
): PostgresJsConnection<Db> {
  const { owned, giveBack, pool, prepare = false } = options
  if (generationOf(handle, pool) === 4) {
    return pinV4(handle, db, { owned, giveBack, prepare, endpoint: pool === undefined ? undefined : endpointOf(pool) })
  }
  const transaction = isTransactionSql(handle) ? handle : undefined
  const loss = trackLoss()
  let raw: V3Connection | undefined
  let refused: UnsupportedError | undefined
  let unhook: (() => void) | undefined
  let running: RawQuery | undefined
  let released = false
  let closed = false
  let markClosed: (() => void) | undefined
  const fail = (cause: unknown) => {
    if (!owned && !loss.lost) brokenHandles.set(handle, cause)
    if (transaction !== undefined) transactionConnections.delete(transaction)
    loss.report(cause)
  }
  const onClose = (cause: unknown) => {
    closed = true
    markClosed?.()
    fail(cause ?? new Error('postgres.js connection closed'))
  }
  if (brokenHandles.has(handle)) loss.report(brokenHandles.get(handle))
  const onexecute = (connection: V3Connection | UnsupportedError) => {
    if (connection instanceof UnsupportedError) {
      refused ??= connection
      return
    }
    if (transaction !== undefined && !loss.lost) transactionConnections.set(transaction, connection)
    if (raw === undefined && !released) {
      raw = connection
      unhook = hookClose(connection, onClose)
    }
  }
  const send = async (sql: string, values: readonly (string | null)[], options: SendOptions): Promise<readonly Row[]> => {
    if (loss.lost) throw loss.cause
    const query = handle.unsafe(sql, values as string[], options as never) as unknown as RawQuery
    if (transaction !== undefined) keepErrorsOwn(query)
    running = query
    try {
      return lastRows(await query)
    } catch (error) {
      if (isConnectionFailure(error)) fail(error)
      throw error
    } finally {
      markSettled(query)
      if (running === query) running = undefined
      if (refused !== undefined) fail(refused)
    }
  }
  /**
   * Names the connection through an empty statement. A prepared statement's first run on a
   * connection asks the server for its parameter types before it binds them, and postgres.js
   * calls `onexecute` for neither half: without this, a lock taken then would go unwatched.
   */
  const asText: SendOptions = onexecuteOption(onexecute)
  const prepared: SendOptions = { ...asText, prepare: true }
  const learn = () => send('', [], asText).catch(() => undefined)
  const executeThenLearn = async (text: string, values: readonly (string | null)[]): Promise<readonly Row[]> => {
    try {
      return await send(text, values, prepared)
    } finally {
      if (raw === undefined && !loss.lost && !released) await learn()
    }
  }
  const execute = ({ text, values }: PreparedStatement): Promise<readonly Row[]> =>
    raw === undefined ? executeThenLearn(text, values) : send(text, values, prepared)
  return {
    db,
    owned,
    get lost() {
      return loss.lost
    },
    get connectionKey() {
      return transaction === undefined ? handle : transactionConnections.get(transaction)
    },
    query(sql) {
      return send(sql, [], asText)
    },
    ...(prepare && transaction === undefined && { execute }),
    async cancel() {
      const query = running
      if (query === undefined) return
      if (!loss.lost) return cancelQuery(query).catch(() => undefined)
      const backend = backendKeyOf(query)
      if (backend !== null) await cancelV3Backend(query, backend).catch(() => undefined)
    },
    onLost: loss.onLost,
    release({ destroy }) {
      released = true
      if (owned && !closed && raw !== undefined && (destroy || loss.lost)) {
        raw.terminate()
        if (pool !== undefined) closing(pool, new Promise((resolve) => (markClosed = resolve)))
        return
      }
      unhook?.()
      if (owned && !closed && !loss.lost) giveBack?.()
    },
  }
}

/**
 * Runs `body` in a transaction that `begin` opens with postgres.js's `sql.begin()` (directly, or
 * through an ORM on top of it), on a pinned connection whose `lease.db` is what `begin` passes
 * as `db`. If the connection closes meanwhile, the callback given to `sql.begin()` never settles:
 * `sql.begin()` rejects by itself, and a `ROLLBACK` postgres.js would send on the closed
 * connection would throw in a timer instead of rejecting. pglock opened the transaction, so it
 * owns the connection: one lost to a keep-alive probe is closed, which ends the transaction and
 * its lock on the server too.
 *
 * @param pool - the `Sql` the transaction runs on, as for {@link pinPostgresJs}.
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
  return runInDriverTransaction<readonly [TransactionSql<any>, Db], Db, T>(
    (callback) => begin((transaction, db) => callback([transaction, db])),
    ([transaction, db]) => pinPostgresJs(transaction, db, { owned: true, pool }),
    body,
    'stay-pending',
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

function executorFor(db: unknown): LockExecutor<unknown> {
  if (!isQueryFunction(db)) throw notAHandle(db)
  if (typeof (db as { release?: unknown }).release === 'function') {
    const reserved = db as ReservedSql<any>
    return {
      kind: 'connection',
      queueKey: db,
      async connect() {
        if (generationOf(reserved) === 4) await nameHandleV4(reserved)
        return pinPostgresJs(reserved, reserved, { owned: false })
      },
    }
  }
  if (typeof (db as { savepoint?: unknown }).savepoint === 'function') {
    const transaction = db as TransactionSql<any>
    return {
      kind: 'connection',
      queueKey: db,
      async connect() {
        await (generationOf(transaction) === 4 ? nameHandleV4(transaction) : learnConnection(transaction))
        return pinPostgresJs(transaction, transaction, { owned: false })
      },
      inTransaction: () => true,
    }
  }
  const sql = db as Sql<any>
  if (typeof sql.reserve !== 'function' || typeof sql.begin !== 'function') {
    throw notAHandle(db)
  }
  /** Named prepared statements are postgres.js's default; `prepare: false` (behind a transaction-pooling proxy) turns them off. */
  const prepare = (sql as { options?: { prepare?: unknown } }).options?.prepare !== false
  const begin = sql.begin as (callback: (transaction: TransactionSql<any>) => Promise<unknown>) => Promise<unknown>
  return {
    kind: 'pool',
    queueKey: db,
    async connect() {
      const closing = untilClosed(sql)
      if (closing !== undefined) await closing
      const reserved = await sql.reserve()
      try {
        return pinPostgresJs(reserved, reserved, { owned: true, giveBack: () => reserved.release(), pool: sql, prepare })
      } catch (error) {
        reserved.release()
        throw error
      }
    },
    transaction: (body) => runInPostgresJsTransaction((callback) => begin.call(sql, (tx) => callback(tx, tx)), body, sql),
  }
}
