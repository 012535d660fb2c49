import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * Publishes on pglock's channels exactly as the tracing contract says the core does, with no
 * database: for the unit tests of how messages map to spans and metrics. Every behaviour a user
 * sees is tested through real locks in the other test files.
 */
const acquireChannel = diagnosticsChannel.tracingChannel<unknown, object>('pglock:acquire')
const runChannel = diagnosticsChannel.tracingChannel<unknown, object>('pglock:run')
const releaseChannel = diagnosticsChannel.tracingChannel<unknown, object>('pglock:release')
const lostChannel = diagnosticsChannel.channel('pglock:lost')

export type Outcome = 'acquired' | 'busy' | 'timeout' | 'aborted' | 'error'

export interface FakeLock {
  key: string | number | bigint | readonly [number, number]
  lockId: bigint | readonly [number, number]
  mode: 'exclusive' | 'shared'
  scope: 'session' | 'transaction'
  adapter: string
  pid: number | undefined
}

export function fakeLock(overrides: Partial<FakeLock> = {}): FakeLock {
  return {
    key: 'invoice:42',
    lockId: -464685171814670893n,
    mode: 'exclusive',
    scope: 'session',
    adapter: 'pg',
    pid: undefined,
    ...overrides,
  }
}

/** One acquire attempt that settles with `outcome` after `waitMs`, rejecting with `error` if given. */
export function publishAcquire(
  lock: FakeLock,
  outcome: Outcome,
  { waitMs = 0, error, operation = 'acquire' }: { waitMs?: number; error?: Error; operation?: string } = {},
): Promise<unknown> {
  const message = {
    ...lock,
    operation,
    timeoutMs: undefined as number | undefined,
    outcome: undefined as Outcome | undefined,
    waitedMs: undefined as number | undefined,
  }
  const started = performance.now()
  return acquireChannel.tracePromise(async () => {
    await new Promise((resolve) => setTimeout(resolve, waitMs))
    message.outcome = outcome
    message.waitedMs = performance.now() - started
    message.pid = 4242
    if (error) throw error
    return outcome !== 'busy'
  }, message)
}

/** `fn` run as withLock runs it while the lock is held. */
export function publishRun<T>(lock: FakeLock, fn: () => Promise<T>): Promise<T> {
  return runChannel.tracePromise(fn, { ...lock, pid: 4242 })
}

export function publishRelease(lock: FakeLock, heldMs: number, error?: Error): Promise<unknown> {
  const message = { ...lock, pid: 4242, heldMs, released: undefined as boolean | undefined }
  return releaseChannel.tracePromise(async () => {
    message.released = error === undefined
    if (error) throw error
    return true
  }, message)
}

export function publishLost(lock: FakeLock, heldMs: number): void {
  lostChannel.publish({ ...lock, pid: 4242, heldMs, error: Object.assign(new Error('lock lost'), { code: 'LOST' }) })
}
