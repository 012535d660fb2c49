import { InvalidArgumentError, type LockScope, UnsupportedError } from '@pglock/core'
import {
  bindScopedExecutor,
  type CancelOutcome,
  type LeaseDbOf,
  type LockConnection,
  type LockExecutor,
  type PreparedStatement,
  type Row,
  type ScopedLockFunctions,
} from '@pglock/core/adapter'
import { entityKind } from 'drizzle-orm'
import type { PgDialect } from 'drizzle-orm/pg-core'
import { dialectOf, sessionOptionsOf, transactionClientOf } from './drizzle-privates.js'

/**
 * A Drizzle Postgres handle by the shape pglock needs from its types: a database or a `tx`, of
 * drizzle-orm 0.45 or 1.0. Each driver's entry narrows it to that driver's database.
 *
 * @example
 * ```ts
 * async function exclusively<T>(db: AnyDrizzleHandle, job: string, fn: () => Promise<T>): Promise<T> {
 *   return withLock(db, `job:${job}`, fn, { scope: 'transaction' })
 * }
 * ```
 */
export interface AnyDrizzleHandle {
  readonly _: { readonly session: unknown }
  transaction(transaction: (tx: any) => Promise<any>, config?: any): Promise<any>
}

/**
 * The transaction handle (`tx`) that `db.transaction()` passes to its callback.
 *
 * @example
 * ```ts
 * const db = drizzle({ client: pool, schema })
 * type Tx = DrizzleTransactionOf<typeof db> // what db.transaction() passes to its callback
 * ```
 */
export type DrizzleTransactionOf<H extends AnyDrizzleHandle> = Parameters<Parameters<H['transaction']>[0]>[0]

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
export type DrizzleLeaseDb<H, S extends LockScope = LockScope> = H extends { rollback(): never }
  ? H
  : H extends AnyDrizzleHandle
    ? S extends 'transaction'
      ? DrizzleTransactionOf<H>
      : Omit<H, '$client'>
    : never

/** @internal A Drizzle database or `tx` as pglock reads it at run time: only public members. */
export interface DrizzleShape {
  readonly _: { readonly session: object; readonly relations?: unknown; readonly schema?: unknown }
  readonly $client?: unknown
  readonly $cache?: unknown
  readonly $primary?: unknown
  transaction<T>(body: (tx: DrizzleShape) => Promise<T>): Promise<T>
  rollback?(): never
}

/**
 * Drizzle's exported classes for one driver (`NodePgDatabase`, `NodePgSession`, `NodePgTransaction`
 * and so on), built as `drizzle()` builds them. The third argument is the relational schema (0.45)
 * or the relations (1.0).
 */
export interface DrizzleClasses {
  readonly Database: new (dialect: PgDialect, session: any, schema: any) => object
  readonly Session: new (client: any, dialect: PgDialect, schema: any, options: any) => object
  /** The `tx` class, where pglock sends `BEGIN` itself; 0.45 has no `parseRqbJson`. */
  readonly Transaction?: new (
    dialect: PgDialect,
    session: any,
    schema: any,
    nestedIndex: number,
    parseRqbJson: boolean,
  ) => object
}

/** What an entry says of a driver: its name and classes, for messages and `lease.db`. */
export interface DriverEntry {
  /** The entry users import (`@pglock/drizzle/node-postgres`). */
  readonly entry: string
  /** What the entry locks through. */
  readonly supports: string
  /** Whether a Drizzle database or `tx` is one of this driver's. */
  owns(db: object): boolean
  /** Imported by each driver's entry, loaded on first use by the root entry. */
  classes(): DrizzleClasses | Promise<DrizzleClasses>
}

/** How one of Drizzle's Postgres drivers maps onto a pglock driver adapter. */
export interface DrizzleDriver extends DriverEntry {
  /** The adapter's name in pglock's tracing channels (`LockExecutor.adapter`). */
  readonly adapter: string
  /** The pglock executor of the client under a database or `tx`, if it is one of this driver's. */
  clientExecutor(client: unknown): LockExecutor<unknown> | undefined
  /**
   * Runs `body` inside `db.transaction()`, where only the client can open a transaction
   * (postgres.js). Without it, pglock sends `BEGIN` with the lock on a pinned connection.
   */
  runInTransaction?<T>(db: DrizzleShape, body: (connection: LockConnection<unknown>) => Promise<T>): Promise<T>
}

/** `describe(client)`, or `undefined` where the driver adapter refuses it as not its own. */
export function executorIf(describe: (client: never) => LockExecutor<any>, client: unknown): LockExecutor<unknown> | undefined {
  try {
    return describe(client as never)
  } catch (error) {
    if (error instanceof InvalidArgumentError) return undefined
    throw error
  }
}

function isDrizzle(db: unknown): db is DrizzleShape {
  const session = (db as Partial<DrizzleShape> | null)?._?.session
  return typeof db === 'object' && db !== null && typeof (db as DrizzleShape).transaction === 'function' && typeof session === 'object'
}

const isTransaction = (db: DrizzleShape): boolean => typeof db.rollback === 'function'

/** A value's kind for messages: Drizzle's own name for its classes, else the constructor's. */
export function kindOf(value: unknown): string {
  if (value === null || value === undefined) return String(value)
  if (typeof value !== 'object') return typeof value
  const type = Object.getPrototypeOf(value)?.constructor as { readonly [entityKind]?: unknown; readonly name?: string } | undefined
  const kind = type?.[entityKind] ?? type?.name
  return typeof kind === 'string' && kind !== 'Object' ? kind : 'an object'
}

/** Changed in place: `connect()` builds a fresh connection per lock, and a copy would freeze its getters. */
function rebind<Db>(connection: LockConnection<unknown>, db: Db): LockConnection<Db> {
  ;(connection as { db: unknown }).db = db
  return connection as LockConnection<Db>
}

/**
 * A pooled connection whose `lease.db`, a Drizzle database on its client, is built when first
 * read: most locks never read it, and building one costs more than the lock (postgres.js 4 lends
 * a new client per lock).
 */
class LazyDatabase implements LockConnection<unknown> {
  protected readonly inner: LockConnection<unknown>
  readonly #client: object
  readonly #boundOn: (client: object) => Bound

  constructor(inner: LockConnection<unknown>, boundOn: (client: object) => Bound) {
    this.inner = inner
    this.#client = inner.db as object
    this.#boundOn = boundOn
  }

  get db(): unknown {
    return this.#boundOn(this.#client).db
  }

  get owned(): boolean {
    return this.inner.owned
  }

  get connectionKey(): object | undefined {
    return this.inner.connectionKey
  }

  transactionDb(): unknown {
    const { db, transactionDb } = this.#boundOn(this.#client)
    return transactionDb === undefined ? db : transactionDb()
  }

  query(sql: string): Promise<readonly Row[]> {
    return this.inner.query(sql)
  }

  cancel(): Promise<CancelOutcome> {
    return this.inner.cancel()
  }

  onLost(listener: (cause: unknown) => void): () => void {
    return this.inner.onLost(listener)
  }

  watchLoss(): void {
    this.inner.watchLoss?.()
  }

  release(options: { readonly destroy: boolean; readonly cause?: unknown }): void | Promise<void> {
    return this.inner.release(options)
  }
}

/** {@link LazyDatabase} on a connection that runs pglock's lock calls as prepared statements. */
class PreparedLazyDatabase extends LazyDatabase {
  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    return (this.inner.execute as NonNullable<LockConnection<unknown>['execute']>)(statement)
  }
}

/** What `drizzle()` took to build `db`, to build another on a pinned connection. */
interface DatabaseParts {
  readonly dialect: PgDialect
  readonly schema: unknown
  readonly options: object
  readonly cache: unknown
}

function readParts(db: DrizzleShape): DatabaseParts {
  const meta = db._ as {
    readonly relations?: unknown
    readonly schema?: unknown
    readonly fullSchema?: unknown
    readonly tableNamesMap?: unknown
  }
  const schema =
    'relations' in meta
      ? meta.relations
      : meta.schema === undefined
        ? undefined
        : { fullSchema: meta.fullSchema, schema: meta.schema, tableNamesMap: meta.tableNamesMap }
  return { dialect: dialectOf(db), schema, options: sessionOptionsOf(db), cache: db.$cache }
}

interface Bound {
  readonly db: object
  readonly transactionDb: (() => object) | undefined
}

/** A session and a database of the driver's classes on `client`, built as `drizzle()` builds them. */
function bindDatabase(classes: DrizzleClasses, parts: DatabaseParts, client: unknown, withTransaction: boolean): Bound {
  const session = new classes.Session(client, parts.dialect, parts.schema, parts.options)
  const db = Object.assign(new classes.Database(parts.dialect, session, parts.schema), { $client: client, $cache: parts.cache })
  return { db, transactionDb: withTransaction ? transactionOn(classes, parts, session) : undefined }
}

/**
 * Drizzle's `tx` on `session`, built once: a `tx` keeps no state of its own transaction, and
 * building one also builds a query builder per table of the schema.
 */
function transactionOn(classes: DrizzleClasses, parts: DatabaseParts, session: object): () => object {
  let tx: object | undefined
  return () =>
    (tx ??= new (classes.Transaction as NonNullable<DrizzleClasses['Transaction']>)(parts.dialect, session, parts.schema, 0, false))
}

function unsupportedClient(driver: DrizzleDriver, client: unknown): UnsupportedError {
  return new UnsupportedError(`${driver.entry} locks through ${driver.supports}; this one runs on ${kindOf(client)}`)
}

/** The executor of the one connection a `tx` runs on. */
function transactionExecutor(driver: DrizzleDriver, tx: DrizzleShape): LockExecutor<unknown> {
  const client = transactionClientOf(tx)
  const inner = driver.clientExecutor(client)
  const connect = inner?.connect
  if (inner === undefined || connect === undefined) throw unsupportedClient(driver, client)
  const attach = (connection: LockConnection<unknown>) => rebind(connection, tx)
  return {
    kind: 'connection',
    adapter: driver.adapter,
    queueKey: inner.queueKey,
    connect: () => connect().then(attach),
    inTransaction: () => true,
    ...queryOf(inner),
  }
}

/** The client's own `query` and `closed`: a statement of pglock's reads the same through Drizzle's handle. */
function queryOf(inner: LockExecutor<unknown>): Pick<LockExecutor<unknown>, 'query' | 'closed'> {
  const query = inner.query?.bind(inner)
  const closed = inner.closed?.bind(inner)
  return { ...(query === undefined ? {} : { query }), ...(closed === undefined ? {} : { closed }) }
}

/**
 * Describes Drizzle databases and `tx`s of `driver` to the core, by the client underneath. Over a
 * pool, a lock pins a connection and `lease.db` is a database of the same kind on it; a `tx` locks
 * inside its transaction, which pglock never ends; a database with read replicas locks on its primary.
 */
export function drizzleDescriber(driver: DrizzleDriver): (handle: unknown) => LockExecutor<unknown> {
  // A database's client, parts and driver never change, and every lock would describe it again.
  const executors = new WeakMap<object, LockExecutor<unknown>>()
  const describe = (handle: unknown): LockExecutor<unknown> => {
    if (!isDrizzle(handle)) {
      throw new InvalidArgumentError(`db must be a Drizzle database or transaction for ${driver.entry}, got ${kindOf(handle)}`)
    }
    let executor = executors.get(handle)
    if (executor !== undefined) return executor
    if (handle.$primary !== undefined) executor = describe(handle.$primary)
    else if (!driver.owns(handle)) {
      throw new UnsupportedError(`${driver.entry} locks through ${driver.supports}; this database is a ${kindOf(handle)}`)
    } else if (isTransaction(handle)) return transactionExecutor(driver, handle)
    else executor = databaseExecutor(driver, handle)
    executors.set(handle, executor)
    return executor
  }
  return describe
}

function databaseExecutor(driver: DrizzleDriver, db: DrizzleShape): LockExecutor<unknown> {
  const client = db.$client
  const inner = driver.clientExecutor(client)
  const pin = inner?.connect
  if (inner === undefined || pin === undefined) throw unsupportedClient(driver, client)
  const parts = readParts(db)
  const { runInTransaction } = driver
  const transaction =
    runInTransaction === undefined
      ? undefined
      : <T>(body: (connection: LockConnection<unknown>) => Promise<T>): Promise<T> => runInTransaction(db, body)
  let classes: DrizzleClasses | undefined
  const classesOf = async (): Promise<DrizzleClasses> => (classes ??= await driver.classes())
  if (inner.kind === 'pool') {
    // A pool lends the same clients again and again (node-postgres): one database per client,
    // built when `lease.db` is first read, as most locks never read it.
    const boundByClient = new WeakMap<object, Bound>()
    const boundOn = (client: object): Bound => {
      let bound = boundByClient.get(client)
      if (bound === undefined) {
        bound = bindDatabase(classes as DrizzleClasses, parts, client, transaction === undefined)
        boundByClient.set(client, bound)
      }
      return bound
    }
    const attach = (connection: LockConnection<unknown>): LockConnection<unknown> =>
      connection.execute === undefined ? new LazyDatabase(connection, boundOn) : new PreparedLazyDatabase(connection, boundOn)
    // `then` rather than `async`/`await`: no promise of its own per lock once the classes are loaded
    const connect = (): Promise<LockConnection<unknown>> =>
      classes === undefined ? classesOf().then(() => pin().then(attach)) : pin().then(attach)
    return transaction === undefined
      ? { kind: 'pool', adapter: driver.adapter, queueKey: inner.queueKey, connect, ...queryOf(inner) }
      : { kind: 'pool', adapter: driver.adapter, queueKey: inner.queueKey, connect, transaction, ...queryOf(inner) }
  }
  const inTransaction = inner.inTransaction?.bind(inner)
  let transactionDb: (() => object) | undefined
  const attach = (pinned: LockConnection<unknown>): LockConnection<unknown> => {
    const connection = rebind<unknown>(pinned, db)
    if (transaction === undefined) {
      connection.transactionDb = transactionDb ??= transactionOn(classes as DrizzleClasses, parts, db._.session)
    }
    return connection
  }
  const connect = (): Promise<LockConnection<unknown>> =>
    classes === undefined ? classesOf().then(() => pin().then(attach)) : pin().then(attach)
  return {
    kind: 'connection',
    adapter: driver.adapter,
    queueKey: inner.queueKey,
    connect,
    ...(transaction === undefined ? {} : { transaction }),
    ...(inTransaction === undefined ? {} : { inTransaction }),
    ...queryOf(inner),
  } as LockExecutor<unknown>
}

/** `lease.db` of a Drizzle handle, as a type-level function for the core's bound functions. */
export interface DrizzleLease extends LeaseDbOf {
  readonly db: DrizzleLeaseDb<this['handle'], this['scope']>
}

/** The lock functions of an entry whose handles `describe` describes. */
export function bindDrizzle<Handle>(describe: (handle: unknown) => LockExecutor<unknown>): ScopedLockFunctions<Handle, DrizzleLease> {
  return bindScopedExecutor<Handle, DrizzleLease>(describe)
}
