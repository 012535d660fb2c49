import { InvalidArgumentError, type PgLockErrorDetails } from './errors.js'
import type { AcquireOptions, LockMode, LockOptions, LockScope } from './types.js'

const MAX_TIMEOUT_MS = 2_147_483_647

/** @internal Lock options with defaults applied, validated. */
export interface ResolvedLockOptions {
  readonly scope: LockScope
  readonly mode: LockMode
  readonly keepAliveMs: number | undefined
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
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

/** @internal Validates the options of `createLock`/`withLock`, before any SQL. */
export function resolveLockOptions(options: unknown, details: PgLockErrorDetails): ResolvedLockOptions {
  if (options !== undefined && !isObject(options)) {
    throw new InvalidArgumentError(`options must be an object, got ${options === null ? 'null' : typeof options}`, details)
  }
  const { scope = 'session', mode = 'exclusive', keepAliveMs } = (options ?? {}) as LockOptions
  if (scope !== 'session' && scope !== 'transaction') {
    throw new InvalidArgumentError(`scope must be 'session' or 'transaction', got ${String(scope)}`, details)
  }
  if (mode !== 'exclusive' && mode !== 'shared') {
    throw new InvalidArgumentError(`mode must be 'exclusive' or 'shared', got ${String(mode)}`, details)
  }
  return { scope, mode, keepAliveMs: checkMs('keepAliveMs', keepAliveMs, details, 1) }
}

/** @internal Validates the options of one wait, before any SQL. */
export function resolveAcquireOptions(
  options: unknown,
  details: PgLockErrorDetails,
): { readonly timeoutMs: number | undefined; readonly signal: AbortSignal | undefined } {
  if (options !== undefined && !isObject(options)) {
    throw new InvalidArgumentError(`options must be an object, got ${options === null ? 'null' : typeof options}`, details)
  }
  const { timeoutMs, signal } = (options ?? {}) as AcquireOptions
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError('signal must be an AbortSignal', details)
  }
  return { timeoutMs: checkMs('timeoutMs', timeoutMs, details, 0), signal }
}
