import { InvalidArgumentError, type LockConnection, type LockExecutor, type PreparedStatement, type Row } from '@pglock/core'
import type { ClientBase, Pool, PoolClient, QueryResult } from 'pg'

/** A node-postgres handle pglock can lock with: a `Pool`, a `PoolClient` or a `Client`. */
export type PgHandle = Pool | ClientBase

/** What `lease.db` is for a given handle: the checked-out `PoolClient` for a pool, else the client itself. */
export type PgLeaseDb<H extends PgHandle> = H extends Pool ? PoolClient : H

type AnyClient = ClientBase & {
  readonly processID?: number | null
  readonly connectionParameters?: unknown
  getTransactionStatus?(): string | null
  release?(destroy?: boolean | Error): void
}

function isPool(db: object): db is Pool {
  return typeof (db as Pool).connect === 'function' && typeof (db as Pool).totalCount === 'number'
}

function isClient(db: object): db is AnyClient {
  return typeof (db as ClientBase).query === 'function' && typeof (db as ClientBase).on === 'function' && 'connectionParameters' in db
}

function lastRows(result: QueryResult | QueryResult[]): readonly Row[] {
  const last = Array.isArray(result) ? result[result.length - 1] : result
  return (last?.rows ?? []) as readonly Row[]
}

/**
 * Cancels the statement a client is running with `pg_cancel_backend`, from a short-lived client
 * of the same configuration. Unlike the protocol's CancelRequest, it returns only once the
 * backend has been signalled, so a late cancel cannot hit a later statement.
 */
async function cancelBackend(client: AnyClient): Promise<void> {
  if (typeof client.processID !== 'number') return
  const Client = client.constructor as new (config: unknown) => ClientBase & { end(): Promise<void> }
  const canceller = new Client(client.connectionParameters)
  canceller.on('error', () => undefined)
  try {
    await canceller.connect()
    await canceller.query('SELECT pg_cancel_backend($1)', [client.processID])
  } finally {
    await canceller.end().catch(() => undefined)
  }
}

/** SQLSTATE of a prepared statement the server does not know (dropped by `DISCARD ALL` or `DEALLOCATE`). */
const INVALID_SQL_STATEMENT_NAME = '26000'

/**
 * Clients on which a named statement failed because the server had dropped it. node-postgres
 * still believes it prepared, so it would fail again: they get unnamed statements from then on.
 */
const unprepared = new WeakSet<ClientBase>()

/** node-postgres' own `Query` class, which its JavaScript `Client` exposes as `Client.Query`. */
interface SubmittableQuery {
  name?: string
  callback?: (error: Error | null, result: QueryResult) => void
}
type QueryClass = new (text: string, values: string[]) => SubmittableQuery

/**
 * Runs a named statement. `client.query({ name, text, values })` copies the config object by
 * property descriptors on every call (about 1 µs); a `Query` built from the text, then named, is
 * submitted as is. Clients without `Client.Query` (pg-native) take the config object.
 */
function runNamed(client: AnyClient, name: string, text: string, values: string[]): Promise<QueryResult> {
  const Query = (client.constructor as { Query?: QueryClass }).Query
  if (typeof Query !== 'function' || !('connection' in client)) return client.query({ name, text, values })
  return new Promise((resolve, reject) => {
    const query = new Query(text, values)
    query.name = name
    query.callback = (error, result) => (error ? reject(error) : resolve(result))
    client.query(query as never)
  })
}

async function execute(client: AnyClient, statement: PreparedStatement): Promise<readonly Row[]> {
  const { name, text } = statement
  const values = statement.values as string[]
  if (!unprepared.has(client)) {
    try {
      return (await runNamed(client, name, text, values)).rows as readonly Row[]
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code !== INVALID_SQL_STATEMENT_NAME) throw error
      unprepared.add(client)
    }
  }
  return (await client.query(text, values)).rows as readonly Row[]
}

function pin<C extends AnyClient>(client: C, owned: boolean): LockConnection<C> {
  const listeners = new Set<(cause: unknown) => void>()
  let lostCause: { cause: unknown } | undefined
  let released = false
  const onError = (error: unknown) => {
    if (lostCause !== undefined) return
    lostCause = { cause: error }
    for (const listener of listeners) listener(error)
  }
  const onEnd = () => onError(new Error('Connection terminated'))
  client.on('error', onError)
  client.on('end', onEnd)
  return {
    db: client,
    owned,
    query: async (sql) => lastRows(await (client.query(sql) as unknown as Promise<QueryResult | QueryResult[]>)),
    execute: (statement) => execute(client, statement),
    cancel: () => cancelBackend(client).catch(() => undefined),
    onLost(listener) {
      if (lostCause !== undefined) {
        listener(lostCause.cause)
        return () => undefined
      }
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    release({ destroy, cause }) {
      if (released) return
      released = true
      listeners.clear()
      if (owned) client.release?.(destroy || lostCause !== undefined ? ((cause ?? lostCause?.cause ?? true) as Error | boolean) : undefined)
      if (lostCause === undefined || !owned) {
        client.removeListener('error', onError)
        client.removeListener('end', onEnd)
      }
    },
  }
}

/**
 * Describes a node-postgres handle to the core: a `Pool` lends each lock a client of its own; a
 * `Client` or `PoolClient` is one connection that pglock never closes.
 */
export function pgExecutor<H extends PgHandle>(db: H): LockExecutor<PgLeaseDb<H>> {
  if (typeof db === 'object' && db !== null) {
    if (isPool(db)) {
      return {
        kind: 'pool',
        scope: db,
        connect: async () => pin((await db.connect()) as AnyClient, true) as LockConnection<PgLeaseDb<H>>,
      }
    }
    if (isClient(db)) {
      return {
        kind: 'connection',
        scope: db,
        connect: async () => pin(db, false) as LockConnection<PgLeaseDb<H>>,
        inTransaction() {
          const status = db.getTransactionStatus?.()
          return status === 'T' || status === 'E' ? true : status === 'I' ? false : undefined
        },
      }
    }
  }
  throw new InvalidArgumentError(
    `db must be a node-postgres Pool, PoolClient or Client, got ${db === null ? 'null' : typeof db === 'object' ? (Object.getPrototypeOf(db)?.constructor?.name ?? 'an object') : typeof db}`,
  )
}
