/**
 * pglock's core alone, with no driver and no I/O: `withLock` from `@pglock/core`'s `bindExecutor`
 * over an in-memory connection whose statements resolve at once, next to the same cycle written
 * by hand over that connection. What is left between the two is the core's own CPU per cycle,
 * free of the network and of the noise of a shared machine.
 *
 * Then it runs again in a child process with `--subscriber`: a subscriber that does nothing listens
 * on pglock's tracing channels for that whole process, and the core's rows are "with a subscriber":
 * what tracing itself costs. A process of its own, so that the first table is what a process that
 * never subscribes gets (subscribing changes the channels' objects, which the JIT then sees too).
 * `pnpm --filter @pglock/bench core-cost [--cycles N] [--rounds N] [--profile] [--promises] [--core DIR] [--workspace] [--subscriber | --no-subscriber]`.
 */
import { createHook } from 'node:async_hooks'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { benchPackages } from './packages.js'
import { place, summarize } from './profile-summary.js'
import { formatNumber, formatSpread, table } from './report.js'
import { turnOrder } from './scenarios.js'
import { type Spread, spread } from './stats.js'
import { subscribeToPglock } from './subscriber.js'

const RESULTS_DIR = fileURLToPath(new URL('../../bench-results/', import.meta.url))

/** A row as the core reads it, and a statement it prepares: the shapes of `@pglock/core`'s executor API. */
type Row = Readonly<Record<string, unknown>>
interface PreparedStatement {
  readonly name: string
  readonly text: string
  readonly values: readonly (string | null)[]
}
type WithLock = (db: unknown, key: number, fn: () => unknown, options?: { readonly scope?: 'session' | 'transaction' }) => Promise<unknown>

/**
 * `bindExecutor`, from where the executor-authoring API lives: `@pglock/core/adapter` once issue
 * 12 moves it there, `@pglock/core` before. Resolved at run time, so the bench builds against either.
 */
async function loadBindExecutor(core: string | undefined): Promise<(toExecutor: (db: unknown) => object) => { withLock: WithLock }> {
  const specifiers =
    core === undefined
      ? ['@pglock/core/adapter', '@pglock/core']
      : ['dist/adapter.js', 'dist/index.js', ''].map((file) => pathToFileURL(resolve(core, file)).href)
  for (const specifier of specifiers) {
    try {
      const module = (await import(specifier)) as { bindExecutor?: unknown }
      if (typeof module.bindExecutor === 'function') return module.bindExecutor as never
    } catch {
      // not this entry: try the next
    }
  }
  throw new Error(`found no bindExecutor in ${specifiers.join(', ')}`)
}

/** One in-memory connection: every statement answers at once, as Postgres would for a free lock. */
class MemoryConnection {
  readonly owned = true
  readonly db = this
  readonly scope = this
  readonly connectionKey = this
  static readonly LOCKED: readonly Row[] = [{ pg_advisory_lock: '', pid: 1 }]
  static readonly UNLOCKED: readonly Row[] = [{ released: true, pid: 1 }]
  static readonly NONE: readonly Row[] = []

  query(sql: string): Promise<readonly Row[]> {
    return Promise.resolve(sql.startsWith('SELECT') || sql.startsWith('BEGIN') ? MemoryConnection.LOCKED : MemoryConnection.NONE)
  }

  execute(statement: PreparedStatement): Promise<readonly Row[]> {
    return Promise.resolve(statement.name.includes('unlock') ? MemoryConnection.UNLOCKED : MemoryConnection.LOCKED)
  }

  cancel(): Promise<void> {
    return Promise.resolve()
  }

  onLost(): () => void {
    return () => undefined
  }

  release(): void {}
}

/** A pool of one in-memory connection, handed out at once. */
class MemoryPool {
  readonly connection = new MemoryConnection()
  connect(): Promise<MemoryConnection> {
    return Promise.resolve(this.connection)
  }
}

const pool = new MemoryPool()
/** A pool executor, under the field names from before and after issue 12's renames (`scope`, `queueKey`). */
const executor = {
  kind: 'pool',
  scope: pool,
  queueKey: pool,
  connect: () => pool.connect(),
}
const { values: flags } = parseArgs({
  options: {
    cycles: { type: 'string' },
    rounds: { type: 'string' },
    profile: { type: 'boolean' },
    promises: { type: 'boolean' },
    top: { type: 'string' },
    core: { type: 'string' },
    workspace: { type: 'boolean' },
    subscriber: { type: 'boolean' },
    'no-subscriber': { type: 'boolean' },
  },
})
if (flags.subscriber) subscribeToPglock()
/** The core's rows are named for whether a subscriber listens. */
const traced = flags.subscriber ? ', with a subscriber' : ''
/** `--core DIR` measures another checkout's built core (a worktree's packages/core), not this one's. */
const { withLock } = (await loadBindExecutor(flags.core))(() => executor)

const LOCK: PreparedStatement = { name: 'lock', text: 'SELECT pg_advisory_lock($1)', values: ['7'] }
const UNLOCK: PreparedStatement = { name: 'unlock', text: 'SELECT pg_advisory_unlock($1)', values: ['7'] }
const section = () => undefined

/** The cycles compared: the hand-written forms use the same connection and statements. */
const CYCLES: Record<string, () => Promise<unknown>> = {
  'by hand, session': async () => {
    const connection = await pool.connect()
    try {
      await connection.execute(LOCK)
      try {
        await section()
      } finally {
        await connection.execute(UNLOCK)
      }
    } finally {
      connection.release()
    }
  },
  [`core withLock, session${traced}`]: () => withLock(pool, 7, section),
  'by hand, transaction (BEGIN with the lock)': async () => {
    const connection = await pool.connect()
    try {
      await connection.query("BEGIN; SELECT pg_advisory_xact_lock('7'::int8)")
      await section()
      await connection.query('COMMIT')
    } finally {
      connection.release()
    }
  },
  [`core withLock, transaction${traced}`]: () => withLock(pool, 7, section, { scope: 'transaction' }),
}

async function loop(cycle: () => Promise<unknown>, cycles: number): Promise<void> {
  for (let index = 0; index < cycles; index += 1) await cycle()
}

async function promisesPerCycle(cycle: () => Promise<unknown>, cycles: number): Promise<number> {
  let promises = 0
  const hook = createHook({
    init(_id, type) {
      if (type === 'PROMISE') promises += 1
    },
  })
  hook.enable()
  try {
    await loop(cycle, cycles)
  } finally {
    hook.disable()
  }
  return promises / cycles
}

/**
 * Where the promises of a cycle are made: each is charged to the innermost frame of pglock's own
 * code (or the by-hand cycle) on the stack when it was created, mapped to its TypeScript source.
 */
async function promiseSites(cycle: () => Promise<unknown>, cycles: number): Promise<[string, number][]> {
  const sites = new Map<string, number>()
  const limit = Error.stackTraceLimit
  const hook = createHook({
    init(_id, type) {
      if (type !== 'PROMISE') return
      Error.stackTraceLimit = 12
      const holder: { stack?: string } = {}
      Error.captureStackTrace(holder)
      Error.stackTraceLimit = limit
      const frames = (holder.stack ?? '').split('\n').slice(1)
      const own = frames.slice(4).find((frame) => frame.includes('/packages/') || frame.includes('core-cost.ts'))
      const match = own === undefined ? undefined : /at (?:async )?(\S+)? ?\(?((?:file:\/\/)?\/\S+):(\d+):(\d+)\)?$/.exec(own.trim())
      const site =
        match === undefined || match === null
          ? '(driver or Node)'
          : `${match[1] ?? '(anonymous)'} ${place(pathToFileURL(fileURLToPath(new URL(match[2] as string, 'file://'))).href, Number(match[3]) - 1, Number(match[4]) - 1)}`
      sites.set(site, (sites.get(site) ?? 0) + 1)
    },
  })
  hook.enable()
  try {
    await loop(cycle, cycles)
  } finally {
    hook.disable()
  }
  return [...sites].map(([site, count]): [string, number] => [site, count / cycles]).sort((a, b) => b[1] - a[1])
}

async function bytesPerCycle(cycle: () => Promise<unknown>, cycles: number): Promise<number> {
  globalThis.gc?.()
  const before = process.memoryUsage().heapUsed
  await loop(cycle, cycles)
  return (process.memoryUsage().heapUsed - before) / cycles
}

async function main(): Promise<void> {
  const values = flags
  const cycles = Number(values.cycles ?? 20_000)
  const rounds = Number(values.rounds ?? 9)
  const names = Object.keys(CYCLES)
  for (const name of names) await loop(CYCLES[name] as () => Promise<unknown>, cycles)
  const cpu = new Map<string, number[]>(names.map((name) => [name, []]))
  for (let round = 0; round < rounds; round += 1) {
    for (const name of turnOrder(names, round)) {
      const before = process.cpuUsage()
      await loop(CYCLES[name] as () => Promise<unknown>, cycles)
      const spent = process.cpuUsage(before)
      cpu.get(name)?.push((spent.user + spent.system) / cycles)
    }
  }
  const rows: string[][] = []
  const floorOf = (name: string) => (name.includes('session') ? 'by hand, session' : 'by hand, transaction (BEGIN with the lock)')
  const spreads = new Map<string, Spread>(names.map((name) => [name, spread(cpu.get(name) as number[])]))
  for (const name of names) {
    const own = cpu.get(name) as number[]
    const floor = cpu.get(floorOf(name)) as number[]
    const above = name.startsWith('core') ? formatSpread(spread(own.map((us, round) => us - (floor[round] as number))), ' µs') : '-'
    const cycle = CYCLES[name] as () => Promise<unknown>
    rows.push([
      name,
      formatSpread(spreads.get(name), ' µs'),
      above,
      formatNumber(await bytesPerCycle(cycle, Math.min(cycles, 2000))),
      formatNumber(await promisesPerCycle(cycle, 1000)),
    ])
  }
  console.log(
    `pglock core over an in-memory connection: ${rounds} interleaved rounds of ${cycles} cycles (Node ${process.version}, load ${loadavg()
      .map((load) => load.toFixed(2))
      .join(' ')})`,
  )
  console.log(flags.core === undefined ? benchPackages().description : `core: the build in ${flags.core}`)
  if (flags.subscriber) console.log("with a subscriber that does nothing on pglock's tracing channels, for this whole process")
  console.log(table([['cycle', 'CPU/cycle median [min–max]', 'above its by-hand form', 'heap B/cycle', 'promises/cycle'], ...rows]))
  if (values.promises) {
    for (const name of names) {
      const sites = await promiseSites(CYCLES[name] as () => Promise<unknown>, 200)
      console.log(`\n${name}: promises per cycle by the code that made them`)
      console.log(table([['made in', 'promises/cycle'], ...sites.map(([site, count]) => [site, formatNumber(count)])]))
    }
  }
  if (values.profile) {
    const top = Number(values.top ?? 30)
    for (const name of names.filter((candidate) => candidate.startsWith('core'))) {
      const session = new Session()
      session.connect()
      await session.post('Profiler.enable')
      await session.post('Profiler.setSamplingInterval', { interval: 10 })
      await session.post('Profiler.start')
      await loop(CYCLES[name] as () => Promise<unknown>, cycles * 5)
      const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: Parameters<typeof summarize>[0] }
      session.disconnect()
      const file = join(RESULTS_DIR, `core-cost-${name.replaceAll(/[^a-z0-9]+/gi, '-')}.cpuprofile`)
      writeFileSync(file, JSON.stringify(profile))
      const summary = summarize(profile, cycles * 5)
      console.log(`\n${name}: profile ${file}`)
      console.log(table([['area', 'self µs/cycle'], ...summary.areas.map(({ name, us }) => [name, formatNumber(us)])]))
      console.log(
        table([
          ['function', 'area', 'self µs/cycle'],
          ...summary.functions.slice(0, top).map(({ name, area, us }) => [name, area, formatNumber(us)]),
        ]),
      )
    }
  }
}

await main()
if (!flags.subscriber && !flags['no-subscriber']) {
  // the same, with a subscriber, in a process of its own (see the top of this file)
  console.log()
  const child = spawnSync(
    process.execPath,
    [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2), '--subscriber'],
    {
      stdio: 'inherit',
    },
  )
  if (child.status !== 0) process.exitCode = child.status ?? 1
}
