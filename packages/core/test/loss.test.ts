import { describe, expect, it } from 'vitest'
import { LockLostError } from '../src/index.js'
import { createLock, MemoryPostgres, settle, withLock } from './memory.ts'

describe('loss', () => {
  for (const scope of ['session', 'transaction'] as const) {
    it(`aborts lease.signal and rejects withLock with LockLostError, fn's error as cause (${scope})`, async () => {
      const server = new MemoryPostgres()
      const pool = server.pool()
      let signal: AbortSignal | undefined
      let failure: unknown
      const run = withLock(
        pool,
        'lost',
        async (lease) => {
          signal = lease.signal
          server.terminate(lease.db.pid)
          failure = await lease.db.query('SELECT 1').catch((error: unknown) => error)
          throw failure
        },
        { scope },
      )
      const error = await run.catch((e: unknown) => e)
      expect(error).toBeInstanceOf(LockLostError)
      expect((error as LockLostError).cause).toBe(failure)
      expect(signal?.aborted).toBe(true)
      expect(signal?.reason).toBeInstanceOf(LockLostError)
      expect(server.locks()).toEqual([])
      expect(pool.checkedOut).toBe(0)
    })
  }

  it('rejects withLock with LockLostError when fn returns normally after the loss', async () => {
    const server = new MemoryPostgres()
    await expect(
      withLock(server.pool(), 'lost-quiet', async ({ db }) => {
        server.terminate(db.pid)
        await settle()
        return 'done'
      }),
    ).rejects.toBeInstanceOf(LockLostError)
  })

  it('detects a connection that stops answering with keepAliveMs', async () => {
    const server = new MemoryPostgres()
    const lock = await createLock(server.pool(), 'silent', { keepAliveMs: 10 }).acquire()
    server.stall(lock.db.pid)
    await new Promise((resolve) => lock.signal.addEventListener('abort', resolve, { once: true }))
    expect(lock.signal.reason).toBeInstanceOf(LockLostError)
    expect(lock.isHeld).toBe(false)
    expect(await lock.release()).toBe(false)
  })

  it('frees the lock of a terminated holder for the next waiter', async () => {
    const server = new MemoryPostgres()
    const holder = await createLock(server.pool(), 'handoff').acquire()
    const next = createLock(server.pool(), 'handoff').acquire()
    await settle()
    server.terminate(holder.db.pid)
    await (await next).release()
    expect(server.locks()).toEqual([])
  })
})
