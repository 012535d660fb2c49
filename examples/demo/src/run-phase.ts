import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { ENV_DATABASE_URL, ENV_TABLE, type GoMessage, isWorkerMessage, type Phase } from './protocol.js'

const WORKER_FILE = fileURLToPath(new URL('./worker.ts', import.meta.url))

/** How one phase runs: how many worker processes, each doing how many increments, on which counter. */
export interface PhaseSettings {
  readonly phase: Phase
  readonly workers: number
  readonly increments: number
  readonly url: string
  readonly table: string
}

function forkWorker({ phase, increments, url, table }: PhaseSettings): ChildProcess {
  return fork(WORKER_FILE, [phase, String(increments)], {
    env: { ...process.env, [ENV_DATABASE_URL]: url, [ENV_TABLE]: table },
  })
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null
}

function stopAll(children: readonly ChildProcess[]): void {
  for (const child of children) if (isRunning(child)) child.kill('SIGTERM')
}

function startAll(children: readonly ChildProcess[]): void {
  const go: GoMessage = { type: 'go' }
  for (const child of children) child.send(go)
}

/**
 * Forks the phase's workers, releases them together once all have connected, reports the
 * total number of increments done as they go, and resolves to the milliseconds from the start
 * signal to the last increment. When a worker fails or `signal` aborts, stops every worker and
 * rejects once all have exited: no worker outlives the returned promise.
 */
export function runPhase(settings: PhaseSettings, signal: AbortSignal, onProgress: (done: number) => void): Promise<number> {
  signal.throwIfAborted()
  const children = Array.from({ length: settings.workers }, () => forkWorker(settings))
  const total = settings.workers * settings.increments
  const doneByWorker = children.map(() => 0)
  let ready = 0
  let exited = 0
  let startedAt = 0
  let finishedAt = 0
  let failure: { readonly error: unknown } | undefined

  return new Promise<number>((resolve, reject) => {
    const settleWhenAllExited = () => {
      if (exited < children.length) return
      signal.removeEventListener('abort', onAbort)
      if (failure) reject(failure.error)
      else resolve((finishedAt || performance.now()) - startedAt)
    }
    const fail = (error: unknown) => {
      if (failure) return
      failure = { error }
      stopAll(children)
      settleWhenAllExited()
    }
    const onAbort = () => fail(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })

    const onMessage = (index: number, message: unknown) => {
      if (!isWorkerMessage(message)) return
      if (message.type === 'ready' && ++ready === children.length) {
        startedAt = performance.now()
        startAll(children)
      }
      if (message.type === 'progress') {
        doneByWorker[index] = message.done
        const done = doneByWorker.reduce((sum, n) => sum + n, 0)
        if (done === total) finishedAt = performance.now()
        onProgress(done)
      }
    }
    const onExit = (index: number, code: number | null, exitSignal: NodeJS.Signals | null) => {
      exited++
      if (code !== 0) fail(new Error(`worker ${index + 1} (${settings.phase}) exited with ${exitSignal ?? `code ${code}`}`))
      settleWhenAllExited()
    }

    children.forEach((child, index) => {
      child.on('message', (message: unknown) => onMessage(index, message))
      child.once('exit', (code, exitSignal) => onExit(index, code, exitSignal))
      child.on('error', (error) => {
        fail(error)
        if (child.pid === undefined) onExit(index, null, null)
      })
    })
  })
}
