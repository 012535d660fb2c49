import { channel, type TracingChannel, tracingChannel } from 'node:diagnostics_channel'
import { LockLostError, LockTimeoutError } from './errors.js'
import type { LockExecutor } from './executor.js'
import type { Holding } from './holding.js'
import type { LockSpec, Wait } from './options.js'
import type { LockKey, LockMode, LockScope } from './types.js'

/**
 * What every pglock trace context and `pglock:lost` message carries: which lock, and where.
 *
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel'
 * import type { LostMessage } from '@pglock/core'
 *
 * subscribe('pglock:lost', (message) => {
 *   const { key, lockId, mode, scope, adapter, pid } = message as LostMessage
 *   console.warn(`lost ${String(key)} (${String(lockId)}, ${mode}, ${scope}) on ${adapter} backend ${pid}`)
 * })
 * ```
 */
export interface LockTraceBase {
  /** The key as the caller gave it. */
  readonly key: LockKey
  /** The lock id Postgres sees: an int64, or the int32 pair of the two-key form. */
  readonly lockId: bigint | readonly [number, number]
  /** The lock's mode, as `createLock` or `withLock` was given it. */
  readonly mode: LockMode
  /** The lock's scope, as `createLock` or `withLock` was given it. */
  readonly scope: LockScope
  /**
   * The adapter that took the lock: `'pg'`, `'postgres-js'`, `'drizzle/node-postgres'`,
   * `'drizzle/postgres-js'`, `'kysely'`, or what a third-party executor names itself
   * (`LockExecutor.adapter`); `'unknown'` when it names nothing.
   */
  readonly adapter: string
  /**
   * The backend pid of the lock's connection, once known: the lock statement answers it, so it is
   * set for a granted lock and equals `pg_locks.pid`. `undefined` before a grant, and where the
   * statement cannot answer it (a timed lock under a savepoint in your own transaction, or a
   * driver that drops the rows of a text of several statements).
   */
  readonly pid: number | undefined
}

/** How an acquire attempt ended. `'busy'` is the non-blocking forms finding the lock taken. */
export type AcquireOutcome = 'acquired' | 'busy' | 'timeout' | 'aborted' | 'error'

/** Which call made an acquire attempt. */
export type AcquireOperation = 'withLock' | 'tryWithLock' | 'acquire' | 'tryAcquire'

/**
 * The context of a `pglock:acquire` trace: one per acquire attempt of `withLock`, `tryWithLock`,
 * `lock.acquire()` or `lock.tryAcquire()` that passed validation (bad input is refused before
 * any trace). `start` is published synchronously in the caller's async context; then `end`, when
 * the call has returned its promise; then, when the attempt settles, `asyncStart` and `asyncEnd`
 * (`result`: whether the lock was acquired), preceded by `error` when it failed (`error`: what the
 * call rejects with). `outcome` and `waitedMs` are set before those are published.
 *
 * @example
 * ```ts
 * import { tracingChannel } from 'node:diagnostics_channel'
 * import type { AcquireTraceContext } from '@pglock/core'
 *
 * tracingChannel<unknown, AcquireTraceContext>('pglock:acquire').subscribe({
 *   start() {},
 *   end() {},
 *   asyncStart() {},
 *   asyncEnd: ({ key, outcome, waitedMs }) => console.log(`${String(key)}: ${outcome} after ${waitedMs} ms`),
 *   error() {},
 * })
 * ```
 */
export interface AcquireTraceContext extends LockTraceBase {
  /** The call that makes the attempt. */
  readonly operation: AcquireOperation
  /** The `timeoutMs` the call was given. */
  readonly timeoutMs: number | undefined
  /** Set when the attempt settles; `undefined` until then (at `start` and `end`). */
  readonly outcome: AcquireOutcome | undefined
  /** Milliseconds from `start` until the attempt settled (`performance.now()` based); `undefined` until then. */
  readonly waitedMs: number | undefined
  /** Added when the attempt settles without an error: whether the lock was acquired. */
  readonly result?: boolean
  /** Added when the attempt fails: what the call rejects with. */
  readonly error?: unknown
}

/**
 * The context of a `pglock:run` trace, published with `TracingChannel.tracePromise` around the
 * function given to `withLock` or `tryWithLock`, once the lock is acquired. A store bound to its
 * `start` channel is active inside that function (and only there), so a span started for it
 * parents the function's own spans. `result` is the function's value, `error` what it threw.
 *
 * @example
 * ```ts
 * import { AsyncLocalStorage } from 'node:async_hooks'
 * import { tracingChannel } from 'node:diagnostics_channel'
 * import type { RunTraceContext } from '@pglock/core'
 *
 * const holding = new AsyncLocalStorage<RunTraceContext>()
 * tracingChannel<unknown, RunTraceContext>('pglock:run').start.bindStore(holding)
 * // inside withLock's fn: holding.getStore()?.key is the lock's key
 * ```
 */
export interface RunTraceContext extends LockTraceBase {
  /** Added when the function resolves: its value. */
  readonly result?: unknown
  /** Added when the function throws: its error. */
  readonly error?: unknown
}

/**
 * The context of a `pglock:release` trace: one per lock end that pglock performs, the session
 * unlock (at the end of `withLock` or by `lock.release()`) or the end of the transaction or
 * savepoint pglock opened for `withLock` (commit or roll back, by pglock or by the driver). None
 * for a lock that was lost before (see {@link LostMessage}), nor for a transaction lock in a
 * transaction you opened, which ends with it. Events as `pglock:acquire`'s; `result` is `released`.
 *
 * @example
 * ```ts
 * import { tracingChannel } from 'node:diagnostics_channel'
 * import type { ReleaseTraceContext } from '@pglock/core'
 *
 * tracingChannel<unknown, ReleaseTraceContext>('pglock:release').subscribe({
 *   start() {},
 *   end() {},
 *   asyncStart() {},
 *   asyncEnd: ({ key, heldMs, released }) => console.log(`${String(key)} held ${heldMs} ms, released: ${released}`),
 *   error() {},
 * })
 * ```
 */
export interface ReleaseTraceContext extends LockTraceBase {
  /**
   * Milliseconds from the grant to the end of the release; `undefined` until then, and for a lock
   * granted while nothing listened on any pglock channel.
   */
  readonly heldMs: number | undefined
  /**
   * Set at the end: `true` when this ended the lock; `false` when it did not: the lock was lost
   * meanwhile, the release failed (see `error`), or `RELEASE SAVEPOINT` left the lock to the
   * transaction you opened, which holds it until it ends.
   */
  readonly released: boolean | undefined
  /** Added at the end when no error: `released`. */
  readonly result?: boolean
  /** Added when the release fails: what it rejects with. */
  readonly error?: unknown
}

/**
 * The message of channel `pglock:lost`: one per held lock that is lost (its connection failed or
 * ended, a keep-alive probe failed, or the unlock found it no longer held), published when pglock
 * learns of it.
 *
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel'
 * import type { LostMessage } from '@pglock/core'
 *
 * subscribe('pglock:lost', (message) => {
 *   const { key, heldMs, error } = message as LostMessage
 *   console.error(`lost ${String(key)} after ${heldMs} ms: ${error.message}`)
 * })
 * ```
 */
export interface LostMessage extends LockTraceBase {
  /** Milliseconds from the grant to the loss. */
  readonly heldMs: number
  /** The loss, as `lock.signal` and `lease.signal` abort with it. */
  readonly error: LockLostError
}

interface Base {
  readonly key: LockKey
  readonly lockId: bigint | readonly [number, number]
  readonly mode: LockMode
  readonly scope: LockScope
  readonly adapter: string
  pid: number | undefined
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] }
type AcquireContext = Mutable<AcquireTraceContext>
type ReleaseContext = Mutable<ReleaseTraceContext>

const acquireChannel: TracingChannel<unknown, AcquireContext> = tracingChannel('pglock:acquire')
const runChannel: TracingChannel<unknown, RunTraceContext> = tracingChannel('pglock:run')
const releaseChannel: TracingChannel<unknown, ReleaseContext> = tracingChannel('pglock:release')
const lostChannel = channel('pglock:lost')

/** `TracingChannel.hasSubscribers` arrived in Node 20.13; before, it is read channel by channel. */
function subscribed(traced: TracingChannel<unknown, object>): boolean {
  return (
    traced.hasSubscribers ??
    (traced.start.hasSubscribers ||
      traced.end.hasSubscribers ||
      traced.asyncStart.hasSubscribers ||
      traced.asyncEnd.hasSubscribers ||
      traced.error.hasSubscribers)
  )
}

/**
 * @internal Whether anything listens on any pglock channel: the one check an operation makes.
 * Without a subscriber pglock builds and publishes nothing.
 */
export function tracing(): boolean {
  return subscribed(acquireChannel) || subscribed(runChannel) || subscribed(releaseChannel) || lostChannel.hasSubscribers
}

/** `fn(lease)` as a native promise: `tracePromise` of early Node 20 releases accepts nothing else. */
function promiseOf<L, T>(fn: (lease: L) => T | PromiseLike<T>, lease: L): Promise<T> {
  const out = fn(lease)
  return out instanceof Promise ? out : Promise.resolve(out)
}

/** Publishes the end of an async trace as `TracingChannel.tracePromise` does. */
function settle<C extends { result?: unknown; error?: unknown }>(traced: TracingChannel<unknown, C>, context: C, failed: boolean): void {
  if (failed) traced.error.publish(context)
  traced.asyncStart.publish(context)
  traced.asyncEnd.publish(context)
}

/**
 * @internal The trace of one acquire attempt and, once granted, of its lock: run, release and
 * loss. Made only when something subscribes (see {@link tracing}); a lock acquired without a
 * subscriber is never traced.
 */
export class LockTrace {
  readonly #base: Base
  readonly #acquire: AcquireContext
  readonly #wait: Wait
  readonly #startedAt: number
  #grantedAt: number | undefined
  /** a release whose end the driver decides: the end of a transaction it opened */
  #driverRelease: { readonly context: ReleaseContext; readonly rollback: boolean } | undefined
  #lostPublished = false

  private constructor(spec: LockSpec, wait: Wait, executor: LockExecutor<unknown>, operation: AcquireOperation) {
    this.#base = {
      key: spec.key,
      lockId: spec.id.value,
      mode: spec.mode,
      scope: spec.scope,
      adapter: executor.adapter ?? 'unknown',
      pid: undefined,
    }
    const { key, lockId, mode, scope, adapter } = this.#base
    // literals, not spreads: a spread with more properties is a slow path in V8
    this.#acquire = {
      key,
      lockId,
      mode,
      scope,
      adapter,
      pid: undefined,
      operation,
      timeoutMs: wait.timeoutMs,
      outcome: undefined,
      waitedMs: undefined,
    }
    this.#wait = wait
    this.#startedAt = performance.now()
  }

  /** Starts the trace of an acquire attempt: `start` is published now, in the caller's context. */
  static start(spec: LockSpec, wait: Wait, executor: LockExecutor<unknown>, operation: AcquireOperation): LockTrace {
    const trace = new LockTrace(spec, wait, executor, operation)
    acquireChannel.start.publish(trace.#acquire)
    return trace
  }

  /** The call has returned its promise. */
  returned(): void {
    acquireChannel.end.publish(this.#acquire)
  }

  /** The lock is granted: the attempt settles as acquired, and the lock's loss is watched. */
  granted(holding: Holding<unknown>): void {
    if (this.#acquire.outcome !== undefined) return
    const now = performance.now()
    this.#grantedAt = now
    this.#base.pid = holding.pid
    this.#acquire.pid = holding.pid
    this.#settleAcquire('acquired', true, false, undefined, now)
    holding.lost.onAbort((reason) => this.lost(reason))
  }

  /** The non-blocking form found the lock taken. */
  busy(): void {
    if (this.#acquire.outcome === undefined) this.#settleAcquire('busy', false)
  }

  /** The attempt failed with `error` (a no-op once it settled: a later failure is the function's or the release's). */
  failed(error: unknown): void {
    if (this.#acquire.outcome !== undefined) return
    const signal = this.#wait.signal
    const outcome =
      error instanceof LockTimeoutError ? 'timeout' : signal?.aborted === true && error === signal.reason ? 'aborted' : 'error'
    this.#settleAcquire(outcome, false, true, error)
  }

  #settleAcquire(outcome: AcquireOutcome, acquired: boolean, failed = false, error?: unknown, now = performance.now()): void {
    const context = this.#acquire
    context.outcome = outcome
    context.waitedMs = now - this.#startedAt
    if (failed) context.error = error
    else context.result = acquired
    settle(acquireChannel, context, failed)
  }

  /** Runs `withLock`'s function on the granted lock, traced on `pglock:run`. */
  run<L, T>(fn: (lease: L) => T | PromiseLike<T>, lease: L, holding: Holding<unknown>): T | PromiseLike<T> {
    this.granted(holding)
    if (!subscribed(runChannel)) return fn(lease)
    const { key, lockId, mode, scope, adapter, pid } = this.#base
    const context: RunTraceContext = { key, lockId, mode, scope, adapter, pid }
    return runChannel.tracePromise(promiseOf<L, T>, context, undefined, fn, lease)
  }

  #releaseContext(): ReleaseContext {
    const { key, lockId, mode, scope, adapter, pid } = this.#base
    return { key, lockId, mode, scope, adapter, pid, heldMs: undefined, released: undefined }
  }

  #heldMs(): number | undefined {
    return this.#grantedAt === undefined ? undefined : performance.now() - this.#grantedAt
  }

  /** Ends a release trace; a failure leaves `released` false. */
  #released(context: ReleaseContext, released: boolean, failed = false, error?: unknown): void {
    context.heldMs = this.#heldMs()
    context.released = released
    if (failed) context.error = error
    else context.result = released
    settle(releaseChannel, context, failed)
  }

  /** Runs `release` (which must not throw) inside a release trace; `released` reads its value. */
  #traceRelease<T>(release: () => Promise<T>, released: (value: T) => boolean): Promise<T> {
    const context = this.#releaseContext()
    releaseChannel.start.publish(context)
    const releasing = release()
    releaseChannel.end.publish(context)
    return releasing.then(
      (value) => {
        this.#released(context, released(value))
        return value
      },
      (error: unknown) => {
        this.#released(context, false, true, error)
        throw error
      },
    )
  }

  /** `holding.unlock()`, traced when something listens on `pglock:release` and the lock was not lost. */
  unlock(holding: Holding<unknown>): Promise<boolean> {
    if (holding.settled || !subscribed(releaseChannel)) return holding.unlock()
    return this.#traceRelease(
      () => holding.unlock(),
      (released) => released,
    )
  }

  /**
   * `holding.finish(commit)`, traced as `unlock`. Where the driver ends the transaction, the trace
   * ends in {@link driverEnded}.
   */
  finish(holding: Holding<unknown>, commit: boolean): Promise<void> {
    if (holding.isLost || !subscribed(releaseChannel)) return holding.finish(commit)
    const { framing } = holding
    if (framing.kind === 'driver-transaction') {
      const context = this.#releaseContext()
      releaseChannel.start.publish(context)
      releaseChannel.end.publish(context)
      this.#driverRelease = { context, rollback: !commit }
      return holding.finish(commit)
    }
    // RELEASE SAVEPOINT leaves the lock to the caller's transaction
    const ends = framing.kind === 'begin' || !commit
    return this.#traceRelease(
      () => holding.finish(commit),
      () => ends,
    )
  }

  /**
   * The driver ended the transaction it opened: committed, or `failed` with `error`. A rollback
   * pglock asked for (after the function threw) rejects with the function's error: still a release.
   */
  driverEnded(failed: boolean, error?: unknown): void {
    const release = this.#driverRelease
    if (release === undefined) return
    this.#driverRelease = undefined
    const lost = error instanceof LockLostError
    if (lost) this.lost(error)
    if (!failed || (release.rollback && !lost)) this.#released(release.context, true)
    else this.#released(release.context, false, true, error)
  }

  /** The held lock was lost: published once. */
  lost(reason: unknown): void {
    if (this.#lostPublished || this.#grantedAt === undefined) return
    this.#lostPublished = true
    if (!lostChannel.hasSubscribers) return
    const { key, lockId, mode, scope, adapter, pid } = this.#base
    const message: LostMessage = {
      key,
      lockId,
      mode,
      scope,
      adapter,
      pid,
      heldMs: performance.now() - this.#grantedAt,
      error: reason as LockLostError,
    }
    lostChannel.publish(message)
  }
}
