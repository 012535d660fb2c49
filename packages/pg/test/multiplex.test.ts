import { multiplex } from '@pglock/pg'
import { describeMultiplex } from '@pglock/testing'
import pg from 'pg'
import { describe, expect, inject, it } from 'vitest'
import adapter from './adapter.ts'

describeMultiplex(adapter)

describe('pg: multiplexed locks after pool.end()', () => {
  it('refuses new locks once end() is called, so that end() completes when the held ones are released', async () => {
    const pool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 4 })
    const locks = multiplex(pool)
    const leader = await locks.createLock('pglock-mx-end:1').acquire()
    const ending = pool.end()
    // the shared connection that carries the leader is still checked out: without the check it took these
    await expect(locks.createLock('pglock-mx-end:2').tryAcquire()).rejects.toMatchObject({ code: 'UNSUPPORTED' })
    await expect(locks.withLock('pglock-mx-end:3', () => 'ran')).rejects.toMatchObject({ code: 'UNSUPPORTED' })
    expect(await leader.release()).toBe(true)
    await ending
  })
})
