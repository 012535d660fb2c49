import { AsyncLocalStorage } from 'node:async_hooks'
import { type Context, context } from '@opentelemetry/api'

/** The members this module reads, none of them public in OpenTelemetry's API. */
interface ContextApiPrivates {
  _getContextManager?: () => unknown
}

/**
 * The `AsyncLocalStorage` behind OpenTelemetry's global context manager, when that manager is the
 * `AsyncLocalStorageContextManager` of `@opentelemetry/context-async-hooks` (what the Node SDK
 * registers), else `undefined`. A tracing channel can make a span the active context only by
 * binding this storage to its `start` event; OpenTelemetry offers no public way to reach it yet
 * (opentelemetry-js issue 6088), so both members are read here, by shape, and nowhere else.
 * The same member holds the storage in context-async-hooks 1.x, 2.x and 3.x.
 *
 * @example
 * ```ts
 * const storage = contextStorage()
 * if (storage) channel.start.bindStore(storage, (message) => trace.setSpan(context.active(), spanOf(message)))
 * ```
 */
export function contextStorage(): AsyncLocalStorage<Context> | undefined {
  const manager = (context as unknown as ContextApiPrivates)._getContextManager?.()
  const storage = (manager as { _asyncLocalStorage?: unknown } | undefined)?._asyncLocalStorage
  return storage instanceof AsyncLocalStorage ? (storage as AsyncLocalStorage<Context>) : undefined
}
