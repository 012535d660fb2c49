import { randomInt } from 'node:crypto'
import { type LockId, pgLocksRow } from '@pglock/core'
import pg from 'pg'
import { describe, expect, inject, it } from 'vitest'
import { MemoryPostgres, type MemoryPostgresError } from '../src/memory-postgres.ts'

type Rows = readonly Record<string, unknown>[]

/** Four sessions and a view of `pg_locks`, on the real server or on the model. */
interface Side {
  readonly pids: readonly number[]
  query(session: number, sql: string): Promise<Rows>
  /** advisory lock rows of this scenario's keys, as `K1:b0:ExclusiveLock:true` */
  locks(): Promise<string[]>
  cancel(session: number): Promise<void>
  terminate(session: number): Promise<void>
  /** until `session` waits for a lock */
  waiting(session: number): Promise<void>
  close(): Promise<void>
}

const SESSIONS = 4

function keyNames(ids: Record<string, LockId>): Map<string, string> {
  const names = new Map<string, string>()
  for (const [name, id] of Object.entries(ids)) {
    const { classid, objid, objsubid } = pgLocksRow(id)
    names.set(`${classid}:${objid}:${objsubid}`, name)
  }
  return names
}

function lockRows(
  rows: readonly { pid: number; mode: string; granted: boolean; classid: unknown; objid: unknown; objsubid: unknown }[],
  pids: readonly number[],
  keys: Map<string, string>,
): string[] {
  return rows
    .map((row) => ({ key: keys.get(`${row.classid}:${row.objid}:${row.objsubid}`), row }))
    .filter(({ key }) => key !== undefined)
    .map(({ key, row }) => `${key}:b${pids.indexOf(Number(row.pid))}:${row.mode}:${row.granted}`)
    .sort()
}

async function realSide(url: string, keys: Map<string, string>): Promise<Side> {
  const observer = new pg.Client({ connectionString: url })
  await observer.connect()
  const clients: pg.Client[] = []
  for (let i = 0; i < SESSIONS; i += 1) {
    const client = new pg.Client({ connectionString: url })
    client.on('error', () => undefined)
    await client.connect()
    clients.push(client)
  }
  const pids = clients.map((client) => (client as unknown as { processID: number }).processID)
  const locks = async () => {
    const { rows } = await observer.query(
      `SELECT pid, mode, granted, classid::int8::text AS classid, objid::int8::text AS objid, objsubid FROM pg_locks
        WHERE locktype = 'advisory' AND pid = ANY($1)`,
      [pids],
    )
    return lockRows(rows, pids, keys)
  }
  const until = async (probe: () => Promise<boolean>) => {
    for (let tries = 0; !(await probe()); tries += 1) {
      if (tries > 500) throw new Error('timed out')
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }
  return {
    pids,
    async query(session, sql) {
      const result = (await (clients[session] as pg.Client).query(sql)) as pg.QueryResult | pg.QueryResult[]
      return Array.isArray(result) ? ((result.at(-1) as pg.QueryResult).rows ?? []) : result.rows
    },
    locks,
    async cancel(session) {
      await observer.query('SELECT pg_cancel_backend($1)', [pids[session]])
    },
    async terminate(session) {
      await observer.query('SELECT pg_terminate_backend($1)', [pids[session]])
      await until(async () => (await observer.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pids[session]])).rows.length === 0)
    },
    waiting: (session) => until(async () => (await locks()).some((row) => row.includes(`:b${session}:`) && row.endsWith(':false'))),
    async close() {
      for (const client of clients) await client.end().catch(() => undefined)
      await observer.end()
    },
  }
}

function memorySide(keys: Map<string, string>, misunderstood: MemoryPostgresError[]): Side {
  const server = new MemoryPostgres({ onMisunderstood: (error) => misunderstood.push(error) })
  const clients = Array.from({ length: SESSIONS }, () => server.connect())
  const pids = clients.map((client) => client.pid)
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve))
  return {
    pids,
    query: (session, sql) => (clients[session] as (typeof clients)[number]).query(sql),
    locks: async () => lockRows(server.locks(), pids, keys),
    async cancel(session) {
      server.cancel(pids[session] as number)
      await settle()
    },
    async terminate(session) {
      server.terminate(pids[session] as number)
      await settle()
    },
    waiting: settle,
    async close() {
      for (const client of clients) client.end()
    },
  }
}

/** What a statement answered: rows with pids named by session, or the SQLSTATE it failed with. */
async function outcome(side: Side, promise: Promise<Rows>): Promise<unknown> {
  try {
    const rows = await promise
    return rows.map((row) =>
      Object.fromEntries(
        Object.entries(row).map(([column, value]) => [column, column === 'pid' ? `b${side.pids.indexOf(Number(value))}` : value]),
      ),
    )
  } catch (error) {
    return { error: (error as { code?: unknown }).code }
  }
}

/**
 * One scenario of the SQL pglock sends, as a transcript: what every statement answered and what
 * `pg_locks` showed after it. Statements may name a session's pid (`pid(0)`).
 */
async function transcript(side: Side, k1: string, k2: string): Promise<unknown[]> {
  const log: unknown[] = []
  const pending = new Map<number, Promise<Rows>>()
  const step = async (label: string, session: number, sql: string | ((pid: (i: number) => number) => string)) => {
    const text = typeof sql === 'string' ? sql : sql((i) => side.pids[i] as number)
    log.push(label, await outcome(side, side.query(session, text)), await side.locks())
  }
  const start = async (label: string, session: number, sql: string) => {
    const answer = side.query(session, sql)
    // handled from the start: a cancel's error can arrive before `finish` reads it, and after a bounded `finish` gave up
    answer.catch(() => undefined)
    pending.set(session, answer)
    await side.waiting(session)
    log.push(label, 'waiting', await side.locks())
  }
  // bounded, so that a side still waiting shows as a difference in the transcript, not as a stalled test
  const finish = async (label: string, session: number) => {
    let timer: NodeJS.Timeout | undefined
    const stillWaiting = new Promise<string>((resolve) => (timer = setTimeout(resolve, 5_000, 'still waiting')))
    const answer = await Promise.race([outcome(side, pending.get(session) as Promise<Rows>), stillWaiting])
    clearTimeout(timer)
    log.push(label, answer, await side.locks())
  }
  const timed = (statement: string, ms: number) =>
    `SELECT set_config('pglock.lock_timeout', current_setting('lock_timeout'), true); SET LOCAL lock_timeout = ${ms}; ${statement}; SELECT set_config('lock_timeout', current_setting('pglock.lock_timeout'), true), pg_backend_pid() AS pid`

  await step('b0 locks K1', 0, `SELECT pg_advisory_lock(${k1}), pg_backend_pid() AS pid`)
  await step('b0 re-enters K1', 0, `SELECT pg_advisory_lock(${k1}), pg_backend_pid() AS pid`)
  await step('b1 tries K1', 1, `SELECT pg_try_advisory_lock(${k1}) AS acquired, pg_backend_pid() AS pid`)
  await step('b1 waits for K1 under lock_timeout', 1, timed(`SELECT pg_advisory_lock(${k1})`, 40))
  await step('b1 lock_timeout restored', 1, `SELECT current_setting('lock_timeout') AS t`)
  await step(
    'b0 unlocks K1 on its pid',
    0,
    (pid) => `SELECT CASE WHEN pg_backend_pid() = ${pid(0)} THEN pg_advisory_unlock(${k1}) END AS released, pg_backend_pid() AS pid`,
  )
  await step(
    'b1 unlock on another pid does nothing',
    1,
    (pid) => `SELECT CASE WHEN pg_backend_pid() = ${pid(0)} THEN pg_advisory_unlock(${k1}) END AS released, pg_backend_pid() AS pid`,
  )
  await step('b0 unlocks K1 again', 0, `SELECT pg_advisory_unlock(${k1}) AS released, pg_backend_pid() AS pid`)
  await step('b0 unlocks K1 once too often', 0, `SELECT pg_advisory_unlock(${k1}) AS released, pg_backend_pid() AS pid`)
  await step('b1 takes K2 shared in a transaction', 1, `BEGIN; SELECT pg_advisory_xact_lock_shared(${k2})`)
  await step('b0 takes K2 shared in session', 0, `SELECT pg_advisory_lock_shared(${k2}), pg_backend_pid() AS pid`)
  await start('b2 waits for K2 exclusive', 2, `SELECT pg_advisory_lock(${k2}), pg_backend_pid() AS pid`)
  await start('b3 queues for K2 shared behind it', 3, `SELECT pg_advisory_lock_shared(${k2}), pg_backend_pid() AS pid`)
  await step('b1 commits', 1, 'COMMIT')
  await step('b0 releases K2', 0, `SELECT pg_advisory_unlock_shared(${k2}) AS released, pg_backend_pid() AS pid`)
  await finish('b2 is granted K2', 2)
  await side.cancel(3)
  await finish('b3 is cancelled', 3)
  await step(
    'b3 unlocks K2 only if held',
    3,
    `SELECT pg_advisory_unlock_shared(${k2}) AS released FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) AND classid = ${k2Row.classid} AND objid = ${k2Row.objid} AND objsubid = ${k2Row.objsubid} AND mode = 'ShareLock'`,
  )
  await step('b1 outside a transaction cannot take a savepoint', 1, `SAVEPOINT pglock_1; SELECT pg_advisory_xact_lock(${k1})`)
  await step('b1 opens a transaction', 1, 'BEGIN')
  const mark = `COALESCE(NULLIF(current_setting('pglock.tx', true), ''), set_config('pglock.tx', 'm.1', true)) AS tx`
  await step(
    'b1 takes K1 under a savepoint, marking the transaction',
    1,
    `SAVEPOINT pglock_2; SELECT pg_advisory_xact_lock(${k1}); SELECT ${mark}`,
  )
  await step('b1 reads its mark', 1, `SELECT COALESCE(current_setting('pglock.tx', true), '') AS tx`)
  await step('b1 rolls back to the savepoint', 1, 'ROLLBACK TO SAVEPOINT pglock_2; RELEASE SAVEPOINT pglock_2')
  await step('b1 mark gone with it', 1, `SELECT COALESCE(current_setting('pglock.tx', true), '') AS tx`)
  await step('b1 times out on K2 in its transaction', 1, `SAVEPOINT pglock_3; ${timed(`SELECT pg_advisory_xact_lock(${k2})`, 30)}`)
  await step('b1 transaction has failed', 1, 'SELECT 1')
  await step('b1 recovers with its savepoint', 1, 'ROLLBACK TO SAVEPOINT pglock_3; RELEASE SAVEPOINT pglock_3')
  await step('b1 takes K1 in its transaction', 1, `SELECT pg_try_advisory_xact_lock(${k1}) AS acquired, ${mark}`)
  await step('b1 rolls back', 1, 'ROLLBACK')
  await side.terminate(2)
  log.push('b2 terminated', await side.locks())
  await step('b0 takes K2 freed by the terminated backend', 0, `SELECT pg_try_advisory_lock(${k2}) AS acquired, pg_backend_pid() AS pid`)
  await start('b3 waits for K2', 3, `SELECT pg_advisory_lock(${k2}), pg_backend_pid() AS pid`)
  // not asked: whether b0 may *try* K2 shared past the waiter. Postgres 15 answered false alone and
  // true while other clients loaded the server, and the extra hold then kept b3 waiting for good
  await step('b0 holding K2 waits for it shared: ahead of the waiter', 0, `SELECT pg_advisory_lock_shared(${k2}), pg_backend_pid() AS pid`)
  await step('b0 lets go of K2 exclusive', 0, `SELECT pg_advisory_unlock(${k2}) AS released, pg_backend_pid() AS pid`)
  await step('b0 lets go of K2 shared', 0, `SELECT pg_advisory_unlock_shared(${k2}) AS released, pg_backend_pid() AS pid`)
  await finish('b3 is granted K2', 3)
  await start('b0 waits for K2', 0, `SELECT pg_advisory_lock(${k2}), pg_backend_pid() AS pid`)
  await step('b3 re-enters K2 past the waiter', 3, `SELECT pg_try_advisory_lock(${k2}) AS acquired, pg_backend_pid() AS pid`)
  await step('b3 unlocks K2 once', 3, `SELECT pg_advisory_unlock(${k2}) AS released, pg_backend_pid() AS pid`)
  await step('b3 unlocks K2 again', 3, `SELECT pg_advisory_unlock(${k2}) AS released, pg_backend_pid() AS pid`)
  await finish('b0 is granted K2', 0)
  return log
}

const k1Value = BigInt(randomInt(1, 2 ** 47)) * -1n
const k2Pair: [number, number] = [randomInt(1, 2 ** 31 - 1), -randomInt(1, 2 ** 31 - 1)]
const k2Row = pgLocksRow({ kind: 'pair', value: k2Pair })

describe('memory-postgres', () => {
  it('answers a scenario of pglock SQL as the real Postgres does, statement by statement and in pg_locks', async () => {
    const keys = keyNames({ K1: { kind: 'int64', value: k1Value }, K2: { kind: 'pair', value: k2Pair } })
    const k1 = `'${k1Value}'::int8`
    const k2 = `'${k2Pair[0]}'::int4, '${k2Pair[1]}'::int4`
    const misunderstood: MemoryPostgresError[] = []
    const real = await realSide(inject('databaseUrl'), keys)
    const memory = memorySide(keys, misunderstood)
    try {
      const expected = await transcript(real, k1, k2)
      expect(await transcript(memory, k1, k2)).toEqual(expected)
      expect(misunderstood).toEqual([])
    } finally {
      await real.close()
      await memory.close()
    }
  })

  it('rejects a statement it does not understand, and reports it', async () => {
    const misunderstood: MemoryPostgresError[] = []
    const server = new MemoryPostgres({ onMisunderstood: (error) => misunderstood.push(error) })
    await expect(server.connect().query('SELECT pg_advisory_unlock_all()')).rejects.toThrow('does not understand')
    await expect(server.connect().query('UPDATE jobs SET done = true')).rejects.toThrow('does not understand')
    expect(server.misunderstood).toEqual(['pg_advisory_unlock_all()', 'UPDATE jobs SET done = true'])
    expect(misunderstood).toHaveLength(2)
  })
})
