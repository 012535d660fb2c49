import { subscribe, unsubscribe } from 'node:diagnostics_channel'
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

  describe('on a driver that hears a loss only when asked (postgres.js 4, connections pglock owns)', () => {
    it('asks nothing of a withLock whose fn never reads its signal, and finds the loss at the unlock', async () => {
      const server = new MemoryPostgres()
      const pool = server.pool({ watchesLossWhenAsked: true })
      expect(await withLock(pool, 'unread', () => 'ok')).toBe('ok')
      const error = await withLock(pool, 'unread', async ({ db }) => {
        server.terminate(db.pid)
        await settle()
        return 'done'
      }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(LockLostError)
      expect(error).toMatchObject({ code: 'LOST', key: 'unread' })
      expect(pool.lossWatches).toBe(0)
      expect(server.locks()).toEqual([])
      expect(pool.checkedOut).toBe(0)
    })

    it('hands fn a signal already aborted when it reads it after the loss', async () => {
      const server = new MemoryPostgres()
      const pool = server.pool({ watchesLossWhenAsked: true })
      let abortedWhenRead: boolean | undefined
      const error = await withLock(pool, 'late', async (lease) => {
        server.terminate(lease.db.pid)
        await settle()
        abortedWhenRead = lease.signal.aborted
      }).catch((e: unknown) => e)
      expect(abortedWhenRead).toBe(true)
      expect(error).toBeInstanceOf(LockLostError)
      expect(pool.lossWatches).toBe(1)
    })

    it('asks at once for a handle, which sees the loss as it happens', async () => {
      const server = new MemoryPostgres()
      const pool = server.pool({ watchesLossWhenAsked: true })
      const lock = await createLock(pool, 'handle').acquire()
      expect(pool.lossWatches).toBe(1)
      server.terminate(lock.db.pid)
      await settle()
      expect(lock.isHeld).toBe(false)
      expect(lock.signal.reason).toBeInstanceOf(LockLostError)
      expect(pool.checkedOut).toBe(0)
    })

    it('asks at once for a withLock that a pglock:lost subscriber watches', async () => {
      const server = new MemoryPostgres()
      const pool = server.pool({ watchesLossWhenAsked: true })
      const messages: unknown[] = []
      const listener = (message: unknown) => void messages.push(message)
      subscribe('pglock:lost', listener)
      try {
        const error = await withLock(pool, 'traced', async ({ db }) => {
          server.terminate(db.pid)
          await settle()
          expect(messages).toHaveLength(1)
        }).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(LockLostError)
        expect(pool.lossWatches).toBe(1)
      } finally {
        unsubscribe('pglock:lost', listener)
      }
    })
  })
})
