import { PgLockError } from './errors.js'
import type { CancelOutcome, LockConnection, PreparedStatement, Row } from './executor.js'
import { isConnectionFailure } from './sqlstate.js'

type Listener = (cause: unknown) => void

/** @internal Marks a connection no user code may get a handle on (a multiplexed lock's slot). */
export const LENDS_NO_DB: unique symbol = Symbol('pglock.lendsNoDb')

/** @internal What watches a held lock's connection, without a closure of its own (see {@link Pinned.watch}). */
export interface LossWatcher {
  connectionLost(cause: unknown): void
}

/**
 * @internal Every connection the core pins, wrapped once so that adapters need not keep the same
 * bookkeeping: the loss is heard once and remembered (a listener that comes later is told at
 * once), nothing more is sent on a lost connection, and only the first release counts.
 */
export class Pinned<Db> {
  readonly #raw: LockConnection<Db>
  readonly owned: boolean
  /** Whether user code gets a handle on this connection: a multiplexed lock's shared one lends none. */
  readonly lendsDb: boolean
  #lost = false
  #cause: unknown
  #released = false
  #unsubscribe: (() => void) | undefined
  /** Usually one listener at a time (the lock statement's, then the watch's), so a `Set` only from the second on. */
  #listener: Listener | undefined
  #more: Set<Listener> | undefined
  #watcher: LossWatcher | undefined
  /** whether the driver was asked to hear a loss as it happens (see `LockConnection.watchLoss`) */
  #promptly = false
  /** Set while a lock statement waits: a loss then also cancels the wait on the server (see `takeLock`). */
  cancelOnLoss = false

  constructor(raw: LockConnection<Db>) {
    this.#raw = raw
    this.owned = raw.owned
    this.lendsDb = (raw as { readonly [LENDS_NO_DB]?: true })[LENDS_NO_DB] !== true
    // at once: a driver may treat an error on a connection nobody listens to as unhandled
    this.#unsubscribe = raw.onLost((cause) => this.report(cause))
  }

  /** The connection's handle, read when user code reads `lease.db` (see `LockConnection.db`). */
  get db(): Db {
    return this.#raw.db
  }

  /** The physical connection, where other handles on it queue (see `LockConnection.connectionKey`). */
  get connectionKey(): object | undefined {
    return this.#raw.connectionKey
  }

  get lost(): boolean {
    return this.#lost
  }

  get cause(): unknown {
    return this.#cause
  }

  /** Whether the driver runs prepared statements. */
  get prepares(): boolean {
    return this.#raw.execute !== undefined
  }

  transactionDb(): Db {
    return this.#raw.transactionDb === undefined ? this.db : this.#raw.transactionDb()
  }

  /** Runs SQL pglock wrote; refused once the connection is lost. Callers pass failures to {@link failed}. */
  query(sql: string): Promise<readonly Row[]> {
    if (this.#lost) return Promise.reject(this.#cause)
    return this.#raw.query(sql)
  }

  /** Runs a statement pglock wrote: prepared when it is one, else as text. */
  send(statement: string | PreparedStatement): Promise<readonly Row[]> {
    if (this.#lost) return Promise.reject(this.#cause)
    return typeof statement === 'string'
      ? this.#raw.query(statement)
      : (this.#raw.execute as NonNullable<LockConnection<Db>['execute']>)(statement)
  }

  cancel(): Promise<CancelOutcome> {
    return this.#raw.cancel()
  }

  /** A statement failing because its connection did shows the loss, even before the driver reports it. */
  failed(error: unknown): void {
    if (!this.#lost && !(error instanceof PgLockError) && isConnectionFailure(error)) this.report(error)
  }

  /** Records the loss and tells every listener; only the first report counts. */
  report(cause: unknown): void {
    if (this.#lost) return
    this.#lost = true
    this.#cause = cause
    if (this.cancelOnLoss) {
      this.cancelOnLoss = false
      void this.cancel().catch(noop)
    }
    const listener = this.#listener
    const more = this.#more
    const watcher = this.#watcher
    this.#listener = undefined
    this.#more = undefined
    this.#watcher = undefined
    listener?.(cause)
    if (more !== undefined) for (const other of more) other(cause)
    watcher?.connectionLost(cause)
  }

  /**
   * {@link onLost} for the one held lock on the connection, told at once if the connection was lost.
   * `promptly: false` leaves the driver free to let the next statement find a loss, until
   * {@link hearPromptly}.
   */
  watch(watcher: LossWatcher, promptly = true): void {
    if (this.#lost) {
      watcher.connectionLost(this.#cause)
      return
    }
    this.#watcher = watcher
    if (promptly) this.hearPromptly()
  }

  /** Asks the driver to hear a loss as it happens from now on; one that happened already is reported before this returns. */
  hearPromptly(): void {
    if (this.#promptly || this.#lost || this.#released) return
    this.#promptly = true
    this.#raw.watchLoss?.()
  }

  unwatch(watcher: LossWatcher): void {
    if (this.#watcher === watcher) this.#watcher = undefined
  }

  /** Calls `listener` once when the connection is lost (at once if it was); returns a function that stops listening. */
  onLost(listener: Listener): () => void {
    if (!this.#lost && this.#unsubscribe === undefined && !this.#released)
      this.#unsubscribe = this.#raw.onLost((cause) => this.report(cause))
    this.hearPromptly()
    if (this.#lost) {
      listener(this.#cause)
      return noop
    }
    if (this.#listener === undefined) {
      this.#listener = listener
      return () => {
        if (this.#listener === listener) this.#listener = undefined
      }
    }
    this.#more ??= new Set()
    this.#more.add(listener)
    return () => void this.#more?.delete(listener)
  }

  /**
   * Gives the connection back, or closes it when `destroy` is asked or it was lost. After a loss
   * the core stays subscribed: a dead connection's later errors stay heard, never unhandled.
   */
  release(destroy: boolean, cause?: unknown): Promise<void> {
    if (this.#released) return RELEASED
    this.#released = true
    this.#listener = undefined
    this.#more = undefined
    this.#watcher = undefined
    this.cancelOnLoss = false
    if (!this.#lost) this.#unsubscribe?.()
    const gone = destroy || this.#lost
    try {
      return this.#raw.release(gone ? { destroy: true, cause: cause ?? this.#cause } : KEEP) ?? RELEASED
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** {@link release}, for paths that have a failure of their own to report. */
  releaseQuietly(destroy: boolean, cause?: unknown): Promise<void> {
    return this.release(destroy, cause).catch(noop)
  }
}

const KEEP = { destroy: false } as const
/** @internal What {@link Pinned.release} returns when the driver's release was synchronous: callers need not await it. */
export const RELEASED: Promise<void> = Promise.resolve()
const noop = () => undefined
