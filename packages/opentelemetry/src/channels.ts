import type { LockKey, LockMode, LockScope } from '@pglock/core'

/**
 * The channels `@pglock/core` publishes on, typed by the fields this package reads. They are
 * subscribed by name, so any core that publishes them is heard, whichever copy of it is loaded.
 */
export const ACQUIRE_CHANNEL = 'pglock:acquire'
export const RUN_CHANNEL = 'pglock:run'
export const RELEASE_CHANNEL = 'pglock:release'
export const LOST_CHANNEL = 'pglock:lost'

/** What every message says of its lock. */
export interface LockTraceBase {
  readonly key: LockKey
  readonly lockId: bigint | readonly [number, number]
  readonly mode: LockMode
  readonly scope: LockScope
  readonly adapter: string
  readonly pid: number | undefined
}

/** One acquire attempt: `withLock`, `tryWithLock`, `lock.acquire()` or `lock.tryAcquire()`. */
export interface AcquireTrace extends LockTraceBase {
  readonly operation: 'withLock' | 'tryWithLock' | 'acquire' | 'tryAcquire'
  readonly timeoutMs: number | undefined
  readonly outcome: AcquireOutcome | undefined
  readonly waitedMs: number | undefined
  readonly error?: unknown
}

/** How an acquire attempt settled. */
export type AcquireOutcome = 'acquired' | 'busy' | 'timeout' | 'aborted' | 'error'

/** `withLock`'s or `tryWithLock`'s `fn`, run while the lock is held. */
export interface RunTrace extends LockTraceBase {
  readonly error?: unknown
}

/** The end of a lock that pglock performs or observes: an unlock, a commit, a rollback. */
export interface ReleaseTrace extends LockTraceBase {
  readonly heldMs: number | undefined
  readonly released: boolean | undefined
  readonly error?: unknown
}

/** A held lock that was lost with its connection. */
export interface LostMessage extends LockTraceBase {
  readonly heldMs: number
  readonly error: unknown
}
