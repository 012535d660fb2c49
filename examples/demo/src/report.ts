import type { Phase } from './protocol.js'

/** What one phase did: its shape, the counter's final value and how long the increments took. */
export interface PhaseResult {
  readonly phase: Phase
  readonly label: string
  readonly workers: number
  readonly increments: number
  readonly finalValue: number
  readonly elapsedMs: number
}

export function expectedValue(result: PhaseResult): number {
  return result.workers * result.increments
}

export function lostUpdates(result: PhaseResult): number {
  return expectedValue(result) - result.finalValue
}

function locksPerSecond(result: PhaseResult): string {
  if (result.phase === 'unlocked') return '—'
  return String(Math.round(expectedValue(result) / (result.elapsedMs / 1000)))
}

const HEADER = ['phase', 'workers × increments', 'expected', 'final value', 'lost updates', 'time', 'locks/s'] as const
const LEFT_ALIGNED = new Set([0, 1])

function cells(result: PhaseResult): string[] {
  return [
    result.label,
    `${result.workers} × ${result.increments}`,
    String(expectedValue(result)),
    String(result.finalValue),
    String(lostUpdates(result)),
    `${(result.elapsedMs / 1000).toFixed(2)} s`,
    locksPerSecond(result),
  ]
}

function renderRow(row: readonly string[], widths: readonly number[]): string {
  return row.map((cell, i) => (LEFT_ALIGNED.has(i) ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')
}

/** The results as a plain-text table, one row per phase. */
export function formatResultsTable(results: readonly PhaseResult[]): string {
  const rows = [[...HEADER], ...results.map(cells)]
  const widths = HEADER.map((_, i) => Math.max(...rows.map((row) => row[i]?.length ?? 0)))
  const rule = widths.map((width) => '-'.repeat(width)).join('-|-')
  const [header, ...body] = rows.map((row) => renderRow(row, widths))
  return [header, rule, ...body].join('\n')
}
