import { MemoryPostgres, memoryExecutor, type PgLockRow } from '../../testing/src/memory-postgres.ts'
import { bindExecutor } from '../src/adapter.js'
import { type KeyHash, type LockKey, pgLocksRow, resolveLockId } from '../src/index.js'

/**
 * The core's lock functions over the in-memory Postgres model. The model is imported by relative
 * path, not as `@pglock/testing` (which depends on the core): the core's tests need no workspace
 * cycle and load the core from its source.
 */
export const { createLock, withLock, tryWithLock } = bindExecutor(memoryExecutor)

export { MemoryPostgres }

/** `pg_locks` rows of the advisory lock `key` names. */
export function locksOf(server: MemoryPostgres, key: LockKey, options: { readonly keyHash?: KeyHash } = {}): PgLockRow[] {
  return server.locks(pgLocksRow(resolveLockId(key, options)))
}

/** Pids holding `key`, with their mode. */
export function holders(server: MemoryPostgres, key: LockKey): string[] {
  return locksOf(server, key)
    .filter((row) => row.granted)
    .map((row) => `${row.pid}:${row.mode}`)
}

/** Pids waiting in Postgres for `key`. */
export function waiters(server: MemoryPostgres, key: LockKey): number[] {
  return locksOf(server, key)
    .filter((row) => !row.granted)
    .map((row) => row.pid)
}

/** Lets every pending promise chain (the model answers in microtasks) run to its end. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

/** Whether `promise` is still pending once everything runnable has run. */
export async function pending(promise: Promise<unknown>): Promise<boolean> {
  let done = false
  promise.then(
    () => (done = true),
    () => (done = true),
  )
  await settle()
  return !done
}
