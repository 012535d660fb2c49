import type { CriticalSection } from './contender.js'
import { CONTENDERS } from './contenders.js'
import { PRESSURE_ENV, type PressureJob, type PressureMessage } from './pool-pressure.js'
import { subscribeIfAsked } from './subscriber.js'

const PROGRESS_INTERVAL_MS = 100

function report(message: PressureMessage): void {
  process.send?.(message)
}

async function main(): Promise<void> {
  subscribeIfAsked()
  const job = JSON.parse(process.env[PRESSURE_ENV] ?? 'null') as PressureJob | null
  if (job === null) throw new Error(`${PRESSURE_ENV} is not set: this file is run by the bench, not by hand`)
  const contender = CONTENDERS.find((candidate) => candidate.name === job.contender)
  if (contender === undefined) throw new Error(`no contender named ${job.contender}`)
  const open = await contender.open({ url: job.url, poolSize: job.poolSize, applicationName: job.applicationName })
  const { poolQuery } = open
  if (poolQuery === undefined) throw new Error(`${contender.name} has no pool to put under pressure`)
  let completed = 0
  let maxConnections = 0
  const section: CriticalSection = async (db) => {
    if (db === undefined) throw new Error(`${contender.name} does not expose the lock's connection`)
    maxConnections = Math.max(maxConnections, open.connections())
    await db.query('SELECT 1')
    await poolQuery('SELECT 2')
  }
  report({ type: 'started' })
  const startedAt = performance.now()
  const heartbeat = setInterval(() => {
    maxConnections = Math.max(maxConnections, open.connections())
    report({ type: 'progress', completed, maxConnections })
  }, PROGRESS_INTERVAL_MS)
  try {
    await Promise.all(
      Array.from({ length: job.tasks }, async () => {
        await open.cycle(job.key, section)
        completed += 1
        report({ type: 'progress', completed, maxConnections })
      }),
    )
  } catch (error) {
    report({ type: 'failed', completed, error: String((error as Error)?.message ?? error) })
    return
  } finally {
    clearInterval(heartbeat)
  }
  report({ type: 'done', elapsedMs: performance.now() - startedAt, maxConnections })
  await open.close()
}

main().then(
  () => process.disconnect?.(),
  (error: unknown) => {
    report({ type: 'failed', completed: 0, error: String((error as Error)?.message ?? error) })
    process.exitCode = 1
    process.disconnect?.()
  },
)
