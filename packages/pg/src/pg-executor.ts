import { InvalidArgumentError } from '@pglock/core'
import {
  type CancelOutcome,
  type LockConnection,
  type LockExecutor,
  lastRows,
  type PreparedStatement,
  type Row,
  wrongHandle,
} from '@pglock/core/adapter'
import type { ClientBase, Pool, PoolClient } from 'pg'
import { cancelBackend, checkClient, looksLikeClient, neverConnected, submit, unusable } from './pg-privates.js'

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

const isForeign = (error: unknown): boolean => FOREIGN_STATEMENT_STATES.has((error as { code?: string } | null)?.code ?? '')

/**
 * One statement on `client`, resolving to the rows of its last result: one promise, no `then`
 * chain. A named statement the server no longer knows (see {@link FOREIGN_STATEMENT_STATES})
 * runs again unnamed, and the client is unprepared from then on. `lane` hears when it settles.
 */
function run(
  client: AnyClient,
  text: string,
  values: string[] | undefined,
  name: string | undefined,
  lane?: Lane,
): Promise<readonly Row[]> {
  return new Promise((resolve, reject) => {
    try {
      submit(client, text, values, name, (error, result) => {
        if (error && name !== undefined && isForeign(error)) {
          unprepared.add(client)
          return resolve(run(client, text, values, undefined, lane))
        }
        lane?.leave()
        if (error) reject(error)
        else resolve(lastRows(result))
      })
    } catch (error) {
      lane?.leave()
      reject(error)
    }
  })
}

const nameFor = (client: AnyClient, statement: PreparedStatement) => (unprepared.has(client) ? undefined : statement.name)

/**
 * pglock's statements on a client of yours, one after another: handles for several keys on one
 * client would otherwise call `client.query()` while it runs another, which node-postgres 8
 * warns is deprecated (and 9 will refuse). node-postgres ran them in this order anyway. A
 * statement starts at once when none of pglock's is in flight, else after the last one queued.
 */
class Lane {
  readonly #client: AnyClient
  #pending = 0
  #tail: Promise<unknown> | undefined

  constructor(client: AnyClient) {
    this.#client = client
  }

  query(sql: string): Promise<readonly Row[]> {
    return this.#send(sql, undefined, undefined)
  }

  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    return this.#send(statement.text, statement.values as string[], statement)
  }

  #send(text: string, values: string[] | undefined, statement: PreparedStatement | undefined): Promise<readonly Row[]> {
    const client = this.#client
    const tail = this.#tail
    this.#pending += 1
    let next: Promise<readonly Row[]>
    if (tail === undefined) next = run(client, text, values, statement === undefined ? undefined : nameFor(client, statement), this)
    else {
      const start = () => run(client, text, values, statement === undefined ? undefined : nameFor(client, statement), this)
      next = tail.then(start, start)
    }
    // a statement that failed to start has already left
    if (this.#pending > 0) this.#tail = next
    return next
  }

  /** Called as each statement settles. */
  leave(): void {
    this.#pending -= 1
    if (this.#pending === 0) this.#tail = undefined
  }
}

const lanes = new WeakMap<AnyClient, Lane>()

function laneOf(client: AnyClient): Lane {
  let lane = lanes.get(client)
  if (lane === undefined) lanes.set(client, (lane = new Lane(client)))
  return lane
}

/** A pinned client; `lease.db` is the client in every scope, so it offers no `transactionDb`. */
type PinnedClient<C> = Omit<LockConnection<C>, 'transactionDb'>

type Report = (error: unknown) => void

/**
 * The locks pglock holds on each client, heard through one `error` and one `end` listener per
 * client however many there are, so that many locks on one client add no listeners of their own.
 * On a client pglock checked out of a pool the hub stays while the client lives, since the pool
 * lends the same clients again and again; on a client of yours it goes with the last lock.
 */
class Hub {
  readonly #client: AnyClient
  /** Usually one lock at a time, so a `Set` only from the second on. */
  #report: Report | undefined
  #more: Set<Report> | undefined
  kept = false

  constructor(client: AnyClient) {
    this.#client = client
    client.on('error', this.onError)
    client.on('end', this.onEnd)
  }

  readonly onError = (error: unknown): void => {
    const report = this.#report
    const more = this.#more === undefined || this.#more.size === 0 ? undefined : [...this.#more]
    if (report === undefined && more === undefined) {
      // no lock listens: an error nobody else hears stays unhandled, as it would without the hub
      if (this.#client.listenerCount('error') === 1) throw error
      return
    }
    report?.(error)
    if (more !== undefined) for (const each of more) each(error)
  }

  readonly onEnd = (): void => {
    if (this.#report !== undefined || (this.#more !== undefined && this.#more.size > 0)) this.onError(new Error('Connection terminated'))
  }

  add(report: Report): void {
    if (this.#report === undefined) this.#report = report
    else (this.#more ??= new Set()).add(report)
  }

  /** Forgets `report`; true when no lock listens any more. */
  delete(report: Report): boolean {
    if (this.#report === report) this.#report = undefined
    else this.#more?.delete(report)
    return this.#report === undefined && (this.#more === undefined || this.#more.size === 0)
  }

  close(): void {
    this.#client.removeListener('error', this.onError)
    this.#client.removeListener('end', this.onEnd)
  }
}

const hubs = new WeakMap<AnyClient, Hub>()

function listen(client: AnyClient, report: Report, owned: boolean): () => void {
  let hub = hubs.get(client)
  if (hub === undefined) hubs.set(client, (hub = new Hub(client)))
  if (owned) hub.kept = true
  const mine = hub
  mine.add(report)
  return () => {
    if (!mine.delete(report) || mine.kept || hubs.get(client) !== mine) return
    hubs.delete(client)
    mine.close()
  }
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

/** A pinned client: a class, since one is made per lock and a literal of closures costs more. */
class PgConnection<C extends AnyClient> implements PinnedClient<C> {
  // `db` is only the lease's handle: an adapter built on this one (Drizzle) may swap it in place
  db: C
  readonly owned: boolean
  readonly connectionKey: C
  /** Unset here; declared so that an adapter built on this one (Drizzle) sets it without a new shape per lock. */
  transactionDb: (() => C) | undefined = undefined
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
    return this.owned ? run(client, sql, undefined, undefined) : laneOf(client).query(sql)
  }

  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    const client = this.#client
    return this.owned
      ? run(client, statement.text, statement.values as string[], nameFor(client, statement))
      : laneOf(client).execute(statement)
  }

  cancel(): Promise<CancelOutcome> {
    return cancelBackend(this.#client)
  }

  onLost(report: Report): () => void {
    const client = this.#client
    const broken = unusable(client)
    if (broken === undefined) return listen(client, report, this.owned)
    report(broken)
    return () => undefined
  }

  release({ destroy, cause }: { readonly destroy: boolean; readonly cause?: unknown }): void {
    if (this.owned) this.#client.release?.(destroy ? ((cause ?? true) as Error | true) : undefined)
  }
}

/** A pooled client pinned through `pool.connect(callback)`: pg-pool's promise form adds promises of its own. */
function checkOut(pool: Pool): Promise<PinnedClient<AnyClient>> {
  return new Promise((resolve, reject) => {
    pool.connect((error, client) => {
      if (error || client === undefined) return reject(error)
      try {
        resolve(pin(client as AnyClient, true))
      } catch (refused) {
        reject(refused)
      }
    })
  })
}

/** Executors by handle: a handle's kind never changes, and every lock would describe it again. */
const executors = new WeakMap<object, LockExecutor<unknown>>()

/**
 * Describes a node-postgres handle to the core: a `Pool` lends each lock a client of its own; a
 * `Client` or `PoolClient` is one connection that pglock never closes.
 */
export function pgExecutor<H extends PgHandle>(db: H): LockExecutor<PgLeaseDb<H>> {
  if (typeof db !== 'object' || db === null) throw wrongHandle('a node-postgres Pool, PoolClient or Client', db)
  const known = executors.get(db)
  if (known !== undefined) return known as LockExecutor<PgLeaseDb<H>>
  const executor = describe(db)
  executors.set(db, executor)
  return executor as LockExecutor<PgLeaseDb<H>>
}

function describe(db: object): LockExecutor<unknown> {
  if (isPool(db)) {
    return {
      kind: 'pool',
      adapter: 'pg',
      queueKey: db,
      connect: () => checkOut(db),
      // pg-pool sets `ending` in end(), and refuses connect() from then on
      closed: () => (db as { readonly ending?: unknown }).ending === true,
      query: async (sql) => lastRows(await db.query(sql)),
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
      adapter: 'pg',
      queueKey: db,
      connect: async () => pin(db, false),
      query: (sql) => laneOf(db).query(sql),
      inTransaction() {
        const status = db.getTransactionStatus?.()
        return status === 'T' || status === 'E' ? true : status === 'I' ? false : undefined
      },
    }
  }
  throw wrongHandle('a node-postgres Pool, PoolClient or Client', db)
}
