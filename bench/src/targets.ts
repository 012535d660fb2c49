import type { Contender } from './contender.js'
import { pairedRatios, type ScenarioSamples, type Verdict } from './report.js'
import type { ScenarioName, ThroughputSample } from './scenarios.js'
import { type Spread, spread } from './stats.js'

const SESSION_FLOOR_RATIO = 0.95
const TRANSACTION_FLOOR_RATIO = 1.2
const PEER_RATIO = 10
const PEER = 'advisory-lock'
const HANDOFF_MEDIAN_MS = 1

function ratioVerdict(target: string, contender: string, ratios: readonly number[], atLeast: number): Verdict {
  const measured: Spread | undefined = ratios.length > 0 ? spread(ratios) : undefined
  return { target, contender, measured, threshold: `≥ ${atLeast}×`, pass: measured !== undefined && measured.median >= atLeast }
}

/**
 * The targets of issue 5, judged on the median over repeats (min and max are printed beside).
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
      const session = contender.scope === 'session'
      const floorRatios = pairedRatios(own, uncontended.get(contender.floor))
      if (floorRatios.length > 0) {
        verdicts.push(
          ratioVerdict(
            `uncontended cycles/s vs ${contender.floor}`,
            contender.name,
            floorRatios,
            session ? SESSION_FLOOR_RATIO : TRANSACTION_FLOOR_RATIO,
          ),
        )
      }
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
