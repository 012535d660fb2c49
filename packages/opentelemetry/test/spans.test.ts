import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { type DiagLogger, DiagLogLevel, diag, SpanStatusCode, trace } from '@opentelemetry/api'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { instrumentPglock, type PglockInstrumentation } from '@pglock/opentelemetry'
import { createLock, LockTimeoutError, pgLocksRow, resolveLockId, tryWithLock, withLock } from '@pglock/pg'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest'
import { startTelemetry, type Telemetry } from './telemetry.ts'

// Spans of real locks taken through @pglock/pg against Postgres, exported by the real SDK.

const prefix = `pglock-test:otel:spans:${randomBytes(6).toString('hex')}`
let pool: pg.Pool
let telemetry: Telemetry
let instrumentation: PglockInstrumentation

beforeAll(() => {
  pool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 4 })
  pool.on('error', () => undefined)
})
afterAll(() => pool.end())
beforeEach(() => {
  telemetry = startTelemetry()
  instrumentation = instrumentPglock({ tracerProvider: telemetry.tracerProvider, meterProvider: telemetry.meterProvider })
})
afterEach(async () => {
  instrumentation.disable()
  await telemetry.shutdown()
})

const lockIdOf = (key: string) => String(resolveLockId(key).value)
const named = (name: string) => telemetry.spans().filter((span) => span.name === name)
const only = (name: string): ReadableSpan => {
  const spans = named(name)
  expect(spans.map((span) => span.name)).toEqual([name])
  return spans[0]!
}
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId

async function holdersOf(key: string): Promise<number[]> {
  const { classid, objid, objsubid } = pgLocksRow(resolveLockId(key))
  const { rows } = await pool.query<{ pid: number }>(
    `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND classid = $1 AND objid = $2 AND objsubid = $3`,
    [classid, objid, objsubid],
  )
  return rows.map((row) => row.pid)
}

describe('opentelemetry spans: withLock', () => {
  it('gives an acquire span and a hold span, both children of the caller span, with the lock attributes', async () => {
    const key = `${prefix}:attributes`
    const { caller, pid, holders } = await telemetry.inSpan('caller', (span) =>
      withLock(pool, key, async ({ db }) => {
        const { rows } = await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
        return { caller: span.spanContext().spanId, pid: rows[0]!.pid, holders: await holdersOf(key) }
      }),
    )
    expect(holders).toEqual([pid])
    const acquire = only('pglock.acquire')
    const hold = only('pglock.hold')
    expect(parentOf(acquire)).toBe(caller)
    expect(parentOf(hold)).toBe(caller)
    expect(acquire.attributes).toEqual({
      'db.system.name': 'postgresql',
      'pglock.lock.id': lockIdOf(key),
      'pglock.lock.mode': 'exclusive',
      'pglock.lock.scope': 'session',
      'pglock.adapter': 'pg',
      'pglock.operation': 'withLock',
      'pglock.acquire.outcome': 'acquired',
      'pglock.backend.pid': pid,
    })
    expect(hold.attributes).toMatchObject({ 'pglock.lock.id': lockIdOf(key), 'pglock.backend.pid': pid })
    expect([acquire.status.code, hold.status.code]).toEqual([SpanStatusCode.UNSET, SpanStatusCode.UNSET])
  })

  it('links each hold span to the acquire span of its own call, across traces when no span is active', async () => {
    const keys = [`${prefix}:link:a`, `${prefix}:link:b`, `${prefix}:link:c`]
    const held = await createLock(pool, `${prefix}:link:other`).acquire()
    try {
      await Promise.all([
        withLock(pool, keys[0]!, () => sleep(20)),
        withLock(pool, keys[1]!, () => sleep(5), { scope: 'transaction' }),
        tryWithLock(pool, keys[2]!, () => sleep(10)),
      ])
    } finally {
      await held.release()
    }
    expect(named('pglock.hold')).toHaveLength(3)
    for (const key of keys) {
      const [acquire] = named('pglock.acquire').filter((span) => span.attributes['pglock.lock.id'] === lockIdOf(key))
      const [hold] = named('pglock.hold').filter((span) => span.attributes['pglock.lock.id'] === lockIdOf(key))
      expect(acquire!.spanContext().traceId).not.toBe(hold!.spanContext().traceId)
      expect(hold!.links.map((link) => link.context)).toEqual([acquire!.spanContext()])
    }
  })

  it('makes the hold span the active span inside fn, so a query span there is its child', async () => {
    const tracer = telemetry.tracerProvider.getTracer('app')
    const query = await withLock(pool, `${prefix}:active`, async ({ db }) => {
      await db.query('SELECT 1')
      return tracer.startActiveSpan('SELECT invoices', async (span) => {
        await db.query('SELECT 2')
        span.end()
        return span
      })
    })
    const hold = only('pglock.hold')
    expect(parentOf(named('SELECT invoices')[0]!)).toBe(hold.spanContext().spanId)
    expect(query.spanContext().traceId).toBe(hold.spanContext().traceId)
    expect(trace.getActiveSpan()).toBeUndefined()
  })

  it('does the same in transaction scope, with the scope in the attributes', async () => {
    const inside = await withLock(pool, `${prefix}:tx`, async () => trace.getActiveSpan()?.spanContext().spanId, { scope: 'transaction' })
    const hold = only('pglock.hold')
    expect(hold.spanContext().spanId).toBe(inside)
    expect(only('pglock.acquire').attributes['pglock.lock.scope']).toBe('transaction')
  })

  it("fails the hold span with fn's error, and releases the lock", async () => {
    const key = `${prefix}:fn-throws`
    await expect(
      withLock(pool, key, () => {
        throw new RangeError('no such invoice')
      }),
    ).rejects.toThrow('no such invoice')
    expect(only('pglock.hold').status).toEqual({ code: SpanStatusCode.ERROR, message: 'no such invoice' })
    expect(only('pglock.hold').attributes['error.type']).toBe('RangeError')
    expect(await holdersOf(key)).toEqual([])
  })
})

describe('opentelemetry spans: outcomes', () => {
  it('fails the acquire span of a timeout with TIMEOUT, and starts no hold span', async () => {
    const key = `${prefix}:timeout`
    const holder = await createLock(pool, key).acquire()
    try {
      await expect(withLock(pool, key, () => 'ran', { timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError)
    } finally {
      await holder.release()
    }
    const acquires = named('pglock.acquire').filter((span) => span.attributes['pglock.operation'] === 'withLock')
    expect(acquires).toHaveLength(1)
    expect(acquires[0]!.status.code).toBe(SpanStatusCode.ERROR)
    expect(acquires[0]!.attributes).toMatchObject({
      'pglock.acquire.outcome': 'timeout',
      'pglock.acquire.timeout_ms': 100,
      'error.type': 'TIMEOUT',
    })
    expect(named('pglock.hold')).toEqual([])
  })

  it('ends a busy try without failing it', async () => {
    const key = `${prefix}:busy`
    const holder = await createLock(pool, key).acquire()
    try {
      expect(await tryWithLock(pool, key, () => 'ran')).toEqual({ acquired: false })
    } finally {
      await holder.release()
    }
    const busy = named('pglock.acquire').filter((span) => span.attributes['pglock.operation'] === 'tryWithLock')
    expect(busy.map((span) => [span.attributes['pglock.acquire.outcome'], span.status.code])).toEqual([['busy', SpanStatusCode.UNSET]])
  })

  it('ends an aborted wait without failing it', async () => {
    const key = `${prefix}:aborted`
    const holder = await createLock(pool, key).acquire()
    try {
      const controller = new AbortController()
      const waiting = createLock(pool, key).acquire({ signal: controller.signal })
      setTimeout(() => controller.abort(new Error('shutting down')), 50)
      await expect(waiting).rejects.toThrow('shutting down')
    } finally {
      await holder.release()
    }
    const aborted = named('pglock.acquire').filter((span) => span.attributes['pglock.acquire.outcome'] === 'aborted')
    expect(aborted.map((span) => span.status.code)).toEqual([SpanStatusCode.UNSET])
  })
})

describe('opentelemetry spans: keys and faults', () => {
  it('carries a string key only when captureKey lets it in', async () => {
    await withLock(pool, `${prefix}:hidden`, () => undefined)
    instrumentation = instrumentPglock({ tracerProvider: telemetry.tracerProvider, captureKey: true })
    await withLock(pool, `${prefix}:shown`, () => undefined)
    const keys = named('pglock.acquire').map((span) => span.attributes['pglock.lock.key'])
    expect(keys).toEqual([undefined, `${prefix}:shown`])
  })

  it('never breaks a lock when making telemetry fails, and says why through diag', async () => {
    const errors: string[] = []
    const logger: DiagLogger = {
      error: (message) => errors.push(message),
      warn: () => undefined,
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    }
    diag.setLogger(logger, DiagLogLevel.ERROR)
    try {
      instrumentation = instrumentPglock({
        tracerProvider: telemetry.tracerProvider,
        captureKey: () => {
          throw new Error('redaction bug')
        },
      })
      const key = `${prefix}:faulty`
      expect(await withLock(pool, key, async () => holdersOf(key))).toHaveLength(1)
      expect(await holdersOf(key)).toEqual([])
    } finally {
      diag.disable()
    }
    expect(errors.length).toBeGreaterThan(0)
    expect(errors[0]).toMatch(/@pglock\/opentelemetry: handling pglock's (acquire|run) start failed/)
  })
})
