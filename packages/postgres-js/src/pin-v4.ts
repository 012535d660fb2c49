import { isConnectionFailure, lastRows, type PreparedStatement, type Row, sendCancelRequest } from '@pglock/core/adapter'
import type { ReservedSql, TransactionSql } from 'postgres'
import { brokenHandles, isTransactionSql } from './handles.js'
import { PinLoss } from './pin-loss.js'
import { type ConnectionName, nameOf, onConnectionClose, startNaming } from './pool-events.js'
import type { PostgresJsConnection } from './postgres-js-executor.js'
import { backendKeyOf, type DriverQuery, destroyV4Connection, keepErrorsOwn } from './privates.js'

type Query = DriverQuery & PromiseLike<readonly unknown[]>

/** The connection each handle pglock was given runs on (a transaction and its savepoints share one). */
const handleNames = new WeakMap<ReservedSql<any> | TransactionSql<any>, ConnectionName>()

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

/** Names a handle's connection with a traced empty statement: one round trip, once per handle. */
export async function nameHandleV4(handle: ReservedSql<any> | TransactionSql<any>): Promise<void> {
  if (handleNames.has(handle) || brokenHandles.has(handle)) return
  const stop = startNaming()
  try {
    const query = handle.unsafe(';') as unknown as Query
    if (isTransactionSql(handle)) keepErrorsOwn(query)
    const name = nameOf(await query.then(undefined, (error: unknown) => error))
    if (name !== undefined) handleNames.set(handle, name)
  } finally {
    stop()
  }
}

const noop = (): void => undefined

/** `pinPostgresJs` for 4.x, on its public `diagnostics_channel`s; a class, as one is built per lock. */
class V4Pin<Db> extends PinLoss implements PostgresJsConnection<Db> {
  readonly db: Db
  readonly owned: boolean
  readonly #handle: ReservedSql<any> | TransactionSql<any>
  readonly #transaction: TransactionSql<any> | undefined
  readonly #giveBack: boolean
  readonly #endpoint: Endpoint | undefined
  #name: ConnectionName | undefined
  #unwatch: (() => void) | undefined
  #running: Query | undefined
  #last: Query | undefined
  #released = false
  #closed = false

  constructor(handle: ReservedSql<any> | TransactionSql<any>, db: Db, owned: boolean, giveBack: boolean, endpoint: Endpoint | undefined) {
    super()
    this.db = db
    this.owned = owned
    this.#handle = handle
    this.#transaction = isTransactionSql(handle) ? handle : undefined
    this.#giveBack = giveBack
    this.#endpoint = endpoint
    this.#name = handleNames.get(handle)
    if (brokenHandles.has(handle)) this.report(brokenHandles.get(handle))
    this.#watch()
  }

  get connectionKey(): object | undefined {
    if (this.#transaction === undefined) return this.#handle
    return this.#name === undefined ? undefined : scopeOf(this.#name)
  }

  query(sql: string): Promise<readonly Row[]> {
    return this.send(sql, NO_VALUES, false)
  }

  /** pglock sends its own CancelRequest: 4.x's half-closes its socket at once, which PgBouncer 1.18 drops. */
  async cancel(): Promise<void> {
    const query = this.#running
    if (query === undefined) return
    const backend = backendKeyOf(query)
    const name = this.#name
    const at = name?.host != null && name.port !== null ? { host: name.host, port: name.port } : this.#endpoint
    if (backend !== null && at !== undefined) return sendCancelRequest(at.host, at.port, backend)
    if (!this.lost) await Promise.resolve(query.cancel()).catch(noop)
  }

  release({ destroy }: { readonly destroy: boolean }): void {
    this.#released = true
    this.#unwatch?.()
    if (!this.owned) return
    if (!this.#closed && this.#last !== undefined && (destroy || this.lost)) destroyV4Connection(this.#last)
    if (this.#giveBack) (this.#handle as ReservedSql<any>).release()
  }

  protected async send(sql: string, values: readonly (string | null)[], prepared: boolean): Promise<readonly Row[]> {
    if (this.lost) throw this.cause
    const query = this.#handle.unsafe(sql, values as string[], prepared ? PREPARED : AS_TEXT) as unknown as Query
    if (this.#transaction !== undefined) keepErrorsOwn(query)
    const stopNaming = this.#unwatch === undefined ? startNaming() : undefined
    this.#running = query
    this.#last = query
    try {
      const result = await query
      this.#learn(result)
      return lastRows(result)
    } catch (error) {
      this.#learn(error)
      if (isConnectionFailure(error)) this.#fail(error)
      throw error
    } finally {
      this.#watch()
      stopNaming?.()
      if (this.#running === query) this.#running = undefined
    }
  }

  #fail(cause: unknown): void {
    if (!this.owned && !this.lost) brokenHandles.set(this.#handle, cause)
    handleNames.delete(this.#handle)
    this.report(cause)
  }

  #watch(): void {
    const name = this.#name
    if (name === undefined || this.#unwatch !== undefined || this.#released || this.lost) return
    this.#unwatch = onConnectionClose(name, (cause) => {
      this.#closed = true
      forgetScope(name)
      this.#fail(cause)
    })
  }

  #learn(outcome: unknown): void {
    if (this.#name !== undefined) return
    this.#name = nameOf(outcome)
    if (this.#name !== undefined && !this.owned) handleNames.set(this.#handle, this.#name)
  }
}

/** A pin that runs the bare session lock calls as named prepared statements. */
class PreparedV4Pin<Db> extends V4Pin<Db> {
  execute({ text, values }: PreparedStatement): Promise<readonly Row[]> {
    return this.send(text, values, true)
  }
}

const NO_VALUES: readonly string[] = []
const AS_TEXT = { prepare: false }
const PREPARED = { prepare: true }

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
