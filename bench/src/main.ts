/**
 * pglock benchmark: `pnpm bench` (side-by-side table and JSON) or `pnpm bench --memory`.
 * See bench/README.md for the scenarios, the flags, and how handoff is measured.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { Contender } from './contender.js'
import { CONTENDERS } from './contenders.js'
import { CpuMeter } from './cpu.js'
import { type BenchDatabase, resolveBenchDatabase } from './database.js'
import { megabytes, memoryReport, runMemory } from './memory.js'
import { benchPackages, driverVersions } from './packages.js'
import {
  pressureTable,
  type ScenarioSamples,
  speedTable,
  summarizePressure,
  summarizeThroughput,
  throughputTable,
  verdictTable,
} from './report.js'
import {
  type BenchSettings,
  combineSlices,
  measurePoolPressure,
  measureThroughputSlice,
  measureUncontended,
  type Sample,
  SCENARIOS,
  type ScenarioName,
  type Slice,
  skipReason,
  turnOrder,
} from './scenarios.js'
import { SUBSCRIBER_ENV, subscribeIfAsked } from './subscriber.js'
import { judgeSpeed, judgeTargets } from './targets.js'

const RESULTS_DIR = fileURLToPath(new URL('../../bench-results/', import.meta.url))

const USAGE = `pnpm bench [options]            side-by-side benchmark, prints a table and writes bench-results/*.json
pnpm bench --memory [options]   10^6 lock cycles, heap sampled after forced GC

  --repeats N            samples per contender and scenario, interleaved (default 5)
  --duration MS          measured time per sample (default 2000)
  --slices N             contended, distinct-keys: a sample is N slices, interleaved across contenders (default 4)
  --batch MS             uncontended: all contenders open, taking turns of MS each (default 25)
  --warmup MS            warm-up before each slice, not measured (default 150)
  --workers N            workers in the contended and distinct-keys scenarios (default 8)
  --pool N               pool size in the contended, distinct-keys and hold-many scenarios (default: --workers)
  --scenarios LIST       comma-separated: ${SCENARIOS.join(',')}
  --contenders LIST      comma-separated substrings of contender names (floors are always kept)
  --pressure-timeout MS  after this the pool-pressure run counts as a deadlock (default 5000)
  --cycles N             memory mode: cycles to run (default 1000000)
  --sample-every N       memory mode: cycles between heap samples (default cycles/100)
  --memory-workers N     memory mode: concurrent workers (default 4)
  --workspace            load the workspace-linked @pglock/* dist, not the packed tarballs
  --subscriber           a subscriber that does nothing listens on pglock's tracing channels for the
                         whole run (child processes too): compare with a run without to see what tracing costs`

function positiveInteger(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(text)}`)
  return value
}

function parseFlags() {
  const { values } = parseArgs({
    options: {
      repeats: { type: 'string' },
      duration: { type: 'string' },
      slices: { type: 'string' },
      batch: { type: 'string' },
      warmup: { type: 'string' },
      workers: { type: 'string' },
      pool: { type: 'string' },
      scenarios: { type: 'string' },
      contenders: { type: 'string' },
      'pressure-timeout': { type: 'string' },
      memory: { type: 'boolean' },
      cycles: { type: 'string' },
      'sample-every': { type: 'string' },
      'memory-workers': { type: 'string' },
      workspace: { type: 'boolean' },
      subscriber: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const scenarios = (values.scenarios?.split(',') ?? [...SCENARIOS]).map((name) => {
    if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`unknown scenario ${name}; known: ${SCENARIOS.join(', ')}`)
    return name as ScenarioName
  })
  const cycles = positiveInteger('cycles', values.cycles, 1_000_000)
  if (values.subscriber === true) process.env[SUBSCRIBER_ENV] = '1'
  return {
    help: values.help === true,
    memory: values.memory === true,
    repeats: positiveInteger('repeats', values.repeats, 5),
    durationMs: positiveInteger('duration', values.duration, 2_000),
    slices: positiveInteger('slices', values.slices, 4),
    batchMs: positiveInteger('batch', values.batch, 25),
    warmupMs: positiveInteger('warmup', values.warmup, 150),
    workers: positiveInteger('workers', values.workers, 8),
    poolSize: values.pool === undefined ? undefined : positiveInteger('pool', values.pool, 8),
    pressureTimeoutMs: positiveInteger('pressure-timeout', values['pressure-timeout'], 5_000),
    scenarios,
    contenderFilter: values.contenders?.split(',').filter(Boolean),
    cycles,
    sampleEvery: positiveInteger('sample-every', values['sample-every'], Math.max(1, Math.floor(cycles / 100))),
    memoryWorkers: positiveInteger('memory-workers', values['memory-workers'], 4),
  }
}

type Flags = ReturnType<typeof parseFlags>

function machine(database: BenchDatabase) {
  const cpus = os.cpus()
  return {
    cpu: `${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length}`,
    memory: megabytes(os.totalmem()),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    postgres: database.serverVersion,
    database: database.source === 'env' ? `from the environment (${new URL(database.url).host})` : database.source,
    loadAverage: os.loadavg().map((load) => Number(load.toFixed(2))),
    packages: benchPackages().description,
    drivers: driverVersions(),
    tracing:
      process.env[SUBSCRIBER_ENV] === '1'
        ? "tracing: a subscriber that does nothing listens on pglock's channels (--subscriber)"
        : "tracing: no subscriber on pglock's channels (--subscriber to add one)",
  }
}

function selectContenders(filter: readonly string[] | undefined): Contender[] {
  if (filter === undefined) return [...CONTENDERS]
  return CONTENDERS.filter((contender) => contender.role === 'floor' || filter.some((part) => contender.name.includes(part)))
}

async function runBench(flags: Flags, database: BenchDatabase): Promise<void> {
  const contenders = selectContenders(flags.contenderFilter)
  const settings: BenchSettings = {
    url: database.url,
    durationMs: flags.durationMs,
    slices: flags.slices,
    batchMs: flags.batchMs,
    warmupMs: flags.warmupMs,
    workers: flags.workers,
    poolSize: flags.poolSize ?? flags.workers,
    pressureTasks: 200,
    pressurePoolSize: 10,
    pressureTimeoutMs: flags.pressureTimeoutMs,
  }
  const about = machine(database)
  console.log(
    `pglock bench: ${about.cpu}, ${about.memory}, ${about.os}, Node ${about.node}, Postgres ${about.postgres} (${about.database})`,
  )
  console.log(`${about.packages}\n${about.drivers}\n${about.tracing}`)
  console.log(
    [
      `${flags.repeats} repeats of ${flags.durationMs} ms per contender and scenario, interleaved across contenders:`,
      `uncontended in turns of ${flags.batchMs} ms, the others in ${flags.slices} slices (each after ${flags.warmupMs} ms warm-up);`,
      `${flags.workers} workers on pools of ${flags.poolSize ?? flags.workers}; load average ${about.loadAverage.join(' ')}\n`,
    ].join(' '),
  )
  const startedAt = performance.now()
  const meter = await CpuMeter.open(database.url)
  const results = new Map<ScenarioName, ScenarioSamples>()
  const tables: string[] = []
  for (const scenario of flags.scenarios) {
    const taking = contenders.filter((contender) => skipReason(scenario, contender) === undefined)
    const samples = new Map<string, Sample[]>(taking.map((contender) => [contender.name, []]))
    for (let repeat = 0; repeat < flags.repeats; repeat += 1) {
      if (scenario === 'pool-pressure') {
        for (const contender of turnOrder(taking, repeat)) {
          progress(`${scenario}: repeat ${repeat + 1}/${flags.repeats}, ${contender.name}`)
          samples.get(contender.name)?.push(await measurePoolPressure(contender, settings))
        }
        continue
      }
      if (scenario === 'uncontended') {
        progress(`${scenario}: repeat ${repeat + 1}/${flags.repeats}, all contenders in turns of ${settings.batchMs} ms`)
        for (const [name, slice] of await measureUncontended(taking, settings, meter, repeat))
          samples.get(name)?.push(combineSlices([slice]))
        continue
      }
      const slices = new Map<string, Slice[]>(taking.map((contender) => [contender.name, []]))
      for (let slice = 0; slice < settings.slices; slice += 1) {
        for (const contender of turnOrder(taking, repeat * settings.slices + slice)) {
          progress(`${scenario}: repeat ${repeat + 1}/${flags.repeats}, slice ${slice + 1}/${settings.slices}, ${contender.name}`)
          slices.get(contender.name)?.push(await measureThroughputSlice(scenario, contender, settings, meter))
        }
      }
      for (const [name, own] of slices) samples.get(name)?.push(combineSlices(own))
    }
    progress('')
    results.set(scenario, samples)
    const printed =
      scenario === 'pool-pressure'
        ? pressureTable(
            summarizePressure(contenders, samples),
            contenders.flatMap((contender) => {
              const reason = skipReason(scenario, contender)
              return reason === undefined ? [] : [[contender.name, reason] as const]
            }),
          )
        : throughputTable(scenario, summarizeThroughput(contenders, samples))
    tables.push(printed)
    console.log(`${printed}\n`)
  }
  await meter.close()
  const speed = judgeSpeed(contenders, results.get('uncontended'))
  const loadAtEnd = os.loadavg().map((load) => Number(load.toFixed(2)))
  if (speed.length > 0) {
    const note =
      `CPU: this process's user+system time per cycle (process.cpuUsage) minus the floor's in the same repeat; ` +
      `load average ${about.loadAverage.join(' ')} at start, ${loadAtEnd.join(' ')} at end on ${os.cpus().length} CPUs` +
      (Math.max(...about.loadAverage, ...loadAtEnd) > os.cpus().length / 2
        ? ': a shared, busy machine, so read the ranges, not only the medians'
        : '')
    console.log(`${speedTable(speed, note)}\n`)
  }
  const verdicts = judgeTargets(contenders, results, settings.pressurePoolSize)
  if (verdicts.length > 0) console.log(`${verdictTable(verdicts)}\n`)
  const elapsedMs = performance.now() - startedAt
  const json = {
    kind: 'pglock-bench',
    startedAt: new Date(Date.now() - elapsedMs).toISOString(),
    elapsedMs,
    machine: { ...about, loadAverageAtEnd: loadAtEnd },
    settings: { ...settings, url: undefined, repeats: flags.repeats },
    contenders: contenders.map(({ name, role, scope, floor, floorRatioTarget, cycleDescription }) => ({
      name,
      role,
      scope,
      floor,
      floorRatioTarget,
      cycleDescription,
    })),
    scenarios: Object.fromEntries(
      [...results].map(([scenario, samples]) => [
        scenario,
        {
          summary: scenario === 'pool-pressure' ? summarizePressure(contenders, samples) : summarizeThroughput(contenders, samples),
          samples: Object.fromEntries(samples),
        },
      ]),
    ),
    speed,
    verdicts,
    tables,
  }
  const file = writeResults('bench', json)
  console.log(`took ${(elapsedMs / 1000).toFixed(0)} s; results written to ${file}`)
  if (verdicts.some((verdict) => !verdict.pass) || speed.some((verdict) => !verdict.cpuPass || !verdict.ratioPass)) {
    console.log('some targets missed: see the verdict columns')
  }
}

async function runMemoryMode(flags: Flags, database: BenchDatabase): Promise<void> {
  const about = machine(database)
  console.log(`pglock bench --memory: ${about.cpu}, Node ${about.node}, Postgres ${about.postgres} (${about.database})`)
  console.log(`${about.packages}\n${about.drivers}\n${about.tracing}`)
  const result = await runMemory(
    { url: database.url, cycles: flags.cycles, workers: flags.memoryWorkers, keys: 1_000, sampleEvery: flags.sampleEvery },
    (sample) =>
      progress(
        `${sample.cycles.toLocaleString('en-US')} / ${flags.cycles.toLocaleString('en-US')} cycles, heapUsed ${megabytes(sample.heapUsed)}`,
      ),
  )
  progress('')
  console.log(memoryReport(result))
  const file = writeResults('memory', { kind: 'pglock-bench-memory', machine: about, ...result })
  console.log(`results written to ${file}`)
  if (!result.flat) process.exitCode = 1
}

/** A status line rewritten in place on a terminal; nothing when the output is a file or a pipe. */
function progress(line: string): void {
  if (process.stdout.isTTY) process.stdout.write(`\r\x1b[K${line}`)
}

function writeResults(kind: string, json: unknown): string {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, `${kind}-${new Date().toISOString().replaceAll(':', '-')}.json`)
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`)
  return file
}

async function main(): Promise<void> {
  const flags = parseFlags()
  subscribeIfAsked()
  if (flags.help) {
    console.log(USAGE)
    return
  }
  const database = await resolveBenchDatabase()
  const stop = () => void database.stop().finally(() => process.exit(130))
  process.once('SIGINT', stop)
  try {
    if (flags.memory) await runMemoryMode(flags, database)
    else await runBench(flags, database)
  } finally {
    process.off('SIGINT', stop)
    await database.stop()
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error)
  // a contender that threw mid-scenario leaves its pool open, which would keep the process alive
  process.exit(1)
})
