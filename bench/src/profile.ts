/**
 * Profiles the uncontended lock cycle of one or more contenders, one at a time in this process,
 * over the built packages: `pnpm --filter @pglock/bench profile --contenders "pglock pg session"`.
 * For each contender: CPU µs per cycle (`process.cpuUsage`), bytes allocated per cycle (young
 * generation grown with no GC in between), and a CPU profile of the measured loop only (V8's
 * sampling profiler through `node:inspector`), summarised as self time per function and per
 * package, in µs per cycle. See bench/README.md, "Profiling a cycle".
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { PerformanceObserver } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { Contender, OpenContender } from './contender.js'
import { CONTENDERS } from './contenders.js'
import { resolveBenchDatabase } from './database.js'
import { layerContenders } from './layers.js'
import { benchPackages, driverVersions } from './packages.js'
import { area, type CpuProfile, type ProfileNode, place, summarize } from './profile-summary.js'
import { formatDifference, formatNumber, formatSpread, table } from './report.js'
import { turnOrder } from './scenarios.js'
import { spread } from './stats.js'

const RESULTS_DIR = fileURLToPath(new URL('../../bench-results/', import.meta.url))

function emptySection(): void {}

async function loop(open: OpenContender, key: number, cycles: number): Promise<void> {
  for (let index = 0; index < cycles; index += 1) await open.cycle(key, emptySection)
}

/** User and system CPU µs per cycle over `cycles` cycles. */
async function cpuPerCycle(open: OpenContender, key: number, cycles: number) {
  const before = process.cpuUsage()
  await loop(open, key, cycles)
  const spent = process.cpuUsage(before)
  return { user: spent.user / cycles, system: spent.system / cycles }
}

/**
 * Bytes allocated per cycle: the young generation's growth over `cycles` cycles during which no
 * GC ran (run with a large `--max-semi-space-size`). Rounds that saw a GC are dropped.
 */
async function allocatedPerCycle(open: OpenContender, key: number, cycles: number, rounds: number) {
  let gcs = 0
  const observer = new PerformanceObserver((list) => {
    gcs += list.getEntries().length
  })
  observer.observe({ entryTypes: ['gc'] })
  const perCycle: number[] = []
  try {
    for (let round = 0; round < rounds; round += 1) {
      globalThis.gc?.()
      await new Promise((resolve) => setTimeout(resolve, 5))
      const seen = gcs
      const before = process.memoryUsage().heapUsed
      await loop(open, key, cycles)
      const after = process.memoryUsage().heapUsed
      // the observer hears of a GC a tick later
      await new Promise((resolve) => setTimeout(resolve, 5))
      if (gcs === seen) perCycle.push((after - before) / cycles)
    }
  } finally {
    observer.disconnect()
  }
  return perCycle.length === 0 ? undefined : spread(perCycle)
}

interface HeapNode {
  readonly callFrame: ProfileNode['callFrame']
  readonly selfSize: number
  readonly children: readonly HeapNode[]
}

/**
 * Bytes allocated per cycle by function, from V8's sampling heap profiler with the objects that
 * GC collected kept in (most of a cycle's allocations die young).
 */
async function allocationProfile(open: OpenContender, key: number, cycles: number) {
  const session = new Session()
  session.connect()
  let head: HeapNode
  try {
    await session.post('HeapProfiler.enable')
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: 64,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    } as never)
    await loop(open, key, cycles)
    ;({
      profile: { head },
    } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: HeapNode } })
    await session.post('HeapProfiler.disable')
  } finally {
    session.disconnect()
  }
  const functions = new Map<string, { area: string; bytes: number }>()
  const areas = new Map<string, number>()
  const walk = (node: HeapNode) => {
    for (const child of node.children) walk(child)
    if (node.selfSize === 0) return
    const { functionName, url, lineNumber, columnNumber } = node.callFrame
    const where = area(url, functionName)
    const name = `${functionName || '(anonymous)'} ${url === '' ? '' : place(url, lineNumber, columnNumber)}`.trim()
    const entry = functions.get(name) ?? { area: where, bytes: 0 }
    entry.bytes += node.selfSize / cycles
    functions.set(name, entry)
    areas.set(where, (areas.get(where) ?? 0) + node.selfSize / cycles)
  }
  walk(head)
  return {
    functions: [...functions].map(([name, { area, bytes }]) => ({ name, area, bytes })).sort((a, b) => b.bytes - a.bytes),
    areas: [...areas].map(([name, bytes]) => ({ name, bytes })).sort((a, b) => b.bytes - a.bytes),
  }
}

async function cpuProfile(open: OpenContender, key: number, cycles: number, intervalUs: number): Promise<CpuProfile> {
  const session = new Session()
  session.connect()
  try {
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: intervalUs })
    await session.post('Profiler.start')
    await loop(open, key, cycles)
    const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile }
    return profile
  } finally {
    session.disconnect()
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      contenders: { type: 'string' },
      cycles: { type: 'string' },
      rounds: { type: 'string' },
      interval: { type: 'string' },
      top: { type: 'string' },
      workspace: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(`pnpm --filter @pglock/bench profile [--contenders LIST] [--cycles N] [--rounds N] [--interval US] [--top N]
  --contenders LIST  ;-separated exact contender names (default: every floor and pglock row)
  --cycles N         cycles per round and in the profile (default 5000)
  --rounds N         rounds for the CPU and allocation figures (default 5)
  --interval US      sampling interval of the CPU profile (default 25)
  --top N            functions listed per contender (default 25)
  --workspace        load the workspace-linked @pglock/* dist, not the packed tarballs`)
    return
  }
  const names = values.contenders?.split(';').map((name) => name.trim())
  const known = [...CONTENDERS, ...layerContenders()]
  const named: Contender[] =
    names === undefined
      ? CONTENDERS.filter((contender) => contender.role !== 'peer')
      : names.map((name) => {
          const found = known.find((contender) => contender.name === name)
          if (found === undefined)
            throw new Error(`unknown contender ${JSON.stringify(name)}; known: ${known.map((c) => c.name).join('; ')}`)
          return found
        })
  // each contender's floor runs too, first, so that its CPU above the floor is paired by round
  const floors = named.flatMap((contender) => known.filter((floor) => floor.name === contender.floor))
  const chosen = [...new Set([...floors, ...named])]
  const cycles = Number(values.cycles ?? 5000)
  const rounds = Number(values.rounds ?? 5)
  const intervalUs = Number(values.interval ?? 25)
  const top = Number(values.top ?? 25)
  const database = await resolveBenchDatabase()
  console.log(`${benchPackages().description}\n${driverVersions()}`)
  mkdirSync(RESULTS_DIR, { recursive: true })
  const stamp = new Date().toISOString().replaceAll(':', '-')
  const results: unknown[] = []
  const opened: { contender: Contender; open: OpenContender; key: number }[] = []
  try {
    for (const [index, contender] of chosen.entries()) {
      const open = await contender.open({ url: database.url, poolSize: 1, applicationName: `pglock-bench-${process.pid}-profile-${index}` })
      opened.push({ contender, open, key: Math.floor(Math.random() * 2 ** 40) })
      await loop(open, opened[index]?.key as number, cycles)
    }
    // CPU per cycle, interleaved across contenders so that load from elsewhere falls on all alike
    const cpu = new Map<string, { user: number[]; system: number[] }>(
      opened.map(({ contender }) => [contender.name, { user: [], system: [] }]),
    )
    for (let round = 0; round < rounds; round += 1) {
      for (const { contender, open, key } of turnOrder(opened, round)) {
        const spent = await cpuPerCycle(open, key, cycles)
        cpu.get(contender.name)?.user.push(spent.user)
        cpu.get(contender.name)?.system.push(spent.system)
      }
    }
    const aboveFloor: string[][] = []
    for (const { contender } of opened) {
      const own = cpu.get(contender.name)
      const floor = cpu.get(contender.floor)
      if (own === undefined || floor === undefined || contender.floor === contender.name) continue
      const total = (of: { user: number[]; system: number[] }, round: number) => (of.user[round] as number) + (of.system[round] as number)
      const rounds = own.user.map((_, round) => round)
      aboveFloor.push([
        contender.name,
        contender.floor,
        formatDifference(spread(rounds.map((round) => total(own, round) - total(floor, round)))),
        formatDifference(spread(rounds.map((round) => (own.user[round] as number) - (floor.user[round] as number)))),
      ])
    }
    if (aboveFloor.length > 0) {
      console.log(
        `CPU per cycle above the floor, paired by round (${rounds} rounds of ${cycles} cycles, load ${loadavg()
          .map((load) => load.toFixed(1))
          .join(' ')})`,
      )
      console.log(table([['contender', 'floor', 'user+system µs above floor', 'user µs above floor'], ...aboveFloor]))
    }
    for (const { contender, open, key } of opened) {
      const own = cpu.get(contender.name) as { user: number[]; system: number[] }
      const user = spread(own.user)
      const system = spread(own.system)
      const total = spread(own.user.map((us, round) => us + (own.system[round] as number)))
      const allocated = await allocatedPerCycle(open, key, Math.min(cycles, 1000), rounds)
      const profile = await cpuProfile(open, key, cycles, intervalUs)
      const allocations = await allocationProfile(open, key, Math.min(cycles, 1000))
      const file = join(RESULTS_DIR, `profile-${stamp}-${contender.name.replaceAll(/[^a-z0-9]+/gi, '-')}.cpuprofile`)
      writeFileSync(file, JSON.stringify(profile))
      const summary = summarize(profile, cycles)
      results.push({ contender: contender.name, cpu: { total, user, system }, allocated, allocations, summary, file })
      console.log(
        `\n${contender.name}: CPU ${formatSpread(total, ' µs/cycle')} (user ${formatSpread(user)}, system ${formatSpread(system)}), ` +
          `allocated ${allocated === undefined ? '? (a GC ran in every round)' : formatSpread(allocated, ' B/cycle')}\nprofile ${file}`,
      )
      console.log(table([['area', 'self µs/cycle'], ...summary.areas.map(({ name, us }) => [name, formatNumber(us)])]))
      console.log(
        table([
          ['function', 'area', 'self µs/cycle'],
          ...summary.functions.slice(0, top).map(({ name, area, us }) => [name, area, formatNumber(us)]),
        ]),
      )
      console.log(table([['area', 'sampled B/cycle'], ...allocations.areas.map(({ name, bytes }) => [name, formatNumber(bytes)])]))
      console.log(
        table([
          ['allocating function', 'area', 'sampled B/cycle'],
          ...allocations.functions.slice(0, top).map(({ name, area, bytes }) => [name, area, formatNumber(bytes)]),
        ]),
      )
    }
  } finally {
    for (const { open } of opened) await open.close()
    await database.stop()
  }
  writeFileSync(join(RESULTS_DIR, `profile-${stamp}.json`), `${JSON.stringify(results, null, 2)}\n`)
}

await main()
