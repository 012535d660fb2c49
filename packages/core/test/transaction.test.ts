import { describe, expect, it } from 'vitest'
import { createLock, holders, MemoryPostgres, tryWithLock, withLock } from './memory.ts'

describe('transaction locks', () => {
  it('are held while fn runs and end with the transaction pglock opened', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const inside = await withLock(pool, 'tx', ({ db }) => holders(server, 'tx').includes(`${db.pid}:ExclusiveLock`), {
      scope: 'transaction',
    })
    expect(inside).toBe(true)
    expect(server.locks()).toEqual([])
  })

  it('exclude another transaction lock on the key until the first commits', async () => {
    const server = new MemoryPostgres()
    let release: () => void = () => undefined
    const first = withLock(server.pool(), 'tx-2', () => new Promise<void>((resolve) => (release = resolve)), { scope: 'transaction' })
    await new Promise((resolve) => setImmediate(resolve))
    expect(await tryWithLock(server.pool(), 'tx-2', () => 'no', { scope: 'transaction' })).toEqual({ acquired: false })
    release()
    await first
    expect(await tryWithLock(server.pool(), 'tx-2', () => 'yes', { scope: 'transaction' })).toEqual({ acquired: true, value: 'yes' })
  })

  it('taken with createLock on a caller transaction, end at its COMMIT and the handle says so', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    const lock = await createLock(client, 'caller-tx', { scope: 'transaction' }).acquire()
    expect(holders(server, 'caller-tx')).toEqual([`${client.pid}:ExclusiveLock`])
    await client.query('COMMIT')
    expect(server.locks()).toEqual([])
    expect(lock.isHeld).toBe(false)
  })

  it('on a connection that cannot tell, end for pglock when a later transaction locks the key', async () => {
    const server = new MemoryPostgres()
    const client = server.connect({ tellsTransaction: false })
    await client.query('BEGIN')
    const first = await createLock(client, 'unseen', { scope: 'transaction' }).acquire()
    await client.query('COMMIT')
    expect(first.isHeld).toBe(true)
    await client.query('BEGIN')
    const second = await createLock(client, 'unseen', { scope: 'transaction' }).acquire()
    expect(first.isHeld).toBe(false)
    expect(second.isHeld).toBe(true)
    await client.query('ROLLBACK')
    expect(server.locks()).toEqual([])
  })

  it('on a connection that cannot tell, end for pglock when a later transaction locks any key there', async () => {
    const server = new MemoryPostgres()
    const client = server.connect({ tellsTransaction: false })
    await client.query('BEGIN')
    const first = await createLock(client, 'earlier', { scope: 'transaction' }).acquire()
    await client.query('COMMIT')
    await client.query('BEGIN')
    await createLock(client, 'later', { scope: 'transaction' }).acquire()
    expect(first.isHeld).toBe(false)
    await client.query('ROLLBACK')
  })

  it('need a transaction: createLock on a client outside one fails with UNSUPPORTED', async () => {
    const server = new MemoryPostgres()
    await expect(createLock(server.connect(), 'none', { scope: 'transaction' }).acquire()).rejects.toMatchObject({ code: 'UNSUPPORTED' })
    await expect(createLock(server.connect({ tellsTransaction: false }), 'none', { scope: 'transaction' }).acquire()).rejects.toMatchObject(
      {
        code: 'UNSUPPORTED',
      },
    )
    expect(server.locks()).toEqual([])
  })

  it('taken by withLock in a caller transaction roll back to their savepoint when fn throws, keeping the transaction usable', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    await expect(withLock(client, 'sp', () => Promise.reject(new Error('fn')), { scope: 'transaction' })).rejects.toThrow('fn')
    expect(server.locks()).toEqual([])
    expect(await client.query('SELECT 1')).toEqual([{ '?column?': 1 }])
    await client.query('COMMIT')
  })
})
