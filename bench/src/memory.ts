import { createLock, withLock } from '@pglock/pg'
import pg from 'pg'
import { formatNumber } from './report.js'
import { slopeFit } from './stats.js'

export interface MemorySettings {
  readonly url: string
  readonly cycles: number
  readonly workers: number
  /** distinct keys the workers cycle through, so that some cycles queue behind each other */
  readonly keys: number
  readonly sampleEvery: number
}

export interface HeapSample {
  readonly cycles: number
  readonly heapUsed: number
  readonly elapsedMs: number
}

export interface MemoryResult {
  readonly settings: Omit<MemorySettings, 'url'>
  readonly samples: readonly HeapSample[]
  readonly startHeap: number
  readonly endHeap: number
  readonly maxHeap: number
  /** least-squares slope of heapUsed over cycles, after the first tenth (warm-up), in bytes per cycle */
  readonly bytesPerCycle: number
  /** the slope's standard error: heapUsed after a GC still moves by some 100 KB, which a short run cannot tell from a leak */
  readonly slopeStandardError: number
  readonly elapsedMs: number
  readonly cyclesPerSecond: number
  /** `flat` below 1 byte/cycle; `growing` when even the slope minus twice its error is at or above it; else `inconclusive` */
  readonly verdict: 'flat' | 'growing' | 'inconclusive'
  readonly flat: boolean
}

const TRANSACTION = { scope: 'transaction' } as const

/** A leak of even one small object per cycle shows as 16 bytes per cycle or more. */
const FLAT_BYTES_PER_CYCLE = 1

function heapAfterGc(): number {
  const collect = (globalThis as { gc?: () => void }).gc
  if (collect === undefined) throw new Error('memory mode needs node --expose-gc (pnpm bench --memory passes it)')
  collect()
  collect()
  return process.memoryUsage().heapUsed
}

/**
 * Runs `cycles` lock cycles through `@pglock/pg` on one pool, in turn session `withLock`,
 * `createLock().acquire()` / `release()` and transaction `withLock`, and samples the heap after a
 * forced GC every `sampleEvery` cycles.
 */
export async function runMemory(settings: MemorySettings, onSample: (sample: HeapSample) => void): Promise<MemoryResult> {
  const pool = new pg.Pool({
    connectionString: settings.url,
    max: settings.workers,
    application_name: `pglock-bench-${process.pid}-memory`,
  })
  pool.on('error', () => undefined)
  const firstKey = Math.floor(Math.random() * 2 ** 30) * 2 ** 20
  const samples: HeapSample[] = []
  const startedAt = performance.now()
  let started = 0
  let done = 0
  let nextSampleAt = 0
  const sample = () => {
    const heapUsed = heapAfterGc()
    const taken = { cycles: done, heapUsed, elapsedMs: performance.now() - startedAt }
    samples.push(taken)
    onSample(taken)
  }
  try {
    sample()
    nextSampleAt = settings.sampleEvery
    await Promise.all(
      Array.from({ length: settings.workers }, async () => {
        while (started < settings.cycles) {
          const index = started
          started += 1
          const key = firstKey + (index % settings.keys)
          const form = index % 3
          if (form === 0) {
            await withLock(pool, key, () => undefined)
          } else if (form === 1) {
            const lock = await createLock(pool, key).acquire()
            await lock.release()
          } else {
            await withLock(pool, key, () => undefined, TRANSACTION)
          }
          done += 1
          if (done >= nextSampleAt) {
            nextSampleAt += settings.sampleEvery
            sample()
          }
        }
      }),
    )
    if (samples[samples.length - 1]?.cycles !== done) sample()
  } finally {
    await pool.end()
  }
  const elapsedMs = performance.now() - startedAt
  const heaps = samples.map((taken) => taken.heapUsed)
  const steady = samples.filter((taken) => taken.cycles >= settings.cycles / 10)
  const { slope: bytesPerCycle, standardError } = slopeFit(steady.map((taken) => ({ x: taken.cycles, y: taken.heapUsed })))
  const verdict =
    Math.abs(bytesPerCycle) < FLAT_BYTES_PER_CYCLE
      ? 'flat'
      : Math.abs(bytesPerCycle) - 2 * standardError >= FLAT_BYTES_PER_CYCLE
        ? 'growing'
        : 'inconclusive'
  return {
    settings: { cycles: settings.cycles, workers: settings.workers, keys: settings.keys, sampleEvery: settings.sampleEvery },
    samples,
    startHeap: heaps[0] ?? Number.NaN,
    endHeap: heaps[heaps.length - 1] ?? Number.NaN,
    maxHeap: Math.max(...heaps),
    bytesPerCycle,
    slopeStandardError: standardError,
    elapsedMs,
    cyclesPerSecond: (done / elapsedMs) * 1000,
    verdict,
    flat: verdict === 'flat',
  }
}

export function megabytes(bytes: number): string {
  return `${formatNumber(bytes / 2 ** 20)} MiB`
}

const VERDICTS: Record<MemoryResult['verdict'], string> = {
  flat: 'flat',
  growing: 'NOT FLAT',
  inconclusive: `NOT FLAT or noise: within twice its error of ${FLAT_BYTES_PER_CYCLE} byte/cycle, run more --cycles`,
}

export function memoryReport(result: MemoryResult): string {
  return [
    `memory: ${formatNumber(result.settings.cycles)} cycles (session withLock, createLock acquire/release, transaction withLock, in turn),`,
    `  ${result.settings.workers} workers over ${result.settings.keys} keys, heap sampled after gc every ${formatNumber(result.settings.sampleEvery)} cycles`,
    `  heapUsed start ${megabytes(result.startHeap)}, end ${megabytes(result.endHeap)}, max ${megabytes(result.maxHeap)}`,
    `  slope ${formatNumber(result.bytesPerCycle)} ± ${formatNumber(result.slopeStandardError)} bytes/cycle (${megabytes(result.bytesPerCycle * 1_000_000)} per 10^6 cycles) after the first tenth: ${VERDICTS[result.verdict]}`,
    `  took ${formatNumber(result.elapsedMs / 1000)} s (${formatNumber(result.cyclesPerSecond)} cycles/s, gc pauses included)`,
  ].join('\n')
}
