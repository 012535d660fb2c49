/**
 * Remembers that a pinned connection was lost and tells the core's listeners once: the usual
 * body of an adapter's `LockConnection.onLost`.
 *
 * @example
 * ```ts
 * const loss = trackLoss()
 * client.on('error', (error) => loss.report(error))
 * const connection: LockConnection<Client> = {
 *   // ...
 *   onLost: loss.onLost,
 *   release() {
 *     loss.clear()
 *     // ...
 *   },
 * }
 * ```
 */
export interface LossTracker {
  /** Whether the connection was lost. */
  readonly lost: boolean
  /** What the connection was lost to, once lost. */
  readonly cause: unknown
  /** Records the loss and calls every listener; only the first call counts. */
  report(cause: unknown): void
  /** `LockConnection.onLost`: a listener that comes after the loss is called at once. */
  onLost(listener: (cause: unknown) => void): () => void
  /** Forgets every listener, when the connection is released. */
  clear(): void
}

/**
 * Creates a {@link LossTracker} for one pinned connection.
 *
 * @example
 * ```ts
 * const loss = trackLoss()
 * loss.onLost((cause) => console.log('lost', cause))
 * loss.report(new Error('Connection terminated')) // logs once
 * ```
 */
export function trackLoss(): LossTracker {
  const listeners = new Set<(cause: unknown) => void>()
  let loss: { readonly cause: unknown } | undefined
  return {
    get lost() {
      return loss !== undefined
    },
    get cause() {
      return loss?.cause
    },
    report(cause) {
      if (loss !== undefined) return
      loss = { cause }
      for (const listener of listeners) listener(cause)
    },
    onLost(listener) {
      if (loss !== undefined) {
        listener(loss.cause)
        return () => undefined
      }
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
    clear() {
      listeners.clear()
    },
  }
}
