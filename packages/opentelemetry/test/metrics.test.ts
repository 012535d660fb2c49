import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { DataPoint, ExponentialHistogram, Histogram } from '@opentelemetry/sdk-metrics'
import { instrumentPglock, type PglockInstrumentation } from '@pglock/opentelemetry'
import { createLock, LockLostError, LockTimeoutError, tryWithLock, withLock } from '@pglock/pg'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest'
import { startTelemetry, type Telemetry } from './telemetry.ts'

// Metrics of real locks taken through @pglock/pg against Postgres, read from the real SDK. Each
// test has fresh providers, so the cumulative points it reads are its own.

const prefix = `pglock-test:otel:metrics:${randomBytes(6).toString('hex')}`
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

type Point = DataPoint<number | Histogram | ExponentialHistogram>

async function points(name: string, filter: Record<string, string> = {}): Promise<Point[]> {
  const metric = await telemetry.metric(name)
  return (metric?.dataPoints ?? ([] as Point[])).filter((point) =>
    Object.entries(filter).every(([key, value]) => point.attributes[key] === value),
  )
}

const histogram = (point: Point | undefined) => point?.value as Histogram | undefined

async function holdAndWait<T>(key: string, body: () => Promise<T>): Promise<T> {
  const holder = await createLock(pool, key).acquire()
  try {
    return await body()
  } finally {
    await holder.release()
  }
}

describe('opentelemetry metrics', () => {
  it('records the wait of an acquired lock and how long it was held, in seconds', async () => {
    await withLock(pool, `${prefix}:acquired`, () => sleep(120))
    const [wait] = await points('pglock.lock.wait.duration', { 'pglock.acquire.outcome': 'acquired' })
    expect(wait?.attributes).toEqual({
      'db.system.name': 'postgresql',
      'pglock.lock.mode': 'exclusive',
      'pglock.lock.scope': 'session',
      'pglock.adapter': 'pg',
      'pglock.operation': 'withLock',
      'pglock.acquire.outcome': 'acquired',
    })
    expect(histogram(wait)?.count).toBe(1)
    expect(histogram(wait)?.sum).toBeLessThan(0.12)
    const [hold] = await points('pglock.lock.hold.duration', { 'pglock.lock.end': 'released' })
    expect(histogram(hold)?.count).toBe(1)
    expect(histogram(hold)?.sum).toBeGreaterThanOrEqual(0.11)
    expect(histogram(hold)?.sum).toBeLessThan(5)
    expect((await telemetry.metric('pglock.lock.hold.duration'))?.descriptor.unit).toBe('s')
  })

  it('counts a busy try, and records its wait with outcome busy', async () => {
    const key = `${prefix}:busy`
    await holdAndWait(key, async () => {
      expect(await tryWithLock(pool, key, () => 'ran')).toEqual({ acquired: false })
      expect(await createLock(pool, key).tryAcquire()).toBe(false)
    })
    const busy = await points('pglock.lock.busy_attempts')
    expect(busy.map((point) => [point.attributes['pglock.operation'], point.value]).sort()).toEqual([
      ['tryAcquire', 1],
      ['tryWithLock', 1],
    ])
    expect(await points('pglock.lock.timeouts')).toEqual([])
    const waits = await points('pglock.lock.wait.duration', { 'pglock.acquire.outcome': 'busy' })
    expect(waits.map((point) => [point.attributes['pglock.operation'], histogram(point)?.count]).sort()).toEqual([
      ['tryAcquire', 1],
      ['tryWithLock', 1],
    ])
  })

  it('counts a timeout, and records the wait it took', async () => {
    const key = `${prefix}:timeout`
    await holdAndWait(key, () => expect(withLock(pool, key, () => 'ran', { timeoutMs: 150 })).rejects.toBeInstanceOf(LockTimeoutError))
    const timeouts = await points('pglock.lock.timeouts')
    expect(timeouts.map((point) => [point.attributes['pglock.operation'], point.value])).toEqual([['withLock', 1]])
    const [wait] = await points('pglock.lock.wait.duration', { 'pglock.acquire.outcome': 'timeout' })
    expect(histogram(wait)?.count).toBe(1)
    expect(histogram(wait)?.sum).toBeGreaterThanOrEqual(0.14)
    expect(await points('pglock.lock.busy_attempts')).toEqual([])
  })

  it('counts a lock lost when its backend is terminated, and records how long it was held', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl') })
    client.on('error', () => undefined)
    await client.connect()
    try {
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
      const lock = await createLock(client, `${prefix}:lost`).acquire()
      await sleep(50)
      const lost = new Promise((resolve) => lock.signal.addEventListener('abort', () => resolve(lock.signal.reason), { once: true }))
      await pool.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid])
      expect(await lost).toBeInstanceOf(LockLostError)
      expect(await lock.release()).toBe(false)
    } finally {
      await client.end().catch(() => undefined)
    }
    const losses = await points('pglock.lock.losses')
    expect(losses.map((point) => point.value)).toEqual([1])
    const holds = await points('pglock.lock.hold.duration')
    expect(holds.map((point) => point.attributes['pglock.lock.end'])).toEqual(['lost'])
    expect(histogram(holds[0])?.sum).toBeGreaterThanOrEqual(0.04)
  })

  it('records the hold of a transaction lock pglock ends, and none for one your own transaction ends', async () => {
    await withLock(pool, `${prefix}:tx:pool`, () => sleep(30), { scope: 'transaction' })
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      await createLock(client, `${prefix}:tx:acquire`, { scope: 'transaction' }).acquire()
      await withLock(client, `${prefix}:tx:inside`, () => sleep(30), { scope: 'transaction' })
      await client.query('COMMIT')
      // a savepoint pglock rolls back ends the lock inside your transaction
      await client.query('BEGIN')
      await expect(
        withLock(client, `${prefix}:tx:rolled-back`, () => Promise.reject(new RangeError('no')), { scope: 'transaction' }),
      ).rejects.toThrow('no')
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    const holds = await points('pglock.lock.hold.duration', { 'pglock.lock.scope': 'transaction' })
    expect(holds.map((point) => [point.attributes['pglock.lock.end'], histogram(point)?.count])).toEqual([['released', 2]])
    const waits = await points('pglock.lock.wait.duration', { 'pglock.lock.scope': 'transaction' })
    expect(waits.reduce((count, point) => count + (histogram(point)?.count ?? 0), 0)).toBe(4)
  })

  it('puts what a captureKey function returns into metrics, and no lock id', async () => {
    instrumentation = instrumentPglock({ meterProvider: telemetry.meterProvider, captureKey: (key) => key.split(':').at(-2) })
    await withLock(pool, `${prefix}:invoice:1`, () => undefined)
    await withLock(pool, `${prefix}:invoice:2`, () => undefined)
    const waits = await points('pglock.lock.wait.duration')
    expect(waits.map((point) => [point.attributes['pglock.lock.key'], histogram(point)?.count])).toEqual([['invoice', 2]])
    expect(waits.every((point) => !('pglock.lock.id' in point.attributes))).toBe(true)
  })
})
