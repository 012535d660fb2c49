/**
 * A row as a driver returns it: column name to value. pglock reads only the columns it names
 * in its own statements (`acquired`, `released`).
 */
export type Row = Readonly<Record<string, unknown>>

/**
 * One statement with bound parameters that a driver may keep prepared on a connection. pglock
 * writes these itself: `text` is one of a handful of fixed lock calls, `values` the lock id as
 * decimal strings.
 */
export interface PreparedStatement {
  /** Unique to `text` (prefixed `pglock_`): the name to keep the statement prepared under. */
  readonly name: string
  readonly text: string
  readonly values: readonly (string | null)[]
}

/**
 * What {@link LockConnection.cancel} resolves to: `false` when no cancel could be sent at all,
 * else nothing (`void`, so that a `cancel(): Promise<void>` written before it still fits).
 */
// biome-ignore lint/suspicious/noConfusingVoidType: void keeps adapters whose cancel resolves to nothing assignable
export type CancelOutcome = void | false

/**
 * One physical connection, pinned for the life of a lock. Adapters implement this; the core
 * never sees the driver behind it.
 *
 * @typeParam Db - the driver-native handle bound to this connection, given to users as `lease.db`.
 *
 * @example
 * ```ts
 * // the shape of node-postgres' adapter, abridged
 * const connection: LockConnection<PoolClient> = {
 *   db: client,
 *   owned: true,
 *   connectionKey: client,
 *   query: async (sql) => lastRows(await client.query(sql)),
 *   cancel: () => cancelBackend(client.processID),
 *   onLost: (listener) => { client.on('error', listener); return () => client.off('error', listener) },
 *   release: ({ destroy, cause }) => client.release(destroy ? (cause ?? true) : undefined),
 * }
 * ```
 */
export interface LockConnection<Db> {
  /**
   * The handle users get as `lease.db`: queries through it run on this connection. Read only when
   * user code reads `lease.db`, so an adapter may make it a getter that builds the handle then.
   */
  readonly db: Db

  /**
   * Whether pglock checked this connection out and may close it. `true` for a connection taken
   * from a pool; `false` for a connection or transaction the caller passed in, which pglock
   * never closes.
   */
  readonly owned: boolean

  /**
   * Optional. The physical connection, as one object that every `LockConnection` on it gives,
   * whichever driver handle it came through (node-postgres: the client; postgres.js: the
   * connection a transaction and all its savepoints run on; Kysely: its `DatabaseConnection`).
   * Postgres lets one session re-enter an advisory lock, so two handles that reach one
   * connection through different objects (a transaction's handle and the handle of one of its
   * savepoints, or `lease.db` passed back to `createLock`) would otherwise both hold it; the core
   * queues them in memory by this object as well as by {@link LockExecutor.queueKey}.
   *
   * For a connection the caller passed in, the core reads it when `connect()` has resolved and
   * waits for it before sending any SQL. For a connection pglock owns, which no other handle can
   * reach until `lease.db` is handed out, it reads it once the lock is granted, so an adapter may
   * learn it from the lock statement itself. Leave it out, or give the executor's `queueKey`,
   * when the handle is the only way to that connection.
   */
  readonly connectionKey?: object | undefined

  /**
   * Runs SQL text that pglock wrote itself (lock ids are validated integer literals, never user
   * text), without parameters, so that drivers can send it with the simple query protocol.
   * The text may hold several statements separated by `;`; they must be sent in one round trip
   * when the driver can (node-postgres and postgres.js can). Resolves to the rows of the last
   * statement; rejects with the driver's error, whose SQLSTATE must be readable as `code`.
   */
  query(sql: string): Promise<readonly Row[]>

  /**
   * Optional. The handle to give as `lease.db` when pglock opens a transaction on this connection
   * itself, sending `BEGIN` with the lock (transaction scope on a `'pool'` executor without
   * {@link LockExecutor.transaction}): an ORM's transaction object bound to the connection, such as
   * a Drizzle `tx`. Without it, `lease.db` is {@link LockConnection.db} in every scope.
   */
  transactionDb?(): Db

  /**
   * Optional. Runs `statement` as a named prepared statement (parsed and planned once per
   * connection, then only bound and executed), in one round trip. pglock uses it for the bare
   * session-scope calls (lock, try-lock, unlock without a timeout), where skipping the parse
   * and plan is a visible share of the server's work per cycle. Resolves and rejects like
   * `query`. If the server no longer knows the statement (SQLSTATE 26000, e.g. after
   * `DISCARD ALL`), run it unprepared instead. Without this method pglock sends the same call
   * as text through `query`.
   */
  execute?(statement: PreparedStatement): Promise<readonly Row[]>

  /**
   * Asks the server to cancel whatever this connection is running now (`pg_cancel_backend`,
   * or the protocol's CancelRequest). Resolves once the request has been delivered; the
   * statement it cancels then rejects with SQLSTATE `57014` (or completes, if it finished
   * first; the core handles both). Never rejects for a connection that is already gone.
   * Resolves `false` when no cancel can be sent at all (the server gave no backend key, as RDS
   * Proxy does not): the core then closes a connection it owns rather than wait on a lock wait
   * nobody can stop.
   */
  cancel(): Promise<CancelOutcome>

  /**
   * Calls `listener` when the connection fails or ends while pinned (a socket error, the server
   * terminating the backend); returns a function that stops listening. The core subscribes exactly
   * once per pinned connection, as soon as `connect()` resolves, and fans the loss out itself to
   * everything that watches the lock (the lock statement, the watch, a keep-alive); it remembers
   * the loss and stays subscribed after one. So an adapter keeps no listener bookkeeping of its
   * own (no set of listeners, no loss flag): forwarding to the driver's event is enough. Adapters
   * must keep the driver from treating such an error as unhandled while the core listens.
   */
  onLost(listener: (cause: unknown) => void): () => void

  /**
   * Optional. Called once the core needs a loss heard as it happens: something reads the lock's
   * `signal`, a handle or a keep-alive holds the lock, or a tracing subscriber listens. Until then
   * an adapter whose watch costs something per lock may leave a loss for the next statement to
   * find: a `withLock` whose `fn` never reads its `signal` learns of the loss at its unlock. A loss
   * that happened already should be reported before this returns. Leave it out when
   * {@link LockConnection.onLost} hears every loss anyway.
   */
  watchLoss?(): void

  /**
   * Gives the connection back. With `destroy: false` an owned connection returns to its pool;
   * with `destroy: true` it is closed instead, so that a session whose lock state is unknown
   * never goes back to the pool. For connections pglock does not own, both are no-ops. The core
   * calls it once per checkout, with `destroy: true` once the connection was lost.
   */
  release(options: { readonly destroy: boolean; readonly cause?: unknown }): void | Promise<void>
}

/**
 * What an adapter tells the core about one driver handle. Built fresh (and cheaply) for each
 * `createLock`/`withLock` call; the `queueKey` object is what ties calls together.
 *
 * @typeParam Db - the driver-native handle type given to users as `lease.db`.
 *
 * @example
 * ```ts
 * const executor: LockExecutor<PoolClient> = {
 *   kind: 'pool',
 *   queueKey: pool,
 *   connect: async () => pinned(await pool.connect(), { owned: true }),
 * }
 * ```
 */
export interface LockExecutor<Db> {
  /**
   * `'pool'`: every `connect()` yields a connection of its own that pglock owns (a pool, a
   * postgres.js `Sql`, a Kysely instance, a Drizzle database).
   * `'connection'`: every `connect()` yields the same connection, which the caller owns (a
   * client, a reserved connection, a transaction).
   */
  readonly kind: 'pool' | 'connection'

  /**
   * Optional. The adapter's name, as pglock's tracing channels report it (`adapter` in every
   * context of `pglock:acquire`, `pglock:run`, `pglock:release` and `pglock:lost`): `'pg'`,
   * `'postgres-js'`, `'drizzle/node-postgres'`, `'drizzle/postgres-js'`, `'kysely'`, or your
   * package's name. Left out, they report `'unknown'`.
   */
  readonly adapter?: string | undefined

  /**
   * An object identifying the pool or the connection. Handles whose executors share a queue
   * key and a lock id are queued in memory: on a connection Postgres would let a second
   * handle re-enter the lock, and on a pool at most one exclusive waiter per key occupies a
   * connection. Use the driver object itself (the pool, the client), never a fresh object.
   * Where one connection has several handles, {@link LockConnection.connectionKey} names it.
   */
  readonly queueKey: object

  /**
   * Pins a connection: checks one out of a pool, or returns the one connection. Leave it out
   * when the handle cannot keep one connection from acquire to release (a Drizzle database over
   * an HTTP driver or over a single shared client): session scope then fails with `UNSUPPORTED`
   * before any SQL, and a `'pool'` executor must offer {@link LockExecutor.transaction}.
   */
  connect?(): Promise<LockConnection<Db>>

  /**
   * Optional, for `'pool'` executors: whether the pool takes no new work (its `end()` was called).
   * A multiplexed lock asks it before each acquire, as it reuses connections already checked out
   * and would otherwise keep taking locks, and keep the pool's `end()` waiting, during a shutdown.
   */
  closed?(): boolean

  /**
   * For `'connection'` executors: whether the connection is inside a transaction block now.
   * Return `undefined` when the driver cannot tell; the core then finds out from Postgres
   * (a `SAVEPOINT` fails outside a transaction block).
   */
  inTransaction?(): boolean | undefined

  /**
   * Optional. Runs `body` inside a transaction that the driver opens, commits when `body`
   * resolves and rolls back when it throws, on one connection whose `db` is the driver's
   * transaction handle (a Drizzle `tx`, a Kysely `Transaction`). The core uses it for pools, and
   * for a `'connection'` executor whose `inTransaction()` answers `false`. Without it the core
   * opens the transaction itself on a pinned connection, sending `BEGIN` together with the lock
   * in one round trip. `runInDriverTransaction` writes it from the driver's `begin`.
   */
  transaction?<T>(body: (connection: LockConnection<Db>) => Promise<T>): Promise<T>

  /**
   * Optional. Runs one read-only statement that pglock wrote itself (as for
   * {@link LockConnection.query}: no parameters, ids as validated integer literals) on whichever
   * connection the handle picks, in one round trip, and resolves to its rows; `listHolders`
   * uses it. A pool runs it on any connection it lends; a connection or transaction runs it there,
   * after pglock's own statements already queued on it. Without it, `listHolders` fails with
   * `UNSUPPORTED`.
   */
  query?(sql: string): Promise<readonly Row[]>
}
