import { setImmediate as nextTurn } from 'node:timers/promises'
import type { BenchTarget, Contender, CriticalSection, OpenContender } from './contender.js'
import { CpuMeter, type CpuSpent } from './cpu.js'
import { runPoolPressure } from './pool-pressure.js'
import { ascending, quantile } from './stats.js'

/** The scenarios, in the order they run and print. */
export const SCENARIOS = ['uncontended', 'contended', 'distinct-keys', 'hold-many', 'pool-pressure'] as const
export type ScenarioName = (typeof SCENARIOS)[number]

/** The scenarios measured in slices, one contender open at a time. */
export type SlicedScenario = 'contended' | 'distinct-keys' | 'hold-many'

export interface BenchSettings {
  readonly url: string
  /** measured time per sample, split into `slices` interleaved with the other contenders' */
  readonly durationMs: number
  readonly slices: number
  /** uncontended scenario: the turns contenders take, in ms */
  readonly batchMs: number
  /** warm-up before each slice, not measured */
  readonly warmupMs: number
  /** concurrent workers in the contended and distinct-keys scenarios */
  readonly workers: number
  /** the pool size of every contender in the sliced scenarios (`--pool`, default `workers`) */
  readonly poolSize: number
  readonly pressureTasks: number
  readonly pressurePoolSize: number
  readonly pressureTimeoutMs: number
}

/** One slice: a short stretch of one contender in a throughput scenario. */
export interface Slice {
  readonly cycles: number
  readonly elapsedMs: number
  readonly maxConnections: number
  /** CPU spent in this process and in the contender's backends while measuring, in µs */
  readonly cpu: CpuSpent
  /** contended scenario only: every release-to-grant handoff seen, in ms */
  readonly handoffsMs?: readonly number[]
  /** contended scenario only: times a holder entered while another was still inside (must be 0) */
  readonly exclusionViolations?: number
}

/** One sample of one contender in a throughput scenario: its slices of one repeat, summed. */
export interface ThroughputSample {
  readonly slices: number
  readonly cycles: number
  readonly elapsedMs: number
  readonly cyclesPerSecond: number
  readonly maxConnections: number
  /** CPU per cycle in µs: this process, and the backends serving it (when on this machine) */
  readonly clientCpuUs: number
  readonly serverCpuUs: number | undefined
  /** contended scenario only: handoffs seen, and their median and p99 in ms */
  readonly handoff?: { readonly count: number; readonly medianMs: number; readonly p99Ms: number }
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

/** What one slice runs with: the open contender, the settings, and the CPU meter. */
interface SliceRun {
  readonly open: OpenContender
  readonly settings: BenchSettings
  readonly meter: CpuMeter
  readonly applicationName: string
}

async function measureSlice(
  { open, settings, meter, applicationName }: SliceRun,
  workers: number,
  keyFor: (worker: number, index: number) => number,
  sectionFor: (worker: number) => CriticalSection,
  onMeasuredStart: () => void = () => undefined,
): Promise<Slice> {
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
  const backends = await meter.backends(applicationName)
  onMeasuredStart()
  const before = meter.mark(backends)
  const { cycles, elapsedMs } = await loopFor(workers, settings.durationMs / settings.slices, cycle)
  const cpu = CpuMeter.spent(before, meter.mark(backends))
  return { cycles, elapsedMs, maxConnections, cpu }
}

function emptySection(): void {}

/**
 * (a) One worker, one key, nobody else: the cost of a lock cycle itself. Every contender is
 * open at once (one connection each) and they take turns in batches of `batchMs`, in an order
 * shuffled each round (see {@link turnOrder}), so that load from elsewhere falls on all of them alike. Resolves to
 * one slice per contender: its batches summed.
 */
export async function measureUncontended(
  contenders: readonly Contender[],
  settings: BenchSettings,
  meter: CpuMeter,
  repeat: number,
): Promise<Map<string, Slice>> {
  const opened: { contender: Contender; open: OpenContender; key: number; backends: number[] | undefined }[] = []
  try {
    for (const [index, contender] of contenders.entries()) {
      const applicationName = `pglock-bench-${process.pid}-uncontended-${index}`
      const open = await contender.open({ url: settings.url, poolSize: 1, applicationName })
      const key = freshKeys(1)
      opened.push({ contender, open, key, backends: undefined })
    }
    for (const [index, entry] of opened.entries()) {
      await loopFor(1, settings.warmupMs, () => entry.open.cycle(entry.key, emptySection))
      entry.backends = await meter.backends(`pglock-bench-${process.pid}-uncontended-${index}`)
    }
    const totals = new Map<string, { cycles: number; elapsedMs: number; clientUs: number; serverUs: number | undefined }>(
      opened.map(({ contender }) => [contender.name, { cycles: 0, elapsedMs: 0, clientUs: 0, serverUs: 0 }]),
    )
    const rounds = Math.max(1, Math.round(settings.durationMs / settings.batchMs))
    for (let round = 0; round < rounds; round += 1) {
      for (const { contender, open, key, backends } of turnOrder(opened, repeat * rounds + round)) {
        const before = meter.mark(backends)
        const { cycles, elapsedMs } = await loopFor(1, settings.batchMs, () => open.cycle(key, emptySection))
        const cpu = CpuMeter.spent(before, meter.mark(backends))
        const total = totals.get(contender.name)
        if (total === undefined) continue
        total.cycles += cycles
        total.elapsedMs += elapsedMs
        total.clientUs += cpu.clientUs
        total.serverUs = total.serverUs === undefined || cpu.serverUs === undefined ? undefined : total.serverUs + cpu.serverUs
      }
    }
    return new Map(
      [...totals].map(([name, total]) => [
        name,
        {
          cycles: total.cycles,
          elapsedMs: total.elapsedMs,
          maxConnections: 1,
          cpu: { clientUs: total.clientUs, serverUs: total.serverUs },
        },
      ]),
    )
  } finally {
    for (const { open } of opened) await open.close()
  }
}

/**
 * The order contenders run in during turn `turn`: shuffled, seeded by the turn so that a run can be
 * repeated. A rotation kept every contender behind the same neighbour, and what a neighbour leaves
 * behind then fell on one contender only: after a library that opens a connection per cycle, the
 * server is still busy ending it, and a ping-pong on a core that is kept awake runs faster. The
 * floors, first in the list, always followed the last contender.
 */
export function turnOrder<T>(items: readonly T[], turn: number): T[] {
  const order = [...items]
  const random = mulberry32(turn)
  for (let index = order.length - 1; index > 0; index -= 1) {
    const other = Math.floor(random() * (index + 1))
    ;[order[index], order[other]] = [order[other] as T, order[index] as T]
  }
  return order
}

/** A small seeded PRNG (mulberry32): the same turn gives the same order. */
function mulberry32(seed: number): () => number {
  let state = seed | 0
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
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
async function contended(run: SliceRun): Promise<Slice> {
  const key = freshKeys(1)
  const handoffsMs: number[] = []
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
      if (recording && previous !== undefined && previous.worker !== worker) handoffsMs.push(enteredAt - previous.endedAt)
      await nextTurn()
      inside -= 1
      previous = { worker, endedAt: performance.now() }
    }
  const slice = await measureSlice(
    run,
    run.settings.workers,
    () => key,
    sectionFor,
    () => {
      recording = true
      previous = undefined
    },
  )
  return { ...slice, handoffsMs, exclusionViolations: violations }
}

/** (c) `workers` loops, every cycle on a key never used before: parallel locks, no contention. */
async function distinctKeys(run: SliceRun): Promise<Slice> {
  const stride = 1_000_000
  const first = freshKeys(stride * run.settings.workers)
  return measureSlice(
    run,
    run.settings.workers,
    (worker, index) => first + worker * stride + index,
    () => emptySection,
  )
}

/** Locks the hold-many scenario holds at once. */
export const HOLD_MANY = 1_000

/**
 * (e) 1,000 locks on distinct keys, all held at once, then all released: a slice is one such
 * round, its cycles the 1,000 locks, its time the wall time from the first acquire to the last
 * release, its connections the most the pool had open. Only for contenders that can hold that
 * many on a pool of `--workers` connections (multiplexed locks).
 */
async function holdMany({ open, meter, applicationName }: SliceRun): Promise<Slice> {
  const first = freshKeys(HOLD_MANY)
  let inside = 0
  let maxConnections = 0
  let everyoneIn: () => void = () => undefined
  const allHeld = new Promise<void>((resolve) => (everyoneIn = resolve))
  const section: CriticalSection = () => {
    inside += 1
    maxConnections = Math.max(maxConnections, open.connections())
    if (inside === HOLD_MANY) everyoneIn()
    return allHeld
  }
  const backends = await meter.backends(applicationName)
  const before = meter.mark(backends)
  const startedAt = performance.now()
  await Promise.all(Array.from({ length: HOLD_MANY }, (_, index) => open.cycle(first + index, section)))
  const elapsedMs = performance.now() - startedAt
  maxConnections = Math.max(maxConnections, open.connections())
  return { cycles: HOLD_MANY, elapsedMs, maxConnections, cpu: CpuMeter.spent(before, meter.mark(backends)) }
}

const SLICED: Record<SlicedScenario, (run: SliceRun) => Promise<Slice>> = {
  contended,
  'distinct-keys': distinctKeys,
  'hold-many': holdMany,
}

/**
 * Runs one slice of `scenario` for `contender`: opens it (one connection for the uncontended
 * scenario, one per worker otherwise), warms up, measures, closes.
 */
export async function measureThroughputSlice(
  scenario: SlicedScenario,
  contender: Contender,
  settings: BenchSettings,
  meter: CpuMeter,
): Promise<Slice> {
  const target: BenchTarget = {
    url: settings.url,
    poolSize: settings.poolSize,
    applicationName: `pglock-bench-${process.pid}-${scenario}`,
  }
  const open = await contender.open(target)
  try {
    return await SLICED[scenario]({ open, settings, meter, applicationName: target.applicationName })
  } finally {
    await open.close()
  }
}

/** Sums the slices of one contender in one repeat into its sample for that repeat. */
export function combineSlices(slices: readonly Slice[]): ThroughputSample {
  let cycles = 0
  let elapsedMs = 0
  let maxConnections = 0
  const handoffs: number[] = []
  let violations: number | undefined
  let clientCpuUs = 0
  let serverCpuUs: number | undefined = 0
  for (const slice of slices) {
    clientCpuUs += slice.cpu.clientUs
    serverCpuUs = serverCpuUs === undefined || slice.cpu.serverUs === undefined ? undefined : serverCpuUs + slice.cpu.serverUs
    cycles += slice.cycles
    elapsedMs += slice.elapsedMs
    maxConnections = Math.max(maxConnections, slice.maxConnections)
    if (slice.handoffsMs !== undefined) handoffs.push(...slice.handoffsMs)
    if (slice.exclusionViolations !== undefined) violations = (violations ?? 0) + slice.exclusionViolations
  }
  const sorted = ascending(handoffs)
  return {
    slices: slices.length,
    cycles,
    elapsedMs,
    cyclesPerSecond: (cycles / elapsedMs) * 1000,
    maxConnections,
    clientCpuUs: clientCpuUs / cycles,
    serverCpuUs: serverCpuUs === undefined ? undefined : serverCpuUs / cycles,
    ...(violations === undefined
      ? {}
      : {
          handoff: { count: sorted.length, medianMs: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99) },
          exclusionViolations: violations,
        }),
  }
}

/** (d) One run of the pool-pressure scenario for `contender`, in a child process. */
export function measurePoolPressure(contender: Contender, settings: BenchSettings): Promise<PressureSample> {
  return runPoolPressure(contender.name, {
    url: settings.url,
    tasks: settings.pressureTasks,
    poolSize: settings.pressurePoolSize,
    timeoutMs: settings.pressureTimeoutMs,
    key: freshKeys(1),
  })
}

/** Whether `contender` takes part in `scenario`, and if not, why. */
export function skipReason(scenario: ScenarioName, contender: Contender): string | undefined {
  if (scenario === 'hold-many' && contender.holdsMany !== true)
    return `pins a connection per lock: ${HOLD_MANY} held at once need ${HOLD_MANY} connections`
  return scenario === 'pool-pressure' ? contender.noPoolPressure : undefined
}
