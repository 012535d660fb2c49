import { describe, expect, it } from 'vitest'
import { AlreadyHeldError, LockLostError } from '../src/index.js'
import { createLock, holders, locksOf, MemoryPostgres, pending, settle } from './memory.ts'

describe('Lock state machine', () => {
  it('holds after acquire, on the connection lease.db names, and frees everything on release', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool({ max: 2 })
    const lock = createLock(pool, 'job:1')
    expect(lock.isHeld).toBe(false)
    await lock.acquire()
    expect(lock.isHeld).toBe(true)
    expect(holders(server, 'job:1')).toEqual([`${lock.db?.pid}:ExclusiveLock`])
    expect(pool.checkedOut).toBe(1)
    expect(await lock.release()).toBe(true)
    expect(lock.isHeld).toBe(false)
    expect(lock.db).toBeUndefined()
    expect(server.locks()).toEqual([])
    expect(pool.checkedOut).toBe(0)
  })

  it('release of a handle that does not hold resolves false and sends no SQL', async () => {
    const server = new MemoryPostgres()
    expect(await createLock(server.pool(), 'job:2').release()).toBe(false)
    expect(server.roundTrips()).toBe(0)
  })

  it('refuses a second acquire while held or acquiring, with AlreadyHeldError', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const blocker = await createLock(pool, 'job:3').acquire()
    const lock = createLock(pool, 'job:3')
    const waiting = lock.acquire()
    await expect(lock.acquire()).rejects.toBeInstanceOf(AlreadyHeldError)
    await expect(lock.tryAcquire()).rejects.toMatchObject({ code: 'ALREADY_HELD' })
    await blocker.release()
    await waiting
    await expect(lock.acquire()).rejects.toBeInstanceOf(AlreadyHeldError)
    await lock.release()
    expect(server.locks()).toEqual([])
  })

  it('tryAcquire answers false when another holds the lock, leaving nothing held or checked out', async () => {
    const server = new MemoryPostgres()
    const a = server.pool()
    const b = server.pool()
    const holder = await createLock(a, 'job:4').acquire()
    const other = createLock(b, 'job:4')
    expect(await other.tryAcquire()).toBe(false)
    expect(other.isHeld).toBe(false)
    expect(b.checkedOut).toBe(0)
    expect(holders(server, 'job:4')).toEqual([`${holder.db.pid}:ExclusiveLock`])
    await holder.release()
    expect(await other.tryAcquire()).toBe(true)
    await other.release()
  })

  it('aborts its signal with LockLostError when the backend is terminated, and release then resolves false without SQL', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const lock = await createLock(pool, 'job:5').acquire()
    const pid = lock.db.pid
    server.terminate(pid)
    await settle()
    expect(lock.signal.aborted).toBe(true)
    expect(lock.signal.reason).toBeInstanceOf(LockLostError)
    expect(lock.isHeld).toBe(false)
    expect(locksOf(server, 'job:5')).toEqual([])
    const sent = server.roundTrips()
    expect(await lock.release()).toBe(false)
    expect(server.roundTrips()).toBe(sent)
    expect(pool.checkedOut).toBe(0)
    expect(pool.pids).not.toContain(pid)
    await lock.acquire()
    expect(lock.signal.aborted).toBe(false)
    await lock.release()
  })

  it('is released at the end of an await using block', async () => {
    const server = new MemoryPostgres()
    {
      await using lock = await createLock(server.pool(), 'job:6').acquire()
      expect(lock.isHeld).toBe(true)
    }
    expect(server.locks()).toEqual([])
  })

  it('lets shared handles on a pool hold together and makes an exclusive one wait for all of them', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const readers = [createLock(pool, 'job:7', { mode: 'shared' }), createLock(pool, 'job:7', { mode: 'shared' })]
    for (const reader of readers) await reader.acquire()
    expect(holders(server, 'job:7')).toHaveLength(2)
    const writer = createLock(pool, 'job:7').acquire()
    await readers[0]?.release()
    expect(await pending(writer)).toBe(true)
    await readers[1]?.release()
    await (await writer).release()
    expect(server.locks()).toEqual([])
  })

  it('queues two handles on one connection in memory, where Postgres would let the session re-enter', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    const first = await createLock(client, 'job:8').acquire()
    expect(await createLock(client, 'job:8').tryAcquire()).toBe(false)
    expect(await createLock(client, 'job:8', { mode: 'shared' }).tryAcquire()).toBe(false)
    expect(await createLock(client.alias(), 'job:8').tryAcquire()).toBe(false)
    await first.release()
    expect(server.locks()).toEqual([])
  })

  it('queues shared handles on one connection too, as Postgres cannot tell them apart', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    const first = await createLock(client, 'shared-one', { mode: 'shared' }).acquire()
    expect(await createLock(client, 'shared-one', { mode: 'shared' }).tryAcquire()).toBe(false)
    await first.release()
    expect(server.locks()).toEqual([])
  })

  it('treats a handle that reaches a lease connection through lease.db as the same connection', async () => {
    const server = new MemoryPostgres()
    const lock = await createLock(server.pool(), 'job:9').acquire()
    expect(await createLock(lock.db, 'job:9').tryAcquire()).toBe(false)
    await lock.release()
  })

  it('notices a lock the session lost behind its back at release, and reports it lost', async () => {
    const server = new MemoryPostgres()
    const lock = await createLock(server.pool(), 42).acquire()
    await lock.db.query(`SELECT pg_advisory_unlock('42'::int8)`)
    expect(await lock.release()).toBe(false)
    expect(lock.signal.reason).toBeInstanceOf(LockLostError)
  })
})
