import { InvalidArgumentError, type LockConnection, type LockExecutor, type LockScope, UnsupportedError } from '@pglock/core'
import { pgExecutor, runInPgTransaction } from '@pglock/pg'
import { postgresJsExecutor, runInPostgresJsTransaction } from '@pglock/postgres-js'
import { entityKind } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core'

/**
 * A Drizzle handle pglock can lock with: a Postgres database or a transaction (`tx`) of one.
 *
 * @example
 * ```ts
 * async function exclusively<T>(db: DrizzleHandle, job: string, fn: () => Promise<T>): Promise<T> {
 *   return withLock(db, `job:${job}`, fn, { scope: 'transaction' })
 * }
 * ```
 */
export type DrizzleHandle = PgDatabase<PgQueryResultHKT, any, any>

/**
 * The transaction handle (`tx`) that `db.transaction()` passes to its callback.
 *
 * @example
 * ```ts
 * const db = drizzle(pool, { schema })
 * type Tx = DrizzleTransactionOf<typeof db> // PgTransaction<NodePgQueryResultHKT, typeof schema, ...>
 * ```
 */
export type DrizzleTransactionOf<H extends DrizzleHandle> = Parameters<Parameters<H['transaction']>[0]>[0]

/**
 * What `lease.db` is for a handle in a scope: for a database, a database of the same kind bound
 * to the connection holding a session lock (its `$client` is that connection), or the `tx` of
 * `db.transaction()` for a transaction lock; for a `tx`, the `tx` itself.
 *
 * @example
 * ```ts
 * type Pinned = DrizzleLeaseDb<typeof db, 'session'>    // like typeof db, without $client
 * type Tx = DrizzleLeaseDb<typeof db, 'transaction'>    // DrizzleTransactionOf<typeof db>
 * ```
 */
export type DrizzleLeaseDb<H, S extends LockScope = LockScope> =
  H extends PgTransaction<any, any, any>
    ? H
    : H extends DrizzleHandle
      ? S extends 'transaction'
        ? DrizzleTransactionOf<H>
        : Omit<H, '$client'>
      : never

/** The parts of a Drizzle database pglock reads; `_.session` is public, the rest mirrors `db.transaction()`'s own code. */
interface DrizzleShape {
  readonly _: { readonly session: SessionShape }
  readonly $client?: unknown
  readonly $cache?: unknown
  readonly $primary?: unknown
  transaction<T>(body: (tx: DrizzleShape) => Promise<T>): Promise<T>
  rollback?(): never
}

interface SessionShape {
  readonly client: unknown
  readonly dialect: unknown
  readonly schema: unknown
  readonly options: unknown
}

function isDrizzle(db: unknown): db is DrizzleShape {
  const session = (db as Partial<DrizzleShape> | null)?._?.session
  return typeof db === 'object' && db !== null && typeof (db as DrizzleShape).transaction === 'function' && typeof session === 'object'
}

const isTransaction = (db: DrizzleShape): boolean => typeof db.rollback === 'function'

/**
 * The node-postgres or postgres.js executor for the client under a Drizzle session, if it is one.
 * A postgres.js `Sql` is a function and node-postgres clients are objects, so each client is
 * offered to one adapter only: this runs on every lock, and a refusal builds an error.
 */
function clientExecutor(client: unknown): LockExecutor<unknown> | undefined {
  const describe = (typeof client === 'function' ? postgresJsExecutor : pgExecutor) as (db: unknown) => LockExecutor<unknown>
  try {
    return describe(client)
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error
    return undefined
  }
}

/**
 * `connection` with `db` as its `lease.db`, changed in place: the driver adapters' `connect()`
 * builds a connection object for each lock, which nobody else holds yet. A copy would freeze
 * getters such as postgres.js's `scope`, and an object inheriting from it (a new prototype on
 * every lock) made every property read of it in the core slow, about 5 µs per lock.
 */
function rebind<Db>(connection: LockConnection<unknown>, db: Db): LockConnection<Db> {
  ;(connection as { db: unknown }).db = db
  return connection as LockConnection<Db>
}

/**
 * A database of `db`'s own class on `client` (one pinned connection), built the way
 * `db.transaction()` builds its `tx`, so that it keeps `db`'s schema, casing, logger and cache.
 */
function bindDatabase<Db extends DrizzleShape>(db: Db, client: unknown): Db {
  const session = db._.session
  const Session = session.constructor as new (client: unknown, dialect: unknown, schema: unknown, options: unknown) => SessionShape
  const Database = db.constructor as new (dialect: unknown, session: SessionShape, schema: unknown) => Db
  const bound = new Database(session.dialect, new Session(client, session.dialect, session.schema, session.options), session.schema)
  return Object.assign(bound, { $client: client, $cache: db.$cache })
}

function kindOf(value: unknown): string {
  if (value === null || value === undefined) return String(value)
  return typeof value === 'object' ? (Object.getPrototypeOf(value)?.constructor?.name ?? 'an object') : typeof value
}

function unsupportedClient(client: unknown): UnsupportedError {
  return new UnsupportedError(
    `@pglock/drizzle locks through Drizzle databases over node-postgres (drizzle-orm/node-postgres) or postgres.js (drizzle-orm/postgres-js); this one runs on ${kindOf(client)}`,
  )
}

/** The executor of the one connection a `tx` runs on. */
function transactionExecutor(tx: DrizzleShape): LockExecutor<unknown> & Required<Pick<LockExecutor<unknown>, 'connect'>> {
  const client = tx._.session.client
  const inner = clientExecutor(client)
  if (inner?.connect === undefined) throw unsupportedClient(client)
  return inner as LockExecutor<unknown> & Required<Pick<LockExecutor<unknown>, 'connect'>>
}

/**
 * Runs `body` inside `db.transaction()`, on the transaction's own connection, with `lease.db` set
 * to the `tx`. Over a pool, pglock owns the connection it opened the transaction on, and closes it
 * when the lock is lost; over one client, that client is the caller's.
 */
function runInDrizzleTransaction<T>(
  db: DrizzleShape,
  body: (connection: LockConnection<DrizzleShape>) => Promise<T>,
  overPool: boolean,
): Promise<T> {
  const begin = <C>(callback: (client: C, tx: DrizzleShape) => Promise<T>) =>
    db.transaction((tx) => {
      learnTransactionClass(db._.session, tx)
      return callback(tx._.session.client as C, tx)
    })
  if (typeof db._.session.client === 'function') return runInPostgresJsTransaction(begin, body, db._.session.client)
  if (overPool) return runInPgTransaction(begin, body)
  return db.transaction(async (tx) => {
    const connection = rebind(await transactionExecutor(tx).connect(), tx)
    try {
      return await body(connection)
    } finally {
      await connection.release({ destroy: false })
    }
  })
}

/**
 * Describes a Drizzle Postgres database or transaction to the core, by the client underneath.
 * A database over a node-postgres `Pool` or a postgres.js `Sql` pins a connection of it for a
 * session lock and runs a transaction lock in `db.transaction()`. A database over one connection
 * (a node-postgres `Client`, a postgres.js `ReservedSql`) holds session locks on that connection,
 * as the driver adapters do, and `lease.db` is the database itself. A `tx` is one connection inside a
 * transaction, which pglock never ends. A database with read replicas (`withReplicas`) locks on
 * its primary.
 *
 * @throws `UnsupportedError` for a database over another driver, `InvalidArgumentError` for a
 * value that is not a Drizzle Postgres database.
 * @example
 * ```ts
 * import { bindExecutor } from '@pglock/core'
 * import { drizzleExecutor } from '@pglock/drizzle'
 *
 * const { withLock } = bindExecutor(drizzleExecutor)
 * ```
 */
export function drizzleExecutor<H extends DrizzleHandle>(db: H): LockExecutor<DrizzleLeaseDb<H>> {
  return executorFor(db) as LockExecutor<DrizzleLeaseDb<H>>
}

function executorFor(db: unknown): LockExecutor<unknown> {
  if (!isDrizzle(db)) throw new InvalidArgumentError(`db must be a Drizzle Postgres database or transaction, got ${kindOf(db)}`)
  if (db.$primary !== undefined) return executorFor(db.$primary)
  const client = db._.session.client
  if (isTransaction(db)) {
    const inner = transactionExecutor(db)
    return { kind: 'connection', scope: inner.scope, connect: async () => rebind(await inner.connect(), db), inTransaction: () => true }
  }
  const inner = clientExecutor(client)
  if (inner === undefined) throw unsupportedClient(client)
  const transaction: LockExecutor<unknown>['transaction'] = (body) => runInDrizzleTransaction(db, body, inner.kind === 'pool')
  const pin = inner.connect
  if (pin === undefined) return { kind: 'pool', scope: inner.scope, transaction }
  const Transaction = inner.kind === 'pool' ? transactionClasses.get(db._.session.constructor) : undefined
  if (Transaction !== undefined) return { kind: 'pool', scope: inner.scope, connect: () => pinNodePg(db, pin, Transaction) }
  if (inner.kind === 'pool') {
    return { kind: 'pool', scope: inner.scope, transaction, connect: async () => rebindDatabase(db, await pin()) }
  }
  const inTransaction = inner.inTransaction?.bind(inner)
  return {
    kind: 'connection',
    scope: inner.scope,
    transaction,
    connect: async () => rebind(await pin(), db),
    ...(inTransaction === undefined ? {} : { inTransaction }),
  }
}

function rebindDatabase(db: DrizzleShape, connection: LockConnection<unknown>): LockConnection<unknown> {
  return rebind(connection, bindDatabase(db, connection.db))
}

/** Drizzle's `tx` class over node-postgres, as `NodePgSession.transaction()` builds it. */
type TransactionClass = new (dialect: unknown, session: SessionShape, schema: unknown) => DrizzleShape

/**
 * The `tx` class of each node-postgres session class, learnt from the first `db.transaction()`
 * pglock runs through it: by shape, so that no driver module is imported and the class is the
 * application's own copy of Drizzle's.
 */
const transactionClasses = new WeakMap<object, TransactionClass>()

const isNodePgSession = (session: SessionShape): boolean =>
  (session.constructor as { readonly [entityKind]?: unknown })[entityKind] === 'NodePgSession'

function learnTransactionClass(session: SessionShape, tx: DrizzleShape): void {
  if (isNodePgSession(session)) transactionClasses.set(session.constructor, tx.constructor as TransactionClass)
}

/**
 * A node-postgres client pinned for a lock, which also offers the `tx` for a transaction lock:
 * the core then sends `BEGIN` with the lock in one round trip, as `@pglock/pg` does, where
 * `db.transaction()` sends `BEGIN` alone. The `tx` is built as `NodePgSession.transaction()`
 * builds it, on the database bound to the pinned client, so it is Drizzle's own
 * `NodePgTransaction`, nested transactions (savepoints) included.
 */
async function pinNodePg(
  db: DrizzleShape,
  pin: () => Promise<LockConnection<unknown>>,
  Transaction: TransactionClass,
): Promise<LockConnection<unknown>> {
  const connection = rebindDatabase(db, await pin())
  const { dialect, schema } = db._.session
  const bound = connection.db as DrizzleShape
  connection.transactionDb = () => new Transaction(dialect, bound._.session, schema)
  return connection
}
