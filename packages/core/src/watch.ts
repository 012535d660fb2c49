import type { Pinned } from './connection.js'
import { describeKey, LockLostError, type PgLockErrorDetails } from './errors.js'
import { PROBE_SQL, pidOf } from './sql.js'

/**
 * @internal Where a held lock's loss is detected: calls `onLost` once if the connection fails or
 * ends, or (with `keepAliveMs`) does not answer a probe in time, or answers it from another
 * backend than `pid`, the one holding the lock. Returns a function that stops watching.
 */
export function watchConnection(
  connection: Pinned<unknown>,
  keepAliveMs: number | undefined,
  onLost: (error: LockLostError) => void,
  details: PgLockErrorDetails,
  pid?: number,
): () => void {
  if (keepAliveMs === undefined) {
    let stopped = false
    const unsubscribe = connection.onLost((cause) => {
      if (stopped) return
      stopped = true
      onLost(connectionLostError(cause, details))
    })
    return () => {
      stopped = true
      unsubscribe()
    }
  }
  return keepAlive(connection, keepAliveMs, onLost, details, pid)
}

/** @internal The loss of a held lock whose connection failed or ended. */
export function connectionLostError(cause: unknown, details: PgLockErrorDetails): LockLostError {
  return new LockLostError(
    `lock ${describeKey(details.key)} was lost: the connection holding it failed (${String((cause as Error)?.message ?? cause)})`,
    {
      ...details,
      cause,
    },
  )
}

function keepAlive(
  connection: Pinned<unknown>,
  keepAliveMs: number,
  onLost: (error: LockLostError) => void,
  details: PgLockErrorDetails,
  pid: number | undefined,
): () => void {
  let stopped = false
  let timer: ReturnType<typeof setTimeout> | undefined
  const lost = (error: LockLostError) => {
    if (stopped) return
    stop()
    onLost(error)
  }
  const lostBecause = (cause: unknown, why: string) =>
    lost(new LockLostError(`lock ${describeKey(details.key)} was lost: ${why}`, { ...details, cause }))
  const unsubscribe = connection.onLost((cause) => lost(connectionLostError(cause, details)))
  const probe = () => {
    if (stopped) return
    const overdue = setTimeout(() => lostBecause(undefined, `the connection did not answer a probe within ${keepAliveMs} ms`), keepAliveMs)
    connection.query(PROBE_SQL).then(
      (rows) => {
        clearTimeout(overdue)
        const now = pidOf(rows[0])
        if (pid !== undefined && now !== undefined && now !== pid) return lostBecause(undefined, sessionMovedReason(pid, now))
        if (!stopped) timer = setTimeout(probe, keepAliveMs)
      },
      (error: unknown) => {
        clearTimeout(overdue)
        connection.failed(error)
        lostBecause(error, `a keep-alive probe failed (${String((error as Error)?.message ?? error)})`)
      },
    )
  }
  timer = setTimeout(probe, keepAliveMs)
  function stop() {
    stopped = true
    if (timer !== undefined) clearTimeout(timer)
    unsubscribe()
  }
  return stop
}

/**
 * @internal Why a session lock cannot be trusted once its connection's statements run on another
 * backend than the one that took it, and what to do about it.
 */
export function sessionMovedReason(heldOn: number, now: number): string {
  return (
    `the lock was taken on backend ${heldOn} but the connection now runs on backend ${now}: something between ` +
    'pglock and Postgres hands this connection to other sessions (a pooler in transaction mode, such as PgBouncer ' +
    `with pool_mode = transaction). Backend ${heldOn} may hold the lock until that server connection closes. ` +
    "Session locks need a connection that keeps its session: connect to Postgres directly or through session pooling, or use scope: 'transaction'"
  )
}
