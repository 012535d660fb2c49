import { describe, expect, it } from 'vitest'
import { createLock, holders, MemoryPostgres, pending, settle, waiters } from './memory.ts'

describe('gate fairness', () => {
  it('grants handles of one pool first come, first served, with one waiter per key on a connection', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool({ max: 10 })
    const holder = await createLock(server.pool(), 'fifo').acquire()
    const order: number[] = []
    const queued = [0, 1, 2, 3].map((i) =>
      createLock(pool, 'fifo')
        .acquire()
        .then(async (lock) => {
          order.push(i)
          await lock.release()
        }),
    )
    await settle()
    expect(pool.checkedOut).toBe(1)
    expect(waiters(server, 'fifo')).toHaveLength(1)
    await holder.release()
    await Promise.all(queued)
    expect(order).toEqual([0, 1, 2, 3])
    expect(pool.checkedOut).toBe(0)
  })

  it('queues a second handle of the pool in memory while the first holds, occupying no connection', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const holder = await createLock(pool, 'memory-queue').acquire()
    const next = createLock(pool, 'memory-queue').acquire()
    await settle()
    expect(pool.checkedOut).toBe(1)
    expect(waiters(server, 'memory-queue')).toEqual([])
    await holder.release()
    await (await next).release()
  })

  it('keeps a shared newcomer behind a queued exclusive handle, so writers are not starved', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const reader = await createLock(pool, 'rw', { mode: 'shared' }).acquire()
    const events: string[] = []
    const writer = createLock(pool, 'rw')
      .acquire()
      .then(async (lock) => {
        events.push('writer')
        await lock.release()
      })
    await settle()
    const late = createLock(pool, 'rw', { mode: 'shared' })
      .acquire()
      .then(async (lock) => {
        events.push('late reader')
        await lock.release()
      })
    expect(await pending(late)).toBe(true)
    expect(events).toEqual([])
    await reader.release()
    await Promise.all([writer, late])
    expect(events).toEqual(['writer', 'late reader'])
  })

  it('admits every shared waiter queued together once the exclusive holder leaves', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const writer = await createLock(pool, 'readers').acquire()
    const readers = [0, 1, 2].map(() => createLock(pool, 'readers', { mode: 'shared' }).acquire())
    await settle()
    await writer.release()
    const held = await Promise.all(readers)
    expect(holders(server, 'readers')).toHaveLength(3)
    for (const reader of held) await reader.release()
  })

  it('leaves the queue when a waiter gives up, letting the one behind it in', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const holder = await createLock(pool, 'leave').acquire()
    const controller = new AbortController()
    const quitter = createLock(pool, 'leave').acquire({ signal: controller.signal })
    const patient = createLock(pool, 'leave').acquire()
    await settle()
    controller.abort(new Error('gave up'))
    await expect(quitter).rejects.toThrow('gave up')
    await holder.release()
    await (await patient).release()
    expect(server.locks()).toEqual([])
  })

  it('lets Postgres order waiters of different pools first come, first served', async () => {
    const server = new MemoryPostgres()
    const pools = [server.pool(), server.pool(), server.pool()]
    const holder = await createLock(server.pool(), 'pg-fifo').acquire()
    const order: number[] = []
    const queued: Promise<void>[] = []
    for (const [i, pool] of pools.entries()) {
      queued.push(
        createLock(pool, 'pg-fifo')
          .acquire()
          .then(async (lock) => {
            order.push(i)
            await lock.release()
          }),
      )
      await settle()
    }
    expect(waiters(server, 'pg-fifo')).toHaveLength(3)
    await holder.release()
    await Promise.all(queued)
    expect(order).toEqual([0, 1, 2])
  })
})
