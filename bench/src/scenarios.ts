import { setImmediate as nextTurn } from 'node:timers/promises'
import type { BenchTarget, Contender, CriticalSection, OpenContender } from './contender.js'
import { runPoolPressure } from './pool-pressure.js'
import { ascending, quantile } from './stats.js'

/** The scenarios, in the order they run and print. */
export const SCENARIOS = ['uncontended', 'contended', 'distinct-keys', 'pool-pressure'] as const
export type ScenarioName = (typeof SCENARIOS)[number]

export interface BenchSettings {
  readonly url: string
  /** measured time per sample, after the warm-up */
  readonly durationMs: number
  readonly warmupMs: number
  /** concurrent workers in the contended and distinct-keys scenarios */
  readonly workers: number
  readonly pressureTasks: number
  readonly pressurePoolSize: number
  readonly pressureTimeoutMs: number
}

/** One measurement of one contender in a throughput scenario. */
export interface ThroughputSample {
  readonly cycles: number
  readonly elapsedMs: number
  readonly cyclesPerSecond: number
  readonly maxConnections: number
  /** for the contended scenario: release-to-grant handoffs seen, and their median and p99 in ms */
  readonly handoff?: { readonly count: number; readonly medianMs: number; readonly p99Ms: number }
  /** times a holder entered while another was still inside: must be 0 */
  readonly exclusionViolations?: number
}

/** One run of the pool-pressure scenario for one contender. */
export type PressureSample =
  | { readonly outcome: 'completed'; readonly tasks: number; readonly elapsedMs: number; readonly maxConnections: number }
  | {
      readonly outcome: 'deadlock'
      readonly tasks: number
      readonly completed: number
      readonly timeoutMs: number
      readonly maxConnections: number
    }
  | { readonly outcome: 'failed'; readonly tasks: number; readonly completed: number; readonly error: string }

export type Sample = ThroughputSample | PressureSample

let keySpace = Math.floor(Math.random() * 2 ** 30) * 2 ** 20

/** A block of `count` lock ids no other measurement (and, almost surely, no other run) uses. */
function freshKeys(count: number): number {
  const first = keySpace
  keySpace += count
  return first
}

async function openFor(contender: Contender, settings: BenchSettings, poolSize: number, label: string): Promise<OpenContender> {
  const target: BenchTarget = {
    url: settings.url,
    poolSize,
    applicationName: `pglock-bench-${process.pid}-${label}`,
  }
  return contender.open(target)
}

/**
 * Runs `workers` loops of `cycle` until `durationMs` has passed; each worker finishes the cycle
 * it is in. Resolves to the cycles done and the time until the last worker stopped.
 */
async function loopFor(
  workers: number,
  durationMs: number,
  cycle: (worker: number, index: number) => Promise<void>,
): Promise<{ cycles: number; elapsedMs: number }> {
  const startedAt = performance.now()
  const deadline = startedAt + durationMs
  let cycles = 0
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      for (let index = 0; performance.now() < deadline; index += 1) {
        await cycle(worker, index)
        cycles += 1
      }
    }),
  )
  return { cycles, elapsedMs: performance.now() - startedAt }
}

async function measureThroughput(
  open: OpenContender,
  settings: BenchSettings,
  workers: number,
  keyFor: (worker: number, index: number) => number,
  sectionFor: (worker: number) => CriticalSection,
  onMeasuredStart: () => void = () => undefined,
): Promise<ThroughputSample> {
  let maxConnections = 0
  const sections = Array.from({ length: workers }, (_, worker) => {
    const section = sectionFor(worker)
    const counted: CriticalSection = (db) => {
      maxConnections = Math.max(maxConnections, open.connections())
      return section(db)
    }
    return counted
  })
  const cycle = (worker: number, index: number) => open.cycle(keyFor(worker, index), sections[worker] as CriticalSection)
  await loopFor(workers, settings.warmupMs, cycle)
  onMeasuredStart()
  const { cycles, elapsedMs } = await loopFor(workers, settings.durationMs, cycle)
  return { cycles, elapsedMs, cyclesPerSecond: (cycles / elapsedMs) * 1000, maxConnections }
}

function emptySection(): void {}

/** (a) One worker, one key, nobody else: the cost of a lock cycle itself. */
async function uncontended(contender: Contender, settings: BenchSettings): Promise<ThroughputSample> {
  const open = await openFor(contender, settings, 1, 'uncontended')
  try {
    const key = freshKeys(1)
    return await measureThroughput(
      open,
      settings,
      1,
      () => key,
      () => emptySection,
    )
  } finally {
    await open.close()
  }
}

/**
 * (b) `workers` loops contending for one key, on a pool with one connection per worker.
 *
 * Handoff is measured in this process, on one clock (`performance.now()`): from the moment the
 * holder's critical section ends, which is when its release begins (the unlock is not sent
 * yet), to the moment the next holder's critical section starts, after its grant has arrived.
 * Only changes of holder count: a worker that takes the lock again right after releasing it,
 * while others wait, hands nothing over. It is the time the lock sits idle between two holders
 * as the application sees it: the unlock round trip, Postgres waking the next waiter, any
 * in-memory queue, and the grant reaching the next holder. The critical section yields to the
 * event loop once (`setImmediate`) so that a second holder entering while the first is inside
 * would be seen, and counted as an exclusion violation.
 */
async function contended(contender: Contender, settings: BenchSettings): Promise<ThroughputSample> {
  const open = await openFor(contender, settings, settings.workers, 'contended')
  const key = freshKeys(1)
  const handoffs: number[] = []
  let recording = false
  let inside = 0
  let violations = 0
  let previous: { readonly worker: number; readonly endedAt: number } | undefined
  const sectionFor =
    (worker: number): CriticalSection =>
    async () => {
      const enteredAt = performance.now()
      if (inside > 0) violations += 1
      inside += 1
      if (recording && previous !== undefined && previous.worker !== worker) handoffs.push(enteredAt - previous.endedAt)
      await nextTurn()
      inside -= 1
      previous = { worker, endedAt: performance.now() }
    }
  try {
    const sample = await measureThroughput(
      open,
      settings,
      settings.workers,
      () => key,
      sectionFor,
      () => {
        recording = true
        previous = undefined
      },
    )
    const sorted = ascending(handoffs)
    return {
      ...sample,
      handoff: { count: sorted.length, medianMs: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99) },
      exclusionViolations: violations,
    }
  } finally {
    await open.close()
  }
}

/** (c) `workers` loops, every cycle on a key never used before: parallel locks, no contention. */
async function distinctKeys(contender: Contender, settings: BenchSettings): Promise<ThroughputSample> {
  const open = await openFor(contender, settings, settings.workers, 'distinct')
  const stride = 1_000_000
  const first = freshKeys(stride * settings.workers)
  try {
    return await measureThroughput(
      open,
      settings,
      settings.workers,
      (worker, index) => first + worker * stride + index,
      () => emptySection,
    )
  } finally {
    await open.close()
  }
}

/** Runs one sample of `scenario` for `contender`. */
export async function measure(scenario: ScenarioName, contender: Contender, settings: BenchSettings): Promise<Sample> {
  switch (scenario) {
    case 'uncontended':
      return uncontended(contender, settings)
    case 'contended':
      return contended(contender, settings)
    case 'distinct-keys':
      return distinctKeys(contender, settings)
    case 'pool-pressure':
      return runPoolPressure(contender.name, {
        url: settings.url,
        tasks: settings.pressureTasks,
        poolSize: settings.pressurePoolSize,
        timeoutMs: settings.pressureTimeoutMs,
        key: freshKeys(1),
      })
  }
}

/** Whether `contender` takes part in `scenario`, and if not, why. */
export function skipReason(scenario: ScenarioName, contender: Contender): string | undefined {
  return scenario === 'pool-pressure' ? contender.noPoolPressure : undefined
}
