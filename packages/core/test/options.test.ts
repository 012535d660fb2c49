import { describe, expect, it } from 'vitest'
import { memoryExecutor } from '../../testing/src/memory-postgres.ts'
import { multiplexLocks } from '../src/multiplex.js'
import { createLock, MemoryPostgres, tryWithLock, withLock } from './memory.ts'

const fn = async () => 'ran'

describe('option resolution and validation', () => {
  const cases: [string, (server: MemoryPostgres) => Promise<unknown>, string][] = [
    ['a fractional key', (s) => withLock(s.pool(), 1.5, fn), 'INVALID_KEY'],
    ['a pair out of int32', (s) => withLock(s.pool(), [2 ** 31, 0], fn), 'INVALID_KEY'],
    ['options that are not an object', (s) => withLock(s.pool(), 'k', fn, 'fast' as never), 'INVALID_ARGUMENT'],
    ['an unknown scope', (s) => withLock(s.pool(), 'k', fn, { scope: 'forever' as never }), 'INVALID_ARGUMENT'],
    ['an unknown scope in transaction form', (s) => withLock(s.pool(), 'k', fn, { scope: 'tx' as never }), 'INVALID_ARGUMENT'],
    ['an unknown mode', (s) => withLock(s.pool(), 'k', fn, { mode: 'read' as never }), 'INVALID_ARGUMENT'],
    [
      'an unknown mode in transaction scope',
      (s) => withLock(s.pool(), 'k', fn, { scope: 'transaction', mode: 'x' as never }),
      'INVALID_ARGUMENT',
    ],
    ['a negative timeout', (s) => withLock(s.pool(), 'k', fn, { timeoutMs: -1 }), 'INVALID_ARGUMENT'],
    ['a NaN timeout', (s) => createLock(s.pool(), 'k').acquire({ timeoutMs: Number.NaN }), 'INVALID_ARGUMENT'],
    ['a timeout past 2^31 ms', (s) => tryWithLock(s.pool(), 'k', fn, { timeoutMs: 2 ** 31 }), 'INVALID_ARGUMENT'],
    ['keepAliveMs of 0', (s) => withLock(s.pool(), 'k', fn, { keepAliveMs: 0 }), 'INVALID_ARGUMENT'],
    ['a signal that is not an AbortSignal', (s) => withLock(s.pool(), 'k', fn, { signal: {} as never }), 'INVALID_ARGUMENT'],
    [
      'a transaction-scope signal that is not an AbortSignal',
      (s) => withLock(s.pool(), 'k', fn, { scope: 'transaction', signal: 1 as never }),
      'INVALID_ARGUMENT',
    ],
    ['fn that is not a function', (s) => withLock(s.pool(), 'k', 'fn' as never), 'INVALID_ARGUMENT'],
    ['fn missing in transaction scope', (s) => withLock(s.pool(), 'k', undefined as never, { scope: 'transaction' }), 'INVALID_ARGUMENT'],
    ['tryAcquire options that are not an object', (s) => createLock(s.pool(), 'k').tryAcquire(7 as never), 'INVALID_ARGUMENT'],
    ['an unknown key hash', (s) => withLock(s.pool(), 'k', fn, { keyHash: 'md5' as never }), 'INVALID_ARGUMENT'],
    ['transaction scope on createLock of a pool', async (s) => createLock(s.pool(), 'k', { scope: 'transaction' }), 'UNSUPPORTED'],
    ['a misspelt withLock option', (s) => withLock(s.pool(), 'k', fn, { timeout: 100 } as never), 'INVALID_ARGUMENT'],
    [
      'a misspelt option in transaction scope',
      (s) => tryWithLock(s.pool(), 'k', fn, { scope: 'transaction', sigal: 1 } as never),
      'INVALID_ARGUMENT',
    ],
    ['an acquire option given to createLock', async (s) => createLock(s.pool(), 'k', { timeoutMs: 100 } as never), 'INVALID_ARGUMENT'],
    ['a lock option given to acquire', (s) => createLock(s.pool(), 'k').acquire({ mode: 'shared' } as never), 'INVALID_ARGUMENT'],
  ]

  for (const [what, call, code] of cases) {
    it(`rejects ${what} with ${code} before any SQL`, async () => {
      const server = new MemoryPostgres()
      await expect((async () => call(server))()).rejects.toMatchObject({ code })
      expect(server.roundTrips()).toBe(0)
    })
  }

  it('names the unknown option and the ones it takes', async () => {
    const server = new MemoryPostgres()
    await expect(withLock(server.pool(), 'k', fn, { timeout: 100 } as never)).rejects.toThrow(
      'unknown option "timeout": expected one of scope, mode, keyHash, keepAliveMs, fencing, timeoutMs, signal',
    )
  })

  it('says when a number came as a string', async () => {
    const server = new MemoryPostgres()
    await expect(withLock(server.pool(), 'k', fn, { timeoutMs: '5000' } as never)).rejects.toThrow(
      'timeoutMs must be a finite number of milliseconds from 0 to 2147483647, got the string "5000"',
    )
    await expect(withLock(server.pool(), 'k', fn, { scope: 'Session' } as never)).rejects.toThrow(
      `scope must be 'session' or 'transaction', got the string "Session"`,
    )
    expect(() => multiplexLocks(memoryExecutor(server.pool()), { keepAliveMs: '5000' } as never)).toThrow(
      'keepAliveMs must be a finite number of milliseconds from 1 to 2147483647, got the string "5000"',
    )
    expect(() => multiplexLocks(memoryExecutor(server.pool()), { maxLocksPerConnection: '10' } as never)).toThrow(
      'maxLocksPerConnection must be an integer from 1 to 1000000, got the string "10"',
    )
  })

  it('rejects an already aborted signal with its reason before any SQL', async () => {
    const server = new MemoryPostgres()
    const reason = new Error('no')
    await expect(withLock(server.pool(), 'k', fn, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    await expect(withLock(server.pool(), 'k', fn, { scope: 'transaction', signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    await expect(createLock(server.pool(), 'k').tryAcquire({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    expect(server.roundTrips()).toBe(0)
  })

  it('defaults to an exclusive session lock with no timeout', async () => {
    const server = new MemoryPostgres()
    const lock = createLock(server.pool(), 'defaults')
    expect([lock.scope, lock.mode]).toEqual(['session', 'exclusive'])
    await lock.acquire()
    expect(server.log.map((entry) => entry.sql)).toEqual([
      `SELECT pg_advisory_lock('${lock.id.value}'::int8), pg_backend_pid() AS pid WHERE (CASE WHEN pg_is_in_recovery() THEN 'pglock: the server is in recovery' END)::int4 IS NULL`,
    ])
    await lock.release()
  })
})
