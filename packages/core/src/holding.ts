import { type LossWatcher, type Pinned, RELEASED } from './connection.js'
import { describeKey, LockLostError, ReleaseFailedError, UnsupportedError } from './errors.js'
import type { PreparedStatement, Row } from './executor.js'
import { claimConnectionGate, type GateTicket, NO_TICKET } from './gate.js'
import { LazyAbort } from './lazy-abort.js'
import type { LockSpec } from './options.js'
import { pidOf, preparedUnlock, rollbackToSavepointSql, unlockSql } from './sql.js'
import { isConnectionFailure, QUERY_CANCELED, sqlState } from './sqlstate.js'
import type { Framing, Granted } from './take.js'
import { type TransactionHold, untie } from './tx-marks.js'
import { connectionLostError, sessionMovedReason, watchConnection } from './watch.js'

/**
 * @internal A granted lock, as the acquire pipeline hands it over: the connection that holds it,
 * the places it occupies in memory, and how it ends. `Lock` and `withLock` only decide when. It
 * watches its own connection (see {@link watch}), so a lock costs no closures for that.
 */
export class Holding<Db> implements LossWatcher {
  readonly connection: Pinned<Db>
  readonly spec: LockSpec
  readonly framing: Framing
  /** the backend that took the lock, when the lock statement said (session scope) */
  readonly pid: number | undefined
  /** the mark of the caller's transaction the lock lives in, when asked for (see `tx-marks.ts`) */
  readonly mark: string | undefined
  /** the fencing token, when the acquire asked for one */
  readonly fencingToken: bigint | undefined
  readonly ticket: GateTicket
  /** the place in the gate of the connection itself, once taken (see {@link onConnection}) */
  #onConnection: GateTicket | undefined
  /** on a connection pglock owns: the queue key its gate is claimed against when its handle is first handed out */
  readonly #claimAgainst: object | undefined
  /** for a lock in a caller's transaction: that transaction, which ends the lock unseen */
  transaction: TransactionHold | undefined
  /** whether the lock is over for pglock (unlocked, ended with its transaction, or lost) */
  settled = false
  #lost: LazyAbort | undefined
  /** what a loss does once watched: {@link lose} when unset */
  #onLost: ((error: LockLostError) => void) | undefined
  #watching = false
  #stopKeepAlive: (() => void) | undefined
  /** resolves the unlock in flight: a loss meanwhile answers it at once (the driver may never) */
  #unlocked: ((released: boolean | Promise<boolean>) => void) | undefined
  /** resolves the commit or rollback in flight: a loss meanwhile rejects it at once with the loss */
  #finished: ((outcome: undefined | Promise<void>) => void) | undefined

  /**
   * `onConnection`: the place taken in the connection's gate; `undefined` on a connection pglock
   * owns, whose gate is claimed against `claimAgainst` only when its handle is first handed out.
   */
  constructor(
    connection: Pinned<Db>,
    spec: LockSpec,
    framing: Framing,
    granted: Granted,
    ticket: GateTicket,
    onConnection: GateTicket | undefined,
    claimAgainst?: object,
  ) {
    this.connection = connection
    this.spec = spec
    this.framing = framing
    this.pid = pidOf(granted)
    const mark = granted.tx
    this.mark = typeof mark === 'string' ? mark : undefined
    const fence = granted.fence
    this.fencingToken = typeof fence === 'string' ? BigInt(fence) : undefined
    this.ticket = ticket
    this.#onConnection = onConnection
    this.#claimAgainst = claimAgainst
  }

  /** The place in the gate of the connection itself, where other handles on it queue. */
  get onConnection(): GateTicket {
    return this.#onConnection ?? NO_TICKET
  }

  /** Aborted with `LockLostError` once the lock is lost; made when first asked for, which asks for prompt notice of a loss. */
  get lost(): LazyAbort {
    if (this.#lost === undefined) {
      this.#lost = new LazyAbort()
      // a loss that happened already aborts it before it is returned
      if (this.#watching) this.connection.hearPromptly()
    }
    return this.#lost
  }

  /** Whether the lock was lost, without making {@link lost}. */
  get isLost(): boolean {
    return this.#lost?.aborted === true
  }

  /** `lease.db`: the driver's transaction handle where pglock sent `BEGIN` itself, else the connection's handle. */
  get db(): Db {
    // nothing can reach a connection pglock owns before its handle is out: the claim never waits
    if (this.#onConnection === undefined && this.#claimAgainst !== undefined && !this.settled) {
      this.#onConnection = claimConnectionGate(this.connection, this.#claimAgainst, this.spec.token)
    }
    return this.framing.kind === 'begin' ? this.connection.transactionDb() : this.connection.db
  }

  /**
   * Watches the connection until the lock ends; `onLost` decides what a loss does (by default, {@link lose}).
   * `lazily`: nothing shows the loss before the unlock unless someone reads {@link lost}, so the
   * driver need not hear it as it happens until then (see `LockConnection.watchLoss`).
   */
  watch(keepAliveMs: number | undefined, onLost?: (error: LockLostError) => void, lazily = false): void {
    this.#onLost = onLost
    if (keepAliveMs !== undefined) {
      this.#stopKeepAlive = watchConnection(this.connection, keepAliveMs, (error) => this.#heard(error), this.spec.details, this.pid)
      return
    }
    this.#watching = true
    this.connection.watch(this, !lazily || this.#lost !== undefined)
  }

  /** @internal Called by the connection, once, when it is lost while watched. */
  connectionLost(cause: unknown): void {
    if (!this.#watching) return
    this.#watching = false
    this.#heard(connectionLostError(cause, this.spec.details))
  }

  #heard(error: LockLostError): void {
    const onLost = this.#onLost
    if (onLost === undefined) this.lose(error, true)
    else onLost(error)
  }

  stopWatching(): void {
    if (this.#watching) {
      this.#watching = false
      this.connection.unwatch(this)
    }
    this.#stopKeepAlive?.()
  }

  /** Lets go of everything in memory: the watch, the transaction tie, the gates. */
  settle(): void {
    if (this.settled) return
    this.settled = true
    this.stopWatching()
    if (this.transaction !== undefined) untie(this.transaction)
    this.onConnection.leave()
    this.ticket.leave()
  }

  /** The lock is lost: close (or give back) the connection without waiting, settle, and tell the lease. */
  lose(error: LockLostError, destroy: boolean): void {
    if (this.settled) return
    void this.connection.releaseQuietly(destroy, error)
    this.settle()
    this.lost.abort(error)
    this.#unlockDone(false)
    if (this.#finished !== undefined) this.#finishDone(Promise.reject(this.lost.reason))
  }

  /** A transaction lock whose transaction is over: nothing was lost, the connection goes back. */
  async endQuietly(): Promise<void> {
    if (this.settled) return
    this.settle()
    await this.connection.releaseQuietly(false)
  }

  /**
   * Releases a session lock: `true` when Postgres confirmed the unlock, `false` when the lock was
   * lost first (or meanwhile: then at once, without waiting for the driver's answer). An owned
   * connection goes back to its pool only after a confirmed unlock, else it is closed. On a pool
   * the next waiter in memory is let in as the unlock is sent.
   *
   * @throws `ReleaseFailedError` when the unlock failed on a connection the caller owns.
   */
  unlock(): Promise<boolean> {
    if (this.settled) return NOT_RELEASED
    if (this.connection.owned) this.ticket.leave()
    return new Promise<boolean>((resolve) => {
      this.#unlocked = resolve
      this.#sendUnlock(true)
    })
  }

  #sendUnlock(first: boolean): void {
    let sent: Promise<readonly Row[]>
    try {
      sent = this.connection.send(this.#unlockStatement())
    } catch (error) {
      sent = Promise.reject(error)
    }
    sent.then(
      (rows) => this.#unlockDone(this.#unlockAnswered(rows)),
      (error: unknown) => {
        // a cancel meant for the lock wait may land on the unlock: it is sent once more
        if (first && sqlState(error) === QUERY_CANCELED && !this.settled) this.#sendUnlock(false)
        else this.#unlockDone(this.#unlockFailed(error))
      },
    )
  }

  #unlockDone(released: boolean | Promise<boolean>): void {
    const resolve = this.#unlocked
    this.#unlocked = undefined
    if (resolve !== undefined) resolve(released)
    else if (released instanceof Promise) released.catch(noop)
  }

  /** What the unlock's answer means: released, lost, or (rarely) a failure of its own. */
  #unlockAnswered(rows: readonly Row[]): boolean | Promise<boolean> {
    if (this.settled) return false
    let released: boolean
    try {
      released = this.#answer(rows)
    } catch (error) {
      return this.#unlockFailed(error)
    }
    this.stopWatching()
    if (!released) {
      // something ended the lock behind pglock's back (`DISCARD ALL`, an unlock through `lease.db`):
      // the session's state is unknown, so a connection user code could reach is closed, not pooled
      // (a multiplexed one, which it cannot, carries other locks)
      const { spec } = this
      const error = new LockLostError(`lock ${describeKey(spec.key)} was no longer held when released`, spec.details)
      this.lose(error, this.connection.lendsDb)
      return false
    }
    const releasing = this.connection.release(false)
    if (releasing === RELEASED) {
      this.settle()
      return true
    }
    return releasing.then(() => {
      this.settle()
      return true
    })
  }

  async #unlockFailed(error: unknown): Promise<boolean> {
    const { connection, spec } = this
    if (error instanceof SessionMoved) return this.#moved(error)
    connection.failed(error)
    if (this.settled) return false
    if (isConnectionFailure(error)) {
      this.lose(connectionLostError(error, spec.details), true)
      return false
    }
    if (!connection.owned) {
      throw new ReleaseFailedError(`could not release lock ${describeKey(spec.key)}: ${String((error as Error)?.message ?? error)}`, {
        ...spec.details,
        cause: error,
      })
    }
    await connection.release(true, error)
    this.settle()
    return true
  }

  #unlockStatement(): string | PreparedStatement {
    const { connection, spec, pid } = this
    return connection.prepares ? preparedUnlock(spec.id, spec.mode, pid) : unlockSql(spec.id, spec.mode, pid)
  }

  /** Whether the unlock released the lock; throws when it ran on another backend than the lock's. */
  #answer(rows: readonly Row[]): boolean {
    const row = rows[0]
    const now = pidOf(row)
    if (this.pid !== undefined && now !== undefined && now !== this.pid) throw new SessionMoved(this.pid, now)
    return row?.released === true
  }

  /**
   * The unlock ran on another backend than the one holding the lock, so it unlocked nothing: the
   * connection does not keep its session. Reported loudly, never as a release.
   */
  async #moved(moved: SessionMoved): Promise<never> {
    const { spec } = this
    const reason = sessionMovedReason(moved.heldOn, moved.now)
    const unsupported = new UnsupportedError(`could not release session lock ${describeKey(spec.key)}: ${reason}`, spec.details)
    this.stopWatching()
    await this.connection.release(true, unsupported)
    this.settle()
    this.lost.abort(new LockLostError(`lock ${describeKey(spec.key)} was lost: ${reason}`, { ...spec.details, cause: unsupported }))
    throw unsupported
  }

  /**
   * Ends a transaction lock pglock framed: commit (or release the savepoint) or roll back. A
   * connection left in an unknown state by a failure here is closed if pglock owns it. Where the
   * driver ends the transaction, there is nothing to send. Once the lock is lost it rejects with
   * the loss at once, without waiting for the driver's answer.
   */
  finish(commit: boolean): Promise<void> {
    if (this.isLost) return Promise.reject(this.lost.reason)
    const { framing, connection } = this
    const sql =
      framing.kind === 'begin'
        ? commit
          ? 'COMMIT'
          : 'ROLLBACK'
        : framing.kind === 'savepoint'
          ? commit
            ? `RELEASE SAVEPOINT ${framing.name}`
            : rollbackToSavepointSql(framing.name)
          : undefined
    if (sql === undefined) return RELEASED
    return new Promise<void>((resolve) => {
      this.#finished = resolve
      let sent: Promise<unknown>
      try {
        sent = connection.query(sql)
      } catch (error) {
        sent = Promise.reject(error)
      }
      sent.then(
        () => this.#finishDone(undefined),
        (error: unknown) => this.#finishDone(this.#finishFailed(error)),
      )
    })
  }

  #finishDone(outcome: undefined | Promise<void>): void {
    const resolve = this.#finished
    this.#finished = undefined
    if (resolve !== undefined) resolve(outcome)
    else outcome?.catch(noop)
  }

  async #finishFailed(error: unknown): Promise<void> {
    const { connection } = this
    connection.failed(error)
    await connection.release(true, error)
    throw error
  }
}

const noop = () => undefined
const NOT_RELEASED: Promise<boolean> = Promise.resolve(false)

/** Thrown by the unlock when it ran on another backend than the one holding the lock. */
class SessionMoved extends Error {
  constructor(
    readonly heldOn: number,
    readonly now: number,
  ) {
    super(`the connection moved from backend ${heldOn} to backend ${now}`)
  }
}
