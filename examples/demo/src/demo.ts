/**
 * pglock demo: why a lock matters.
 *
 * Several worker processes increment one counter row by read-modify-write (`SELECT value`, a
 * pause, `UPDATE ... SET value = $1`). Without a lock, workers read the same value and overwrite
 * each other, so increments are lost. Under `withLock(pool, 'pglock-demo:counter', fn)` from
 * `@pglock/pg` the same code loses none. Uses `DATABASE_URL` when set, otherwise a throwaway
 * Postgres from `@pglock/testing`. Exits 0 when the locked phase lost nothing, else 1.
 *
 * Usage: `pnpm demo [--workers 6] [--increments 200]`
 */
import { parseArgs } from 'node:util'
import { resolveTestDatabase } from '@pglock/testing/database'
import pg from 'pg'
import { createCounterTable, dropCounterTable, newCounterTableName, readCounter, resetCounter } from './counter.js'
import { createProgress } from './progress.js'
import type { Phase } from './protocol.js'
import { formatResultsTable, lostUpdates, type PhaseResult } from './report.js'
import { runPhase } from './run-phase.js'

interface DemoSettings {
  readonly workers: number
  readonly increments: number
}

interface DemoDatabase {
  readonly url: string
  readonly source: string
  stop(): Promise<void>
}

const PHASE_LABELS: Record<Phase, string> = { unlocked: 'no lock', locked: 'withLock' }
const LABEL_WIDTH = Math.max(...Object.values(PHASE_LABELS).map((label) => label.length))
const EXIT_INTERRUPTED = 130

function positiveInteger(name: string, text: string): number {
  const value = Number(text)
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(text)}`)
  return value
}

function commandLineArgs(): string[] {
  const args = process.argv.slice(2)
  return args[0] === '--' ? args.slice(1) : args
}

function readSettings(): DemoSettings {
  const { values } = parseArgs({
    args: commandLineArgs(),
    options: { workers: { type: 'string', default: '6' }, increments: { type: 'string', default: '200' } },
  })
  return { workers: positiveInteger('workers', values.workers), increments: positiveInteger('increments', values.increments) }
}

async function openDatabase(): Promise<DemoDatabase> {
  const url = process.env.DATABASE_URL
  if (url) return { url, source: 'DATABASE_URL', stop: async () => undefined }
  return resolveTestDatabase()
}

function redacted(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparsable URL)'
  }
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', ignoreIdleConnectionError)
  await client.connect()
  return client
}

/** An idle client's connection error resurfaces as the rejection of its next query. */
function ignoreIdleConnectionError(): void {}

async function withCounterTable<T>(url: string, fn: (client: pg.Client, table: string) => Promise<T>): Promise<T> {
  const client = await connect(url)
  const table = newCounterTableName()
  try {
    await createCounterTable(client, table)
    try {
      return await fn(client, table)
    } finally {
      await dropCounterTable(client, table)
    }
  } finally {
    await client.end()
  }
}

/** Everything a phase needs: the demo's settings, the parent's connection and the counter's table. */
interface DemoRun {
  readonly settings: DemoSettings
  readonly client: pg.Client
  readonly url: string
  readonly table: string
  readonly signal: AbortSignal
}

async function runDemoPhase(phase: Phase, { settings, client, url, table, signal }: DemoRun): Promise<PhaseResult> {
  await resetCounter(client, table)
  const label = PHASE_LABELS[phase]
  const progress = createProgress(label.padEnd(LABEL_WIDTH), settings.workers * settings.increments)
  const elapsedMs = await runPhase({ phase, ...settings, url, table }, signal, (done) => progress.update(done))
  progress.finish(elapsedMs)
  return { phase, label, ...settings, finalValue: await readCounter(client, table), elapsedMs }
}

function conclusion([unlocked, locked]: readonly PhaseResult[]): string {
  if (!unlocked || !locked) return ''
  const lostWithout = lostUpdates(unlocked)
  const lostWith = lostUpdates(locked)
  const without =
    lostWithout > 0
      ? `Without a lock, ${lostWithout} increments were lost`
      : 'Without a lock, no increments were lost this time (the race is real, but this run got lucky)'
  const withLock = lostWith === 0 ? 'under withLock, none were.' : `under withLock, ${lostWith} were lost: that is a bug.`
  return `${without}; ${withLock}`
}

function listenForInterrupt(controller: AbortController): void {
  const interrupt = (signalName: NodeJS.Signals) => controller.abort(new Error(`interrupted by ${signalName}`))
  process.once('SIGINT', interrupt)
  process.once('SIGTERM', interrupt)
}

async function main(controller: AbortController): Promise<number> {
  const settings = readSettings()
  listenForInterrupt(controller)
  const database = await openDatabase()
  try {
    console.log(`Database: ${redacted(database.url)} (${database.source})`)
    console.log(`${settings.workers} worker processes × ${settings.increments} read-modify-write increments of one row, twice.\n`)
    const results = await withCounterTable(database.url, async (client, table) => {
      const run: DemoRun = { settings, client, url: database.url, table, signal: controller.signal }
      return [await runDemoPhase('unlocked', run), await runDemoPhase('locked', run)]
    })
    console.log(`\n${formatResultsTable(results)}\n\n${conclusion(results)}`)
    return results.every((result) => result.phase === 'unlocked' || lostUpdates(result) === 0) ? 0 : 1
  } finally {
    await database.stop()
  }
}

const controller = new AbortController()
main(controller).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    console.error(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}`)
    process.exitCode = controller.signal.aborted ? EXIT_INTERRUPTED : 1
  },
)
