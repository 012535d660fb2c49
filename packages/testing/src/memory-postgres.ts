import type { LockConnection, LockExecutor, PreparedStatement, Row } from '@pglock/core/adapter'

/**
 * An in-memory model of the part of Postgres that pglock talks to: advisory locks (session
 * re-entry counts, shared/exclusive, transaction locks ending with their transaction), FIFO
 * waiters, `lock_timeout`, cancel, terminated backends, transaction blocks and savepoints. It
 * understands exactly the SQL pglock sends and rejects anything else loudly, so that a change in
 * the core's SQL shows up in its unit tests. Only types come from `@pglock/core`, so tests may
 * load the core from its source or from `dist`.
 *
 * @example
 * ```ts
 * import { bindExecutor } from '@pglock/core/adapter'
 * import { MemoryPostgres, memoryExecutor } from '@pglock/testing/memory'
 *
 * const server = new MemoryPostgres()
 * const { withLock } = bindExecutor(memoryExecutor)
 * await withLock(server.pool({ max: 2 }), 'job:7', async ({ db }) => db.query('SELECT 1'))
 * server.locks() // [] once released
 * ```
 */
export class MemoryPostgres {
  readonly #locks = new Map<string, LockObject>()
  readonly #backends = new Map<number, Backend>()
  readonly #log: LogEntry[] = []
  readonly #misunderstood: string[] = []
  readonly #onMisunderstood: (error: MemoryPostgresError) => void
  #nextPid = 1000
  #nextXid = 1000n
  /** Whether the server is a standby in recovery (`pg_is_in_recovery()`); a test may promote it. */
  inRecovery = false

  constructor(options: MemoryPostgresOptions = {}) {
    this.#onMisunderstood =
      options.onMisunderstood ??
      ((error) =>
        process.nextTick(() => {
          throw error
        }))
  }

  /** @internal Assigns the next transaction id, as Postgres does: in increasing order, never reused. */
  _assignXid(): bigint {
    this.#nextXid += 1n
    return this.#nextXid
  }

  /** Opens a pool of at most `max` connections (default 10), each a backend of its own. */
  pool(options: MemoryPoolOptions = {}): MemoryPool {
    return new MemoryPool(this, options)
  }

  /** Opens one connection (a backend), which the caller owns, like a node-postgres `Client`. */
  connect(options: MemoryClientOptions = {}): MemoryClient {
    return this.#open().attach(options)
  }

  /** `pg_locks` for advisory locks: one row per backend and mode held, and one per waiter (`granted: false`). */
  locks(filter?: Partial<Pick<PgLockRow, 'classid' | 'objid' | 'objsubid'>>): PgLockRow[] {
    const rows: PgLockRow[] = []
    for (const lock of this.#locks.values()) {
      const { classid, objid, objsubid } = lock.tag
      if (filter !== undefined && (filter.classid ?? classid) !== classid) continue
      if (filter !== undefined && (filter.objid ?? objid) !== objid) continue
      if (filter !== undefined && (filter.objsubid ?? objsubid) !== objsubid) continue
      for (const [backend, held] of lock.holders) {
        for (const mode of MODES)
          if (held[mode].session + held[mode].xact > 0) rows.push({ ...lock.tag, pid: backend.pid, mode, granted: true })
      }
      for (const waiter of lock.waiters) rows.push({ ...lock.tag, pid: waiter.backend.pid, mode: waiter.mode, granted: false })
    }
    return rows
  }

  /** The backends alive now, with their transaction state, like `pg_stat_activity`. */
  backends(): { readonly pid: number; readonly state: BackendState; readonly waiting: boolean }[] {
    return [...this.#backends.values()].map((b) => ({ pid: b.pid, state: b.state(), waiting: b.waiter !== undefined }))
  }

  /** Every statement text received, in order, with the backend it went to (a multi-statement text is one entry: one round trip). */
  get log(): readonly LogEntry[] {
    return this.#log
  }

  /** Round trips received by backend `pid`, or by all backends. */
  roundTrips(pid?: number): number {
    return pid === undefined ? this.#log.length : this.#log.filter((entry) => entry.pid === pid).length
  }

  /** Statements the model did not understand (each also rejected its query; see {@link MemoryPostgresOptions.onMisunderstood}). */
  get misunderstood(): readonly string[] {
    return this.#misunderstood
  }

  /** `pg_terminate_backend(pid)`: its statements fail with SQLSTATE 57P01, its client hears of the loss, its locks are freed. */
  terminate(pid: number): boolean {
    const backend = this.#backends.get(pid)
    if (backend === undefined) return false
    backend.end(new MemoryPostgresError('57P01', 'terminating connection due to administrator command'), true)
    return true
  }

  /** `pg_cancel_backend(pid)`: the statement it runs fails with SQLSTATE 57014; an idle backend ignores it. */
  cancel(pid: number): boolean {
    const backend = this.#backends.get(pid)
    backend?.cancel()
    return backend !== undefined
  }

  /**
   * Makes backend `pid` stop answering without closing (a silently dead network path): its
   * statements never complete and its client hears nothing, until it is terminated.
   */
  stall(pid: number): void {
    const backend = this.#backends.get(pid)
    if (backend !== undefined) backend.stalled = true
  }

  /** @internal */
  _open(): Backend {
    return this.#open()
  }

  /** @internal */
  _record(entry: LogEntry): void {
    this.#log.push(entry)
  }

  /** @internal */
  _misunderstood(sql: string): MemoryPostgresError {
    this.#misunderstood.push(sql)
    const error = new MemoryPostgresError(undefined, `memory-postgres does not understand this statement: ${sql}`)
    this.#onMisunderstood(error)
    return error
  }

  /** @internal */
  _lock(tag: LockTag): LockObject {
    const key = `${tag.classid}:${tag.objid}:${tag.objsubid}`
    let lock = this.#locks.get(key)
    if (lock === undefined) this.#locks.set(key, (lock = new LockObject(tag, () => this.#locks.delete(key))))
    return lock
  }

  /** @internal */
  _closed(backend: Backend): void {
    this.#backends.delete(backend.pid)
  }

  #open(): Backend {
    this.#nextPid += 1
    const backend = new Backend(this, this.#nextPid)
    this.#backends.set(backend.pid, backend)
    return backend
  }
}

/**
 * Options of {@link MemoryPostgres}.
 *
 * @example
 * ```ts
 * const seen: Error[] = []
 * const server = new MemoryPostgres({ onMisunderstood: (error) => seen.push(error) })
 * ```
 */
export interface MemoryPostgresOptions {
  /**
   * Called with the error a statement the model does not understand is rejected with. By default
   * it is also thrown as an uncaught exception, which fails the test run however the core handles
   * the rejection.
   */
  readonly onMisunderstood?: (error: MemoryPostgresError) => void
}

/**
 * One round trip as {@link MemoryPostgres.log} records it.
 *
 * @example
 * ```ts
 * server.log.filter((entry) => entry.prepared !== undefined).length // round trips sent prepared
 * ```
 */
export interface LogEntry {
  readonly pid: number
  /** the text run, with a prepared statement's parameters bound into it */
  readonly sql: string
  /** the prepared statement's name, when it came through `LockConnection.execute` */
  readonly prepared?: string
}

/**
 * One advisory lock row of {@link MemoryPostgres.locks}, with `pg_locks`'s column names.
 *
 * @example
 * ```ts
 * server.locks(pgLocksRow(resolveLockId('job:7'))).filter((row: PgLockRow) => row.granted)
 * ```
 */
export interface PgLockRow {
  readonly classid: number
  readonly objid: number
  readonly objsubid: 1 | 2
  readonly pid: number
  readonly mode: LockMode
  readonly granted: boolean
}

/**
 * A backend's state as `pg_stat_activity.state` names it.
 *
 * @example
 * ```ts
 * server.backends().filter((b) => b.state === 'idle in transaction') // none left open, if all is well
 * ```
 */
export type BackendState = 'idle' | 'active' | 'idle in transaction' | 'idle in transaction (aborted)'

/**
 * A driver error as the model raises it: `code` is the SQLSTATE, or `undefined` for a
 * connection failure (as drivers report a closed socket).
 *
 * @example
 * ```ts
 * new MemoryPostgresError('55P03', 'canceling statement due to lock timeout').code // '55P03'
 * ```
 */
export class MemoryPostgresError extends Error {
  readonly code: string | undefined

  constructor(code: string | undefined, message: string) {
    super(message)
    this.name = 'MemoryPostgresError'
    this.code = code
  }
}

/**
 * Options of {@link MemoryPostgres.pool}.
 *
 * @example
 * ```ts
 * const orm = server.pool({ max: 2, prepared: false, driverTransactions: true })
 * ```
 */
export interface MemoryPoolOptions {
  /** At most this many connections; `connect()` queues first come, first served beyond it. @default 10 */
  readonly max?: number
  /** Whether connections offer prepared statements (`LockConnection.execute`). @default true */
  readonly prepared?: boolean
  /**
   * Open transaction-scope locks through `LockExecutor.transaction` (as an ORM's pool does, with
   * the driver sending `BEGIN` itself) instead of letting pglock send `BEGIN` with the lock.
   * @default false
   */
  readonly driverTransactions?: boolean
  /**
   * Hear a loss only once the core asks (`LockConnection.watchLoss`), as the postgres.js 4 adapter
   * does on connections it owns; until then the next statement finds it. {@link MemoryPool.lossWatches}
   * counts the asks.
   * @default false
   */
  readonly watchesLossWhenAsked?: boolean
}

/**
 * Options of {@link MemoryPostgres.connect}.
 *
 * @example
 * ```ts
 * const client = server.connect({ tellsTransaction: false }) // like a driver that cannot tell
 * ```
 */
export interface MemoryClientOptions {
  /** Whether connections offer prepared statements (`LockConnection.execute`). @default true */
  readonly prepared?: boolean
  /** Whether the executor answers `inTransaction()` (node-postgres can; many drivers cannot). @default true */
  readonly tellsTransaction?: boolean
}

/**
 * A pool of backends, like a node-postgres `Pool`; pass it to {@link memoryExecutor}.
 *
 * @example
 * ```ts
 * const pool = new MemoryPostgres().pool({ max: 2 })
 * pool.checkedOut // 0
 * ```
 */
export class MemoryPool {
  readonly server: MemoryPostgres
  readonly max: number
  readonly prepared: boolean
  readonly driverTransactions: boolean
  readonly watchesLossWhenAsked: boolean
  /** How many times the core asked a connection of this pool to hear a loss as it happens. */
  lossWatches = 0
  readonly #idle: Backend[] = []
  readonly #all = new Set<Backend>()
  readonly #queue: ((backend: Backend) => void)[] = []
  #checkedOut = 0

  constructor(server: MemoryPostgres, options: MemoryPoolOptions) {
    this.server = server
    this.max = options.max ?? 10
    this.prepared = options.prepared ?? true
    this.driverTransactions = options.driverTransactions ?? false
    this.watchesLossWhenAsked = options.watchesLossWhenAsked ?? false
  }

  /** Connections lent and not yet given back. */
  get checkedOut(): number {
    return this.#checkedOut
  }

  /** Connections open (lent or idle). */
  get size(): number {
    return this.#all.size
  }

  /** Pids of the pool's open backends. */
  get pids(): number[] {
    return [...this.#all].map((backend) => backend.pid)
  }

  /** @internal Lends a backend, waiting first come, first served when all `max` are lent. */
  async _checkOut(): Promise<Backend> {
    for (let idle = this.#idle.pop(); idle !== undefined; idle = this.#idle.pop()) {
      if (idle.alive) return this.#lend(idle)
      this.#all.delete(idle)
    }
    if (this.#all.size < this.max) {
      const backend = this.server._open()
      backend.attach({ prepared: this.prepared })
      this.#all.add(backend)
      return this.#lend(backend)
    }
    return new Promise<Backend>((resolve) => this.#queue.push(resolve))
  }

  /** @internal Takes a backend back: to the idle list, or closed when `destroy` or dead. */
  _checkIn(backend: Backend, destroy: boolean): void {
    this.#checkedOut -= 1
    if (destroy || !backend.alive) {
      this.#all.delete(backend)
      backend.end(new MemoryPostgresError('08003', 'connection closed by client'), false)
    } else {
      backend.resetSession()
      this.#idle.push(backend)
    }
    const next = this.#queue.shift()
    if (next !== undefined) void this._checkOut().then(next)
  }

  #lend(backend: Backend): Backend {
    this.#checkedOut += 1
    return backend
  }
}

/**
 * One connection the caller owns, like a node-postgres `Client`; also the `lease.db` pglock
 * hands out for a pooled connection. Pass it to {@link memoryExecutor}.
 *
 * @example
 * ```ts
 * const client = new MemoryPostgres().connect()
 * await client.query('BEGIN')
 * ```
 */
export class MemoryClient {
  readonly server: MemoryPostgres
  readonly prepared: boolean
  readonly tellsTransaction: boolean
  /** @internal */
  readonly _backend: Backend

  constructor(backend: Backend, options: MemoryClientOptions) {
    this.server = backend.server
    this._backend = backend
    this.prepared = options.prepared ?? true
    this.tellsTransaction = options.tellsTransaction ?? true
  }

  /** The backend's pid (`pg_backend_pid()`). */
  get pid(): number {
    return this._backend.pid
  }

  /** Whether the backend is inside a transaction block (also a failed one). */
  get inTransaction(): boolean {
    return this._backend.block !== 'none'
  }

  /** Runs SQL text (one round trip); resolves to the rows of its last statement. */
  query(sql: string): Promise<Row[]> {
    return this._backend.query(sql)
  }

  /**
   * Another handle on this same connection, as a savepoint's or an ORM's handle is: a distinct
   * object whose locks Postgres cannot tell apart from this one's.
   */
  alias(): MemoryAlias {
    return new MemoryAlias(this)
  }

  /** Closes the connection normally: its session ends and its locks are freed. */
  end(): void {
    this._backend.end(new MemoryPostgresError('08003', 'connection closed by client'), false)
  }
}

/**
 * A second handle on a {@link MemoryClient}'s connection (see {@link MemoryClient.alias}).
 *
 * @example
 * ```ts
 * const client = new MemoryPostgres().connect()
 * const savepoint = client.alias() // same backend, another object
 * ```
 */
export class MemoryAlias {
  readonly client: MemoryClient

  constructor(client: MemoryClient) {
    this.client = client
  }

  /** Runs SQL text on the aliased connection. */
  query(sql: string): Promise<Row[]> {
    return this.client.query(sql)
  }
}

/**
 * A handle {@link memoryExecutor} accepts.
 *
 * @example
 * ```ts
 * const handles: MemoryHandle[] = [server.pool(), server.connect(), server.connect().alias()]
 * ```
 */
export type MemoryHandle = MemoryPool | MemoryClient | MemoryAlias

/**
 * Describes a {@link MemoryPool} (kind `'pool'`), a {@link MemoryClient} or a
 * {@link MemoryAlias} (kind `'connection'`) as a `LockExecutor`, for `bindExecutor`. `lease.db`
 * is the {@link MemoryClient} of the connection holding the lock.
 *
 * @example
 * ```ts
 * const { createLock } = bindExecutor(memoryExecutor)
 * const lock = await createLock(new MemoryPostgres().pool(), 42).acquire()
 * ```
 */
export function memoryExecutor(db: MemoryHandle): LockExecutor<MemoryClient> {
  if (db instanceof MemoryPool) return poolExecutor(db)
  if (db instanceof MemoryClient || db instanceof MemoryAlias) {
    const client = db instanceof MemoryAlias ? db.client : db
    return {
      kind: 'connection',
      adapter: 'memory',
      queueKey: db,
      connect: async () => lockConnection(client, false, undefined),
      inTransaction: () => (client.tellsTransaction ? client.inTransaction : undefined),
    }
  }
  throw new TypeError(`memoryExecutor: not a memory handle: ${String(db)}`)
}

function poolExecutor(pool: MemoryPool): LockExecutor<MemoryClient> {
  const checkOut = async (): Promise<LockConnection<MemoryClient>> => {
    const backend = await pool._checkOut()
    return lockConnection(backend.client as MemoryClient, true, pool)
  }
  const executor: LockExecutor<MemoryClient> = { kind: 'pool', adapter: 'memory', queueKey: pool, connect: checkOut }
  if (!pool.driverTransactions) return executor
  return {
    ...executor,
    async transaction<T>(body: (connection: LockConnection<MemoryClient>) => Promise<T>): Promise<T> {
      const connection = await checkOut()
      try {
        await connection.query('BEGIN')
        const value = await body(connection)
        await connection.query('COMMIT')
        return value
      } catch (error) {
        await connection.query('ROLLBACK').catch(() => undefined)
        throw error
      } finally {
        await connection.release({ destroy: false })
      }
    },
  }
}

/**
 * A pinned connection. Its `connectionKey` is the backend's own {@link MemoryClient}, so that every handle
 * reaching one backend (a pool's lease, a client, an alias) names the same physical connection.
 */
function lockConnection(client: MemoryClient, owned: boolean, pool: MemoryPool | undefined): LockConnection<MemoryClient> {
  const backend = client._backend
  let released = false
  const listeners = new Set<(cause: unknown) => void>()
  const lazy = pool?.watchesLossWhenAsked === true
  let watched = !lazy
  const hear = (once: (cause: unknown) => void) => {
    if (backend.alive) backend.lostListeners.add(once)
    else once(backend.endedBy)
  }
  const connection: LockConnection<MemoryClient> = {
    db: client,
    owned,
    connectionKey: client,
    query: (sql) => backend.query(sql),
    cancel: async () => backend.cancel(),
    onLost(listener) {
      if (!backend.alive) {
        listener(backend.endedBy)
        return () => undefined
      }
      const once = (cause: unknown) => {
        listeners.delete(once)
        listener(cause)
      }
      listeners.add(once)
      if (watched) hear(once)
      return () => {
        listeners.delete(once)
        backend.lostListeners.delete(once)
      }
    },
    release({ destroy }) {
      if (released || !owned) return
      released = true
      for (const listener of listeners) backend.lostListeners.delete(listener)
      pool?._checkIn(backend, destroy)
    },
  }
  if (lazy) {
    connection.watchLoss = () => {
      ;(pool as MemoryPool).lossWatches += 1
      if (watched || released) return
      watched = true
      for (const once of [...listeners]) hear(once)
    }
  }
  if (client.prepared) connection.execute = async (statement: PreparedStatement) => backend.query(substitute(statement), statement.name)
  return connection
}

/** Binds a prepared statement's parameters into its text, as the server would. */
function substitute(statement: PreparedStatement): string {
  return statement.text.replace(/\$(\d+)::(int[48])/g, (_, index: string, type: string) => {
    const value = statement.values[Number(index) - 1]
    if (value === undefined) throw new MemoryPostgresError('08P01', `bind message supplies too few parameters for ${statement.name}`)
    return value === null ? `NULL::${type}` : `'${value}'::${type}`
  })
}

type LockMode = 'ExclusiveLock' | 'ShareLock'
const MODES: readonly LockMode[] = ['ExclusiveLock', 'ShareLock']

interface LockTag {
  readonly classid: number
  readonly objid: number
  readonly objsubid: 1 | 2
}

type Held = Record<LockMode, { session: number; xact: number }>

interface Waiter {
  readonly backend: Backend
  readonly mode: LockMode
  readonly level: 'session' | 'xact'
  readonly grant: () => void
  readonly fail: (error: unknown) => void
}

function conflicts(a: LockMode, b: LockMode): boolean {
  return a === 'ExclusiveLock' || b === 'ExclusiveLock'
}

/** One advisory lock in the lock manager: who holds it in which mode, and who waits, in order. */
class LockObject {
  readonly holders = new Map<Backend, Held>()
  readonly waiters: Waiter[] = []

  constructor(
    readonly tag: LockTag,
    readonly forget: () => void,
  ) {}

  /**
   * Whether `backend` may have `mode` now: at once if it holds that mode already; else only if no
   * other holder and nobody queued before it (Postgres's wait mask) conflicts with it.
   */
  grantable(backend: Backend, mode: LockMode, queued: readonly Waiter[]): boolean {
    if (this.holds(backend, mode)) return true
    for (const [other, held] of this.holders) {
      if (other === backend) continue
      for (const m of MODES) if (held[m].session + held[m].xact > 0 && conflicts(m, mode)) return false
    }
    return !queued.some((waiter) => conflicts(waiter.mode, mode))
  }

  holds(backend: Backend, mode: LockMode): boolean {
    const held = this.holders.get(backend)
    return held !== undefined && held[mode].session + held[mode].xact > 0
  }

  /**
   * Where a blocking request of `backend` joins the queue: before the first waiter that conflicts
   * with a mode the backend holds (it would otherwise wait for itself), as Postgres's `ProcSleep` does.
   */
  placeInQueue(backend: Backend): number {
    const index = this.waiters.findIndex((waiter) => MODES.some((m) => this.holds(backend, m) && conflicts(m, waiter.mode)))
    return index === -1 ? this.waiters.length : index
  }

  take(backend: Backend, mode: LockMode, level: 'session' | 'xact'): void {
    let held = this.holders.get(backend)
    if (held === undefined) {
      held = { ExclusiveLock: { session: 0, xact: 0 }, ShareLock: { session: 0, xact: 0 } }
      this.holders.set(backend, held)
    }
    held[mode][level] += 1
    if (level === 'xact') backend.xactLocks.push({ lock: this, mode })
  }

  /** Drops one (or `all`) holds of `level` in `mode` by `backend`; false when it held none. */
  drop(backend: Backend, mode: LockMode, level: 'session' | 'xact', all = false): boolean {
    const held = this.holders.get(backend)
    if (held === undefined || held[mode][level] === 0) {
      if (this.holders.size === 0 && this.waiters.length === 0) this.forget()
      return false
    }
    held[mode][level] = all ? 0 : held[mode][level] - 1
    if (MODES.every((m) => held[m].session + held[m].xact === 0)) this.holders.delete(backend)
    this.wake()
    return true
  }

  /** Grants waiters in queue order; one that cannot be granted blocks those behind it that conflict with it. */
  wake(): void {
    const ahead: Waiter[] = []
    for (const waiter of [...this.waiters]) {
      if (this.grantable(waiter.backend, waiter.mode, ahead)) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1)
        this.take(waiter.backend, waiter.mode, waiter.level)
        waiter.grant()
      } else ahead.push(waiter)
    }
    if (this.holders.size === 0 && this.waiters.length === 0) this.forget()
  }

  leaveQueue(waiter: Waiter): void {
    const index = this.waiters.indexOf(waiter)
    if (index !== -1) this.waiters.splice(index, 1)
    this.wake()
  }
}

interface Savepoint {
  readonly name: string
  readonly settings: Map<string, string>
  readonly xactLocks: number
}

/** One server process: its session, its transaction, its statements in arrival order. */
class Backend {
  alive = true
  stalled = false
  endedBy: unknown
  /** `none`, or an explicit block (`BEGIN`), or a block that failed and waits for `ROLLBACK`. */
  block: 'none' | 'open' | 'failed' = 'none'
  /** Inside a multi-statement query outside a block: Postgres runs it as one implicit transaction. */
  implicit = false
  running = false
  cancelPending = false
  waiter: { readonly lock: LockObject; readonly waiter: Waiter } | undefined
  readonly lostListeners = new Set<(cause: unknown) => void>()
  readonly xactLocks: { readonly lock: LockObject; readonly mode: LockMode }[] = []
  readonly session = new Map<string, string>()
  local = new Map<string, string>()
  /** custom settings ever defined: they read `''` once their transaction-local value is gone */
  readonly defined = new Set<string>()
  savepoints: Savepoint[] = []
  /** the transaction id of the transaction now open, once `pg_current_xact_id()` assigned one */
  xid: bigint | undefined
  /** the one client of this backend: the physical connection as drivers' handles reach it */
  client: MemoryClient | undefined
  #chain: Promise<unknown> = Promise.resolve()
  /** the row of the subquery in FROM of the statement being evaluated, by its alias */
  #scope: { readonly alias: string; readonly row: Row } | undefined
  readonly #stalls: ((error: unknown) => void)[] = []

  constructor(
    readonly server: MemoryPostgres,
    readonly pid: number,
  ) {}

  attach(options: MemoryClientOptions): MemoryClient {
    this.client = new MemoryClient(this, options)
    return this.client
  }

  state(): BackendState {
    if (this.running) return 'active'
    return this.block === 'none' ? 'idle' : this.block === 'open' ? 'idle in transaction' : 'idle in transaction (aborted)'
  }

  query(sql: string, preparedName?: string): Promise<Row[]> {
    if (!this.alive) return Promise.reject(new MemoryPostgresError(undefined, 'Connection terminated'))
    this.server._record(preparedName === undefined ? { pid: this.pid, sql } : { pid: this.pid, sql, prepared: preparedName })
    const result = this.#chain.then(() => this.#run(sql))
    this.#chain = result.catch(() => undefined)
    return result
  }

  cancel(): void {
    if (!this.alive || !this.running) return
    const waiting = this.waiter
    if (waiting === undefined) {
      this.cancelPending = true
      return
    }
    this.waiter = undefined
    waiting.lock.leaveQueue(waiting.waiter)
    waiting.waiter.fail(new MemoryPostgresError('57014', 'canceling statement due to user request'))
  }

  /** Ends the session: locks freed, statements in flight failed; `lost` tells the client. */
  end(cause: unknown, lost: boolean): void {
    if (!this.alive) return
    this.alive = false
    this.endedBy = cause
    const waiting = this.waiter
    this.waiter = undefined
    if (waiting !== undefined) {
      waiting.lock.leaveQueue(waiting.waiter)
      waiting.waiter.fail(cause)
    }
    for (const fail of this.#stalls.splice(0)) fail(cause)
    this.#endTransaction()
    this.#dropSessionLocks()
    this.server._closed(this)
    if (lost) for (const listener of [...this.lostListeners]) listener(cause)
    this.lostListeners.clear()
  }

  /** What a pool's reset leaves: no transaction-local state (node-postgres resets nothing else). */
  resetSession(): void {
    this.cancelPending = false
  }

  async #run(text: string): Promise<Row[]> {
    if (!this.alive) throw this.endedBy
    if (this.stalled) await new Promise<never>((_, reject) => this.#stalls.push(reject))
    this.running = true
    this.cancelPending = false
    const statements = splitStatements(text)
    this.implicit = statements.length > 1 && this.block === 'none'
    let rows: Row[] = []
    try {
      for (const statement of statements) {
        this.#checkpoint()
        rows = await this.#statement(statement)
        this.#checkpoint()
        if (this.block === 'none' && !this.implicit) this.#endTransaction()
      }
      if (this.implicit) this.#endTransaction()
      return rows
    } catch (error) {
      if (this.alive) {
        if (this.block === 'open') this.block = 'failed'
        else if (this.block === 'none') this.#endTransaction()
      }
      throw error
    } finally {
      this.implicit = false
      this.running = false
      this.cancelPending = false
    }
  }

  /** Where Postgres checks for interrupts: a cancel that arrived while the statement ran fails it here. */
  #checkpoint(): void {
    if (!this.alive) throw this.endedBy
    if (this.cancelPending) {
      this.cancelPending = false
      throw new MemoryPostgresError('57014', 'canceling statement due to user request')
    }
  }

  async #statement(sql: string): Promise<Row[]> {
    if (this.block === 'failed' && !/^(ROLLBACK|COMMIT|ROLLBACK TO SAVEPOINT \w+)$/.test(sql)) {
      throw new MemoryPostgresError('25P02', 'current transaction is aborted, commands ignored until end of transaction block')
    }
    if (sql === 'BEGIN') {
      this.block = 'open'
      this.implicit = false
      return []
    }
    if (sql === 'COMMIT' || sql === 'ROLLBACK') {
      this.block = 'none'
      this.#endTransaction()
      return []
    }
    const savepoint = /^(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT) (\w+)$/.exec(sql)
    if (savepoint !== null) return this.#savepoint(savepoint[1] as string, savepoint[2] as string)
    const setLocal = /^SET LOCAL lock_timeout = (\d+)$/.exec(sql)
    if (setLocal !== null) {
      if (this.block !== 'none' || this.implicit) this.local.set('lock_timeout', `${setLocal[1]}ms`)
      return []
    }
    const fromLocks = PG_LOCKS_QUERY.exec(sql)
    if (fromLocks !== null) return this.#unlockIfHeld(fromLocks)
    const select = /^SELECT (.+)$/.exec(sql)
    if (select === null) throw this.server._misunderstood(sql)
    // FROM (a one-row subquery) first, then WHERE, then the columns, as Postgres evaluates them
    const [selected, where] = splitTopLevel(select[1] as string, ' WHERE ')
    const [columns, from] = splitTopLevel(selected as string, ' FROM ')
    this.#scope = undefined
    if (from !== undefined) {
      const subquery = /^\((SELECT .+) OFFSET 0\) (\w+)$/s.exec(from)
      if (subquery === null) throw this.server._misunderstood(sql)
      const [inner] = await this.#statement(subquery[1] as string)
      this.#scope = { alias: subquery[2] as string, row: inner ?? {} }
    }
    if (where !== undefined && !(await this.#condition(where))) return []
    const row: Record<string, unknown> = {}
    for (const item of splitTopLevel(columns as string, ',')) {
      const aliased = /^(.+) AS (\w+)$/.exec(item)
      const expression = aliased === null ? item : (aliased[1] as string)
      row[aliased === null ? columnName(item) : (aliased[2] as string)] = await this.#evaluate(expression)
    }
    return [row]
  }

  #savepoint(command: string, name: string): Row[] {
    if (this.block === 'none') throw new MemoryPostgresError('25P01', `${command} can only be used in transaction blocks`)
    if (command === 'SAVEPOINT') {
      this.savepoints.push({ name, settings: new Map(this.local), xactLocks: this.xactLocks.length })
      return []
    }
    let index = -1
    for (let i = this.savepoints.length - 1; i >= 0 && index === -1; i -= 1) if (this.savepoints[i]?.name === name) index = i
    if (index === -1) throw new MemoryPostgresError('3B001', `savepoint "${name}" does not exist`)
    const target = this.savepoints[index] as Savepoint
    if (command === 'RELEASE SAVEPOINT') {
      this.savepoints = this.savepoints.slice(0, index)
      return []
    }
    this.savepoints = this.savepoints.slice(0, index + 1)
    for (const { lock, mode } of this.xactLocks.splice(target.xactLocks)) lock.drop(this, mode, 'xact')
    this.local = new Map(target.settings)
    this.block = 'open'
    return []
  }

  #unlockIfHeld(match: RegExpExecArray): Row[] {
    const [, call, classid, objid, objsubid, mode] = match
    const held = this.server
      .locks({ classid: Number(classid), objid: Number(objid), objsubid: Number(objsubid) as 1 | 2 })
      .some((row) => row.pid === this.pid && row.granted && row.mode === mode)
    if (!held) return []
    const released = this.#unlock(call as string)
    if (released === undefined) throw this.server._misunderstood(call as string)
    return [{ released }]
  }

  #unlock(expression: string): boolean | undefined {
    const parsed = parseCall(expression)
    const fn = parsed === undefined ? undefined : /^pg_advisory_unlock(_shared)?$/.exec(parsed.name)
    if (parsed === undefined || fn === null || fn === undefined) return undefined
    const mode: LockMode = fn[1] === undefined ? 'ExclusiveLock' : 'ShareLock'
    return this.server._lock(lockTag(parsed.args)).drop(this, mode, 'session')
  }

  async #evaluate(expression: string): Promise<unknown> {
    const e = expression.trim()
    if (e === 'pg_backend_pid()') return this.pid
    const column = /^(\w+)\.(\w+)$/.exec(e)
    const scope = this.#scope
    if (column !== null && scope !== undefined && scope.alias === column[1]) return scope.row[column[2] as string] ?? null
    if (/^-?\d+$/.test(e)) return Number(e)
    if (/^NULL(::\w+)?$/.test(e)) return null
    const literal = /^'([^']*)'(?:::(\w+))?$/.exec(e)
    if (literal !== null) return literal[2] === undefined ? literal[1] : castInteger(literal[1] as string, literal[2])
    const wrapped = /^\((.*)\)$/s.exec(e)
    if (wrapped !== null && splitTopLevel(wrapped[1] as string, ')').length === 1) return this.#evaluate(wrapped[1] as string)
    const caseOf = /^CASE WHEN (.+) END$/s.exec(e)
    if (caseOf !== null) {
      for (const branch of splitTopLevel(caseOf[1] as string, ' WHEN ')) {
        const [condition, value] = splitTopLevel(branch, ' THEN ')
        if (value === undefined) throw this.server._misunderstood(e)
        if (await this.#condition(condition as string)) return this.#evaluate(value)
      }
      return null
    }
    const cast = castOf(e)
    if (cast !== undefined) {
      const value = await this.#evaluate(cast.expression)
      return value === null ? null : cast.type === 'text' ? String(value) : castInteger(String(value), cast.type)
    }
    const call = parseCall(e)
    if (call === undefined) throw this.server._misunderstood(e)
    const lock = /^pg_(try_)?advisory_(xact_)?(lock|unlock)(_shared)?$/.exec(call.name)
    if (lock !== null) {
      const mode: LockMode = lock[4] === undefined ? 'ExclusiveLock' : 'ShareLock'
      if (lock[3] === 'unlock') {
        if (lock[1] !== undefined || lock[2] !== undefined) throw this.server._misunderstood(e)
        return this.#unlock(e)
      }
      return this.#lock(lockTag(call.args), mode, lock[2] === undefined ? 'session' : 'xact', lock[1] !== undefined)
    }
    switch (call.name) {
      case 'pg_is_in_recovery':
        return this.server.inRecovery
      case 'pg_current_xact_id':
        if (this.server.inRecovery) throw new MemoryPostgresError('25006', 'cannot assign TransactionIds during recovery')
        this.xid ??= this.server._assignXid()
        return this.xid
      case 'pg_current_xact_id_if_assigned':
        return this.xid ?? null
      case 'pg_logical_emit_message':
        // a transactional message gives the transaction its xid, as it writes WAL
        if (call.args[0] === 'true') this.xid ??= this.server._assignXid()
        return '0/0'
      case 'COALESCE':
        for (const arg of call.args) {
          const value = await this.#evaluate(arg)
          if (value !== null) return value
        }
        return null
      case 'NULLIF': {
        const [a, b] = await Promise.all(call.args.map((arg) => this.#evaluate(arg)))
        return a === b ? null : a
      }
      case 'current_setting':
        return this.#setting(String(await this.#evaluate(call.args[0] ?? '')), call.args[1] === 'true')
      case 'set_config': {
        const [name, value] = [String(await this.#evaluate(call.args[0] ?? '')), String(await this.#evaluate(call.args[1] ?? ''))]
        if (call.args[2] !== 'true') throw this.server._misunderstood(e)
        if (name.includes('.')) this.defined.add(name)
        this.local.set(name, name === 'lock_timeout' ? `${parseMs(value)}ms` : value)
        return value
      }
      default:
        throw this.server._misunderstood(e)
    }
  }

  async #condition(condition: string): Promise<boolean> {
    for (const term of splitTopLevel(condition, ' OR ')) {
      const notNull = /^(.+) IS NOT NULL$/s.exec(term)
      if (notNull !== null) {
        if ((await this.#evaluate(notNull[1] as string)) !== null) return true
        continue
      }
      const isNull = /^(.+) IS NULL$/s.exec(term)
      if (isNull !== null) {
        if ((await this.#evaluate(isNull[1] as string)) === null) return true
        continue
      }
      const equals = splitTopLevel(term, ' = ')
      if (equals.length === 1) {
        // a boolean expression: a function such as pg_try_advisory_lock, or NOT one
        const not = /^NOT (.+)$/s.exec(term)
        const value = await this.#evaluate(not === null ? term : (not[1] as string))
        if (typeof value !== 'boolean') throw this.server._misunderstood(condition)
        if (value !== (not !== null)) return true
        continue
      }
      if (equals.length !== 2) throw this.server._misunderstood(condition)
      const [a, b] = [await this.#evaluate(equals[0] as string), await this.#evaluate(equals[1] as string)]
      if (a !== null && b !== null && Number(a) === Number(b)) return true
    }
    return false
  }

  #setting(name: string, missingOk: boolean): string | null {
    const value = this.local.get(name) ?? this.session.get(name)
    if (value !== undefined) return value
    if (name === 'lock_timeout') return '0'
    if (this.defined.has(name)) return ''
    if (missingOk) return null
    throw new MemoryPostgresError('42704', `unrecognized configuration parameter "${name}"`)
  }

  async #lock(tag: LockTag, mode: LockMode, level: 'session' | 'xact', attempt: boolean): Promise<boolean | ''> {
    const lock = this.server._lock(tag)
    if (lock.grantable(this, mode, lock.waiters)) {
      lock.take(this, mode, level)
      return attempt ? true : ''
    }
    if (attempt) return false
    const place = lock.placeInQueue(this)
    if (place < lock.waiters.length && lock.grantable(this, mode, lock.waiters.slice(0, place))) {
      lock.take(this, mode, level)
      return ''
    }
    const timeoutMs = parseMs(this.#setting('lock_timeout', false) ?? '0')
    await new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const settle = () => {
        this.waiter = undefined
        if (timer !== undefined) clearTimeout(timer)
      }
      const waiter: Waiter = {
        backend: this,
        mode,
        level,
        grant: () => {
          settle()
          resolve()
        },
        fail: (error) => {
          settle()
          reject(error)
        },
      }
      lock.waiters.splice(place, 0, waiter)
      this.waiter = { lock, waiter }
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          lock.leaveQueue(waiter)
          waiter.fail(new MemoryPostgresError('55P03', 'canceling statement due to lock timeout'))
        }, timeoutMs)
      }
    })
    return ''
  }

  #endTransaction(): void {
    this.xid = undefined
    for (const { lock, mode } of this.xactLocks.splice(0)) lock.drop(this, mode, 'xact')
    this.local = new Map()
    this.savepoints = []
  }

  #dropSessionLocks(): void {
    for (const row of this.server.locks()) {
      if (row.pid !== this.pid || !row.granted) continue
      this.server._lock(row).drop(this, row.mode, 'session', true)
    }
  }
}

/**
 * The unlock-if-held statement pglock sends after a failed wait (see `unlockIfHeldSql`): the
 * whole text, so that any change to it is noticed.
 */
const PG_LOCKS_QUERY = new RegExp(
  '^SELECT (pg_advisory_unlock(?:_shared)?\\(.+\\)) AS released FROM pg_catalog\\.pg_locks' +
    " WHERE locktype = 'advisory' AND pid = pg_backend_pid\\(\\) AND granted" +
    ' AND database = \\(SELECT oid FROM pg_catalog\\.pg_database WHERE datname = current_database\\(\\)\\)' +
    " AND classid = (\\d+) AND objid = (\\d+) AND objsubid = ([12]) AND mode = '(ShareLock|ExclusiveLock)'$",
)

function lockTag(args: readonly string[]): LockTag {
  if (args.length === 1) {
    const value = BigInt.asUintN(64, castInteger(literalOf(args[0]), 'int8') as bigint)
    return { classid: Number(value >> 32n), objid: Number(value & 0xffffffffn), objsubid: 1 }
  }
  if (args.length === 2) {
    const [a, b] = args.map((arg) => castInteger(literalOf(arg), 'int4') as number) as [number, number]
    return { classid: a >>> 0, objid: b >>> 0, objsubid: 2 }
  }
  throw new MemoryPostgresError('42883', `function pg_advisory_lock with ${args.length} arguments does not exist`)
}

function literalOf(arg: string | undefined): string {
  const match = /^'(-?\d+)'::int[48]$/.exec(arg?.trim() ?? '')
  if (match === null) throw new MemoryPostgresError('42883', `memory-postgres expects an integer literal cast to int4 or int8, got ${arg}`)
  return match[1] as string
}

function castInteger(text: string, type: string | undefined): bigint | number | string {
  if (type === 'int8') {
    const value = BigInt(text)
    if (value !== BigInt.asIntN(64, value)) throw new MemoryPostgresError('22003', `value "${text}" is out of range for type bigint`)
    return value
  }
  if ((type === 'int4' || type === 'int8') && !/^\s*-?\d+\s*$/.test(text)) {
    throw new MemoryPostgresError('22P02', `invalid input syntax for type ${type === 'int4' ? 'integer' : 'bigint'}: "${text}"`)
  }
  if (type === 'int4') {
    const value = Number(text)
    if (!Number.isInteger(value) || value !== (value | 0))
      throw new MemoryPostgresError('22003', `value "${text}" is out of range for type integer`)
    return value
  }
  return text
}

/** A `lock_timeout` value in ms: bare digits or with `ms`/`s`, as `current_setting` shows it. */
function parseMs(value: string): number {
  const match = /^(\d+)(ms|s|min)?$/.exec(value.trim())
  if (match === null) throw new MemoryPostgresError('22023', `invalid value for parameter "lock_timeout": "${value}"`)
  return Number(match[1]) * (match[2] === 's' ? 1_000 : match[2] === 'min' ? 60_000 : 1)
}

/** `(expression)::type` or `call(...)::type`, for the types pglock casts to; else `undefined`. */
function castOf(expression: string): { expression: string; type: string } | undefined {
  const match = /^(.+)::(text|int4|int8)$/s.exec(expression)
  if (match === null) return undefined
  const inner = (match[1] as string).trim()
  if (inner.startsWith("'")) return undefined
  const parenthesized = /^\((.*)\)$/s.exec(inner)
  if (parenthesized !== null && splitTopLevel(parenthesized[1] as string, ')').length === 1) {
    return { expression: parenthesized[1] as string, type: match[2] as string }
  }
  return parseCall(inner) === undefined ? undefined : { expression: inner, type: match[2] as string }
}

function columnName(expression: string): string {
  return parseCall(expression)?.name ?? '?column?'
}

/** `name(args)` where the parentheses close at the end of the text; else `undefined`. */
function parseCall(expression: string): { name: string; args: string[] } | undefined {
  const match = /^(\w+)\((.*)\)$/s.exec(expression.trim())
  if (match === null) return undefined
  const inner = match[2] as string
  let depth = 0
  for (const char of inner) {
    depth += char === '(' ? 1 : char === ')' ? -1 : 0
    if (depth < 0) return undefined
  }
  return { name: match[1] as string, args: inner.trim() === '' ? [] : splitTopLevel(inner, ',') }
}

/** Splits on `separator` outside parentheses and quotes; parts trimmed. */
function splitTopLevel(text: string, separator: string): string[] {
  const parts: string[] = []
  let depth = 0
  let quoted = false
  let start = 0
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i]
    if (char === "'") quoted = !quoted
    else if (!quoted && char === '(') depth += 1
    else if (!quoted && char === ')') depth -= 1
    else if (!quoted && depth === 0 && text.startsWith(separator, i)) {
      parts.push(text.slice(start, i).trim())
      start = i + separator.length
      i += separator.length - 1
    }
  }
  parts.push(text.slice(start).trim())
  return parts
}

function splitStatements(text: string): string[] {
  return splitTopLevel(text, ';').filter((statement) => statement !== '')
}
