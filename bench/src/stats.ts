/** The median and the range of a set of repeated measurements. */
export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

/** The `q` quantile (0..1) of ascending `sorted`, by linear interpolation between ranks. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN
  const position = (sorted.length - 1) * q
  const below = Math.floor(position)
  const lower = sorted[below] as number
  const upper = sorted[Math.min(below + 1, sorted.length - 1)] as number
  return lower + (upper - lower) * (position - below)
}

export function ascending(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b)
}

export function spread(values: readonly number[]): Spread {
  const sorted = ascending(values)
  return { median: quantile(sorted, 0.5), min: sorted[0] ?? Number.NaN, max: sorted[sorted.length - 1] ?? Number.NaN }
}

/**
 * Least-squares slope of `y` over `x`, with its standard error (which takes the points as
 * independent, so it is a lower bound for samples that drift together).
 */
export function slopeFit(points: readonly { readonly x: number; readonly y: number }[]): { slope: number; standardError: number } {
  const n = points.length
  if (n < 2) return { slope: Number.NaN, standardError: Number.NaN }
  let sumX = 0
  let sumY = 0
  for (const { x, y } of points) {
    sumX += x
    sumY += y
  }
  const meanX = sumX / n
  const meanY = sumY / n
  let covariance = 0
  let variance = 0
  for (const { x, y } of points) {
    covariance += (x - meanX) * (y - meanY)
    variance += (x - meanX) ** 2
  }
  const slope = covariance / variance
  let residuals = 0
  for (const { x, y } of points) residuals += (y - meanY - slope * (x - meanX)) ** 2
  return { slope, standardError: n > 2 ? Math.sqrt(residuals / (n - 2) / variance) : Number.NaN }
}
