import type { LazyAbort } from './lazy-abort.js'

/** @internal Thrown by {@link interruptible} when the deadline passes first. */
export class DeadlineExceeded extends Error {
  constructor() {
    super('deadline exceeded')
  }
}

/** @internal Milliseconds left until `deadline` (a `performance.now()` time), or undefined for none. */
export function remainingMs(deadline: number | undefined): number | undefined {
  return deadline === undefined ? undefined : deadline - performance.now()
}

/**
 * @internal Waits for `promise`, unless `signal` aborts (rejects with its reason) or `deadline`
 * passes (rejects with {@link DeadlineExceeded}) first. A value that arrives after the wait was
 * given up goes to `abandon`, so that nothing it holds (a pooled connection, a queue place) leaks.
 */
export function interruptible<T>(
  promise: Promise<T>,
  options: { readonly signal?: AbortSignal | undefined; readonly deadline?: number | undefined; readonly abandon: (value: T) => void },
): Promise<T> {
  const { signal, deadline, abandon } = options
  if (signal === undefined && deadline === undefined) return promise
  return new Promise<T>((resolve, reject) => {
    let done = false
    const finish = () => {
      done = true
      signal?.removeEventListener('abort', onAbort)
      if (timer !== undefined) clearTimeout(timer)
    }
    const giveUp = (reason: unknown) => {
      if (done) return
      finish()
      reject(reason)
    }
    const onAbort = () => giveUp(signal?.reason)
    const left = remainingMs(deadline)
    const timer = left === undefined ? undefined : setTimeout(() => giveUp(new DeadlineExceeded()), Math.max(0, left))
    signal?.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        if (done) return abandon(value)
        finish()
        resolve(value)
      },
      (error: unknown) => {
        if (done) return
        finish()
        reject(error)
      },
    )
    if (signal?.aborted) onAbort()
  })
}

/**
 * @internal Waits for `promise`, a step on a held lock's connection (the driver's own transaction),
 * until `lost` aborts: then rejects with the loss, and whatever `promise` does later is ignored. A
 * driver may never settle a transaction whose connection died (postgres.js 3.4 after a socket
 * error), and once the loss is known there is nothing left to wait for. The listener stays on
 * `lost` until it is dropped, so `lost` should live no longer than the wait (one per call).
 */
export function untilLost<T>(promise: Promise<T>, lost: LazyAbort): Promise<T> {
  if (lost.aborted) {
    promise.catch(() => undefined)
    return Promise.reject(lost.reason)
  }
  return new Promise<T>((resolve, reject) => {
    lost.onAbort(reject)
    promise.then(resolve, reject)
  })
}
