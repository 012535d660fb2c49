import { describe, expect, it } from 'vitest'
import { resolveLockId } from '../src/index.js'
import { preparedLock, preparedUnlock } from '../src/sql.js'
import { createLock, MemoryPostgres, tryWithLock, withLock } from './memory.ts'

/** The guard every lock statement carries: it raises on a standby before the lock call. */
const GUARD = " WHERE (CASE WHEN pg_is_in_recovery() THEN 'pglock: the server is in recovery' END)::int4 IS NULL"
const GUARD_RE = GUARD.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

function sqlOf(server: MemoryPostgres): string[] {
  return server.log.map((entry) => entry.sql)
}

describe('SQL framing', () => {
  for (const prepared of [true, false]) {
    describe(prepared ? 'with prepared statements' : 'as text', () => {
      it('takes and releases a session lock in 2 round trips on one backend', async () => {
        const server = new MemoryPostgres()
        const pool = server.pool({ prepared })
        const lock = await createLock(pool, 7).acquire()
        await lock.release()
        expect(server.log.map((entry) => entry.prepared)).toEqual(
          prepared ? ['pglock_pg_advisory_lock_int64', 'pglock_pg_advisory_unlock_int64'] : [undefined, undefined],
        )
        expect(new Set(server.log.map((entry) => entry.pid))).toEqual(new Set([server.log[0]?.pid]))
        expect(sqlOf(server)).toEqual([
          `SELECT pg_advisory_lock('7'::int8), pg_backend_pid() AS pid${GUARD}`,
          expect.stringMatching(
            /^SELECT CASE WHEN pg_backend_pid\(\) = (\d+|COALESCE\('\d+'::int4, pg_backend_pid\(\)\)) THEN pg_advisory_unlock\('7'::int8\) END AS released, pg_backend_pid\(\) AS pid$/,
          ),
        ])
      })

      it('runs a session withLock in 2 round trips, fn queries aside', async () => {
        const server = new MemoryPostgres()
        await withLock(server.pool({ prepared }), [3, 4], async ({ db }) => db.query('SELECT 1'))
        expect(server.roundTrips()).toBe(3)
        expect(sqlOf(server)[0]).toBe(`SELECT pg_advisory_lock('3'::int4, '4'::int4), pg_backend_pid() AS pid${GUARD}`)
      })

      it('tries a shared lock with the try form, answering acquired', async () => {
        const server = new MemoryPostgres()
        expect(await tryWithLock(server.pool({ prepared }), 9n, () => 'ok', { mode: 'shared' })).toEqual({ acquired: true, value: 'ok' })
        expect(sqlOf(server)[0]).toBe(`SELECT pg_try_advisory_lock_shared('9'::int8) AS acquired, pg_backend_pid() AS pid${GUARD}`)
        expect(server.roundTrips()).toBe(2)
      })
    })
  }

  it('sends BEGIN with the transaction lock on a pool, and COMMIT after fn: 2 round trips', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    await withLock(pool, 11, () => undefined, { scope: 'transaction' })
    expect(sqlOf(server)).toEqual([`BEGIN; SELECT pg_advisory_xact_lock('11'::int8)${GUARD}`, 'COMMIT'])
    expect(server.locks()).toEqual([])
    expect(pool.checkedOut).toBe(0)
  })

  it('rolls the transaction back when fn throws', async () => {
    const server = new MemoryPostgres()
    await expect(withLock(server.pool(), 12, () => Promise.reject(new Error('fn')), { scope: 'transaction' })).rejects.toThrow('fn')
    expect(sqlOf(server)).toEqual([`BEGIN; SELECT pg_advisory_xact_lock('12'::int8)${GUARD}`, 'ROLLBACK'])
    expect(server.locks()).toEqual([])
  })

  it('wraps a timed wait in a local lock_timeout in the same statement, restoring the old value', async () => {
    const server = new MemoryPostgres()
    await withLock(server.pool(), 13, () => undefined, { timeoutMs: 250 })
    const [acquire] = sqlOf(server)
    // the timeout bounds the whole acquire, so what is left of it may be a ms or two short of 250
    const left = Number(/set_config\('lock_timeout', '(\d+)', true\)/.exec(acquire ?? '')?.[1])
    expect(left).toBeGreaterThan(200)
    expect(left).toBeLessThanOrEqual(250)
    expect(acquire).toBe(
      `SELECT pg_advisory_lock('13'::int8), pg_backend_pid() AS pid, set_config('lock_timeout', t.saved, true) AS restored` +
        ` FROM (SELECT current_setting('lock_timeout') AS saved, set_config('lock_timeout', '${left}', true) OFFSET 0) t${GUARD}`,
    )
    expect(server.roundTrips()).toBe(2)
  })

  it('keeps the lock_timeout of a caller transaction around a timed session lock in it', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    await client.query(`SELECT set_config('lock_timeout', '7000', true)`)
    const lock = await createLock(client, 18).acquire({ timeoutMs: 250 })
    expect(await client.query(`SELECT current_setting('lock_timeout') AS now`)).toEqual([{ now: '7000ms' }])
    await lock.release()
    await client.query('COMMIT')
  })

  it('takes a transaction lock in a caller transaction under a savepoint, released after fn', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    await withLock(client, 14, () => undefined, { scope: 'transaction' })
    expect(sqlOf(server).slice(1)).toEqual([
      expect.stringMatching(new RegExp(`^SAVEPOINT pglock_\\d+; SELECT pg_advisory_xact_lock\\('14'::int8\\)${GUARD_RE}$`)),
      expect.stringMatching(/^RELEASE SAVEPOINT pglock_\d+$/),
    ])
    expect(server.locks()).toHaveLength(1)
    await client.query('COMMIT')
    expect(server.locks()).toEqual([])
  })

  it('marks the caller transaction a createLock transaction lock lives in, in the lock round trip', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    const lock = await createLock(client, 16, { scope: 'transaction' }).acquire()
    expect(sqlOf(server)[1]).toMatch(
      new RegExp(
        `^SAVEPOINT pglock_\\d+; SELECT pg_advisory_xact_lock\\('16'::int8\\)${GUARD_RE}; RELEASE SAVEPOINT pglock_\\d+; ` +
          `SELECT COALESCE\\(NULLIF\\(current_setting\\('pglock.tx', true\\), ''\\), set_config\\('pglock.tx', '[a-z0-9.]+', true\\)\\) AS tx$`,
      ),
    )
    expect(server.roundTrips()).toBe(2)
    expect(await lock.release()).toBe(false)
    expect(server.locks()).toHaveLength(1)
    await client.query('ROLLBACK')
    expect(server.locks()).toEqual([])
  })

  it('lets the driver open the transaction when the executor offers one', async () => {
    const server = new MemoryPostgres()
    await withLock(server.pool({ driverTransactions: true }), 15, () => undefined, { scope: 'transaction' })
    expect(sqlOf(server)).toEqual(['BEGIN', `SELECT pg_advisory_xact_lock('15'::int8)${GUARD}`, 'COMMIT'])
  })

  it('uses each parameter of a prepared text once, in order, as a tagged template needs', () => {
    const statements = [resolveLockId(7), resolveLockId([3, 4])].flatMap((id) =>
      (['exclusive', 'shared'] as const).flatMap((mode) => [
        preparedUnlock(id, mode, 1001),
        ...[true, false].flatMap((noWait) =>
          [true, false].flatMap((transaction) => [true, false].map((fencing) => preparedLock(id, mode, noWait, transaction, fencing))),
        ),
      ]),
    )
    expect(statements).toHaveLength(36)
    for (const { text, values } of statements) {
      const parameters = [...text.matchAll(/\$(\d+)/g)].map((match) => Number(match[1]))
      expect(parameters).toEqual(values.map((_, index) => index + 1))
    }
  })
})
