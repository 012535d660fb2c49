import { isConnectionFailure, lastRows, type PreparedStatement, type Row, trackLoss } from '@pglock/core/adapter'
import type { ReservedSql, TransactionSql } from 'postgres'
import { sendCancelRequest } from './cancel-request.js'
import { brokenHandles, isTransactionSql } from './handles.js'
import { type ConnectionName, nameOf, onConnectionClose, startNaming } from './pool-events.js'
import type { PostgresJsConnection } from './postgres-js-executor.js'
import { backendKeyOf, type DriverQuery, destroyV4Connection, keepErrorsOwn } from './privates.js'

type Query = DriverQuery & PromiseLike<readonly unknown[]>

/**
 * The connection each handle pglock was given runs on: a `ReservedSql`'s, or a `TransactionSql`'s
 * (a transaction and its savepoints share one).
 */
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

/**
 * One object per connection, which every `TransactionSql` on it gives as its scope. postgres.js 4.x
 * names a connection only by a number, and the core needs an object.
 */
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

/**
 * Names the connection a handle pglock was given runs on, unless pglock knows it, by sending an
 * empty statement through it with query tracing on: one round trip, once per handle.
 */
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

/**
 * `pinPostgresJs` for postgres.js 4.x, through its public API: the connection's `close` on the
 * `postgres:pool` channel reports the loss, `query.cancel()` cancels. Its connection is named by
 * pglock's first statement on it, traced on `postgres:query`.
 */
export function pinV4<Db>(
  handle: ReservedSql<any> | TransactionSql<any>,
  db: Db,
  options: {
    readonly owned: boolean
    readonly giveBack?: (() => void) | undefined
    readonly prepare: boolean
    readonly endpoint?: Endpoint | undefined
  },
): PostgresJsConnection<Db> {
  const { owned, giveBack, prepare, endpoint } = options
  const transaction = isTransactionSql(handle) ? handle : undefined
  const loss = trackLoss()
  let name = handleNames.get(handle)
  let unwatch: (() => void) | undefined
  let running: Query | undefined
  let last: Query | undefined
  let released = false
  let closed = false
  const fail = (cause: unknown) => {
    if (!owned && !loss.lost) brokenHandles.set(handle, cause)
    handleNames.delete(handle)
    loss.report(cause)
  }
  const watch = () => {
    if (name === undefined || unwatch !== undefined || released || loss.lost) return
    const watched = name
    unwatch = onConnectionClose(watched, (cause) => {
      closed = true
      forgetScope(watched)
      fail(cause)
    })
  }
  const learn = (outcome: unknown) => {
    if (name !== undefined) return
    name = nameOf(outcome)
    if (name !== undefined && !owned) handleNames.set(handle, name)
  }
  if (brokenHandles.has(handle)) loss.report(brokenHandles.get(handle))
  watch()
  const send = async (sql: string, values: readonly (string | null)[], prepared: boolean): Promise<readonly Row[]> => {
    if (loss.lost) throw loss.cause
    const query = handle.unsafe(sql, values as string[], { prepare: prepared }) as unknown as Query
    if (transaction !== undefined) keepErrorsOwn(query)
    const stopNaming = unwatch === undefined ? startNaming() : undefined
    running = query
    last = query
    try {
      const result = await query
      learn(result)
      return lastRows(result)
    } catch (error) {
      learn(error)
      if (isConnectionFailure(error)) fail(error)
      throw error
    } finally {
      watch()
      stopNaming?.()
      if (running === query) running = undefined
    }
  }
  return {
    db,
    owned,
    get lost() {
      return loss.lost
    },
    get connectionKey() {
      if (transaction === undefined) return handle
      return name === undefined ? undefined : scopeOf(name)
    },
    query: (sql) => send(sql, [], false),
    ...(prepare && transaction === undefined && { execute: ({ text, values }: PreparedStatement) => send(text, values, true) }),
    /**
     * A statement postgres.js has not yet placed on the connection is withdrawn with
     * `query.cancel()`, so it is never sent. One it has placed gets a CancelRequest that pglock
     * sends itself and that resolves once the server has closed it: postgres.js 4's own request
     * half-closes its socket at once, which PgBouncer 1.18 drops (and can crash on).
     */
    async cancel() {
      const query = running
      if (query === undefined) return
      const backend = backendKeyOf(query)
      const at = name?.host != null && name.port !== null ? { host: name.host, port: name.port } : endpoint
      if (backend !== null && at !== undefined) return sendCancelRequest(at.host, at.port, backend)
      if (!loss.lost) await Promise.resolve(query.cancel()).catch(() => undefined)
    },
    onLost: loss.onLost,
    release({ destroy }) {
      released = true
      unwatch?.()
      if (!owned) return
      if (!closed && last !== undefined && (destroy || loss.lost)) destroyV4Connection(last)
      giveBack?.()
    },
  }
}
