import { describe, expect, it } from 'vitest'
import { holders, MemoryPostgres, withLock } from './memory.ts'

describe('the lease', () => {
  it('hands db, signal and fencingToken to a destructuring fn', async () => {
    const server = new MemoryPostgres()
    const seen = await withLock(
      server.pool(),
      'destructured',
      ({ db, signal, fencingToken }) => ({ db, signal, fencingToken, holding: holders(server, 'destructured') }),
      { fencing: true },
    )
    expect(seen.holding).toEqual([`${seen.db.pid}:ExclusiveLock`])
    expect(seen.signal).toBeInstanceOf(AbortSignal)
    expect(typeof seen.fencingToken).toBe('bigint')
  })

  it('gives the same db on every read, in both scopes', async () => {
    const server = new MemoryPostgres()
    for (const scope of ['session', 'transaction'] as const) {
      const [first, second] = await withLock(server.pool(), `same-${scope}`, (lease) => [lease.db, lease.db], { scope })
      expect(second).toBe(first)
    }
  })
})
