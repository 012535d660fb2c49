import { describe, expect, it } from 'vitest'
import { createLock, holders, MemoryPostgres, tryWithLock, withLock } from './memory.ts'

describe('fencing tokens', () => {
  for (const prepared of [true, false]) {
    describe(prepared ? 'with prepared statements' : 'as text', () => {
      it('grow with each holder, in both scopes, at no extra round trip', async () => {
        const server = new MemoryPostgres()
        const pool = server.pool({ prepared })
        const tokens: bigint[] = []
        for (const scope of ['session', 'transaction', 'session'] as const) {
          const token = await withLock(pool, 'fenced', ({ fencingToken }) => fencingToken, { scope, fencing: true })
          tokens.push(token as bigint)
        }
        const lock = await createLock(pool, 'fenced', { fencing: true }).acquire({ timeoutMs: 1_000 })
        tokens.push(lock.fencingToken as bigint)
        await lock.release()
        expect(tokens.every((token) => typeof token === 'bigint')).toBe(true)
        expect([...tokens].sort((a, b) => (a < b ? -1 : 1))).toEqual(tokens)
        expect(new Set(tokens).size).toBe(tokens.length)
        // withLock: lock + unlock (session) or BEGIN+lock + COMMIT (transaction); the handle likewise
        expect(server.roundTrips()).toBe(8)
      })
    })
  }

  it('is undefined without fencing, and after release', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    expect(await withLock(pool, 'plain', ({ fencingToken }) => fencingToken)).toBeUndefined()
    const lock = await createLock(pool, 'plain').acquire({ fencing: true })
    expect(typeof lock.fencingToken).toBe('bigint')
    await lock.release()
    expect(lock.fencingToken).toBeUndefined()
  })

  it('comes with a try only when it acquired', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const holder = await createLock(pool, 'tried', { fencing: true }).acquire()
    const busy = createLock(pool, 'tried', { fencing: true })
    // another pool of the same server: the in-memory queue does not answer for it
    expect(await createLock(server.pool(), 'tried', { fencing: true }).tryAcquire()).toBe(false)
    expect(busy.fencingToken).toBeUndefined()
    const first = holder.fencingToken as bigint
    await holder.release()
    expect(await tryWithLock(server.pool(), 'tried', ({ fencingToken }) => fencingToken, { fencing: true })).toEqual({
      acquired: true,
      value: first + 1n,
    })
  })

  it('is refused in a caller transaction that has a transaction id already, leaving nothing held', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    await client.query('SELECT pg_current_xact_id()')
    const lock = createLock(client, 'written-first', { scope: 'transaction', fencing: true })
    await expect(lock.acquire()).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/fencing: true needs/) })
    expect(holders(server, 'written-first')).toEqual([])
    // the transaction is still usable: the refusal was rolled back to its savepoint
    expect(await client.query('SELECT 1 AS one')).toEqual([{ one: 1 }])
    await client.query('COMMIT')
  })

  it('is refused to a try in a caller transaction with a transaction id, which stays usable', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    await client.query('SELECT pg_current_xact_id()')
    const lock = createLock(client, 'tried-late', { scope: 'transaction', fencing: true })
    await expect(lock.tryAcquire()).rejects.toMatchObject({ code: 'UNSUPPORTED' })
    expect(holders(server, 'tried-late')).toEqual([])
    expect(await client.query('SELECT 1 AS one')).toEqual([{ one: 1 }])
    expect(await createLock(client, 'tried-late', { scope: 'transaction' }).tryAcquire()).toBe(true)
    await client.query('COMMIT')
  })

  it('in a caller transaction with no transaction id yet, is given', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    const lock = await createLock(client, 'lock-first', { scope: 'transaction', fencing: true }).acquire()
    expect(typeof lock.fencingToken).toBe('bigint')
    await client.query('COMMIT')
  })

  it('refuses a fencing option that is not a boolean, before any SQL', async () => {
    const server = new MemoryPostgres()
    expect(() => createLock(server.pool(), 'k', { fencing: 'yes' as unknown as boolean })).toThrow(/fencing must be a boolean/)
    await expect(createLock(server.pool(), 'k').acquire({ fencing: 1 as unknown as boolean })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    })
    expect(server.log).toEqual([])
  })
})

describe('the standby guard', () => {
  it('refuses every kind of acquire on a server in recovery, taking nothing', async () => {
    const server = new MemoryPostgres()
    server.inRecovery = true
    const pool = server.pool()
    const client = server.connect()
    // one after another: on one pool and key they would otherwise queue behind each other in memory
    const attempts: (() => Promise<unknown>)[] = [
      () => withLock(pool, 'standby', () => 'ran'),
      () => withLock(pool, 'standby', () => 'ran', { timeoutMs: 500 }),
      () => withLock(pool, 'standby', () => 'ran', { scope: 'transaction' }),
      () => tryWithLock(pool, 'standby', () => 'ran'),
      () => createLock(pool, 'standby').acquire(),
      () => createLock(pool, 'standby').tryAcquire(),
      () => createLock(client, 'standby-client').acquire(),
    ]
    for (const attempt of attempts) await expect(attempt()).rejects.toMatchObject({ name: 'StandbyError', code: 'STANDBY' })
    expect(server.locks()).toEqual([])
  })

  it('lets locks through once the standby is promoted, on the same connections', async () => {
    const server = new MemoryPostgres()
    server.inRecovery = true
    const pool = server.pool({ max: 1 })
    await expect(withLock(pool, 'promoted', () => 'ran')).rejects.toMatchObject({ code: 'STANDBY' })
    server.inRecovery = false
    expect(await withLock(pool, 'promoted', () => 'ran')).toBe('ran')
  })

  it('leaves a caller transaction usable after refusing in it', async () => {
    const server = new MemoryPostgres()
    server.inRecovery = true
    const client = server.connect()
    await client.query('BEGIN')
    await expect(createLock(client, 'standby-tx', { scope: 'transaction' }).acquire()).rejects.toMatchObject({ code: 'STANDBY' })
    expect(await client.query('SELECT 1 AS one')).toEqual([{ one: 1 }])
    await expect(createLock(client, 'standby-tx', { scope: 'transaction' }).tryAcquire()).rejects.toMatchObject({ code: 'STANDBY' })
    expect(await client.query('SELECT 1 AS one')).toEqual([{ one: 1 }])
    await client.query('ROLLBACK')
  })
})
