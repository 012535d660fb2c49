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
  return new Loss()
}

type Listener = (cause: unknown) => void

/**
 * One per pinned connection, so per lock: a class, its methods on the prototype. `onLost` is a
 * bound field, as adapters hand it on as `LockConnection.onLost`.
 */
class Loss implements LossTracker {
  #lost = false
  #cause: unknown
  /** Usually zero or one listener (the core's watch), so a `Set` only from the second on. */
  #listener: Listener | undefined
  #more: Set<Listener> | undefined

  get lost(): boolean {
    return this.#lost
  }

  get cause(): unknown {
    return this.#cause
  }

  report(cause: unknown): void {
    if (this.#lost) return
    this.#lost = true
    this.#cause = cause
    const listeners = [this.#listener, ...(this.#more ?? [])]
    for (const listener of listeners) listener?.(cause)
  }

  readonly onLost = (listener: Listener): (() => void) => {
    if (this.#lost) {
      listener(this.#cause)
      return () => undefined
    }
    if (this.#listener === undefined) {
      this.#listener = listener
      return () => {
        if (this.#listener === listener) this.#listener = undefined
      }
    }
    this.#more ??= new Set()
    this.#more.add(listener)
    return () => void this.#more?.delete(listener)
  }

  clear(): void {
    this.#listener = undefined
    this.#more = undefined
  }
}
