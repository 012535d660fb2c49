import { channel, tracingChannel } from 'node:diagnostics_channel'

const noop = () => undefined

/**
 * Subscribes a subscriber that does nothing to every pglock channel (`pglock:acquire`,
 * `pglock:run`, `pglock:release`: all five events; `pglock:lost`), so that a measurement shows what
 * pglock itself spends on tracing: the contexts it builds and the events it publishes. A real
 * subscriber (OpenTelemetry) adds its own work on top. Returns a function that unsubscribes.
 *
 * @example
 * ```ts
 * const unsubscribe = subscribeToPglock()
 * try {
 *   await withLock(pool, 7, fn) // traced
 * } finally {
 *   unsubscribe()
 * }
 * ```
 */
export function subscribeToPglock(): () => void {
  const handlers = { start: noop, end: noop, asyncStart: noop, asyncEnd: noop, error: noop }
  const traced = ['pglock:acquire', 'pglock:run', 'pglock:release'].map((name) => tracingChannel(name))
  for (const channels of traced) channels.subscribe(handlers)
  const lost = channel('pglock:lost')
  lost.subscribe(noop)
  return () => {
    for (const channels of traced) channels.unsubscribe(handlers)
    lost.unsubscribe(noop)
  }
}

/** Set by `pnpm bench --subscriber`, and so inherited by the bench's child processes. */
export const SUBSCRIBER_ENV = 'PGLOCK_BENCH_SUBSCRIBER'

/**
 * {@link subscribeToPglock} for this whole process when the bench was asked to measure with a
 * subscriber (`--subscriber`, passed on to child processes through {@link SUBSCRIBER_ENV}).
 *
 * @example
 * ```ts
 * if (subscribeIfAsked()) console.log('pglock is traced in this run')
 * ```
 */
export function subscribeIfAsked(): boolean {
  if (process.env[SUBSCRIBER_ENV] !== '1') return false
  subscribeToPglock()
  return true
}
