type Listener = (cause: unknown) => void

const noop = (): void => undefined

/**
 * What the 3.4 and 4.x pins share: the loss, remembered, and the one listener told of it. The
 * core's `Pinned` subscribes once per pinned connection and fans the loss out itself.
 */
export abstract class PinLoss {
  #lost = false
  #cause: unknown
  #listener: Listener | undefined

  /** Whether the connection failed or closed while pinned; no statement may be sent on it then. */
  get lost(): boolean {
    return this.#lost
  }

  protected get cause(): unknown {
    return this.#cause
  }

  /** One listener at a time: a second call replaces the first. */
  onLost(listener: Listener): () => void {
    if (this.#lost) {
      listener(this.#cause)
      return noop
    }
    this.#listener = listener
    return () => {
      if (this.#listener === listener) this.#listener = undefined
    }
  }

  /** Records the loss and tells the listener; only the first report counts. */
  protected report(cause: unknown): void {
    if (this.#lost) return
    this.#lost = true
    this.#cause = cause
    const listener = this.#listener
    this.#listener = undefined
    listener?.(cause)
  }
}
