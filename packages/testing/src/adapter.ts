import type {
  Lease,
  ListHoldersOptions,
  Lock,
  LockHolder,
  LockKey,
  LockOptions,
  MultiplexedLocks,
  MultiplexOptions,
  TryWithLockResult,
  WithLockOptions,
} from '@pglock/core'

/** A driver handle the suite opened, and how to close it. */
export interface Opened<H> {
  readonly db: H
  close(): Promise<void>
}

/** How the suite opens handles: each test gets backends tagged with its own `application_name`. */
export interface OpenOptions {
  readonly url: string
  readonly applicationName: string
  /** the pool size; ignored for single connections */
  readonly max: number
  /**
   * The URL is a pooler's (PgBouncer), which may run each transaction on another server
   * connection: open the handle as its driver's users must for that (postgres.js:
   * `prepare: false`, or its own `COMMIT`, a named prepared statement, can land where it was never
   * prepared and silently roll back).
   */
  readonly throughPooler?: boolean
}

/** The lock functions an adapter exports, as the suite calls them. */
export interface LockFunctions {
  createLock(db: any, key: LockKey, options?: LockOptions): Lock<any>
  withLock<T>(db: any, key: LockKey, fn: (lease: Lease<any>) => T | PromiseLike<T>, options?: WithLockOptions): Promise<T>
  tryWithLock<T>(
    db: any,
    key: LockKey,
    fn: (lease: Lease<any>) => T | PromiseLike<T>,
    options?: WithLockOptions,
  ): Promise<TryWithLockResult<T>>
  listHolders(db: any, options?: ListHoldersOptions): Promise<LockHolder[]>
  /** Multiplexed session locks of a pool, where the adapter supports them (see `describeMultiplex`). */
  multiplex?(db: any, options?: MultiplexOptions): MultiplexedLocks
}

/**
 * What a driver cannot do. Each flag turns off the tests that need it (`it.skipIf(!caps.x)`);
 * there are no lists of test names to skip.
 */
export interface Capabilities {
  /** `createLock(pool, key)` in session scope pins a connection of the pool. */
  readonly sessionOnPool: boolean
  /**
   * Optional (true when left out). `lease.db` and `lock.db` are the driver's handle on the lock's
   * own connection or transaction. False for multiplexed locks (`multiplex(pool)`), whose
   * connection carries other locks and is never handed out: tests then query through the pool.
   */
  readonly leaseDb?: boolean
  /**
   * Optional (true when left out). Locks can be taken in transaction scope. False for multiplexed
   * locks, which are session locks only.
   */
  readonly transactionScope?: boolean
  /** The adapter accepts one dedicated connection (a client, a reserved connection). */
  readonly singleConnection: boolean
  /** The adapter accepts a handle inside a transaction, for `createLock(tx, key, { scope: 'transaction' })`. */
  readonly transactionHandle: boolean
  /**
   * The driver gives a savepoint inside a transaction a handle of its own, another object on the
   * same connection (postgres.js `tx.savepoint()`, Drizzle's nested `tx.transaction()`), run
   * through `inSavepoint`. node-postgres has none (a savepoint is a statement on the same client);
   * a Kysely `Transaction` has none either (its handles of one connection are tested with Kysely's).
   */
  readonly savepointHandle: boolean
  /**
   * `withLock` in transaction scope sends `BEGIN` together with the lock, in one round trip
   * (false where the driver opens its transactions itself: postgres.js, Drizzle over postgres.js, Kysely).
   */
  readonly beginWithLock: boolean
  /**
   * The driver keeps working when a connection it has pinned dies under it (its backend
   * terminated, its socket reset or blackholed, the server restarted), as the lost-lock, fault,
   * restart and model tests make happen. Every adapter does today; Kysely over kysely-postgres-js
   * only on postgres.js 4 (on 3.4 `@pglock/kysely` refuses it, porsager/postgres#1208).
   */
  readonly survivesConnectionLoss: boolean
  /**
   * After its connections failed (the server shut down while lock statements were in flight, or
   * refused new connections), the pool lends working connections again, every one of them. False
   * for postgres.js 3.4: a `sql.reserve()` queued while a connection closes stays pending forever
   * (porsager/postgres#1195), and a connection whose backend died mid-statement replays that error
   * onto the next reserve (as in porsager/postgres#1223), which then fails and leaves a request
   * behind that later swallows a connection, one pool slot lost for good.
   */
  readonly poolRecovers: boolean
  /**
   * An ended pool refuses to lend a connection, so session locks on it fail. False for postgres.js
   * 3.4, whose `sql.reserve()` ignores `sql.end()` and opens a new connection.
   */
  readonly endedPoolRefuses: boolean
  /**
   * The driver says, without a statement, when a connection is in no transaction (node-postgres:
   * `getTransactionStatus()`), so a transaction lock's handle reads `isHeld` false once its
   * transaction ended. Elsewhere it does from the next lock pglock takes on that connection.
   */
  readonly tellsTransactionEnd?: boolean
  /**
   * For a moment after the server comes back, the pool's checkouts may still fail with the refusal
   * of a connection attempt made while it was down (postgres.js 4.2). The restart suite then allows
   * such refusals, and only those, for up to 5 s before it expects a lock to work.
   */
  readonly firstCheckoutAfterRestartMayFail?: boolean
  /**
   * Optional (false when left out). The driver's own transaction (`inTransaction`) rejects by
   * itself once its connection closes, and its callback must not settle after that: postgres.js
   * 3.4's `sql.begin()` rejects at once, but sends its `COMMIT` or `ROLLBACK` into the closed
   * connection if the callback settles, which throws an uncaught `TypeError` from a
   * `setImmediate` (porsager/postgres#1208). The suites then leave the callback pending after a loss.
   */
  readonly transactionRejectsOnLoss?: boolean
  /**
   * Optional (false when left out). A pooled connection whose backend died may go back to its pool
   * and fail its next use, once: Kysely has no way to close a connection, so pglock gives a lost
   * one back, and the driver may lend it again before it has seen its socket close.
   */
  readonly lostConnectionMayReturn?: boolean
}

/**
 * One adapter under test: its lock functions, how to open its handles, how to run SQL through a
 * `lease.db`, and what it cannot do. Each adapter's test file builds one and passes it to
 * `describeConformance`. It must be the default export of `module`, so that worker processes
 * can load it too.
 */
export interface AdapterUnderTest {
  readonly name: string
  /** Absolute path of the module whose default export is this object (for worker processes). */
  readonly module: string
  readonly lib: LockFunctions
  readonly caps: Capabilities
  /** Opens a pooled handle (a `Pool`, a `Sql`, a `Kysely`, a drizzle database). */
  openPool(options: OpenOptions): Promise<Opened<unknown>>
  /** Opens one dedicated connection; required when `caps.singleConnection`. */
  openConnection?(options: OpenOptions): Promise<Opened<unknown>>
  /** Runs `body` with a handle inside a transaction on `pool`; required when `caps.transactionHandle`. */
  inTransaction?<T>(pool: unknown, body: (tx: unknown) => Promise<T>): Promise<T>
  /** Runs `body` with the handle of a savepoint inside `tx`, released when it resolves; required when `caps.savepointHandle`. */
  inSavepoint?<T>(tx: unknown, body: (savepoint: unknown) => Promise<T>): Promise<T>
  /**
   * How many listeners pglock could have left on the driver connection behind a transaction
   * handle (node-postgres: the client's `error` and `end` listeners). Leave it out for a driver
   * pglock adds no listeners to.
   */
  listenerCount?(tx: unknown): number | Promise<number>
  /** Runs one SQL statement (no parameters) through a driver handle, such as `lease.db`; resolves to its rows. */
  query(db: unknown, sql: string): Promise<Record<string, unknown>[]>
}
