import type { MeterProvider, TracerProvider } from '@opentelemetry/api'
import { InvalidArgumentError } from '@pglock/core'
import { type CaptureKey, Instrumentation } from './instrumentation.js'

/**
 * Options of {@link instrumentPglock}.
 *
 * @example
 * ```ts
 * instrumentPglock({ tracerProvider, meterProvider, captureKey: (key) => key.split(':')[0] })
 * ```
 */
export interface InstrumentPglockOptions {
  /**
   * Where spans go.
   * @default the global tracer provider (`trace.getTracerProvider()`), as the SDK registers it
   */
  readonly tracerProvider?: TracerProvider | undefined
  /**
   * Where metrics go. Without one, each lock reads the global meter provider, so calling
   * `instrumentPglock()` before the SDK starts loses nothing.
   * @default the global meter provider (`metrics.getMeterProvider()`)
   */
  readonly meterProvider?: MeterProvider | undefined
  /**
   * Whether string keys go into the `pglock.lock.key` attribute. Off by default: keys such as
   * `tenant:8812:invoice:42` often carry ids that do not belong in telemetry, and the lock id
   * (`pglock.lock.id`, a hash for string keys) already tells locks apart.
   * - `true`: spans carry the key as given; metrics never do (one series per key).
   * - a function: spans and metrics carry what it returns (nothing when it returns
   *   `undefined`). Return a coarse class of keys, such as `'invoice'` for `'invoice:42'`, to
   *   keep metrics to a few series.
   *
   * Integer and pair keys are the lock id itself, which spans always carry.
   * @default false
   */
  readonly captureKey?: boolean | ((key: string) => string | undefined) | undefined
}

/**
 * A running instrumentation, as {@link instrumentPglock} returns it.
 *
 * @example
 * ```ts
 * const instrumentation = instrumentPglock()
 * process.on('SIGTERM', () => instrumentation.disable())
 * ```
 */
export interface PglockInstrumentation {
  /**
   * Unsubscribes from pglock's channels: no span or metric point is made after it. Spans of
   * calls already under way are not ended. Calling it again does nothing.
   */
  disable(): void
}

const OPTIONS = new Set(['tracerProvider', 'meterProvider', 'captureKey'])
/** One instrumentation per process, across copies of this package: channels are global by name. */
const ACTIVE = Symbol.for('@pglock/opentelemetry.active')
type Registry = { [ACTIVE]?: PglockInstrumentation }

/**
 * Emits OpenTelemetry spans and metrics for every lock taken by any pglock adapter in this
 * process, by subscribing to the core's `diagnostics_channel` channels. Nothing is imported from
 * or patched in the adapters, and locks cost nothing extra until this is called.
 *
 * Spans: `pglock.acquire` for each acquire attempt, child of the caller's active span, with its
 * outcome; `pglock.hold` around `withLock`'s and `tryWithLock`'s function, which is the active
 * span inside it (so your queries there are its children) when the SDK's context manager is
 * `AsyncLocalStorageContextManager`, the Node default. Metrics: the histograms
 * `pglock.lock.wait.duration` and `pglock.lock.hold.duration` (seconds) and the counters
 * `pglock.lock.timeouts`, `pglock.lock.losses` and `pglock.lock.busy_attempts`.
 *
 * Calling it again replaces the earlier instrumentation (whose `disable()` then does nothing),
 * so there is never more than one, and each lock is reported once.
 *
 * @throws `InvalidArgumentError` for an option it does not take or a value of the wrong type.
 * @example
 * ```ts
 * import { NodeSDK } from '@opentelemetry/sdk-node'
 * import { instrumentPglock } from '@pglock/opentelemetry'
 *
 * const sdk = new NodeSDK()
 * sdk.start()
 * const instrumentation = instrumentPglock()
 * // ... later, to stop reporting:
 * instrumentation.disable()
 * ```
 * @example
 * ```ts
 * // keep tenant ids out of telemetry, but tell kinds of lock apart in metrics
 * instrumentPglock({ captureKey: (key) => key.split(':')[0] })
 * ```
 */
export function instrumentPglock(options: InstrumentPglockOptions = {}): PglockInstrumentation {
  const { tracerProvider, meterProvider, captureKey } = checkOptions(options)
  const registry = globalThis as Registry
  registry[ACTIVE]?.disable()
  const instrumentation = new Instrumentation(tracerProvider, meterProvider, captureKey)
  const handle: PglockInstrumentation = {
    disable() {
      instrumentation.disable()
      if (registry[ACTIVE] === handle) delete registry[ACTIVE]
    },
  }
  instrumentation.enable()
  registry[ACTIVE] = handle
  return handle
}

function checkOptions(options: InstrumentPglockOptions): {
  tracerProvider: TracerProvider | undefined
  meterProvider: MeterProvider | undefined
  captureKey: CaptureKey
} {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(`instrumentPglock options must be an object, got ${describe(options)}`)
  }
  for (const name of Object.keys(options)) {
    if (!OPTIONS.has(name)) {
      throw new InvalidArgumentError(`unknown option ${JSON.stringify(name)}: expected one of ${[...OPTIONS].join(', ')}`)
    }
  }
  const { tracerProvider, meterProvider, captureKey = false } = options
  if (tracerProvider !== undefined && typeof tracerProvider?.getTracer !== 'function') {
    throw new InvalidArgumentError(
      `tracerProvider must be an OpenTelemetry TracerProvider (with getTracer()), got ${describe(tracerProvider)}`,
    )
  }
  if (meterProvider !== undefined && typeof meterProvider?.getMeter !== 'function') {
    throw new InvalidArgumentError(`meterProvider must be an OpenTelemetry MeterProvider (with getMeter()), got ${describe(meterProvider)}`)
  }
  if (typeof captureKey !== 'boolean' && typeof captureKey !== 'function') {
    throw new InvalidArgumentError(`captureKey must be a boolean or a function of the key, got ${describe(captureKey)}`)
  }
  return { tracerProvider, meterProvider, captureKey }
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'string') return JSON.stringify(value)
  return typeof value
}
