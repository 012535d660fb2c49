import { InvalidArgumentError, LockTimeoutError, type PgLockErrorDetails } from './errors.js'
import { type LockId, lockIdToken, resolveLockId } from './keys.js'
import { primeValues } from './sql.js'
import type { LockKey, LockMode, LockOptions, LockScope, WithLockOptions } from './types.js'

const MAX_TIMEOUT_MS = 2_147_483_647

/** @internal What a lock handle is: its key, validated, and its options with defaults applied. */
export interface LockSpec {
  readonly key: LockKey
  readonly id: LockId
  /** the lock id as a string, naming it in the in-memory gates */
  readonly token: string
  readonly scope: LockScope
  readonly mode: LockMode
  readonly keepAliveMs: number | undefined
  readonly details: PgLockErrorDetails
}

/** @internal How long one acquire may wait, and what may stop it. */
export interface Wait {
  /** the non-blocking form: give up at once when the lock is taken */
  readonly noWait: boolean
  readonly timeoutMs: number | undefined
  readonly signal: AbortSignal | undefined
  /** when `timeoutMs` runs out (a `performance.now()` time): it bounds every step of the acquire */
  readonly deadline: number | undefined
}

/** @internal One `withLock` call, resolved once: the lock, the wait and the function. */
export interface LockRequest<F> extends LockSpec, Wait {
  readonly fn: F
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

function checkObject(options: unknown, details: PgLockErrorDetails): void {
  if (options !== undefined && !isObject(options)) {
    throw new InvalidArgumentError(`options must be an object, got ${options === null ? 'null' : typeof options}`, details)
  }
}

function checkMs(name: string, value: unknown, details: PgLockErrorDetails, min: number): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > MAX_TIMEOUT_MS) {
    throw new InvalidArgumentError(
      `${name} must be a finite number of milliseconds from ${min} to ${MAX_TIMEOUT_MS}, got ${String(value)}`,
      details,
    )
  }
  return value
}

/** @internal Validates a key and the options of `createLock`/`withLock`, before any SQL. */
export function resolveSpec(key: LockKey, options: unknown): LockSpec {
  checkObject(options, { key })
  const { scope = 'session', mode = 'exclusive', keepAliveMs, keyHash } = (options ?? {}) as LockOptions
  if (scope !== 'session' && scope !== 'transaction') {
    throw new InvalidArgumentError(`scope must be 'session' or 'transaction', got ${String(scope)}`, { key })
  }
  if (mode !== 'exclusive' && mode !== 'shared') {
    throw new InvalidArgumentError(`mode must be 'exclusive' or 'shared', got ${String(mode)}`, { key })
  }
  const checkedKeepAlive = checkMs('keepAliveMs', keepAliveMs, { key }, 1)
  const id = resolveLockId(key, keyHash === undefined ? undefined : { keyHash })
  // a number key is its own decimal text, which the lock statements send too
  const token = typeof key === 'number' ? String(key) : lockIdToken(id)
  if (typeof key === 'number') primeValues(id, token)
  return { key, id, token, scope, mode, keepAliveMs: checkedKeepAlive, details: { key, mode, scope } }
}

/**
 * @internal Validates the options of one wait, before any SQL, and starts its clock: `timeoutMs`
 * bounds the whole acquire from here, the wait for a pooled connection included.
 */
export function resolveWait(options: unknown, details: PgLockErrorDetails, noWait: boolean): Wait {
  if (options === undefined) return noWait ? NO_WAIT : WAIT
  checkObject(options, details)
  const { timeoutMs: given, signal } = options as WithLockOptions
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError('signal must be an AbortSignal', details)
  }
  const timeoutMs = checkMs('timeoutMs', given, details, 0)
  if (timeoutMs === undefined && signal === undefined) return noWait ? NO_WAIT : WAIT
  return { noWait, timeoutMs, signal, deadline: timeoutMs === undefined ? undefined : performance.now() + timeoutMs }
}

const WAIT: Wait = { noWait: false, timeoutMs: undefined, signal: undefined, deadline: undefined }
const NO_WAIT: Wait = { noWait: true, timeoutMs: undefined, signal: undefined, deadline: undefined }

/** @internal Validates everything a `withLock` call was given, before any SQL. */
export function resolveRequest<F>(key: LockKey, fn: F, options: unknown, noWait: boolean): LockRequest<F> {
  const spec = resolveSpec(key, options)
  const wait = resolveWait(options, spec.details, noWait)
  if (typeof fn !== 'function') {
    throw new InvalidArgumentError(`fn must be a function, got ${fn === null ? 'null' : typeof fn}`, spec.details)
  }
  return {
    key: spec.key,
    id: spec.id,
    token: spec.token,
    scope: spec.scope,
    mode: spec.mode,
    keepAliveMs: spec.keepAliveMs,
    details: spec.details,
    noWait: wait.noWait,
    timeoutMs: wait.timeoutMs,
    signal: wait.signal,
    deadline: wait.deadline,
    fn,
  }
}

/** @internal The one place a timeout becomes the error users see. */
export function timedOut(spec: LockSpec, wait: Wait, cause?: unknown): LockTimeoutError {
  return new LockTimeoutError(wait.timeoutMs ?? 0, cause === undefined ? spec.details : { ...spec.details, cause })
}
