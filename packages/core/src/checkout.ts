import { UnsupportedError } from './errors.js'
import type { LockConnection, LockExecutor } from './executor.js'
import type { Wait } from './options.js'
import { interruptible } from './wait.js'

/**
 * @internal The part of the acquire's deadline that bounds waiting for a connection. `timeoutMs:
 * 0` means one try of the lock, made once a connection is in hand, however long that takes.
 */
export function checkoutDeadline(wait: Wait): number | undefined {
  return wait.timeoutMs === 0 ? undefined : wait.deadline
}

/**
 * @internal Pins a connection for a lock, within the acquire's `signal` and deadline: a pool
 * exhausted by other work is when a bound matters most. A connection that arrives after the
 * acquire gave up goes straight back to its pool. The caller wraps it (see `connection.ts`).
 */
export function checkOut<Db>(executor: LockExecutor<Db>, wait: Wait): Promise<LockConnection<Db>> {
  if (executor.connect === undefined) throw new UnsupportedError('this handle cannot pin a connection for a lock')
  const deadline = checkoutDeadline(wait)
  const connecting = executor.connect()
  if (deadline === undefined && wait.signal === undefined) return connecting
  return interruptible(connecting, { signal: wait.signal, deadline, abandon: giveBack })
}

const giveBack = (late: LockConnection<unknown>) => void late.release({ destroy: false })
