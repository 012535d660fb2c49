import { describe, expect, it } from 'vitest'
import { holders, MemoryPostgres, withLock } from './memory.ts'

describe('the lease', () => {
  it('can be spread or rest-destructured like a plain object: db, signal and fencingToken come along', async () => {
    const server = new MemoryPostgres()
    const seen = await withLock(server.pool(), 'spread', (lease) => {
      const copy = { ...lease, requestId: 'r1' }
      const { db, ...rest } = lease
      return { copy, db, rest, holding: holders(server, 'spread') }
    })
    expect(seen.copy.db).toBe(seen.db)
    expect(seen.holding).toEqual([`${seen.db.pid}:ExclusiveLock`])
    expect(seen.copy.signal).toBeInstanceOf(AbortSignal)
    expect(Object.keys(seen.copy).sort()).toEqual(['db', 'fencingToken', 'requestId', 'signal'])
    expect(Object.keys(seen.rest).sort()).toEqual(['fencingToken', 'signal'])
  })

  it('gives the same db on every read, in both scopes', async () => {
    const server = new MemoryPostgres()
    for (const scope of ['session', 'transaction'] as const) {
      const [first, second] = await withLock(server.pool(), `same-${scope}`, (lease) => [lease.db, lease.db], { scope })
      expect(second).toBe(first)
    }
  })
})
