/**
 * Every undocumented node-postgres member @pglock/pg reaches, and nowhere else.
 *
 * - Client state: `_ending` and `_queryable` (a client that can no longer run queries), and
 *   `_connecting` and `_connected` (a client that was never connected).
 * - `processID`, `secretKey` and `connectionParameters`: the backend key data and the server
 *   address of a CancelRequest built by hand.
 * - `Client.Query` and the client's `connection`: a statement submitted with its callback, without
 *   copying a config object or making node-postgres' promise.
 *
 * The members pglock cannot work correctly without are checked by shape when it pins a client,
 * before any lock statement is sent; a node-postgres version lacking one fails with
 * `UnsupportedError` naming node-postgres and its version. The others only speed things up or
 * refuse early, and without them pglock takes the public path.
 */
import { createRequire } from 'node:module'
import { UnsupportedError } from '@pglock/core'
import { type CancelOutcome, sendCancelRequest } from '@pglock/core/adapter'
import type { ClientBase, QueryResult } from 'pg'

let version: string | undefined

/**
 * The installed node-postgres, as `pg 8.23.1` (or `pg (version unknown)` when unreadable).
 *
 * @example
 * ```ts
 * pgName() // 'pg 8.23.1'
 * ```
 */
export function pgName(): string {
  version ??= readVersion()
  return version === '' ? 'pg (version unknown)' : `pg ${version}`
}

function readVersion(): string {
  try {
    // esbuild gives the ESM build a `require` stand-in without `resolve`, so tell the builds apart by `__filename`
    const require = createRequire(typeof __filename === 'string' ? __filename : import.meta.url)
    const manifest = require('pg/package.json') as { version?: unknown }
    return typeof manifest.version === 'string' ? manifest.version : ''
  } catch {
    return ''
  }
}

/**
 * The error for a member this node-postgres lacks.
 *
 * @example
 * ```ts
 * throw unsupported('Client#secretKey', 'cancel a lock wait')
 * ```
 */
export function unsupported(member: string, purpose: string): UnsupportedError {
  return new UnsupportedError(
    `node-postgres (${pgName()}) has no ${member}, which @pglock/pg needs to ${purpose}; ` +
      'it supports pg 8.11 and later 8.x (check for a newer @pglock/pg)',
  )
}

/** The undocumented members of a node-postgres `Client`, each as node-postgres 8.11 to 8.23 set it. */
interface ClientPrivates {
  readonly _ending?: unknown
  readonly _queryable?: unknown
  readonly _connecting?: unknown
  readonly _connected?: unknown
  readonly processID?: unknown
  readonly secretKey?: unknown
  readonly connectionParameters?: unknown
}

function privates(client: ClientBase): ClientPrivates {
  return client as ClientPrivates
}

const isKey = (value: unknown) => value === null || typeof value === 'number'

/**
 * Checks, before any lock statement, the members pglock cannot work correctly without: without
 * the client state it would lock on a dead client, without the key data an abort or a timeout
 * could not stop the wait on the server. Throws `UnsupportedError` when one is missing.
 *
 * @example
 * ```ts
 * checkClient(await pool.connect()) // throws UnsupportedError on a node-postgres without secretKey
 * ```
 */
export function checkClient(client: ClientBase): void {
  const members = privates(client)
  if (typeof members._ending !== 'boolean') throw unsupported('Client#_ending', 'tell a closed client')
  if (typeof members._queryable !== 'boolean') throw unsupported('Client#_queryable', 'tell a client that has failed')
  if (!isKey(members.processID)) throw unsupported('Client#processID', 'cancel a lock wait')
  if (!isKey(members.secretKey)) throw unsupported('Client#secretKey', 'cancel a lock wait')
  if (typeof members.connectionParameters !== 'object' || members.connectionParameters === null) {
    throw unsupported('Client#connectionParameters', 'cancel a lock wait')
  }
}

/**
 * Whether `db` looks like a node-postgres `Client` (or `PoolClient`): its `connectionParameters`
 * is what tells it from other objects with `query` and `on`.
 *
 * @example
 * ```ts
 * looksLikeClient(new pg.Client()) // true
 * ```
 */
export function looksLikeClient(db: object): db is ClientBase {
  return typeof (db as ClientBase).query === 'function' && typeof (db as ClientBase).on === 'function' && 'connectionParameters' in db
}

/**
 * Why a client can no longer run queries, if it cannot: node-postgres keeps that in fields it
 * does not document (`_ending` after `end()`, `_queryable` false after a connection error), and
 * rejects every later query without sending it. A lock on such a client is lost from the start.
 *
 * @example
 * ```ts
 * const broken = unusable(client) // an Error after client.end()
 * ```
 */
export function unusable(client: ClientBase): Error | undefined {
  const members = privates(client)
  if (members._ending === true) return new Error('Client was closed and is not queryable')
  if (members._queryable === false) return new Error('Client has encountered a connection error and is not queryable')
  return undefined
}

/**
 * Whether `client` was never connected, so that node-postgres would hold every query until a
 * `connect()` that may never come.
 *
 * @example
 * ```ts
 * neverConnected(new pg.Client()) // true
 * ```
 */
export function neverConnected(client: ClientBase): boolean {
  const members = privates(client)
  // only an early refusal: without these members the lock waits as node-postgres makes it wait
  return members._connecting === false && members._connected === false && members._ending === false
}

/**
 * Cancels the statement a client is running with the protocol's CancelRequest (its backend key
 * data), which also works through a pooler such as PgBouncer, where `processID` is the pooler's.
 *
 * @example
 * ```ts
 * await cancelBackend(client)
 * ```
 */
export function cancelBackend(client: ClientBase): Promise<CancelOutcome> {
  const { processID, secretKey, connectionParameters } = privates(client)
  const { host = 'localhost', port = 5432 } = (connectionParameters ?? {}) as { host?: string; port?: number }
  // no BackendKeyData (RDS Proxy sends none): no cancel can be sent
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return NO_CANCEL
  return sendCancelRequest(host, port, { pid: processID, secret: secretKey })
}

const NO_CANCEL: Promise<false> = Promise.resolve(false)

/** node-postgres' own `Query` class, which its JavaScript `Client` exposes as `Client.Query`. */
interface SubmittableQuery {
  name?: string
  callback?: QueryCallback
}
type QueryClass = new (text: string, values: string[] | undefined) => SubmittableQuery

/** What node-postgres calls back with: one result, or one per statement of a multi-statement text. */
export type QueryCallback = (error: Error | null | undefined, result: QueryResult | QueryResult[]) => void

/**
 * Sends a statement and calls `callback` with its result, named (a prepared statement) when `name`
 * is given. `client.query({ name, text, values })` copies the config object by property
 * descriptors on every call, and the promise form adds promises of its own: a `Query` built from
 * the text, named and given the callback, is submitted as is.
 *
 * @example
 * ```ts
 * submit(client, 'SELECT pg_try_advisory_lock($1)', ['7'], 'pglock_try', (error, result) => {})
 * ```
 */
export function submit(
  client: ClientBase,
  text: string,
  values: string[] | undefined,
  name: string | undefined,
  callback: QueryCallback,
): void {
  const Query = (client.constructor as { Query?: QueryClass }).Query
  // only an optimisation: clients without `Client.Query` (pg-native) take the config object
  if (typeof Query !== 'function' || !('connection' in client)) {
    client.query((name === undefined ? text : { name, text }) as string, values as string[], callback as never)
    return
  }
  const query = new Query(text, values)
  if (name !== undefined) query.name = name
  query.callback = callback
  client.query(query as never)
}
