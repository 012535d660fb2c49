/**
 * One demo worker process, forked by `demo.ts` as `worker.ts <phase> <increments>` with the
 * database URL and table name in its environment. It connects, waits for the parent's `go` so
 * that all workers race from the same instant, then increments the shared counter, reporting
 * progress over IPC. In the `locked` phase each increment runs under `withLock` on `lease.db`.
 */
import { withLock } from '@pglock/pg'
import pg from 'pg'
import { incrementByReadModifyWrite } from './counter.js'
import { ENV_DATABASE_URL, ENV_TABLE, isGoMessage, isPhase, LOCK_KEY, type Phase, type WorkerMessage } from './protocol.js'

const PROGRESS_EVERY = 10

interface WorkerConfig {
  readonly phase: Phase
  readonly increments: number
  readonly url: string
  readonly table: string
}

function readConfig(): WorkerConfig {
  const [phase, increments] = process.argv.slice(2)
  const url = process.env[ENV_DATABASE_URL]
  const table = process.env[ENV_TABLE]
  const count = Number(increments)
  if (!isPhase(phase) || !Number.isSafeInteger(count) || count < 1 || !url || !table) {
    throw new Error(`usage: worker.ts unlocked|locked <increments>, with ${ENV_DATABASE_URL} and ${ENV_TABLE} set`)
  }
  return { phase, increments: count, url, table }
}

function send(message: WorkerMessage): void {
  if (!process.send) throw new Error('worker.ts runs as a child of demo.ts (no IPC channel)')
  process.send(message)
}

function waitForGo(): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      if (!isGoMessage(message)) return
      process.off('message', onMessage)
      resolve()
    }
    process.on('message', onMessage)
  })
}

function incrementer(phase: Phase, pool: pg.Pool, table: string): () => Promise<void> {
  if (phase === 'unlocked') return () => incrementByReadModifyWrite(pool, table)
  return () => withLock(pool, LOCK_KEY, ({ db }) => incrementByReadModifyWrite(db, table))
}

async function run({ phase, increments, url, table }: WorkerConfig): Promise<void> {
  const pool = new pg.Pool({ connectionString: url, max: 1 })
  try {
    await pool.query('SELECT 1')
    const started = waitForGo()
    send({ type: 'ready' })
    await started
    const increment = incrementer(phase, pool, table)
    for (let done = 1; done <= increments; done++) {
      await increment()
      if (done % PROGRESS_EVERY === 0 || done === increments) send({ type: 'progress', done })
    }
  } finally {
    await pool.end()
  }
}

const exitWhenOrphaned = () => process.exit(1)
process.once('disconnect', exitWhenOrphaned)
await run(readConfig())
process.off('disconnect', exitWhenOrphaned)
process.disconnect()
