import type { AsyncLocalStorage } from 'node:async_hooks'
import diagnosticsChannel from 'node:diagnostics_channel'
import {
  type Attributes,
  type Context,
  type Counter,
  context,
  diag,
  type Histogram,
  type Link,
  type Meter,
  type MeterProvider,
  metrics,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import manifest from '../package.json' with { type: 'json' }
import {
  ATTR_ACQUIRE_OUTCOME,
  ATTR_BACKEND_PID,
  ATTR_ERROR_TYPE,
  ATTR_LOCK_END,
  ATTR_LOCK_ID,
  ATTR_LOCK_KEY,
  ATTR_OPERATION,
  ATTR_TIMEOUT_MS,
  commonAttributes,
  errorType,
  formatLockId,
  SPAN_ACQUIRE,
  SPAN_HOLD,
} from './attributes.js'
import {
  ACQUIRE_CHANNEL,
  type AcquireTrace,
  LOST_CHANNEL,
  type LockTraceBase,
  type LostMessage,
  RELEASE_CHANNEL,
  type ReleaseTrace,
  RUN_CHANNEL,
  type RunTrace,
} from './channels.js'
import { contextStorage } from './context-storage.js'

/** The instrumentation scope spans and metrics are reported under. */
export const SCOPE_NAME = '@pglock/opentelemetry'
export const SCOPE_VERSION: string = manifest.version

/**
 * Bucket boundaries, in seconds, for waits and holds: from a lock taken at once (about a
 * millisecond, one round trip) to a job that holds its lock for an hour.
 */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]

/** What of a string key goes into attributes; see `InstrumentPglockOptions.captureKey`. */
export type CaptureKey = boolean | ((key: string) => string | undefined)

interface Attempt {
  readonly span: Span
  readonly started: number
}

/** The acquire span of a `withLock` or `tryWithLock` that was just granted, for its hold span to link to. */
interface Granted {
  readonly message: AcquireTrace
  readonly span: SpanContext
}

interface Instruments {
  readonly provider: MeterProvider
  readonly waitDuration: Histogram
  readonly holdDuration: Histogram
  readonly timeouts: Counter
  readonly losses: Counter
  readonly busy: Counter
}

type Handler = (message: unknown) => void

/** Subscribes to the core's channels and turns each message into spans and metric points. */
export class Instrumentation {
  private readonly acquire = diagnosticsChannel.tracingChannel<Context, object>(ACQUIRE_CHANNEL)
  private readonly run = diagnosticsChannel.tracingChannel<Context, object>(RUN_CHANNEL)
  private readonly release = diagnosticsChannel.tracingChannel<Context, object>(RELEASE_CHANNEL)
  private readonly attempts = new WeakMap<object, Attempt>()
  private readonly holds = new WeakMap<object, Span>()
  private granted: Granted | undefined
  private readonly tracer: Tracer
  private instruments: Instruments | undefined
  private storage: AsyncLocalStorage<Context> | undefined
  private subscribed = false

  private readonly onAcquireStart = guard('acquire start', (message: AcquireTrace) => {
    this.bindContextStorage()
    this.startAttempt(message)
  })
  private readonly onAcquireError = guard('acquire error', (message: AcquireTrace) => this.settleAttempt(message))
  private readonly onAcquireAsyncEnd = guard('acquire asyncEnd', (message: AcquireTrace) => this.settleAttempt(message))
  private readonly onRunStart = guard('run start', (message: RunTrace) => this.startHold(message))
  private readonly onRunError = guard('run error', (message: RunTrace) => this.endHold(message))
  private readonly onRunAsyncEnd = guard('run asyncEnd', (message: RunTrace) => this.endHold(message))
  private readonly onReleaseAsyncEnd = guard('release asyncEnd', (message: ReleaseTrace) => this.recordRelease(message))
  private readonly onLost = guard('lost', (message: LostMessage) => this.recordLoss(message))

  private readonly activateHold = (message: object): Context => {
    const active = context.active()
    try {
      return trace.setSpan(active, this.startHold(message as RunTrace))
    } catch (error) {
      report('run start', error)
      return active
    }
  }

  constructor(
    tracerProvider: TracerProvider | undefined,
    private readonly meterProvider: MeterProvider | undefined,
    private readonly captureKey: CaptureKey,
  ) {
    this.tracer = (tracerProvider ?? trace.getTracerProvider()).getTracer(SCOPE_NAME, SCOPE_VERSION)
  }

  /** The tracing channels this listens on, with their handlers: one list for `enable()` and `disable()`. */
  private subscriptions(): [diagnosticsChannel.Channel<unknown, any>, (message: any) => void][] {
    return [
      [this.acquire.start, this.onAcquireStart],
      [this.acquire.error, this.onAcquireError],
      [this.acquire.asyncEnd, this.onAcquireAsyncEnd],
      [this.run.start, this.onRunStart],
      [this.run.error, this.onRunError],
      [this.run.asyncEnd, this.onRunAsyncEnd],
      [this.release.asyncEnd, this.onReleaseAsyncEnd],
    ]
  }

  enable(): void {
    if (this.subscribed) return
    this.subscribed = true
    for (const [channel, handler] of this.subscriptions()) channel.subscribe(handler)
    diagnosticsChannel.subscribe(LOST_CHANNEL, this.onLost)
    this.bindContextStorage()
  }

  disable(): void {
    if (!this.subscribed) return
    this.subscribed = false
    for (const [channel, handler] of this.subscriptions()) channel.unsubscribe(handler)
    diagnosticsChannel.unsubscribe(LOST_CHANNEL, this.onLost)
    this.unbindContextStorage()
    this.granted = undefined
  }

  /**
   * Makes the hold span the active context inside `fn`, through OpenTelemetry's own storage.
   * Checked again at each acquire, so a context manager registered after `instrumentPglock()` is
   * picked up from the next lock on.
   */
  private bindContextStorage(): void {
    const storage = contextStorage()
    if (storage === this.storage) return
    this.unbindContextStorage()
    if (storage === undefined) return
    this.storage = storage
    this.run.start.bindStore(storage, this.activateHold)
  }

  private unbindContextStorage(): void {
    if (this.storage === undefined) return
    this.run.start.unbindStore(this.storage)
    this.storage = undefined
  }

  private startAttempt(message: AcquireTrace): void {
    const attributes = this.lockAttributes(message)
    attributes[ATTR_OPERATION] = message.operation
    if (message.timeoutMs !== undefined) attributes[ATTR_TIMEOUT_MS] = message.timeoutMs
    const span = this.tracer.startSpan(SPAN_ACQUIRE, { kind: SpanKind.INTERNAL, attributes }, context.active())
    this.attempts.set(message, { span, started: performance.now() })
  }

  private settleAttempt(message: AcquireTrace): void {
    this.granted = undefined
    const attempt = this.attempts.get(message)
    if (attempt === undefined) return
    this.attempts.delete(message)
    const outcome = message.outcome ?? (message.error === undefined ? 'acquired' : 'error')
    const { span } = attempt
    span.setAttribute(ATTR_ACQUIRE_OUTCOME, outcome)
    if (message.pid !== undefined) span.setAttribute(ATTR_BACKEND_PID, message.pid)
    if (outcome === 'timeout' || outcome === 'error') failSpan(span, message.error)
    span.end()
    if (outcome === 'acquired' && (message.operation === 'withLock' || message.operation === 'tryWithLock')) {
      this.granted = { message, span: span.spanContext() }
    }

    const waitedMs = message.waitedMs ?? performance.now() - attempt.started
    const instruments = this.metricInstruments()
    const attributes = this.metricAttributes(message)
    attributes[ATTR_OPERATION] = message.operation
    attributes[ATTR_ACQUIRE_OUTCOME] = outcome
    instruments.waitDuration.record(waitedMs / 1000, attributes)
    if (outcome === 'timeout') instruments.timeouts.add(1, attributes)
    else if (outcome === 'busy') instruments.busy.add(1, attributes)
  }

  /** Called twice per run when the context is bound: by the store's transform, then at `start`. */
  private startHold(message: RunTrace): Span {
    const known = this.holds.get(message)
    if (known) return known
    const attributes = this.lockAttributes(message)
    if (message.pid !== undefined) attributes[ATTR_BACKEND_PID] = message.pid
    const links = this.acquireLink(message)
    const span = this.tracer.startSpan(SPAN_HOLD, { kind: SpanKind.INTERNAL, attributes, links }, context.active())
    this.holds.set(message, span)
    return span
  }

  /**
   * A link to the acquire span of the same `withLock` call, which may be in another trace (with no
   * active span, each is a root). The run's context shares no object with the acquire's, but the
   * core settles the acquire and starts the run in one synchronous step, so the run that starts
   * is the call whose acquire settled last; the lock's fields must match too.
   */
  private acquireLink(message: RunTrace): Link[] {
    const granted = this.granted
    this.granted = undefined
    // a fresh array each time: the SDK's Span.addLink pushes onto the one it was given
    if (granted === undefined || !sameLock(granted.message, message)) return []
    return [{ context: granted.span }]
  }

  private endHold(message: RunTrace): void {
    const span = this.holds.get(message)
    if (span === undefined) return
    this.holds.delete(message)
    if (message.error !== undefined) failSpan(span, message.error)
    span.end()
  }

  /** At `asyncEnd` only, which follows `error` too: a failed release is recorded once. */
  private recordRelease(message: ReleaseTrace): void {
    if (message.heldMs === undefined) return
    const failed = message.error !== undefined
    if (!failed && message.released === false) return
    const attributes = this.metricAttributes(message)
    attributes[ATTR_LOCK_END] = failed ? 'failed' : 'released'
    if (failed) attributes[ATTR_ERROR_TYPE] = errorType(message.error)
    this.metricInstruments().holdDuration.record(message.heldMs / 1000, attributes)
  }

  private recordLoss(message: LostMessage): void {
    const instruments = this.metricInstruments()
    const attributes = this.metricAttributes(message)
    instruments.losses.add(1, attributes)
    attributes[ATTR_LOCK_END] = 'lost'
    instruments.holdDuration.record(message.heldMs / 1000, attributes)
  }

  /** Span attributes: the common ones, the lock id, and the key if the options let it in. */
  private lockAttributes(message: LockTraceBase): Attributes {
    const attributes = commonAttributes(message)
    attributes[ATTR_LOCK_ID] = formatLockId(message.lockId)
    const key = this.keyAttribute(message.key)
    if (key !== undefined) attributes[ATTR_LOCK_KEY] = key
    return attributes
  }

  /** Metric attributes stay low-cardinality: no lock id, and a key only as a function of it. */
  private metricAttributes(message: LockTraceBase): Attributes {
    const attributes = commonAttributes(message)
    if (typeof this.captureKey === 'function') {
      const key = this.keyAttribute(message.key)
      if (key !== undefined) attributes[ATTR_LOCK_KEY] = key
    }
    return attributes
  }

  private keyAttribute(key: unknown): string | undefined {
    if (typeof key !== 'string' || this.captureKey === false) return undefined
    return this.captureKey === true ? key : this.captureKey(key)
  }

  /**
   * The instruments, from the given meter provider or else the global one as it is now: the
   * global provider is not a proxy, so instruments made before the SDK registers it would stay
   * no-ops.
   */
  private metricInstruments(): Instruments {
    const provider = this.meterProvider ?? metrics.getMeterProvider()
    if (this.instruments?.provider !== provider) this.instruments = createInstruments(provider)
    return this.instruments
  }
}

function createInstruments(provider: MeterProvider): Instruments {
  const meter: Meter = provider.getMeter(SCOPE_NAME, SCOPE_VERSION)
  const advice = { explicitBucketBoundaries: DURATION_BUCKETS }
  return {
    provider,
    waitDuration: meter.createHistogram('pglock.lock.wait.duration', {
      description: 'How long acquire attempts took to settle, whatever their outcome.',
      unit: 's',
      advice,
    }),
    holdDuration: meter.createHistogram('pglock.lock.hold.duration', {
      description: 'How long locks were held, from grant to release or loss.',
      unit: 's',
      advice,
    }),
    timeouts: meter.createCounter('pglock.lock.timeouts', {
      description: 'Acquire attempts that ended in a timeout.',
      unit: '{timeout}',
    }),
    losses: meter.createCounter('pglock.lock.losses', {
      description: 'Held locks lost with their connection.',
      unit: '{loss}',
    }),
    busy: meter.createCounter('pglock.lock.busy_attempts', {
      description: 'Try-locks (tryAcquire, tryWithLock) that found the lock taken.',
      unit: '{attempt}',
    }),
  }
}

function sameLock(a: LockTraceBase, b: LockTraceBase): boolean {
  return a.lockId === b.lockId && a.key === b.key && a.mode === b.mode && a.scope === b.scope && a.adapter === b.adapter && a.pid === b.pid
}

function failSpan(span: Span, error: unknown): void {
  span.setAttribute(ATTR_ERROR_TYPE, errorType(error))
  if (error instanceof Error) {
    span.recordException(error)
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message })
  } else span.setStatus({ code: SpanStatusCode.ERROR })
}

/**
 * A subscriber that never throws: diagnostics_channel rethrows a subscriber's error as an
 * uncaught exception, which would take the application down for a telemetry fault.
 */
function guard<T>(what: string, handle: (message: T) => void): Handler {
  return (message) => {
    try {
      handle(message as T)
    } catch (error) {
      report(what, error)
    }
  }
}

function report(what: string, error: unknown): void {
  diag.error(`${SCOPE_NAME}: handling pglock's ${what} failed`, error)
}
