import { createLock, InvalidArgumentError, tryWithLock, withLock } from '@pglock/pg'
import { settleWithin } from '@pglock/testing'
import pg from 'pg'
import { describe, expect, inject, it } from 'vitest'

describe('pg: clients that cannot run queries', () => {
  it('refuses a Client that was never connected, instead of waiting for a connect() that never comes', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl') })
    expect(() => createLock(client, 'never-connected')).toThrow(InvalidArgumentError)
    expect(() => createLock(client, 'never-connected')).toThrow(/never connected: call client.connect\(\) first/)
    const calls: Promise<unknown>[] = [
      withLock(client, 'never-connected', () => 1),
      tryWithLock(client, 'never-connected', () => 1, { scope: 'transaction' }),
    ]
    for (const call of calls)
      expect(await settleWithin(call, 2_000)).toMatchObject({ state: 'rejected', error: expect.any(InvalidArgumentError) })
  })

  it('accepts a Client whose connect() is still under way', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl') })
    const connecting = client.connect()
    try {
      expect(await withLock(client, 'connecting', () => 'ran')).toBe('ran')
    } finally {
      await connecting
      await client.end()
    }
  })

  it('fails a lock on an ended Client with node-postgres own error, not RELEASE_FAILED', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl') })
    await client.connect()
    await client.end()
    const result = await settleWithin(createLock(client, 'ended').acquire(), 2_000)
    expect(result).toMatchObject({ state: 'rejected', error: { message: 'Client was closed and is not queryable' } })
  })
})

describe('pg: many locks on one client', () => {
  it('listens with one error and one end listener however many locks the client holds', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl') })
    await client.connect()
    try {
      const prefix = `pglock-test:pg:many:${Math.random().toString(36).slice(2)}`
      const locks = await Promise.all(Array.from({ length: 25 }, (_, i) => createLock(client, `${prefix}:${i}`).acquire()))
      expect([client.listenerCount('error'), client.listenerCount('end')]).toEqual([1, 1])
      for (const lock of locks) expect(await lock.release()).toBe(true)
      expect([client.listenerCount('error'), client.listenerCount('end')]).toEqual([0, 0])
    } finally {
      await client.end()
    }
  })
})

describe('pg: pooled clients', () => {
  it('adds no listener to a pooled client however many locks it serves', async () => {
    const pool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 1 })
    try {
      const count = (client: pg.PoolClient) => [client.listenerCount('error'), client.listenerCount('end')]
      const first = await withLock(pool, 'pglock-test:pg:pooled-listeners', ({ db }) => count(db))
      for (let i = 0; i < 1_000; i += 1) await withLock(pool, 'pglock-test:pg:pooled-listeners', () => undefined)
      expect(await withLock(pool, 'pglock-test:pg:pooled-listeners', ({ db }) => count(db))).toEqual(first)
    } finally {
      await pool.end()
    }
  })

  it('leaves an error on a checked-out client that nobody listens to unhandled, as node-postgres does', async () => {
    const pool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 1 })
    try {
      await withLock(pool, 'pglock-test:pg:pooled-unhandled', () => undefined)
      const client = await pool.connect()
      expect(() => client.emit('error', new Error('boom'))).toThrow('boom')
      const heard: unknown[] = []
      const hear = (error: unknown) => heard.push(error)
      client.on('error', hear)
      expect(() => client.emit('error', new Error('heard'))).not.toThrow()
      expect(heard).toHaveLength(1)
      client.off('error', hear)
      client.release()
    } finally {
      await pool.end()
    }
  })
})
