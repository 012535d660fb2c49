import { context, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { InvalidArgumentError } from '@pglock/core'
import { instrumentPglock, type PglockInstrumentation } from '@pglock/opentelemetry'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fakeLock, publishAcquire, publishLost, publishRelease, publishRun } from './publisher.ts'
import { startTelemetry, type Telemetry } from './telemetry.ts'

// How channel messages become spans and metric points, with messages published by the test as
// the tracing contract describes them. Real locks are in spans.test.ts and metrics.test.ts.

let telemetry: Telemetry
let instrumentation: PglockInstrumentation | undefined

beforeAll(() => {
  telemetry = startTelemetry()
})
afterEach(() => instrumentation?.disable())
afterAll(() => telemetry.shutdown())

function instrument(options: Parameters<typeof instrumentPglock>[0] = {}) {
  instrumentation = instrumentPglock({ tracerProvider: telemetry.tracerProvider, meterProvider: telemetry.meterProvider, ...options })
  return instrumentation
}

const spansNamed = (name: string, keyId: string) =>
  telemetry.spans().filter((span) => span.name === name && span.attributes['pglock.lock.id'] === keyId)

describe('opentelemetry mapping: acquire', () => {
  it('ends the acquire span with the outcome and the pid, as a child of the caller span', async () => {
    instrument()
    const lock = fakeLock({ lockId: 101n })
    const caller = await telemetry.inSpan('caller', async (span) => {
      await publishAcquire(lock, 'acquired', { waitMs: 20, operation: 'withLock' })
      return span
    })
    const [span] = spansNamed('pglock.acquire', '101')
    expect(span?.parentSpanContext?.spanId).toBe(caller.spanContext().spanId)
    expect(span?.attributes).toEqual({
      'db.system.name': 'postgresql',
      'pglock.lock.id': '101',
      'pglock.lock.mode': 'exclusive',
      'pglock.lock.scope': 'session',
      'pglock.adapter': 'pg',
      'pglock.operation': 'withLock',
      'pglock.acquire.outcome': 'acquired',
      'pglock.backend.pid': 4242,
    })
    expect(span?.status.code).toBe(SpanStatusCode.UNSET)
  })

  it('marks a timeout and an error as failed, and a busy try or an abort as not', async () => {
    instrument()
    const outcomes = [
      ['timeout', Object.assign(new Error('timed out'), { code: 'TIMEOUT', name: 'LockTimeoutError' })],
      ['error', Object.assign(new Error('terminating connection'), { code: '57P01' })],
      ['aborted', new DOMException('stop', 'AbortError')],
      ['busy', undefined],
    ] as const
    for (const [index, [outcome, error]] of outcomes.entries()) {
      await publishAcquire(fakeLock({ lockId: BigInt(200 + index) }), outcome, error ? { error } : {}).catch(() => undefined)
    }
    const byOutcome = (id: string) => spansNamed('pglock.acquire', id)[0]
    expect(byOutcome('200')?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'timed out' })
    expect(byOutcome('200')?.attributes['error.type']).toBe('TIMEOUT')
    expect(byOutcome('200')?.events.map((event) => event.name)).toEqual(['exception'])
    expect(byOutcome('201')?.attributes['error.type']).toBe('57P01')
    expect(byOutcome('202')?.status.code).toBe(SpanStatusCode.UNSET)
    expect(byOutcome('202')?.attributes['pglock.acquire.outcome']).toBe('aborted')
    expect(byOutcome('203')?.status.code).toBe(SpanStatusCode.UNSET)
    expect(byOutcome('203')?.attributes['pglock.acquire.outcome']).toBe('busy')
  })

  it('leaves string keys out unless captureKey lets them in, and keeps them out of metrics when true', async () => {
    instrument()
    await publishAcquire(fakeLock({ key: 'tenant:7:invoice:1', lockId: 301n }), 'busy')
    instrument({ captureKey: true })
    await publishAcquire(fakeLock({ key: 'tenant:7:invoice:2', lockId: 302n }), 'busy')
    instrument({ captureKey: (key) => key.split(':').at(-2) })
    await publishAcquire(fakeLock({ key: 'tenant:7:invoice:3', lockId: 303n }), 'busy')
    expect(spansNamed('pglock.acquire', '301')).toHaveLength(1)
    expect(spansNamed('pglock.acquire', '301')[0]?.attributes).not.toHaveProperty('pglock.lock.key')
    expect(spansNamed('pglock.acquire', '302')[0]?.attributes['pglock.lock.key']).toBe('tenant:7:invoice:2')
    expect(spansNamed('pglock.acquire', '303')[0]?.attributes['pglock.lock.key']).toBe('invoice')
    const busy = await telemetry.metric('pglock.lock.busy_attempts')
    expect(busy?.dataPoints.map((point) => point.attributes['pglock.lock.key']).sort()).toEqual(['invoice', undefined])
  })
})

describe('opentelemetry mapping: hold', () => {
  it('makes the hold span the active span inside fn', async () => {
    instrument()
    const lock = fakeLock({ lockId: 401n })
    const inside = await telemetry.inSpan('caller', () => publishRun(lock, async () => trace.getActiveSpan()?.spanContext().spanId))
    const [hold] = spansNamed('pglock.hold', '401')
    expect(hold?.spanContext().spanId).toBe(inside)
  })

  it('picks up a context manager registered after instrumentPglock, from the next lock on', async () => {
    context.disable()
    instrument()
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
    const lock = fakeLock({ lockId: 403n })
    await publishAcquire(lock, 'acquired')
    const inside = await publishRun(lock, async () => trace.getActiveSpan()?.spanContext().spanId)
    expect(inside).toBeDefined()
    expect(spansNamed('pglock.hold', '403')[0]?.spanContext().spanId).toBe(inside)
  })

  it('fails the hold span when fn throws', async () => {
    instrument()
    const boom = new TypeError('fn failed')
    await expect(
      publishRun(fakeLock({ lockId: 402n }), async () => {
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(spansNamed('pglock.hold', '402')[0]?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'fn failed' })
    expect(spansNamed('pglock.hold', '402')[0]?.attributes['error.type']).toBe('TypeError')
  })

  it('records hold durations in seconds from releases and losses, and counts losses', async () => {
    instrument()
    const lock = fakeLock({ lockId: 501n, adapter: 'hold-test' })
    await publishRelease(lock, 1_500)
    publishLost(lock, 250)
    const hold = await telemetry.metric('pglock.lock.hold.duration')
    expect(hold?.descriptor.unit).toBe('s')
    const points = hold?.dataPoints.filter((point) => point.attributes['pglock.adapter'] === 'hold-test')
    expect(points?.map((point) => [point.attributes['pglock.lock.end'], point.value])).toEqual([
      ['released', expect.objectContaining({ count: 1, sum: 1.5 })],
      ['lost', expect.objectContaining({ count: 1, sum: 0.25 })],
    ])
    await publishRelease(lock, 40, Object.assign(new Error('unlock failed'), { code: 'RELEASE_FAILED' })).catch(() => undefined)
    const failed = (await telemetry.metric('pglock.lock.hold.duration'))?.dataPoints.filter(
      (point) => point.attributes['pglock.adapter'] === 'hold-test' && point.attributes['pglock.lock.end'] === 'failed',
    )
    expect(failed?.map((point) => [point.attributes['error.type'], point.value])).toEqual([
      ['RELEASE_FAILED', expect.objectContaining({ count: 1, sum: 0.04 })],
    ])
    const losses = await telemetry.metric('pglock.lock.losses')
    expect(losses?.dataPoints.find((point) => point.attributes['pglock.adapter'] === 'hold-test')?.value).toBe(1)
  })
})

describe('opentelemetry mapping: lifecycle', () => {
  it('reports each lock once however often instrumentPglock is called, and nothing once disabled', async () => {
    const first = instrument()
    instrument()
    const last = instrument()
    first.disable()
    await publishAcquire(fakeLock({ lockId: 601n }), 'acquired')
    expect(spansNamed('pglock.acquire', '601')).toHaveLength(1)
    last.disable()
    last.disable()
    await publishAcquire(fakeLock({ lockId: 602n }), 'acquired')
    expect(spansNamed('pglock.acquire', '602')).toHaveLength(0)
  })

  it('refuses options it does not take, before subscribing', () => {
    expect(() => instrumentPglock({ tracerprovider: {} } as never)).toThrow(InvalidArgumentError)
    expect(() => instrumentPglock({ tracerProvider: {} } as never)).toThrow(/tracerProvider must be an OpenTelemetry TracerProvider/)
    expect(() => instrumentPglock({ meterProvider: 1 } as never)).toThrow(/meterProvider must be/)
    expect(() => instrumentPglock({ captureKey: 'yes' } as never)).toThrow(/captureKey must be a boolean or a function/)
    expect(() => instrumentPglock(null as never)).toThrow(/options must be an object, got null/)
  })
})
