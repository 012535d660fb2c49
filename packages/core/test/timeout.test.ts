import { describe, expect, it } from 'vitest'
import { LockTimeoutError } from '../src/index.js'
import { createLock, holders, MemoryPostgres, withLock } from './memory.ts'

describe('timeouts', () => {
  it('rejects with LockTimeoutError from Postgres lock_timeout, leaving nothing held or waiting', async () => {
    const server = new MemoryPostgres()
    const holder = await createLock(server.pool(), 'busy').acquire()
    const pool = server.pool()
    const started = performance.now()
    const error = await createLock(pool, 'busy')
      .acquire({ timeoutMs: 30 })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockTimeoutError)
    expect(error).toMatchObject({ code: 'TIMEOUT', key: 'busy', cause: { code: '55P03' } })
    expect(performance.now() - started).toBeGreaterThanOrEqual(25)
    expect(holders(server, 'busy')).toEqual([`${holder.db.pid}:ExclusiveLock`])
    expect(pool.checkedOut).toBe(0)
    await holder.release()
  })

  it('counts time queued in memory behind a handle of the same pool', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const holder = await createLock(pool, 'queued').acquire()
    await expect(withLock(pool, 'queued', () => undefined, { timeoutMs: 20 })).rejects.toBeInstanceOf(LockTimeoutError)
    expect(pool.checkedOut).toBe(1)
    await holder.release()
    expect(server.locks()).toEqual([])
  })

  it('tries once without waiting for timeoutMs 0', async () => {
    const server = new MemoryPostgres()
    const holder = await createLock(server.pool(), 'zero').acquire()
    await expect(createLock(server.pool(), 'zero').acquire({ timeoutMs: 0 })).rejects.toBeInstanceOf(LockTimeoutError)
    expect(server.log.at(-1)?.sql).toMatch(/^SELECT pg_try_advisory_lock/)
    await holder.release()
  })

  it('times out a transaction lock and rolls its transaction back', async () => {
    const server = new MemoryPostgres()
    const holder = await createLock(server.pool(), 'tx-busy').acquire()
    const pool = server.pool()
    await expect(withLock(pool, 'tx-busy', () => undefined, { scope: 'transaction', timeoutMs: 20 })).rejects.toBeInstanceOf(
      LockTimeoutError,
    )
    expect(server.log.at(-1)?.sql).toBe('ROLLBACK')
    expect(server.backends().every((b) => b.state === 'idle')).toBe(true)
    expect(pool.checkedOut).toBe(0)
    await holder.release()
  })

  it('restores the session lock_timeout after a timed wait', async () => {
    const server = new MemoryPostgres()
    const lock = await createLock(server.pool(), 'restore').acquire({ timeoutMs: 1_000 })
    expect(await lock.db.query(`SELECT current_setting('lock_timeout') AS t`)).toEqual([{ t: '0' }])
    await lock.release()
  })
})
