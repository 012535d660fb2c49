import type { Contender } from './contender.js'
import { pairedCpuAbove, pairedRatios, type ScenarioSamples, type SpeedVerdict, type Verdict } from './report.js'
import type { ScenarioName, ThroughputSample } from './scenarios.js'
import { type Spread, spread } from './stats.js'

/** Issue 12: pglock's own CPU per lock cycle, above the same stack's hand-written floor. */
const CPU_ABOVE_FLOOR_US = 10
const PEER_RATIO = 10
const PEER = 'advisory-lock'
const HANDOFF_MEDIAN_MS = 1

function ratioVerdict(target: string, contender: string, ratios: readonly number[], atLeast: number): Verdict {
  const measured: Spread | undefined = ratios.length > 0 ? spread(ratios) : undefined
  return { target, contender, measured, threshold: `≥ ${atLeast}×`, pass: measured !== undefined && measured.median >= atLeast }
}

/**
 * Issue 12's speed targets for each pglock row, uncontended: its own CPU per cycle at most
 * 10 µs above its floor's, and its cycles/s at least `floorRatioTarget` times its floor's. Both
 * are paired by repeat and judged on the median.
 */
export function judgeSpeed(contenders: readonly Contender[], uncontended: ScenarioSamples | undefined): SpeedVerdict[] {
  if (uncontended === undefined) return []
  return contenders.flatMap((contender) => {
    if (contender.role !== 'pglock' || !uncontended.has(contender.name) || !uncontended.has(contender.floor)) return []
    const own = uncontended.get(contender.name)
    const floor = uncontended.get(contender.floor)
    const above = pairedCpuAbove(own, floor)
    const ratios = pairedRatios(own, floor)
    const cpuAboveFloorUs = above.length > 0 ? spread(above) : undefined
    const ratioToFloor = ratios.length > 0 ? spread(ratios) : undefined
    const ratioTarget = contender.floorRatioTarget ?? 1
    return [
      {
        contender: contender.name,
        floor: contender.floor,
        cpuAboveFloorUs,
        cpuLimitUs: CPU_ABOVE_FLOOR_US,
        cpuPass: cpuAboveFloorUs !== undefined && cpuAboveFloorUs.median <= CPU_ABOVE_FLOOR_US,
        ratioToFloor,
        ratioTarget,
        ratioPass: ratioToFloor !== undefined && ratioToFloor.median >= ratioTarget,
      },
    ]
  })
}

/**
 * The other targets (issue 5), judged on the median over repeats (min and max are printed beside).
 * Cycle-rate targets use the uncontended scenario, where the lock's own cost is all there is.
 */
export function judgeTargets(
  contenders: readonly Contender[],
  results: ReadonlyMap<ScenarioName, ScenarioSamples>,
  pressurePoolSize: number,
): Verdict[] {
  const verdicts: Verdict[] = []
  const uncontended = results.get('uncontended')
  const contended = results.get('contended')
  const pressure = results.get('pool-pressure')
  for (const contender of contenders.filter((candidate) => candidate.role === 'pglock')) {
    if (uncontended?.has(contender.name)) {
      const own = uncontended.get(contender.name)
      const peerRatios = pairedRatios(own, uncontended.get(PEER))
      if (peerRatios.length > 0) verdicts.push(ratioVerdict(`uncontended cycles/s vs ${PEER}`, contender.name, peerRatios, PEER_RATIO))
    }
    const handoffs = (contended?.get(contender.name) ?? []).flatMap((sample) => {
      const handoff = (sample as ThroughputSample).handoff
      return handoff === undefined || handoff.count === 0 ? [] : [handoff.medianMs]
    })
    if (handoffs.length > 0) {
      const measured = spread(handoffs)
      verdicts.push({
        target: 'contended median handoff (ms)',
        contender: contender.name,
        measured,
        threshold: `< ${HANDOFF_MEDIAN_MS} ms`,
        pass: measured.median < HANDOFF_MEDIAN_MS,
      })
    }
    const pressureSamples = pressure?.get(contender.name) ?? []
    if (pressureSamples.length > 0) {
      const completions = pressureSamples.map((sample) =>
        'outcome' in sample && sample.outcome === 'completed' ? sample.maxConnections : Number.NaN,
      )
      const allCompleted = completions.every((connections) => connections <= pressurePoolSize)
      verdicts.push({
        target: `pool pressure completes within the pool`,
        contender: contender.name,
        measured: allCompleted ? spread(completions) : undefined,
        threshold: `≤ ${pressurePoolSize} conns`,
        pass: allCompleted,
      })
    }
  }
  return verdicts
}
