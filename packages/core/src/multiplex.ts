import { enter, giveUp } from './acquire.js'
import { checkOut, checkoutDeadline } from './checkout.js'
import { Pinned } from './connection.js'
import { describeValue, InvalidArgumentError, UnsupportedError } from './errors.js'
import type { LockExecutor } from './executor.js'
import { type GateTicket, NO_TICKET } from './gate.js'
import { Holding } from './holding.js'
import type { LockId } from './keys.js'
import { Lock } from './lock.js'
import { multiplexers } from './multiplex-hook.js'
import { checkMs, type LockSpec, resolveRequest, resolveSpec, timedOut, type Wait } from './options.js'
import { SharedConnection as Shared, type SharedConnection, type SharedConnectionOwner, type Slot } from './shared-connection.js'
import { pidOf } from './sql.js'
import { SESSION, takeLock } from './take.js'
import type { AcquireOptions, KeyHash, LockKey, LockMode, TryWithLockResult } from './types.js'
import { interruptible, remainingMs } from './wait.js'
import { NOT_ACQUIRED, runWithLock } from './with-lock.js'

/** Options of {@link MultiplexedLocks}: they concern its connections, not one lock. */
export interface MultiplexOptions {
  /**
   * The most locks one shared connection carries. When every shared connection is full, the next
   * lock goes on another connection of the pool. Postgres has no limit per session, but its lock
   * table is shared by the whole server (`max_locks_per_transaction` × (`max_connections` +
   * `max_prepared_transactions`) entries), and every statement on a shared connection waits
   * behind the others on it: the cap keeps one connection from taking all of both.
   * @default 1000
   */
  readonly maxLocksPerConnection?: number | undefined
  /**
   * Probe each shared connection with one short statement this often, and treat every lock on it
   * as lost when a probe fails or gets no answer within the same interval. One probe loop per
   * connection, however many locks it carries. Off by default.
   */
  readonly keepAliveMs?: number | undefined
}

/**
 * Options of a multiplexed lock. Session scope only: a transaction is one connection's business,
 * so use the adapter's own `withLock(db, key, fn, { scope: 'transaction' })` for that.
 */
export interface MultiplexedLockOptions {
  /** Only `'session'`; `'transaction'` fails with `UnsupportedError` before any SQL. */
  readonly scope?: 'session' | undefined
  /**
   * Exclusive excludes everyone else; shared excludes only exclusive holders.
   * @default 'exclusive'
   */
  readonly mode?: LockMode | undefined
  /**
   * How string keys become lock ids.
   * @default 'sha1-int64'
   */
  readonly keyHash?: KeyHash | undefined
  /**
   * Take a fencing token with each acquire (see `LockOptions.fencing`): `lock.fencingToken`,
   * `lease.fencingToken`.
   * @default false
   */
  readonly fencing?: boolean | undefined
}

/** Options of a multiplexed `withLock` and `tryWithLock`: those of the lock plus those of the wait. */
export interface MultiplexedWithLockOptions extends MultiplexedLockOptions, AcquireOptions {}

/**
 * What a multiplexed `withLock` passes to your function: the lost-lock signal, and no `db`. The
 * lock's connection carries other locks, and a statement of yours there (a `BEGIN`, a failed
 * query) would break them: query through your pool.
 */
export interface MultiplexedLease {
  /** Aborts with `LockLostError` if the lock is lost while your function runs (see `Lease.signal`). */
  readonly signal: AbortSignal
  /** With `fencing: true`, the fencing token of this grant (see `Lease.fencingToken`); else `undefined`. */
  readonly fencingToken: bigint | undefined
}

/**
 * A handle on one multiplexed lock: a {@link Lock} without `db`, since its connection is shared
 * with other locks and never handed to your code.
 *
 * @example
 * ```ts
 * const locks = multiplex(pool)
 * const lock = await locks.createLock('shard:7').acquire({ timeoutMs: 5_000 })
 * lock.signal.addEventListener('abort', () => stopServing(7))
 * ```
 */
export interface MultiplexedLock extends AsyncDisposable {
  /** The key as given. */
  readonly key: LockKey
  /** The lock id Postgres sees (an int64, or an int32 pair). */
  readonly id: LockId
  /** Always `'session'`. */
  readonly scope: 'session'
  /** The lock's mode. */
  readonly mode: LockMode
  /** Whether this handle holds its lock now. Becomes false on release and when the lock is lost. */
  readonly isHeld: boolean
  /** Aborts with `LockLostError` when the lock is lost while held. A fresh signal is made for each acquire. */
  readonly signal: AbortSignal
  /** With `fencing: true`, the fencing token of the current grant, while held; else `undefined`. */
  readonly fencingToken: bigint | undefined
  /** Takes the lock if it is free, without waiting for it (`timeoutMs` bounds the wait for a connection); `false` when another holder has it. */
  tryAcquire(options?: AcquireOptions): Promise<boolean>
  /** Waits until the lock is granted (within `timeoutMs`, until `signal` aborts) and resolves to this handle. */
  acquire(options?: AcquireOptions): Promise<this>
  /** Releases the lock: one statement on its connection; `false` (no SQL) when not held. */
  release(): Promise<boolean>
}

/**
 * Session locks of one pool, many held on each connection: what an adapter's `multiplex(pool)`
 * returns. Create one per pool and share it; each holds its own connections.
 *
 * @example
 * ```ts
 * const locks = multiplex(pool)
 * await locks.withLock('tenant:42', async ({ signal }) => {
 *   await pool.query('UPDATE tenants SET seen = now() WHERE id = 42', [])
 * })
 * ```
 */
export interface MultiplexedLocks {
  /** A handle on one lock; sends no SQL until acquired. */
  createLock(key: LockKey, options?: MultiplexedLockOptions): MultiplexedLock
  /** Runs `fn` while holding the lock and always releases it; resolves to `fn`'s value. */
  withLock<T>(key: LockKey, fn: (lease: MultiplexedLease) => T | PromiseLike<T>, options?: MultiplexedWithLockOptions): Promise<T>
  /** Like `withLock`, but does not wait: `{ acquired: false }` when the lock is taken. */
  tryWithLock<T>(
    key: LockKey,
    fn: (lease: MultiplexedLease) => T | PromiseLike<T>,
    options?: MultiplexedWithLockOptions,
  ): Promise<TryWithLockResult<T>>
}

const DEFAULT_MAX_LOCKS = 1000
/**
 * A burst of acquires queues its tries on one connection, one round trip each (node-postgres runs
 * one statement at a time): past this backlog, a second connection shares the tries. Never more
 * than {@link BURST_CONNECTIONS} for that; held locks alone never open another.
 */
const BUSY_BACKLOG = 4
const BURST_CONNECTIONS = 2
const MAX_LOCKS_LIMIT = 1_000_000

function checkOptions(options: unknown): { maxLocks: number; keepAliveMs: number | undefined } {
  if (options === undefined) return { maxLocks: DEFAULT_MAX_LOCKS, keepAliveMs: undefined }
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(`multiplex options must be an object, got ${options === null ? 'null' : typeof options}`)
  }
  for (const name of Object.keys(options)) {
    if (name !== 'maxLocksPerConnection' && name !== 'keepAliveMs') {
      throw new InvalidArgumentError(`unknown multiplex option ${JSON.stringify(name)}: expected one of maxLocksPerConnection, keepAliveMs`)
    }
  }
  const { maxLocksPerConnection, keepAliveMs } = options as MultiplexOptions
  if (
    maxLocksPerConnection !== undefined &&
    (!Number.isSafeInteger(maxLocksPerConnection) || maxLocksPerConnection < 1 || maxLocksPerConnection > MAX_LOCKS_LIMIT)
  ) {
    throw new InvalidArgumentError(
      `maxLocksPerConnection must be an integer from 1 to ${MAX_LOCKS_LIMIT}, got ${describeValue(maxLocksPerConnection)}`,
    )
  }
  return { maxLocks: maxLocksPerConnection ?? DEFAULT_MAX_LOCKS, keepAliveMs: checkMs('keepAliveMs', keepAliveMs, {}, 1) }
}

/**
 * Refuses, before any SQL, what a multiplexed lock cannot do; `undefined` when the options are
 * fine. Malformed input is refused first as every lock refuses it (`validate` throws), so that a
 * bad `fn` or option reads the same with or without multiplexing.
 */
function refusal(key: LockKey, options: unknown, validate: () => unknown): Error | undefined {
  if (typeof options !== 'object' || options === null) return undefined
  const { scope, keepAliveMs } = options as { scope?: unknown; keepAliveMs?: unknown }
  if (scope !== 'transaction' && keepAliveMs === undefined) return undefined
  try {
    validate()
  } catch (error) {
    return error as Error
  }
  if (scope === 'transaction') {
    return new UnsupportedError(
      "multiplexed locks are session locks: a transaction is one connection's business. Use your adapter's withLock(db, key, fn, { scope: 'transaction' }) instead",
      { key, scope: 'transaction' },
    )
  }
  if (keepAliveMs !== undefined) {
    return new InvalidArgumentError(
      'keepAliveMs is an option of multiplex(pool, { keepAliveMs }): one probe per shared connection, not per lock',
      { key },
    )
  }
  return undefined
}

/** A try without waiting, within the acquire's signal: what a shared connection may run. */
function tryOnly(wait: Wait): Wait {
  return { noWait: true, timeoutMs: wait.timeoutMs, signal: wait.signal, deadline: undefined, fencing: wait.fencing }
}

const noop = () => undefined

/**
 * The engine behind {@link MultiplexedLocks}, for one pool. It follows three rules, DistributedLock's:
 * a lock is first tried without waiting on a connection that already carries others; a lock that
 * must wait waits on a connection that carries nothing (checked out for it), which then carries
 * later locks too; and nothing that waits, nor a cancel, is ever sent to a connection that carries
 * other locks, so a release is one statement that never queues behind a blocked acquire.
 * Exclusivity within the process is the pool's in-memory gate, as for every lock.
 */
class Multiplexer implements SharedConnectionOwner {
  readonly executor: LockExecutor<unknown>
  readonly #maxLocks: number
  readonly #keepAliveMs: number | undefined
  /** the published connections, oldest first: locks pack onto the oldest, so the newest drain and go back */
  readonly #connections = new Set<SharedConnection>()

  constructor(executor: LockExecutor<unknown>, maxLocks: number, keepAliveMs: number | undefined) {
    this.executor = executor
    this.#maxLocks = maxLocks
    this.#keepAliveMs = keepAliveMs
  }

  retired(connection: SharedConnection): void {
    this.#connections.delete(connection)
  }

  /**
   * The published connection that can take a lock of `token` (in mode `shared` or not) and has the
   * shortest backlog, or a new one, opening, that others share until it is full: when none can,
   * or when the best is busy and fewer than {@link BURST_CONNECTIONS} are open.
   */
  #pick(token: string, shared: boolean): SharedConnection {
    let best: SharedConnection | undefined
    for (const connection of this.#connections) {
      if (connection.accepts(token, this.#maxLocks, shared) && (best === undefined || connection.backlog < best.backlog)) best = connection
    }
    if (best !== undefined && (best.backlog < BUSY_BACKLOG || this.#connections.size >= BURST_CONNECTIONS)) return best
    const executor = this.executor
    const opened = Shared.open(this, this.#keepAliveMs, () => (executor.connect as NonNullable<LockExecutor<unknown>['connect']>)())
    this.#connections.add(opened)
    return opened
  }

  /** The acquire pipeline of a multiplexed lock: gate, try on a shared connection, else wait on one of its own. */
  async acquire(spec: LockSpec, wait: Wait): Promise<Holding<undefined> | undefined> {
    if (this.executor.closed?.() === true) {
      throw new UnsupportedError('the pool has ended (its end() was called): a multiplexed lock takes no new locks on it', spec.details)
    }
    let ticket: GateTicket | undefined
    let connection: Pinned<undefined> | undefined
    try {
      const entered = enter(this.executor, spec, wait)
      ticket = entered instanceof Promise ? await entered : entered
      if (ticket === undefined) return undefined
      const shared = this.#pick(spec.token, spec.mode === 'shared')
      let slot = shared.attach(spec.token)
      connection = slot.pinned
      const tried = await this.#try(shared, connection, spec, wait)
      if (tried !== false) {
        shared.publish(pidOf(tried))
        return this.#held(slot, spec, tried, ticket)
      }
      const busy = connection
      connection = undefined
      await busy.release(false)
      if (wait.noWait) {
        ticket.leave()
        return undefined
      }
      const left = remainingMs(wait.deadline)
      if (left !== undefined && left < 1) throw timedOut(spec, wait)
      const own = Shared.forWaiter(this, this.#keepAliveMs, new Pinned(await checkOut(this.executor, wait)))
      slot = own.attach(spec.token)
      connection = slot.pinned
      const granted = await takeLock(connection, spec, wait, SESSION)
      if (granted === false) throw timedOut(spec, wait)
      own.publish(pidOf(granted))
      if (!own.lost) this.#connections.add(own)
      return this.#held(slot, spec, granted, ticket)
    } catch (error) {
      return giveUp(error, spec, wait, ticket, connection)
    }
  }

  /** The try on a shared connection, once it is connected, counted in its backlog from the start. */
  async #try(shared: SharedConnection, connection: Pinned<undefined>, spec: LockSpec, wait: Wait): ReturnType<typeof takeLock> {
    shared.trying += 1
    try {
      const ready = shared.ready
      if (ready !== undefined) await interruptible(ready, { signal: wait.signal, deadline: checkoutDeadline(wait), abandon: noop })
      return await takeLock(connection, spec, tryOnly(wait), SESSION)
    } finally {
      shared.trying -= 1
    }
  }

  /**
   * The lock is granted. Its place in the gate also frees its id on the connection as it is
   * left: `unlock` leaves it as the unlock is sent, and the next lock of that id, let in then,
   * may be tried on the same connection, where it runs after the unlock.
   */
  #held(slot: Slot, spec: LockSpec, granted: Readonly<Record<string, unknown>>, ticket: GateTicket): Holding<undefined> {
    const freeing: GateTicket = {
      leave() {
        slot.forget()
        ticket.leave()
      },
      recheckWith: (check) => ticket.recheckWith(check),
    }
    return new Holding(slot.pinned, spec, SESSION, granted, freeing, NO_TICKET)
  }
}

/**
 * @internal Multiplexed session locks over a `'pool'` executor: the engine of every adapter's
 * `multiplex(pool, options)` (see {@link bindMultiplex}).
 */
export function multiplexLocks(executor: LockExecutor<unknown>, options?: MultiplexOptions): MultiplexedLocks {
  const { maxLocks, keepAliveMs } = checkOptions(options)
  if (executor.kind !== 'pool' || executor.connect === undefined) {
    throw new UnsupportedError(
      'multiplex() shares the connections of a pool between locks, and this handle is not a pool that lends connections: pass the pool itself',
    )
  }
  // an executor of its own, so that the pipeline knows its locks are multiplexed; same pool, same gate
  const own: LockExecutor<unknown> = {
    kind: 'pool',
    adapter: executor.adapter,
    queueKey: executor.queueKey,
    connect: executor.connect.bind(executor),
    ...(executor.closed === undefined ? {} : { closed: executor.closed.bind(executor) }),
  }
  const multiplexer = new Multiplexer(own, maxLocks, keepAliveMs)
  multiplexers.set(own, (spec, wait) => multiplexer.acquire(spec, wait))
  return {
    createLock(key, lockOptions) {
      const refused = refusal(key, lockOptions, () => resolveSpec(key, lockOptions))
      if (refused !== undefined) throw refused
      return new Lock(own, key, lockOptions) as unknown as MultiplexedLock
    },
    withLock(key, fn, lockOptions) {
      const refused = refusal(key, lockOptions, () => resolveRequest(key, fn, lockOptions, false))
      if (refused !== undefined) return Promise.reject(refused)
      return runWithLock(own, key, fn, lockOptions, false) as Promise<never>
    },
    async tryWithLock(key, fn, lockOptions) {
      const refused = refusal(key, lockOptions, () => resolveRequest(key, fn, lockOptions, true))
      if (refused !== undefined) throw refused
      const value = await runWithLock(own, key, fn, lockOptions, true)
      return value === NOT_ACQUIRED ? NOT_TAKEN : { acquired: true, value }
    },
  }
}

const NOT_TAKEN = Object.freeze({ acquired: false }) as TryWithLockResult<never>

/**
 * Builds an adapter's `multiplex(pool, options)` from the function that describes its handles
 * (the one given to `bindExecutor`). It throws `UnsupportedError` for a handle that is not a pool.
 *
 * @example
 * ```ts
 * import { bindMultiplex } from '@pglock/core/adapter'
 *
 * export const multiplex = bindMultiplex(myExecutor)
 * const locks = multiplex(pool, { maxLocksPerConnection: 500 })
 * await locks.withLock('job:7', async ({ signal }) => runJob(signal))
 * ```
 */
export function bindMultiplex<Handle>(
  toExecutor: (db: Handle) => LockExecutor<unknown>,
): (db: Handle, options?: MultiplexOptions) => MultiplexedLocks {
  return (db, options) => multiplexLocks(toExecutor(db), options)
}
