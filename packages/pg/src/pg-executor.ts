import { InvalidArgumentError, type LockConnection, type LockExecutor, type PreparedStatement, type Row, trackLoss } from '@pglock/core'
import type { ClientBase, Pool, PoolClient, QueryResult } from 'pg'
import { cancelBackend, checkClient, looksLikeClient, neverConnected, runNamed, unusable } from './pg-privates.js'

/** A node-postgres handle pglock can lock with: a `Pool`, a `PoolClient` or a `Client`. */
export type PgHandle = Pool | ClientBase

/** What `lease.db` is for a given handle: the checked-out `PoolClient` for a pool, else the client itself. */
export type PgLeaseDb<H extends PgHandle> = H extends Pool ? PoolClient : H

type AnyClient = ClientBase & {
  getTransactionStatus?(): string | null
  release?(destroy?: boolean | Error): void
  end?(): Promise<void>
}

function isPool(db: object): db is Pool {
  return typeof (db as Pool).connect === 'function' && typeof (db as Pool).totalCount === 'number'
}

function isClient(db: object): db is AnyClient {
  return looksLikeClient(db)
}

function lastRows(result: QueryResult | QueryResult[]): readonly Row[] {
  const last = Array.isArray(result) ? result[result.length - 1] : result
  return (last?.rows ?? []) as readonly Row[]
}

/**
 * SQLSTATEs that say the server's prepared statements are not this client's own: one it does not
 * know (dropped by `DISCARD ALL` or `DEALLOCATE`), or one that already exists (another client
 * prepared it on the same server connection, as behind a transaction-pooling PgBouncer). Either
 * way the client falls back to unnamed statements for good.
 */
const FOREIGN_STATEMENT_STATES = new Set(['26000', '42P05'])

/**
 * Clients on which a named statement failed because the server had dropped it. node-postgres
 * still believes it prepared, so it would fail again: they get unnamed statements from then on.
 */
const unprepared = new WeakSet<ClientBase>()

async function execute(client: AnyClient, statement: PreparedStatement): Promise<readonly Row[]> {
  const { name, text } = statement
  const values = statement.values as string[]
  if (!unprepared.has(client)) {
    try {
      return (await runNamed(client, name, text, values)).rows as readonly Row[]
    } catch (error) {
      if (!FOREIGN_STATEMENT_STATES.has((error as { code?: string } | null)?.code ?? '')) throw error
      unprepared.add(client)
    }
  }
  return (await client.query(text, values)).rows as readonly Row[]
}

/** How an owned client leaves pglock: with no cause it is given back, with one it is closed. */
type Hand = (cause: Error | true | undefined) => void

/** A pinned client; `lease.db` is the client in every scope, so it offers no `transactionDb`. */
type PinnedClient<C> = Omit<LockConnection<C>, 'transactionDb'>

type Report = (error: unknown) => void

/**
 * The locks pglock holds on each client, heard through one `error` and one `end` listener per
 * client however many there are, so that many locks on one client add no listeners of their own.
 */
interface Hub {
  readonly reports: Set<Report>
  readonly onError: Report
  readonly onEnd: () => void
}

const hubs = new WeakMap<AnyClient, Hub>()

function listen(client: AnyClient, report: Report): () => void {
  let hub = hubs.get(client)
  if (hub === undefined) {
    const reports = new Set<Report>()
    const onError: Report = (error) => {
      for (const each of [...reports]) each(error)
    }
    hub = { reports, onError, onEnd: () => onError(new Error('Connection terminated')) }
    hubs.set(client, hub)
    client.on('error', hub.onError)
    client.on('end', hub.onEnd)
  }
  const mine = hub
  mine.reports.add(report)
  return () => {
    mine.reports.delete(report)
    if (mine.reports.size > 0 || hubs.get(client) !== mine) return
    hubs.delete(client)
    client.removeListener('error', mine.onError)
    client.removeListener('end', mine.onEnd)
  }
}

/**
 * pglock's statements on a client of yours, one after another: handles for several keys on one
 * client would otherwise call `client.query()` while it runs another, which node-postgres 8
 * warns is deprecated (and 9 will refuse). node-postgres ran them in this order anyway.
 */
const lanes = new WeakMap<AnyClient, Promise<unknown>>()

function inLane<T>(client: AnyClient, run: () => Promise<T>): Promise<T> {
  const next = (lanes.get(client) ?? Promise.resolve()).then(run, run)
  lanes.set(
    client,
    next.catch(() => undefined),
  )
  return next
}

function pin<C extends AnyClient>(client: C, owned: boolean, hand: Hand = (cause) => client.release?.(cause)): PinnedClient<C> {
  try {
    checkClient(client)
  } catch (error) {
    // the client is sound, only this node-postgres is not one pglock knows: give it back as is
    if (owned) hand(undefined)
    throw error
  }
  const loss = trackLoss()
  const broken = unusable(client)
  if (broken !== undefined) loss.report(broken)
  let released = false
  const stop = listen(client, (error) => loss.report(error))
  const query = async (sql: string) => lastRows(await (client.query(sql) as unknown as Promise<QueryResult | QueryResult[]>))
  return {
    db: client,
    owned,
    connectionKey: client,
    // a client pglock owns runs only its statements, one at a time
    query: owned ? query : (sql) => inLane(client, () => query(sql)),
    execute: owned ? (statement) => execute(client, statement) : (statement) => inLane(client, () => execute(client, statement)),
    cancel: () => cancelBackend(client),
    onLost: loss.onLost,
    release({ destroy, cause }) {
      if (released) return
      released = true
      loss.clear()
      if (owned) hand(destroy || loss.lost ? ((cause ?? loss.cause ?? true) as Error | true) : undefined)
      // a lost client's later errors stay heard (and swallowed): nobody else listens on it
      if (!loss.lost) stop()
    },
  }
}

/**
 * Runs `body` in a transaction that `begin` opens on a client checked out of a node-postgres
 * pool (by an ORM on top of it: a Drizzle or Kysely transaction), on that client pinned for the
 * lock, with `lease.db` set to what `begin` passes as `db`. pglock opened the transaction, so it
 * may close the client: a lock lost to a keep-alive probe ends it, which ends the transaction
 * and its lock on the server, and fails the statement the ORM's rollback would otherwise wait on
 * forever. The ORM still gives the client back; the pool then drops it. Until then an error on
 * the client is pglock's to absorb: a pool does not listen on a client it lent out, and Node
 * would throw it.
 *
 * @example
 * ```ts
 * const executor: LockExecutor<NodePgTransaction> = {
 *   kind: 'pool',
 *   queueKey: pool,
 *   transaction: (body) => runInPgTransaction((callback) => db.transaction((tx) => callback(tx._.session.client, tx)), body),
 * }
 * ```
 */
export function runInPgTransaction<Db, T>(
  begin: (callback: (client: ClientBase, db: Db) => Promise<T>) => Promise<unknown>,
  body: (connection: LockConnection<Db>) => Promise<T>,
): Promise<T> {
  let opened: AnyClient | undefined
  const ignore = () => undefined
  const ended = begin(async (client, db) => {
    opened = client as AnyClient
    opened.on('error', ignore)
    const end: Hand = (cause) => cause !== undefined && void opened?.end?.().catch(() => undefined)
    const connection = { ...pin(opened, true, end), db }
    try {
      return await body(connection)
    } finally {
      await connection.release({ destroy: false })
    }
  })
  return ended.finally(() => opened?.removeListener('error', ignore)) as Promise<T>
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
        queueKey: db,
        connect: async () => pin((await db.connect()) as AnyClient, true) as LockConnection<PgLeaseDb<H>>,
      }
    }
    if (isClient(db)) {
      if (neverConnected(db)) {
        throw new InvalidArgumentError(
          'db is a node-postgres Client that was never connected: call client.connect() first (node-postgres would hold every query until then)',
        )
      }
      return {
        kind: 'connection',
        queueKey: db,
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
