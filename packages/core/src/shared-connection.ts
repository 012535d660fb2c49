import { LENDS_NO_DB, Pinned } from './connection.js'
import type { CancelOutcome, LockConnection, PreparedStatement, Row } from './executor.js'
import { PROBE_SQL, pidOf } from './sql.js'

type Statement = string | PreparedStatement
type Listener = (cause: unknown) => void

/** One statement queued on a shared connection. */
interface Queued {
  readonly statement: Statement
  readonly resolve: (rows: readonly Row[]) => void
  readonly reject: (error: unknown) => void
}

/** What a shared connection tells the multiplexer that owns it. */
export interface SharedConnectionOwner {
  /** The connection holds nothing and runs nothing any more: forget it (it is given back). */
  retired(connection: SharedConnection): void
}

/**
 * @internal One pooled connection that carries many session locks (see `multiplex.ts`). It runs
 * pglock's statements one at a time, in the order they were sent (node-postgres refuses to
 * overlap them on one client, and the order is what makes an unlock land before the next try of
 * its key); it fans a loss out to every lock on it and closes the connection at once; it gives the
 * connection back to its pool when it carries no lock and runs nothing.
 *
 * A connection is *private* while a lock waits on it with a blocking statement: nothing else is
 * sent there, and only then may a wait be cancelled on it. Once granted it is *published*: it
 * joins the multiplexer's set and carries later locks, which only ever try without waiting.
 */
export class SharedConnection {
  readonly #owner: SharedConnectionOwner
  readonly #keepAliveMs: number | undefined
  #pinned: Pinned<unknown> | undefined
  /** the check-out in flight, for a connection opened to be shared: statements queue until it lands */
  #opening: Promise<void> | undefined
  #published: boolean
  /** how many locks of each id (gate token) it carries, held or being taken: Postgres would let one session re-enter */
  readonly #tokens = new Map<string, number>()
  /** the locks on it, held or being taken */
  slots = 0
  /** the locks being tried on it now: with the statements queued, how far behind it runs */
  trying = 0
  #queue: Queued[] = []
  #running: Queued | undefined
  #listeners = new Set<Listener>()
  #lost = false
  #cause: unknown
  #retired = false
  #timer: ReturnType<typeof setTimeout> | undefined
  /** the backend that took its first lock: a probe answered elsewhere means the session moved */
  #pid: number | undefined

  private constructor(owner: SharedConnectionOwner, keepAliveMs: number | undefined, published: boolean) {
    this.#owner = owner
    this.#keepAliveMs = keepAliveMs
    this.#published = published
  }

  /** A connection checked out for one lock that must wait: private until its lock is granted. */
  static forWaiter(owner: SharedConnectionOwner, keepAliveMs: number | undefined, pinned: Pinned<unknown>): SharedConnection {
    const connection = new SharedConnection(owner, keepAliveMs, false)
    connection.#arrived(pinned, false)
    return connection
  }

  /**
   * A connection opened to be shared: published at once, so that acquires made while it connects
   * share it rather than each opening one. `connect` is the executor's, not bounded by any one
   * acquire's deadline (each acquire bounds its own wait in {@link ready}).
   */
  static open(
    owner: SharedConnectionOwner,
    keepAliveMs: number | undefined,
    connect: () => Promise<LockConnection<unknown>>,
  ): SharedConnection {
    const connection = new SharedConnection(owner, keepAliveMs, true)
    connection.#opening = connect().then(
      (raw) => {
        connection.#opening = undefined
        connection.#arrived(new Pinned(raw), true)
      },
      (error: unknown) => {
        connection.#opening = undefined
        connection.#lose(error)
      },
    )
    return connection
  }

  /** The connection is checked out; an opened one that every acquire gave up on meanwhile goes straight back. */
  #arrived(pinned: Pinned<unknown>, opened: boolean): void {
    this.#pinned = pinned
    if (this.#lost) {
      void pinned.releaseQuietly(true, this.#cause)
      return
    }
    pinned.onLost((cause) => this.#lose(cause))
    if (this.#published) this.#startKeepAlive()
    this.#pump()
    if (opened) this.#retireIfIdle()
  }

  /** How many statements would run before a new one: a busy connection is slow to answer a try. */
  get backlog(): number {
    return this.trying + this.#queue.length
  }

  /** Resolves once the connection is checked out (at once for most); rejects if that failed. */
  get ready(): Promise<void> | undefined {
    if (this.#lost) return Promise.reject(this.#cause)
    return this.#opening
  }

  get lost(): boolean {
    return this.#lost
  }

  get published(): boolean {
    return this.#published
  }

  /**
   * Whether the connection may take another lock of `token`: open, not full, and not carrying it,
   * unless both are shared. The pool's gate never lets an exclusive lock of an id in while another
   * lock of it is held in the process, so a carried id is carried in one mode, and shared holds
   * of one session stack in Postgres (each unlock ends one).
   */
  accepts(token: string, max: number, shared: boolean): boolean {
    return !this.#lost && !this.#retired && this.slots < max && (shared || !this.#tokens.has(token))
  }

  /** A lock's own view of the connection (its `pinned`: wrapped by the core as every connection is). */
  attach(token: string): Slot {
    this.slots += 1
    this.#tokens.set(token, (this.#tokens.get(token) ?? 0) + 1)
    return new Slot(this, token)
  }

  /** @internal A lock of `token` no longer counts: its unlock is sent, ahead of any later statement. */
  forget(token: string): void {
    const count = this.#tokens.get(token) ?? 0
    if (count <= 1) this.#tokens.delete(token)
    else this.#tokens.set(token, count - 1)
  }

  /** The connection's lock, waited for while private, was granted: it now carries later locks. */
  publish(pid: number | undefined): void {
    this.#pid ??= pid
    if (this.#published || this.#lost) return
    this.#published = true
    this.#startKeepAlive()
  }

  /** @internal Called by a slot when its lock is done with the connection. */
  detach(destroy: boolean, cause: unknown): void {
    this.slots -= 1
    if (destroy && !this.#lost) {
      // the connection's state is unknown: closed, and every other lock on it is lost with it
      this.#lose(cause ?? new Error('pglock closed a shared connection whose state was unknown'))
      return
    }
    this.#retireIfIdle()
  }

  /** Runs a statement after those sent before it; rejects at once if the connection is lost meanwhile. */
  send(statement: Statement): Promise<readonly Row[]> {
    if (this.#lost) return Promise.reject(this.#cause)
    return new Promise<readonly Row[]>((resolve, reject) => {
      this.#queue.push({ statement, resolve, reject })
      if (this.#running === undefined) this.#pump()
    })
  }

  #pump(): void {
    const pinned = this.#pinned
    if (this.#running !== undefined || pinned === undefined || this.#lost) return
    const next = this.#queue.shift()
    if (next === undefined) return
    this.#running = next
    let sent: Promise<readonly Row[]>
    try {
      const { statement } = next
      sent = pinned.send(typeof statement === 'string' || pinned.prepares ? statement : inline(statement))
    } catch (error) {
      sent = Promise.reject(error)
    }
    sent.then(
      (rows) => this.#settled(next, rows, undefined, false),
      (error: unknown) => this.#settled(next, undefined, error, true),
    )
  }

  #settled(entry: Queued, rows: readonly Row[] | undefined, error: unknown, failed: boolean): void {
    // after a loss the entry was already rejected
    if (this.#running !== entry) return
    this.#running = undefined
    if (failed) {
      this.#pinned?.failed(error)
      entry.reject(error)
    } else entry.resolve(rows as readonly Row[])
    this.#pump()
    this.#retireIfIdle()
  }

  /**
   * Cancels the statement running now, only on a private connection: a shared one runs only
   * statements that never wait. `false` when no cancel could be sent (the lock then closes the
   * private connection to end its wait).
   */
  cancel(): Promise<CancelOutcome> {
    const pinned = this.#pinned
    if (this.#published || pinned === undefined) return DONE
    return pinned.cancel()
  }

  /** Listens for the loss of the connection (told at once if it was lost); returns an unsubscribe. */
  onLost(listener: Listener): () => void {
    if (this.#lost) {
      listener(this.#cause)
      return noop
    }
    this.#listeners.add(listener)
    return () => void this.#listeners.delete(listener)
  }

  /** The connection failed, or a probe found it dead: close it and tell every lock on it. */
  #lose(cause: unknown): void {
    if (this.#lost) return
    this.#lost = true
    this.#cause = cause
    this.#stopKeepAlive()
    this.#retire()
    const running = this.#running
    const queued = this.#queue
    this.#running = undefined
    this.#queue = []
    const listeners = [...this.#listeners]
    this.#listeners.clear()
    // the locks first: a wait on a private connection is cancelled on the server before it closes
    for (const listener of listeners) listener(cause)
    running?.reject(cause)
    for (const entry of queued) entry.reject(cause)
    void this.#pinned?.releaseQuietly(true, cause)
  }

  #retireIfIdle(): void {
    if (this.slots > 0 || this.#running !== undefined || this.#queue.length > 0 || this.#opening !== undefined || this.#retired) return
    this.#retire()
    this.#stopKeepAlive()
    if (!this.#lost) void this.#pinned?.releaseQuietly(false)
  }

  #retire(): void {
    if (this.#retired) return
    this.#retired = true
    this.#owner.retired(this)
  }

  /** One probe loop per connection, however many locks it carries (see `MultiplexOptions.keepAliveMs`). */
  #startKeepAlive(): void {
    const keepAliveMs = this.#keepAliveMs
    if (keepAliveMs === undefined || this.#timer !== undefined || this.#lost) return
    const probe = () => {
      this.#timer = undefined
      if (this.#lost || this.#retired) return
      const overdue = setTimeout(() => this.#lose(new Error(`the connection did not answer a probe within ${keepAliveMs} ms`)), keepAliveMs)
      this.send(PROBE_SQL).then(
        (rows) => {
          clearTimeout(overdue)
          const now = pidOf(rows[0])
          const pid = this.#pid
          if (pid !== undefined && now !== undefined && now !== pid) {
            this.#lose(new Error(`the connection moved from backend ${pid} to backend ${now}, so its session locks are gone`))
            return
          }
          if (!this.#lost && !this.#retired) this.#timer = setTimeout(probe, keepAliveMs)
        },
        (error: unknown) => {
          clearTimeout(overdue)
          this.#lose(new Error(`a keep-alive probe failed (${String((error as Error)?.message ?? error)})`, { cause: error }))
        },
      )
    }
    this.#timer = setTimeout(probe, keepAliveMs)
  }

  #stopKeepAlive(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

/**
 * @internal One lock's view of a {@link SharedConnection}, as a {@link LockConnection} with no `db`: the
 * core's pipeline (lock statement, undo, unlock, loss) runs on it unchanged, and no user code
 * ever gets a handle on the shared connection.
 */
export class Slot implements LockConnection<undefined> {
  readonly db = undefined
  readonly [LENDS_NO_DB] = true
  readonly owned = true
  /** the slot as the core's pipeline sees every connection */
  readonly pinned: Pinned<undefined>
  readonly #shared: SharedConnection
  readonly #token: string
  #counted = true
  #detached = false

  constructor(shared: SharedConnection, token: string) {
    this.#shared = shared
    this.#token = token
    this.pinned = new Pinned(this)
  }

  /** The lock no longer counts as carried (see {@link SharedConnection.forget}); once. */
  forget(): void {
    if (!this.#counted) return
    this.#counted = false
    this.#shared.forget(this.#token)
  }

  /** Prepared where the connection prepares (it may still be connecting: known only when sent), else inlined. */
  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    return this.#shared.send(statement)
  }

  query(sql: string): Promise<readonly Row[]> {
    return this.#shared.send(sql)
  }

  cancel(): Promise<CancelOutcome> {
    return this.#shared.cancel()
  }

  onLost(listener: Listener): () => void {
    return this.#shared.onLost(listener)
  }

  release({ destroy, cause }: { readonly destroy: boolean; readonly cause?: unknown }): void {
    if (this.#detached) return
    this.#detached = true
    this.forget()
    this.#shared.detach(destroy, cause)
  }
}

/** A prepared lock call as text, for a driver that does not prepare: its values are pglock's own integers (or null). */
function inline(statement: PreparedStatement): string {
  return statement.text.replace(/\$(\d+)/g, (_, n: string) => {
    const value = statement.values[Number(n) - 1]
    return value === null || value === undefined ? 'NULL' : `'${value}'`
  })
}

const noop = () => undefined
const DONE: Promise<CancelOutcome> = Promise.resolve()
