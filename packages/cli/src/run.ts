import { type ChildProcess, spawn } from 'node:child_process'
import { constants } from 'node:os'
import { createLock, type KeyHash, LockTimeoutError } from '@pglock/pg'
import { connect, describeError, disconnect, formatDuration } from './connection.js'
import { EXIT, ExitError, quote } from './exit-codes.js'

/** Signals `pglock run` passes on to its command; any of them ending pglock would orphan the command, unlocked. */
const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const

/**
 * How long pglock waits to release the lock and close its connection after the command exits.
 * Past that it exits anyway: the server frees a session's locks when its connection closes.
 */
const CLEANUP_MS = 5_000

/** What `pglock run` was asked to do. */
export interface RunOptions {
  readonly key: string
  readonly command: string
  readonly args: readonly string[]
  readonly url: string | undefined
  readonly keyHash: KeyHash
  readonly shared: boolean
  /** Take the lock only if it is free now. */
  readonly try: boolean
  readonly timeoutMs: number | undefined
  readonly keepAliveMs: number | undefined
  /** After the lock is lost: how long the command has between SIGTERM and SIGKILL. */
  readonly killAfterMs: number
  readonly quiet: boolean
}

/**
 * Runs the command while holding the lock on its own connection, and resolves to the exit code
 * `pglock` ends with: the command's, or one of {@link EXIT}'s.
 *
 * - SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the command; the lock is released after
 *   the command exits. Before the command starts, they abort the wait (exit 128 + the signal).
 * - A lost lock terminates the command: SIGTERM, then SIGKILL after `killAfterMs`; exit 74.
 *
 * @example
 * ```ts
 * process.exitCode = await runLocked({ key: 'nightly', command: './nightly.sh', args: [], ... })
 * ```
 */
export async function runLocked(options: RunOptions): Promise<number> {
  const stopped = new AbortController()
  let child: ChildProcess | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    if (child !== undefined) child.kill(signal)
    else stopped.abort(new ExitError(128 + constants.signals[signal], `${signal} received while waiting for the lock`))
  }
  for (const signal of FORWARDED) process.on(signal, onSignal)
  // --timeout bounds the whole wait, the connection's included, except that 0 (as the library's
  // `timeoutMs: 0`) means one try of the lock, however long the connection takes
  const connectMs = options.timeoutMs === 0 ? undefined : options.timeoutMs
  const deadline = options.timeoutMs === undefined ? undefined : performance.now() + options.timeoutMs
  try {
    const client = await abortable(connect(options.url, `pglock run ${options.key}`, connectMs), stopped.signal)
    try {
      const lock = createLock(client, options.key, {
        mode: options.shared ? 'shared' : 'exclusive',
        keyHash: options.keyHash,
        keepAliveMs: options.keepAliveMs,
      })
      const remainingMs = deadline === undefined ? undefined : Math.max(0, Math.round(deadline - performance.now()))
      if (!(await take(lock, options, remainingMs, stopped.signal))) {
        if (!options.quiet) console.error(`pglock: ${busy(options.key)}`)
        return EXIT.busy
      }
      let lost = false
      let killer: NodeJS.Timeout | undefined
      const started = launch(options)
      child = started
      const onLost = () => {
        lost = true
        console.error(`pglock: ${describeError(lock.signal.reason)}; terminating the command`)
        started.kill('SIGTERM')
        killer = setTimeout(() => started.kill('SIGKILL'), options.killAfterMs)
      }
      if (lock.signal.aborted) onLost()
      else lock.signal.addEventListener('abort', onLost, { once: true })
      let outcome: number | NodeJS.Signals
      try {
        outcome = await finished(started, options.command)
      } finally {
        clearTimeout(killer)
        lock.signal.removeEventListener('abort', onLost)
        if (!lost) await bounded(release(lock, options.key), CLEANUP_MS)
      }
      if (lost) return EXIT.lost
      if (typeof outcome === 'number') return outcome
      return 128 + constants.signals[outcome]
    } finally {
      await bounded(disconnect(client), CLEANUP_MS)
    }
  } finally {
    for (const signal of FORWARDED) process.removeListener(signal, onSignal)
  }
}

async function release(lock: ReturnType<typeof createLock>, key: string): Promise<void> {
  try {
    await lock.release()
  } catch (error) {
    console.error(`pglock: could not release the lock ${quote(key)}: ${describeError(error)}`)
  }
}

async function take(
  lock: ReturnType<typeof createLock>,
  options: RunOptions,
  timeoutMs: number | undefined,
  signal: AbortSignal,
): Promise<boolean> {
  try {
    if (options.try) return await lock.tryAcquire({ signal })
    await lock.acquire({ timeoutMs, signal })
    return true
  } catch (error) {
    if (error instanceof ExitError) throw error
    if (error instanceof LockTimeoutError) {
      if (options.quiet) throw new ExitError(EXIT.timeout, '')
      if (options.timeoutMs === 0) throw new ExitError(EXIT.timeout, `${busy(options.key)} (--timeout 0 tries once)`)
      throw new ExitError(
        EXIT.timeout,
        `timed out after ${formatDuration(options.timeoutMs ?? 0)} waiting for the lock ${quote(options.key)}`,
      )
    }
    throw new ExitError(EXIT.unavailable, `could not take the lock ${quote(options.key)}: ${describeError(error)}`)
  }
}

function busy(key: string): string {
  return `lock ${quote(key)} is held by another session`
}

/** Waits for `promise` at most `ms`: once the command has run, a connection that hangs must not hold pglock's exit. */
async function bounded(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))])
  } finally {
    clearTimeout(timer)
  }
}

/** Rejects with `signal.reason` when it aborts first. */
async function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort)
  }
}

function launch(options: RunOptions): ChildProcess {
  return spawn(options.command, options.args, { stdio: 'inherit' })
}

/** The command's exit code or the signal that killed it; a command that could not start is an `ExitError` (126 or 127). */
function finished(child: ChildProcess, command: string): Promise<number | NodeJS.Signals> {
  return new Promise((resolve, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      // 'error' after a start means a kill() failed: the command is still running, and 'exit' will come
      if (child.pid !== undefined) return
      if (error.code === 'ENOENT') return reject(new ExitError(EXIT.notFound, `${command}: command not found`))
      reject(new ExitError(EXIT.cannotRun, `${command}: ${error.code === 'EACCES' ? 'permission denied' : error.message}`))
    })
    child.once('exit', (code, signal) => resolve(signal ?? code ?? 0))
  })
}
