/**
 * A worker process of the failover suite: loads an adapter under test and increments a counter
 * row under a fenced lock, over and over, through a failover. Each write is conditional on the
 * lock's fencing token (`... WHERE id = 1 AND fence < token`) and tells which server took it; a
 * cycle that fails (the primary is gone) is retried after a pause. Stops when the parent says
 * `stop`, then sends every cycle's outcome and exits.
 */
import type { Lease } from '@pglock/core'
import type { AdapterUnderTest } from './adapter.ts'

/** What the parent passes in `PGLOCK_FENCE_WORKER`. */
export interface FenceWorkerOptions {
  readonly url: string
  readonly adapter: string
  readonly applicationName: string
  readonly key: string
  readonly counter: string
  readonly scope: 'session' | 'transaction'
}

/**
 * One lock cycle as the worker saw it. `acked`: the write returned one row and its commit was
 * acknowledged (in session scope the statement commits on its own; in transaction scope, once
 * `withLock` resolved). `rejected`: the write matched no row, the fence was ahead of the token.
 * `unknown`: the token was handed out, then the connection died before an answer on the write or
 * its commit. Tokens travel as decimal text.
 */
export interface FenceCycle {
  readonly token: string
  readonly outcome: 'acked' | 'rejected' | 'unknown'
  /** the port of the server that answered the write (`inet_server_port()`), when it answered */
  readonly port?: number
  /** that server's clock at the write */
  readonly at?: string
  /** the cycle's place in this worker's sequence */
  readonly seq: number
}

/** What the parent may say: stop after the cycle under way. */
export type FenceWorkerCommand = { readonly stop: true }

/** How a worker is getting on: acknowledged writes by the port of the server that took them, and what went wrong. */
export interface FenceProgress {
  readonly ackedByPort: Readonly<Record<string, number>>
  /** cycles that failed, and cycles given up on while pending */
  readonly failed: number
  readonly stuck: number
  /** the last failure, for a test that times out */
  readonly lastError?: string | undefined
  /** rejections postgres.js 3.4 dropped while a new connection fetched its array types (porsager/postgres#1192) */
  readonly driverDropped: number
}

/** What the worker sends: its progress after each acknowledged write or failure; then every cycle at the end. */
export type FenceWorkerMessage = { readonly progress: FenceProgress } | { readonly cycles: readonly FenceCycle[] }

/**
 * The token of a lease taken with `fencing: true`; throws if there is none, so that a lease without
 * a token can never pass for a fenced one.
 *
 * @example
 * ```ts
 * await withLock(pool, 'job', async (lease) => console.log(tokenOf(lease)), { fencing: true })
 * ```
 */
export function tokenOf(lease: Lease<unknown>): bigint {
  const token = lease.fencingToken
  if (typeof token !== 'bigint') throw new Error(`a fenced lease has no fencing token (${String(token)})`)
  return token
}

/** How long one cycle may take before the worker gives up on its pool (a driver may leave a call pending forever after a loss). */
const CYCLE_BOUND_MS = 5_000

async function run(options: FenceWorkerOptions): Promise<void> {
  const orphaned = () => process.exit(2)
  process.on('disconnect', orphaned)
  const adapter = (await import(options.adapter)).default as AdapterUnderTest
  const open = () => adapter.openPool({ url: options.url, applicationName: options.applicationName, max: 1 })
  let pool = await open()
  const closing: Promise<void>[] = []
  let stop = false
  process.on('message', () => {
    stop = true
  })
  const send = (message: FenceWorkerMessage) => process.send?.(message)
  const cycles: FenceCycle[] = []
  const ackedByPort: Record<string, number> = {}
  const failures: { failed: number; stuck: number; lastError?: string; driverDropped: number } = { failed: 0, stuck: 0, driverDropped: 0 }
  const report = () => send({ progress: { ackedByPort, ...failures } })
  // postgres.js 3.4 drops the promise of a new connection's array-types fetch, so a connection cut
  // during it ends the process (porsager/postgres#1192, see the README); every other rejection still does
  process.on('unhandledRejection', (reason) => {
    if (!String((reason as { query?: unknown } | null)?.query).includes('typarray')) throw reason
    failures.driverDropped += 1
  })
  /** cycles given up on while pending: their token, if they got one, has an unknown outcome unless they end */
  const abandoned = new Set<{ token?: bigint }>()

  /** One lock cycle; records its own outcome whenever it ends, even after the worker gave up waiting for it. */
  const cycle = async (seq: number): Promise<boolean> => {
    const state: { token?: bigint } = {}
    let answer: { port: number; at: string } | undefined
    let wrote: boolean | undefined
    const record = (outcome: FenceCycle['outcome']) => {
      abandoned.delete(state)
      cycles.push({ token: String(state.token), outcome, seq, ...(outcome === 'unknown' ? {} : answer) })
      if (outcome === 'acked' && answer) {
        ackedByPort[answer.port] = (ackedByPort[answer.port] ?? 0) + 1
        report()
      }
    }
    const run = adapter.lib.withLock(
      pool.db,
      options.key,
      async (lease) => {
        state.token = tokenOf(lease)
        const rows = await adapter.query(
          lease.db,
          `UPDATE ${options.counter} SET value = value + 1, fence = '${state.token}' WHERE id = 1 AND fence < '${state.token}'
           RETURNING inet_server_port() AS port, clock_timestamp()::text AS at`,
        )
        wrote = rows.length === 1
        answer = { port: Number(rows[0]?.port), at: String(rows[0]?.at) }
        // in session scope the UPDATE committed on its own: its answer is the acknowledgement
        if (options.scope === 'session') record(wrote ? 'acked' : 'rejected')
      },
      { scope: options.scope, fencing: true },
    )
    const ended = run.then(
      () => {
        if (options.scope === 'transaction') record(wrote ? 'acked' : 'rejected')
        return true
      },
      (error: unknown) => {
        failures.failed += 1
        failures.lastError = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
        report()
        const answered = options.scope === 'session' && wrote !== undefined
        if (state.token !== undefined && !answered) record('unknown')
        else abandoned.delete(state)
        return false
      },
    )
    abandoned.add(state)
    let timer: NodeJS.Timeout | undefined
    const bound = new Promise<'stuck'>((resolve) => {
      timer = setTimeout(() => resolve('stuck'), CYCLE_BOUND_MS)
    })
    const outcome = await Promise.race([ended, bound]).finally(() => clearTimeout(timer))
    if (outcome === 'stuck') {
      failures.stuck += 1
      report()
    }
    return outcome === true
  }

  try {
    for (let seq = 0; !stop; seq += 1) {
      if (await cycle(seq)) continue
      // a pool that does not recover from a lost connection (postgres.js 3.4), or left a call pending, is replaced
      if (!adapter.caps.poolRecovers || abandoned.size > 0) {
        closing.push(pool.close().catch(() => undefined))
        pool = await open()
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  } finally {
    await pool.close()
    await Promise.race([Promise.all(closing), new Promise((resolve) => setTimeout(resolve, CYCLE_BOUND_MS))])
  }
  for (const { token } of abandoned) if (token !== undefined) cycles.push({ token: String(token), outcome: 'unknown', seq: -1 })
  process.off('disconnect', orphaned)
  // exit once the parent has the cycles: a call the driver left pending must not keep this process alive
  process.send?.({ cycles } satisfies FenceWorkerMessage, () => process.exit(0))
}

if (process.env.PGLOCK_FENCE_WORKER !== undefined) await run(JSON.parse(process.env.PGLOCK_FENCE_WORKER) as FenceWorkerOptions)
