import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import type { PressureSample } from './scenarios.js'

const CHILD_FILE = fileURLToPath(new URL('./pool-pressure-child.ts', import.meta.url))

/** What the parent tells the child, through the environment variable {@link PRESSURE_ENV}. */
export interface PressureJob {
  readonly contender: string
  readonly url: string
  readonly tasks: number
  readonly poolSize: number
  readonly key: number
  readonly applicationName: string
}

export const PRESSURE_ENV = 'PGLOCK_BENCH_PRESSURE_JOB'

/** What the child reports, over the IPC channel. */
export type PressureMessage =
  | { readonly type: 'started' }
  | { readonly type: 'progress'; readonly completed: number; readonly maxConnections: number }
  | { readonly type: 'done'; readonly elapsedMs: number; readonly maxConnections: number }
  | { readonly type: 'failed'; readonly completed: number; readonly error: string }

/**
 * (d) Pool pressure: `tasks` concurrent cycles on one key over a pool of `poolSize`, each doing
 * one query on the lock's connection and one through the pool. Runs in a child process, so that
 * a deadlock can be ended by killing it; its backends are then terminated by application name,
 * which also frees the lock.
 */
export async function runPoolPressure(
  contender: string,
  options: { url: string; tasks: number; poolSize: number; timeoutMs: number; key: number },
): Promise<PressureSample> {
  const job: PressureJob = {
    contender,
    url: options.url,
    tasks: options.tasks,
    poolSize: options.poolSize,
    key: options.key,
    applicationName: `pglock-bench-${process.pid}-pressure-${options.key}`,
  }
  const child = fork(CHILD_FILE, [], {
    env: { ...process.env, [PRESSURE_ENV]: JSON.stringify(job) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  let completed = 0
  let maxConnections = 0
  const outcome = await new Promise<PressureSample>((resolve) => {
    let timer: NodeJS.Timeout | undefined
    const settle = (sample: PressureSample) => {
      if (timer !== undefined) clearTimeout(timer)
      child.removeAllListeners()
      resolve(sample)
    }
    child.on('message', (message: PressureMessage) => {
      if (message.type === 'started') {
        timer = setTimeout(() => {
          child.kill('SIGKILL')
          settle({ outcome: 'deadlock', tasks: job.tasks, completed, timeoutMs: options.timeoutMs, maxConnections })
        }, options.timeoutMs)
      } else if (message.type === 'progress') {
        completed = message.completed
        maxConnections = Math.max(maxConnections, message.maxConnections)
      } else if (message.type === 'done') {
        settle({
          outcome: 'completed',
          tasks: job.tasks,
          elapsedMs: message.elapsedMs,
          maxConnections: Math.max(maxConnections, message.maxConnections),
        })
      } else {
        settle({ outcome: 'failed', tasks: job.tasks, completed: message.completed, error: message.error })
      }
    })
    child.on('exit', (code, signal) => {
      settle({ outcome: 'failed', tasks: job.tasks, completed, error: `the child process exited early (${signal ?? `code ${code}`})` })
    })
  })
  await waitForExit(child)
  await terminateBackends(options.url, job.applicationName)
  return outcome
}

function waitForExit(child: ReturnType<typeof fork>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

async function terminateBackends(url: string, applicationName: string): Promise<void> {
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  try {
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [applicationName])
  } finally {
    await admin.end()
  }
}
