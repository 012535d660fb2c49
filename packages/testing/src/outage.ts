import { LockLostError } from '@pglock/core'
import { expect } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { abortedWithin, settleWithin } from './bench.ts'

/** How long any promise may stay pending once the server is gone, before a test calls it stuck. */
export const SETTLE_BOUND_MS = 5_000

/**
 * A `withLock` that signals once its callback runs, then holds until its signal aborts: a holder
 * for the suites that take the server away (restart, failover).
 *
 * @example
 * ```ts
 * const holder = holdUntilLost(adapter, pool.db, key, { scope: 'session' })
 * await holder.inside
 * ```
 */
export function holdUntilLost(adapter: AdapterUnderTest, db: unknown, key: string, options: Record<string, unknown>) {
  let entered: () => void = () => undefined
  const inside = new Promise<void>((resolve) => {
    entered = resolve
  })
  const done = adapter.lib.withLock(
    db,
    key,
    async ({ signal }) => {
      entered()
      await abortedWithin(signal, SETTLE_BOUND_MS * 3)
      return 'finished after the loss'
    },
    options,
  )
  done.catch(() => undefined)
  return { inside, done }
}

/** What was holding and waiting when the server went away. */
export interface Outage {
  /** a `createLock` handle that held a lock, and its signal's abort */
  readonly handle?:
    | {
        readonly lock: { readonly isHeld: boolean; release(): Promise<boolean> }
        readonly lost: Promise<{ readonly reason: unknown }>
      }
    | undefined
  readonly holders: readonly { readonly done: Promise<unknown> }[]
  readonly waiters: readonly Promise<unknown>[]
  /** where the server went, for the messages: 'the server', 'the primary' */
  readonly server: string
}

/**
 * Asserts what a user sees once the server is gone: the handle and every holder lose with
 * `LockLostError`, and every waiter settles without a `RELEASE_FAILED` (a dead session holds nothing).
 *
 * @example
 * ```ts
 * await server.stop()
 * await expectOutageSettled({ holders, waiters, server: 'the server' })
 * ```
 */
export async function expectOutageSettled({ handle, holders, waiters, server }: Outage): Promise<void> {
  if (handle !== undefined) {
    expect((await handle.lost).reason).toBeInstanceOf(LockLostError)
    expect(handle.lock.isHeld).toBe(false)
    expect(await settleWithin(handle.lock.release(), SETTLE_BOUND_MS)).toEqual({ state: 'fulfilled', value: false })
  }
  for (const holder of holders) {
    expect(await settleWithin(holder.done, SETTLE_BOUND_MS)).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
  }
  // a waiter may be granted the lock in the moment between the holder's backend exiting and its own
  for (const waiter of waiters) {
    const result = await settleWithin(waiter, SETTLE_BOUND_MS)
    expect(result.state, `a waiter settles once ${server} is gone`).not.toBe('pending')
    expect((result as { error: unknown }).error, 'a dead session holds nothing, so nothing failed to release').not.toMatchObject({
      code: 'RELEASE_FAILED',
    })
  }
}
