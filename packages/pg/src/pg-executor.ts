import { InvalidArgumentError } from '@pglock/core'
import { type LockConnection, type LockExecutor, lastRows, type PreparedStatement, type Row, wrongHandle } from '@pglock/core/adapter'
import type { ClientBase, Pool, PoolClient } from 'pg'
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

// `then` rather than `async`/`await`: fewer promises per statement
function execute(client: AnyClient, statement: PreparedStatement): Promise<readonly Row[]> {
  const { name, text } = statement
  const values = statement.values as string[]
  if (unprepared.has(client)) return client.query(text, values).then(rowsOf)
  return runNamed(client, name, text, values).then(rowsOf, (error: unknown) => {
    if (!FOREIGN_STATEMENT_STATES.has((error as { code?: string } | null)?.code ?? '')) throw error
    unprepared.add(client)
    return client.query(text, values).then(rowsOf)
  })
}

const rowsOf = (result: { rows: unknown[] }): readonly Row[] => result.rows as readonly Row[]

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

function pin<C extends AnyClient>(client: C, owned: boolean): PinnedClient<C> {
  try {
    checkClient(client)
  } catch (error) {
    // the client is sound, only this node-postgres is not one pglock knows: give it back as is
    if (owned) client.release?.()
    throw error
  }
  return new PgConnection(client, owned)
}

const queryRows = (client: AnyClient, sql: string): Promise<readonly Row[]> => client.query(sql).then(lastRows)

/** A pinned client: a class, since one is made per lock and a literal of closures costs more. */
class PgConnection<C extends AnyClient> implements PinnedClient<C> {
  // `db` is only the lease's handle: an adapter built on this one (Drizzle) may swap it in place
  db: C
  readonly owned: boolean
  readonly connectionKey: C
  readonly #client: C

  constructor(client: C, owned: boolean) {
    this.db = client
    this.owned = owned
    this.connectionKey = client
    this.#client = client
  }

  // a client pglock owns runs only its statements, one at a time; on a client of yours they queue in a lane
  query(sql: string): Promise<readonly Row[]> {
    const client = this.#client
    return this.owned ? queryRows(client, sql) : inLane(client, () => queryRows(client, sql))
  }

  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    const client = this.#client
    return this.owned ? execute(client, statement) : inLane(client, () => execute(client, statement))
  }

  cancel(): Promise<void> {
    return cancelBackend(this.#client)
  }

  onLost(report: Report): () => void {
    const client = this.#client
    const broken = unusable(client)
    if (broken === undefined) return listen(client, report)
    report(broken)
    return () => undefined
  }

  release({ destroy, cause }: { readonly destroy: boolean; readonly cause?: unknown }): void {
    if (this.owned) this.#client.release?.(destroy ? ((cause ?? true) as Error | true) : undefined)
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
        queueKey: db,
        connect: () => db.connect().then((client) => pin(client as AnyClient, true) as LockConnection<PgLeaseDb<H>>),
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
  throw wrongHandle('a node-postgres Pool, PoolClient or Client', db)
}
