/**
 * @internal An abort source whose `AbortSignal` is made only when someone reads it: most locks
 * end without anyone reading theirs, and a signal is dear to make on every lock. Once aborted, a
 * signal read later is already aborted with the same reason.
 */
export class LazyAbort {
  #controller: AbortController | undefined
  #aborted = false
  #reason: unknown
  /** Usually one listener at a time (a wait on the driver), so an array only from the second on. */
  #listener: ((reason: unknown) => void) | undefined
  #more: ((reason: unknown) => void)[] | undefined

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.#aborted) this.#controller.abort(this.#reason)
    }
    return this.#controller.signal
  }

  /** Whether it was aborted. */
  get aborted(): boolean {
    return this.#aborted
  }

  /** The abort reason, once aborted. */
  get reason(): unknown {
    return this.#reason
  }

  abort(reason: unknown): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.#controller?.abort(reason)
    const listener = this.#listener
    const more = this.#more
    this.#listener = undefined
    this.#more = undefined
    listener?.(reason)
    for (const other of more ?? []) other(reason)
  }

  /**
   * Calls `listener` with the reason on abort (at once if aborted already), without making a
   * signal. Returns a function that stops listening.
   */
  onAbort(listener: (reason: unknown) => void): () => void {
    if (this.#aborted) {
      listener(this.#reason)
      return () => undefined
    }
    if (this.#listener === undefined) {
      this.#listener = listener
      return () => {
        if (this.#listener === listener) this.#listener = undefined
      }
    }
    const more = (this.#more ??= [])
    more.push(listener)
    return () => {
      const index = more.indexOf(listener)
      if (index !== -1) more.splice(index, 1)
    }
  }

  throwIfAborted(): void {
    if (this.#aborted) throw this.#reason
  }
}
