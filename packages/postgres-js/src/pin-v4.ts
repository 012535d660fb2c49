import {
  type CancelOutcome,
  isConnectionFailure,
  lastRows,
  type PreparedStatement,
  type Row,
  sendCancelRequest,
} from '@pglock/core/adapter'
import type { ReservedSql, TransactionSql } from 'postgres'
import { brokenHandles, isTransactionSql } from './handles.js'
import { PinLoss } from './pin-loss.js'
import { type ConnectionName, nameOf, onConnectionClose, startNaming } from './pool-events.js'
import type { PostgresJsConnection } from './postgres-js-executor.js'
import {
  backendKeyOf,
  cannotCancel,
  type DriverQuery,
  destroyV4Connection,
  keepErrorsOwn,
  leasedConnectionOf,
  type V4Lease,
  type V4LeasedConnection,
} from './privates.js'

type Query = DriverQuery & PromiseLike<readonly unknown[]>
type Handle = ReservedSql<any> | TransactionSql<any>

/** The connection each handle pglock was given runs on (a transaction and its savepoints share one). */
const handleConnections = new WeakMap<Handle, V4LeasedConnection>()
/** The same, named through the `diagnostics_channel`s where statements do not carry their connection. */
const handleNames = new WeakMap<Handle, ConnectionName>()

/**
 * Whether this postgres.js's statements carry their leased connection; until one has settled,
 * the channels name connections too. A statement without it turns the channels back on.
 */
let leasesReadable: boolean | undefined

function readLease(query: Query, settled: boolean): V4LeasedConnection | undefined {
  const connection = leasedConnectionOf(query)
  if (connection !== undefined) leasesReadable = true
  else if (settled) leasesReadable = false
  return connection
}

/** A host and port (a directory host is a Unix socket's) to send a CancelRequest to. */
export interface Endpoint {
  readonly host: string
  readonly port: number
}

/** Where a pool's connections go, from its public `sql.options`, when it has one host. */
export function endpointOf(sql: { readonly options?: unknown }): Endpoint | undefined {
  const { host, port, path } = (sql.options ?? {}) as { host?: unknown; port?: unknown; path?: unknown }
  const socket = typeof path === 'string' ? /^(.*)\/\.s\.PGSQL\.(\d+)$/.exec(path) : null
  if (socket !== null) return { host: socket[1] as string, port: Number(socket[2]) }
  if (!Array.isArray(host) || !Array.isArray(port) || host.length !== 1) return undefined
  const [only] = host as unknown[]
  const [number] = port as unknown[]
  return typeof only === 'string' && typeof number === 'number' ? { host: only, port: number } : undefined
}

/** How many connections' scope objects are kept; the least recently used goes first. */
const SCOPES = 1_024
const scopes = new Map<string, object>()

/** One object per connection as its scope: 4.x names a connection only by a number. */
function scopeOf(name: ConnectionName): object {
  const key = `${name.id}@${name.host}:${name.port}`
  let scope = scopes.get(key)
  if (scope === undefined) scope = { connection: name.id }
  else scopes.delete(key)
  scopes.set(key, scope)
  if (scopes.size > SCOPES) scopes.delete(scopes.keys().next().value as string)
  return scope
}

function forgetScope(name: ConnectionName): void {
  scopes.delete(`${name.id}@${name.host}:${name.port}`)
}

/** One scope object per connection read from a statement; it goes with the connection. */
const connectionScopes = new WeakMap<V4LeasedConnection, object>()

function scopeOfConnection(connection: V4LeasedConnection): object {
  let scope = connectionScopes.get(connection)
  if (scope === undefined) connectionScopes.set(connection, (scope = { connection: connection.id }))
  return scope
}

/** Names a handle's connection with an empty statement: one round trip, once per handle. */
export async function nameHandleV4(handle: Handle): Promise<void> {
  if (handleConnections.has(handle) || handleNames.has(handle) || brokenHandles.has(handle)) return
  const stop = leasesReadable === true ? undefined : startNaming()
  try {
    const query = handle.unsafe(';') as unknown as Query
    if (isTransactionSql(handle)) keepErrorsOwn(query)
    const outcome = await query.then(undefined, (error: unknown) => error)
    const connection = readLease(query, outcome === undefined || Array.isArray(outcome))
    if (connection !== undefined) return void handleConnections.set(handle, connection)
    const name = nameOf(outcome)
    if (name !== undefined) handleNames.set(handle, name)
    // a driver whose statements lost their connection since: name it once more, through the channels
    else if (stop === undefined && leasesReadable === false) await nameHandleV4(handle)
  } finally {
    stop?.()
  }
}

/** A connection's loss, as a lease's pin hears it. */
interface LeaseListener {
  leaseClosed(cause: unknown): void
}

/** Who hears a handle's lease close: one reaction on `lease.closed` however many locks the handle takes. */
class LeaseWatch {
  readonly #listeners = new Set<LeaseListener>()
  #closed = false
  #cause: unknown

  constructor(lease: V4Lease) {
    lease.closed.then(undefined, (cause: unknown) => this.#close(cause))
  }

  add(listener: LeaseListener): void {
    if (this.#closed) listener.leaseClosed(this.#cause)
    else this.#listeners.add(listener)
  }

  delete(listener: LeaseListener): void {
    this.#listeners.delete(listener)
  }

  #close(cause: unknown): void {
    this.#closed = true
    this.#cause = cause
    for (const listener of [...this.#listeners]) listener.leaseClosed(cause)
    this.#listeners.clear()
  }
}

/**
 * An owned pin's one reaction on its lease's `closed`, which lets go of the pin at release: V8's
 * scavenger keeps a lease alive past its lock (postgres.js's own objects point at it), and through
 * a reaction holding the pin it would keep the whole lock, which then goes to old space.
 */
class LeaseRelay {
  listener: LeaseListener | undefined

  constructor(lease: V4Lease, listener: LeaseListener) {
    this.listener = listener
    lease.closed.then(undefined, (cause: unknown) => this.listener?.leaseClosed(cause))
  }
}

const leaseWatches = new WeakMap<V4Lease, LeaseWatch>()

function leaseWatchOf(lease: V4Lease): LeaseWatch {
  let watch = leaseWatches.get(lease)
  if (watch === undefined) leaseWatches.set(lease, (watch = new LeaseWatch(lease)))
  return watch
}

const noop = (): void => undefined

/**
 * `pinPostgresJs` for 4.x; a class, as one is built per lock. It learns its connection from its
 * first statement's private `connection`, and hears it close through the lease's `closed`; the
 * `diagnostics_channel`s only where statements lack that shape.
 */
class V4Pin<Db> extends PinLoss implements PostgresJsConnection<Db>, LeaseListener {
  readonly db: Db
  readonly owned: boolean
  protected readonly handle: Handle
  readonly #transaction: TransactionSql<any> | undefined
  readonly #giveBack: boolean
  readonly #endpoint: Endpoint | undefined
  #connection: V4LeasedConnection | undefined
  #name: ConnectionName | undefined
  #scope: object | undefined
  #watching = false
  /** an owned pin hears its lease close only once asked to (see `watchLoss`) */
  #promptly = false
  #unwatch: (() => void) | undefined
  #relay: LeaseRelay | undefined
  #running: Query | undefined
  #last: Query | undefined
  #released = false
  #closed = false

  constructor(handle: Handle, db: Db, owned: boolean, giveBack: boolean, endpoint: Endpoint | undefined) {
    super()
    this.db = db
    this.owned = owned
    this.handle = handle
    this.#transaction = isTransactionSql(handle) ? handle : undefined
    this.#giveBack = giveBack
    this.#endpoint = endpoint
    // pglock's own handles are new for each lock: nothing is known of them yet
    if (owned) return
    this.#connection = handleConnections.get(handle)
    if (this.#connection === undefined) this.#name = handleNames.get(handle)
    if (brokenHandles.has(handle)) this.report(brokenHandles.get(handle))
    this.#watch()
  }

  get connectionKey(): object | undefined {
    if (this.#transaction === undefined) return this.handle
    if (this.#scope !== undefined) return this.#scope
    if (this.#connection !== undefined) return (this.#scope = scopeOfConnection(this.#connection))
    return this.#name === undefined ? undefined : scopeOf(this.#name)
  }

  query(sql: string): Promise<readonly Row[]> {
    return this.lost ? Promise.reject(this.cause) : this.send(this.handle.unsafe(sql, NO_VALUES, AS_TEXT) as unknown as Query)
  }

  /** pglock sends its own CancelRequest: 4.x's half-closes its socket at once, which PgBouncer 1.18 drops. */
  async cancel(): Promise<CancelOutcome> {
    const query = this.#running
    if (query === undefined) return
    if (cannotCancel(query)) return false
    const backend = backendKeyOf(query)
    const at = this.#cancelEndpoint()
    if (backend !== null && at !== undefined) return sendCancelRequest(at.host, at.port, backend)
    if (!this.lost) await Promise.resolve(query.cancel()).catch(noop)
  }

  release({ destroy }: { readonly destroy: boolean }): void {
    this.#released = true
    this.#unwatch?.()
    if (this.#relay !== undefined) this.#relay.listener = undefined
    if (!this.owned) return
    if (!this.#closed && this.#last !== undefined && (destroy || this.lost)) destroyV4Connection(this.#last)
    if (this.#giveBack) (this.handle as ReservedSql<any>).release()
  }

  /** An owned pin's reaction on `lease.closed` costs a promise reaction and two objects per lock: made only when asked for. */
  watchLoss(): void {
    this.#promptly = true
    const connection = this.#connection
    // a connection that closed stays closed (4.x opens a new one in its place)
    if (this.owned && connection?.closed != null) this.leaseClosed(connection.lease.error ?? connection.closed)
    else this.#watch()
  }

  /** The lease's connection closed: a method, so that a handle's `LeaseWatch` holds no closure per lock. */
  leaseClosed(cause: unknown): void {
    if (this.#released) return
    this.#closed = true
    this.#fail(cause)
  }

  /** A `then` chain rather than `async`: awaiting a postgres.js query (a Promise subclass) costs an extra job. */
  protected send(query: Query): Promise<readonly Row[]> {
    if (this.#transaction !== undefined) keepErrorsOwn(query)
    const stopNaming = this.#watching || leasesReadable === true ? undefined : startNaming()
    this.#running = query
    this.#last = query
    // `then` answers a plain Promise (its species), which `Promise.resolve` hands back as is
    return Promise.resolve(
      query.then(
        (result) => {
          this.#learn(query, result, true)
          this.#settled(query, stopNaming)
          return lastRows(result)
        },
        (error: unknown) => {
          this.#learn(query, error, false)
          if (isConnectionFailure(error)) this.#fail(error)
          this.#settled(query, stopNaming)
          throw error
        },
      ),
    )
  }

  #settled(query: Query, stopNaming: (() => void) | undefined): void {
    this.#watch()
    stopNaming?.()
    if (this.#running === query) this.#running = undefined
  }

  #cancelEndpoint(): Endpoint | undefined {
    const connection = this.#connection
    if (connection !== undefined) {
      const { host, port } = connection
      return typeof host === 'string' && typeof port === 'number' ? { host, port } : this.#endpoint
    }
    const name = this.#name
    return name?.host != null && name.port !== null ? { host: name.host, port: name.port } : this.#endpoint
  }

  #fail(cause: unknown): void {
    if (!this.owned && !this.lost) brokenHandles.set(this.handle, cause)
    handleConnections.delete(this.handle)
    handleNames.delete(this.handle)
    this.report(cause)
  }

  #watch(): void {
    if (this.#watching || this.#released || this.lost) return
    const connection = this.#connection
    if (connection !== undefined) {
      // an owned handle's lease ends with this lock: watched once asked, its relay lets go of the pin at release
      if (this.owned && !this.#promptly) return
      this.#watching = true
      if (this.owned) this.#relay = new LeaseRelay(connection.lease, this)
      else {
        const watch = leaseWatchOf(connection.lease)
        this.#unwatch = () => watch.delete(this)
        watch.add(this)
      }
      return
    }
    const name = this.#name
    if (name === undefined) return
    this.#watching = true
    this.#unwatch = onConnectionClose(name, (cause) => {
      this.#closed = true
      forgetScope(name)
      this.#fail(cause)
    })
  }

  #learn(query: Query, outcome: unknown, settled: boolean): void {
    if (this.#connection !== undefined || this.#name !== undefined) return
    this.#connection = readLease(query, settled)
    if (this.#connection !== undefined) {
      if (!this.owned) handleConnections.set(this.handle, this.#connection)
      return
    }
    this.#name = nameOf(outcome)
    if (this.#name !== undefined && !this.owned) handleNames.set(this.handle, this.#name)
  }
}

/** A pin that runs the bare lock calls as named prepared statements. */
class PreparedV4Pin<Db> extends V4Pin<Db> {
  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    if (this.lost) return Promise.reject(this.cause)
    const query = this.handle(templateOf(statement.text), ...statement.values)
    return this.send(query as unknown as Query)
  }
}

const templates = new Map<string, TemplateStringsArray>()

/**
 * pglock's prepared texts as tagged templates, made once per text: 4.x finds a template's
 * statement by the identity of its strings, where `unsafe()` joins and hashes the whole text on
 * every call. The core's texts use each parameter once, in order ($1, $2, ...).
 */
function templateOf(text: string): TemplateStringsArray {
  let strings = templates.get(text)
  if (strings === undefined) {
    const parts = text.split(/\$\d+/)
    strings = Object.assign(parts, { raw: parts.slice() })
    templates.set(text, strings)
  }
  return strings
}

const NO_VALUES: string[] = []
const AS_TEXT = { prepare: false } as const

/** Pins a 4.x connection; `giveBack` releases an owned `ReservedSql` to its pool. */
export function pinV4<Db>(
  handle: ReservedSql<any> | TransactionSql<any>,
  db: Db,
  owned: boolean,
  giveBack: boolean,
  prepare: boolean,
  endpoint: Endpoint | undefined,
): PostgresJsConnection<Db> {
  return prepare ? new PreparedV4Pin(handle, db, owned, giveBack, endpoint) : new V4Pin(handle, db, owned, giveBack, endpoint)
}
