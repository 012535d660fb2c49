import type { Contender } from './contender.js'
import type { PressureSample, Sample, ScenarioName, ThroughputSample } from './scenarios.js'
import { type Spread, spread } from './stats.js'

/** Every sample of one scenario, by contender name, in repeat order. */
export type ScenarioSamples = ReadonlyMap<string, readonly Sample[]>

export interface ThroughputSummary {
  readonly contender: string
  readonly cyclesPerSecond: Spread
  /** per repeat, this contender's cycles/s over its floor's in the same repeat */
  readonly ratioToFloor: Spread | undefined
  readonly floor: string
  readonly maxConnections: number
  /** CPU µs per cycle, this process and the backends serving it */
  readonly clientCpuUs: Spread
  /** per repeat, this process's CPU µs per cycle minus its floor's in the same repeat */
  readonly cpuAboveFloorUs: Spread | undefined
  readonly serverCpuUs: Spread | undefined
  readonly handoffMedianMs?: Spread
  readonly handoffP99Ms?: Spread
  /** per repeat, the share of cycles that handed the lock to another worker */
  readonly handedOver?: Spread
  readonly exclusionViolations?: number
}

export interface PressureSummary {
  readonly contender: string
  readonly outcome: string
  readonly elapsedMs?: Spread
  readonly maxConnections: number
  readonly samples: readonly PressureSample[]
}

export interface Verdict {
  readonly target: string
  readonly contender: string
  readonly measured: Spread | undefined
  readonly threshold: string
  readonly pass: boolean
}

function isThroughput(sample: Sample): sample is ThroughputSample {
  return 'cyclesPerSecond' in sample
}

/** Client CPU µs per cycle of `a` minus `b`'s, paired by repeat: samples of one repeat ran next to each other. */
export function pairedCpuAbove(a: readonly Sample[] | undefined, b: readonly Sample[] | undefined): number[] {
  if (a === undefined || b === undefined) return []
  const above: number[] = []
  for (let repeat = 0; repeat < Math.min(a.length, b.length); repeat += 1) {
    const top = a[repeat]
    const bottom = b[repeat]
    if (top !== undefined && bottom !== undefined && isThroughput(top) && isThroughput(bottom)) {
      above.push(top.clientCpuUs - bottom.clientCpuUs)
    }
  }
  return above
}

/** Ratios of `a` over `b`, paired by repeat: samples of one repeat ran next to each other. */
export function pairedRatios(a: readonly Sample[] | undefined, b: readonly Sample[] | undefined): number[] {
  if (a === undefined || b === undefined) return []
  const ratios: number[] = []
  for (let repeat = 0; repeat < Math.min(a.length, b.length); repeat += 1) {
    const top = a[repeat]
    const bottom = b[repeat]
    if (top !== undefined && bottom !== undefined && isThroughput(top) && isThroughput(bottom)) {
      ratios.push(top.cyclesPerSecond / bottom.cyclesPerSecond)
    }
  }
  return ratios
}

export function summarizeThroughput(contenders: readonly Contender[], samples: ScenarioSamples): ThroughputSummary[] {
  const summaries: ThroughputSummary[] = []
  for (const contender of contenders) {
    const own = (samples.get(contender.name) ?? []).filter(isThroughput)
    if (own.length === 0) continue
    const ratios = pairedRatios(own, samples.get(contender.floor))
    const above = contender.floor === contender.name ? [] : pairedCpuAbove(own, samples.get(contender.floor))
    const handoffs = own.flatMap((sample) => (sample.handoff === undefined || sample.handoff.count === 0 ? [] : [sample.handoff]))
    summaries.push({
      contender: contender.name,
      floor: contender.floor,
      cyclesPerSecond: spread(own.map((sample) => sample.cyclesPerSecond)),
      ratioToFloor: ratios.length > 0 ? spread(ratios) : undefined,
      maxConnections: Math.max(...own.map((sample) => sample.maxConnections)),
      clientCpuUs: spread(own.map((sample) => sample.clientCpuUs)),
      cpuAboveFloorUs: above.length > 0 ? spread(above) : undefined,
      serverCpuUs: own.every((sample) => sample.serverCpuUs !== undefined)
        ? spread(own.map((sample) => sample.serverCpuUs as number))
        : undefined,
      ...(handoffs.length > 0
        ? {
            handoffMedianMs: spread(handoffs.map((handoff) => handoff.medianMs)),
            handoffP99Ms: spread(handoffs.map((handoff) => handoff.p99Ms)),
            handedOver: spread(own.flatMap((sample) => (sample.handoff === undefined ? [] : [sample.handoff.count / sample.cycles]))),
          }
        : {}),
      ...(own.some((sample) => sample.exclusionViolations !== undefined)
        ? { exclusionViolations: own.reduce((total, sample) => total + (sample.exclusionViolations ?? 0), 0) }
        : {}),
    })
  }
  return summaries
}

function describePressure(sample: PressureSample): string {
  switch (sample.outcome) {
    case 'completed':
      return `completed ${sample.tasks}/${sample.tasks}`
    case 'deadlock':
      return `deadlock (timed out after ${formatNumber(sample.timeoutMs / 1000)} s, ${sample.completed}/${sample.tasks} done)`
    case 'failed':
      return `failed after ${sample.completed}/${sample.tasks}: ${sample.error}`
  }
}

export function summarizePressure(contenders: readonly Contender[], samples: ScenarioSamples): PressureSummary[] {
  const summaries: PressureSummary[] = []
  for (const contender of contenders) {
    const own = (samples.get(contender.name) ?? []).filter((sample): sample is PressureSample => !isThroughput(sample))
    if (own.length === 0) continue
    const outcomes = [...new Set(own.map(describePressure))]
    const completedTimes = own.flatMap((sample) => (sample.outcome === 'completed' ? [sample.elapsedMs] : []))
    summaries.push({
      contender: contender.name,
      outcome: outcomes.length === 1 ? (outcomes[0] as string) : `mixed: ${outcomes.join('; ')}`,
      ...(completedTimes.length > 0 ? { elapsedMs: spread(completedTimes) } : {}),
      maxConnections: Math.max(...own.map((sample) => (sample.outcome === 'failed' ? 0 : sample.maxConnections))),
      samples: own,
    })
  }
  return summaries
}

/** A number with about three significant digits, thousands grouped. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value)
  const magnitude = Math.abs(value)
  const digits = magnitude >= 100 ? 0 : magnitude >= 10 ? 1 : magnitude >= 1 ? 2 : 3
  const shown = magnitude < 0.5 * 10 ** -digits ? 0 : value
  return shown.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function formatSpread(value: Spread | undefined, unit = ''): string {
  if (value === undefined) return '-'
  return `${formatNumber(value.median)}${unit} [${formatNumber(value.min)}–${formatNumber(value.max)}]`
}

/** A spread of differences: each number signed, the range written with "to" (a dash would read as minus). */
export function formatDifference(value: Spread | undefined): string {
  if (value === undefined) return '-'
  const plus = (number: number) => (number > 0 ? `+${formatNumber(number)}` : formatNumber(number))
  return `${plus(value.median)} [${plus(value.min)} to ${plus(value.max)}]`
}

/** A plain-text table: the first row is the header; columns are padded to their widest cell. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = []
  for (const row of rows) {
    for (const [column, cell] of row.entries()) widths[column] = Math.max(widths[column] ?? 0, cell.length)
  }
  const line = (row: readonly string[]) =>
    row
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd()
  const [header, ...body] = rows
  if (header === undefined) return ''
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...body.map(line)].join('\n')
}

export function throughputTable(scenario: ScenarioName, summaries: readonly ThroughputSummary[]): string {
  const withHandoff = summaries.some((summary) => summary.handoffMedianMs !== undefined)
  const header = [
    'contender',
    'cycles/s median [min–max]',
    'ratio to floor',
    'CPU µs/cycle client+server',
    'client CPU µs above floor',
    ...(withHandoff ? ['handoff median ms', 'handoff p99 ms', 'handed over', 'exclusion'] : []),
    'max conns',
  ]
  const rows = summaries.map((summary) => [
    summary.contender,
    formatSpread(summary.cyclesPerSecond),
    summary.contender === summary.floor ? '1 (floor)' : formatSpread(summary.ratioToFloor, '×'),
    `${formatNumber(summary.clientCpuUs.median)} + ${summary.serverCpuUs === undefined ? '?' : formatNumber(summary.serverCpuUs.median)}`,
    summary.contender === summary.floor ? '-' : formatDifference(summary.cpuAboveFloorUs),
    ...(withHandoff
      ? [
          formatSpread(summary.handoffMedianMs),
          formatSpread(summary.handoffP99Ms),
          summary.handedOver === undefined ? '-' : `${Math.round(summary.handedOver.median * 100)}%`,
          summary.exclusionViolations === 0 ? 'ok' : `${summary.exclusionViolations} VIOLATIONS`,
        ]
      : []),
    String(summary.maxConnections),
  ])
  return `${scenario}\n${table([header, ...rows])}`
}

export function pressureTable(summaries: readonly PressureSummary[], skipped: readonly (readonly [string, string])[]): string {
  const rows = summaries.map((summary) => [
    summary.contender,
    summary.outcome,
    summary.elapsedMs === undefined ? '-' : formatSpread(summary.elapsedMs, ' ms'),
    String(summary.maxConnections),
  ])
  for (const [name, reason] of skipped) rows.push([name, `n/a: ${reason}`, '-', '-'])
  return `pool-pressure\n${table([['contender', 'outcome', 'time median [min–max]', 'max conns'], ...rows])}`
}

export function verdictTable(verdicts: readonly Verdict[]): string {
  const rows = verdicts.map((verdict) => [
    verdict.target,
    verdict.contender,
    formatSpread(verdict.measured),
    verdict.threshold,
    verdict.pass ? 'PASS' : 'FAIL',
  ])
  return `targets (verdict on the median)\n${table([['target', 'contender', 'measured median [min–max]', 'needs', 'verdict'], ...rows])}`
}

/** One pglock row against its floor, uncontended: its own CPU per cycle and its throughput ratio. */
export interface SpeedVerdict {
  readonly contender: string
  readonly floor: string
  readonly cpuAboveFloorUs: Spread | undefined
  readonly cpuLimitUs: number
  readonly cpuPass: boolean
  readonly ratioToFloor: Spread | undefined
  readonly ratioTarget: number
  readonly ratioPass: boolean
}

export function speedTable(verdicts: readonly SpeedVerdict[], note: string): string {
  const rows = verdicts.map((verdict) => [
    verdict.contender,
    verdict.floor,
    formatDifference(verdict.cpuAboveFloorUs),
    `≤ ${verdict.cpuLimitUs}`,
    verdict.cpuPass ? 'PASS' : 'FAIL',
    formatSpread(verdict.ratioToFloor, '×'),
    `≥ ${verdict.ratioTarget}×`,
    verdict.ratioPass ? 'PASS' : 'FAIL',
  ])
  const header = ['contender', 'floor', 'client CPU µs/cycle above floor', 'needs', 'verdict', 'cycles/s vs floor', 'needs', 'verdict']
  return `pglock against its floor, uncontended (issue 12 targets; median [min–max] over repeats, each paired with its floor)\n${table([header, ...rows])}\n${note}`
}
