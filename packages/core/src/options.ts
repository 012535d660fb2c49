import { describeValue, InvalidArgumentError, LockTimeoutError, type PgLockErrorDetails } from './errors.js'
import { type LockId, lockIdToken, resolveLockId } from './keys.js'
import { primeValues } from './sql.js'
import type { AcquireOptions, KeyHash, LockKey, LockMode, LockOptions, LockScope, WithLockOptions } from './types.js'

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
  /** take a fencing token with each acquire, unless the acquire says otherwise */
  readonly fencing: boolean
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
  /** answer a fencing token with the grant */
  readonly fencing: boolean
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

/** @internal A duration option in ms, from `min` to what a timer takes; `undefined` when not given. */
export function checkMs(name: string, value: unknown, details: PgLockErrorDetails, min: number): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > MAX_TIMEOUT_MS) {
    throw new InvalidArgumentError(
      `${name} must be a finite number of milliseconds from ${min} to ${MAX_TIMEOUT_MS}, got ${describeValue(value)}`,
      details,
    )
  }
  return value
}

const NO_OPTIONS: LockOptions = Object.freeze({})

/** The options each call takes: a misspelt one (`timeout` for `timeoutMs`) fails rather than being ignored. */
const LOCK_OPTIONS: ReadonlySet<string> = new Set(['scope', 'mode', 'keyHash', 'keepAliveMs', 'fencing'])
const ACQUIRE_OPTIONS: ReadonlySet<string> = new Set(['timeoutMs', 'signal', 'fencing'])
const WITH_LOCK_OPTIONS: ReadonlySet<string> = new Set([...LOCK_OPTIONS, ...ACQUIRE_OPTIONS])

function checkNames(options: object, known: ReadonlySet<string>, details: PgLockErrorDetails): void {
  for (const name in options) {
    if (!known.has(name) && Object.hasOwn(options, name)) {
      throw new InvalidArgumentError(`unknown option ${JSON.stringify(name)}: expected one of ${[...known].join(', ')}`, details)
    }
  }
}

/** Validates the lock's own options (not the key); returns them, `{}` for none. */
function checkSpecOptions(key: LockKey, options: unknown, known: ReadonlySet<string>): LockOptions {
  if (options === undefined) return NO_OPTIONS
  checkObject(options, { key })
  checkNames(options as object, known, { key })
  const checked = options as LockOptions
  const { scope, mode, keepAliveMs } = checked
  checkFencing(checked.fencing, { key })
  if (scope !== undefined && scope !== 'session' && scope !== 'transaction') {
    throw new InvalidArgumentError(`scope must be 'session' or 'transaction', got ${describeValue(scope)}`, { key })
  }
  if (mode !== undefined && mode !== 'exclusive' && mode !== 'shared') {
    throw new InvalidArgumentError(`mode must be 'exclusive' or 'shared', got ${describeValue(mode)}`, { key })
  }
  if (keepAliveMs !== undefined) checkMs('keepAliveMs', keepAliveMs, { key }, 1)
  return checked
}

function checkFencing(fencing: unknown, details: PgLockErrorDetails): void {
  if (fencing !== undefined && typeof fencing !== 'boolean') {
    throw new InvalidArgumentError(`fencing must be a boolean, got ${typeof fencing}`, details)
  }
}

/** A key resolved to its lock id, and the id's token for the in-memory gates. */
interface ResolvedKey {
  readonly key: LockKey
  readonly keyHash: KeyHash | undefined
  readonly id: LockId
  readonly token: string
}

/**
 * The last key resolved: a process usually locks the same key again, and a string key costs a
 * SHA-1 each time. Not for pairs (a fresh array each time) nor a `keyHash` function (it may change its mind).
 */
let lastKey: ResolvedKey | undefined

function resolveKey(key: LockKey, keyHash: KeyHash | undefined): ResolvedKey {
  const last = lastKey
  if (last !== undefined && last.key === key && last.keyHash === keyHash) return last
  const id = resolveLockId(key, keyHash === undefined ? undefined : { keyHash })
  // a number key is its own decimal text, which the lock statements send too
  const token = typeof key === 'number' ? String(key) : lockIdToken(id)
  if (typeof key === 'number') primeValues(id, token)
  const resolved: ResolvedKey = { key, keyHash, id: id.kind === 'int64' ? Object.freeze(id) : id, token }
  if (!Array.isArray(key) && typeof keyHash !== 'function') lastKey = resolved
  return resolved
}

/** A lock's spec; its error details are made only when an error needs them. */
class Spec implements LockSpec {
  constructor(
    readonly key: LockKey,
    readonly id: LockId,
    readonly token: string,
    readonly scope: LockScope,
    readonly mode: LockMode,
    readonly keepAliveMs: number | undefined,
    readonly fencing: boolean,
  ) {}

  get details(): PgLockErrorDetails {
    return { key: this.key, mode: this.mode, scope: this.scope }
  }
}

/** @internal Validates a key and the options of `createLock`/`withLock`, before any SQL. */
export function resolveSpec(key: LockKey, options: unknown): LockSpec {
  const { scope = 'session', mode = 'exclusive', keepAliveMs, keyHash, fencing = false } = checkSpecOptions(key, options, LOCK_OPTIONS)
  const { id, token } = resolveKey(key, keyHash)
  return new Spec(key, id, token, scope, mode, keepAliveMs, fencing)
}

/**
 * @internal Validates the options of one wait, before any SQL, and starts its clock: `timeoutMs`
 * bounds the whole acquire from here, the wait for a pooled connection included.
 */
export function resolveWait(options: unknown, spec: Pick<LockSpec, 'details' | 'fencing'>, noWait: boolean, known = ACQUIRE_OPTIONS): Wait {
  if (options === undefined) return bare(noWait, spec.fencing)
  if (!isObject(options)) checkObject(options, spec.details)
  if (known !== WITH_LOCK_OPTIONS) {
    checkNames(options as object, known, spec.details)
    checkFencing((options as AcquireOptions).fencing, spec.details)
  }
  const { timeoutMs: given, signal, fencing = spec.fencing } = options as WithLockOptions
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError('signal must be an AbortSignal', spec.details)
  }
  // error details are made only for an error
  const timeoutMs = given === undefined ? undefined : checkMs('timeoutMs', given, spec.details, 0)
  if (timeoutMs === undefined && signal === undefined) return bare(noWait, fencing)
  return { noWait, timeoutMs, signal, deadline: timeoutMs === undefined ? undefined : performance.now() + timeoutMs, fencing }
}

const WAIT: Wait = { noWait: false, timeoutMs: undefined, signal: undefined, deadline: undefined, fencing: false }
const NO_WAIT: Wait = { noWait: true, timeoutMs: undefined, signal: undefined, deadline: undefined, fencing: false }
const FENCED_WAIT: Wait = { ...WAIT, fencing: true }
const FENCED_NO_WAIT: Wait = { ...NO_WAIT, fencing: true }

/** A wait with neither a timeout nor a signal: one of four frozen objects. */
function bare(noWait: boolean, fencing: boolean): Wait {
  return fencing ? (noWait ? FENCED_NO_WAIT : FENCED_WAIT) : noWait ? NO_WAIT : WAIT
}

/** One `withLock` call: its spec, its wait and its function in one object. */
class Request<F> extends Spec implements LockRequest<F> {
  noWait: boolean
  timeoutMs: number | undefined = undefined
  signal: AbortSignal | undefined = undefined
  deadline: number | undefined = undefined

  constructor(
    key: LockKey,
    id: LockId,
    token: string,
    scope: LockScope,
    mode: LockMode,
    keepAliveMs: number | undefined,
    fencing: boolean,
    noWait: boolean,
    readonly fn: F,
  ) {
    super(key, id, token, scope, mode, keepAliveMs, fencing)
    this.noWait = noWait
  }
}

/** @internal Validates everything a `withLock` call was given, before any SQL. */
export function resolveRequest<F>(key: LockKey, fn: F, options: unknown, noWait: boolean): LockRequest<F> {
  const { scope = 'session', mode = 'exclusive', keepAliveMs, keyHash, fencing = false } = checkSpecOptions(key, options, WITH_LOCK_OPTIONS)
  const { id, token } = resolveKey(key, keyHash)
  const request = new Request(key, id, token, scope, mode, keepAliveMs, fencing, noWait, fn)
  if (options !== undefined) {
    // its names were checked with the lock's own
    const wait = resolveWait(options, request, noWait, WITH_LOCK_OPTIONS)
    request.timeoutMs = wait.timeoutMs
    request.signal = wait.signal
    request.deadline = wait.deadline
  }
  if (typeof fn !== 'function') {
    throw new InvalidArgumentError(`fn must be a function, got ${fn === null ? 'null' : typeof fn}`, request.details)
  }
  return request
}

/** @internal The one place a timeout becomes the error users see. */
export function timedOut(spec: LockSpec, wait: Wait, cause?: unknown): LockTimeoutError {
  return new LockTimeoutError(wait.timeoutMs ?? 0, cause === undefined ? spec.details : { ...spec.details, cause })
}
