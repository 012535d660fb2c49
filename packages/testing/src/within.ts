/**
 * Milliseconds from now until `signal` aborts, or rejects after `timeoutMs`. In a module of its
 * own, so that the in-memory model test can use it without loading the database bench.
 *
 * @example
 * ```ts
 * const { reason } = await abortedWithin(lock.signal, 2_000)
 * ```
 */
export function abortedWithin(signal: AbortSignal, timeoutMs: number): Promise<{ reason: unknown; afterMs: number }> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve({ reason: signal.reason, afterMs: 0 })
    const timer = setTimeout(() => reject(new Error(`signal did not abort within ${timeoutMs} ms`)), timeoutMs)
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer)
        resolve({ reason: signal.reason, afterMs: performance.now() - started })
      },
      { once: true },
    )
  })
}
