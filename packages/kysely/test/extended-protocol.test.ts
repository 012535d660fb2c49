import { randomBytes } from 'node:crypto'
import { createLock, LockTimeoutError, withLock } from '@pglock/kysely'
import { Observer } from '@pglock/testing'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'

/**
 * A dialect that sends every query through the extended protocol, as kysely-postgres-js 5 does,
 * where Postgres itself refuses a text of several statements. Built on PostgresDialect, whose
 * clients are told to use the extended protocol for every query; in this file (a module of its own)
 * pglock learns that PostgresDialect's connections take one statement per query.
 */
function openExtended(url: string, applicationName: string, max: number): Kysely<any> {
  const pool = new pg.Pool({ connectionString: url, application_name: applicationName, max })
  pool.on('error', () => undefined)
  pool.on('connect', (client) => {
    client.on('error', () => undefined)
    const query = client.query.bind(client) as (config: unknown, values?: unknown) => unknown
    ;(client as { query: unknown }).query = (config: unknown, values?: unknown) =>
      typeof config === 'string' ? query({ text: config, values, queryMode: 'extended' }) : query(config, values)
  })
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  onTestFinished(() => db.destroy())
  return db
}

describe('Kysely over a dialect that runs one statement per query', () => {
  let observer: Observer
  const prefix = `pglock-test:kysely:extended:${randomBytes(4).toString('hex')}`
  const key = (label: string) => `${prefix}:${label}`
  const open = (max = 2) => openExtended(inject('databaseUrl'), `pglock-t-${randomBytes(5).toString('hex')}`, max)

  beforeAll(() => {
    observer = new Observer(inject('databaseUrl'))
  })
  afterAll(() => observer.close())

  it('is a dialect Postgres refuses several statements from', async () => {
    await expect(sql.raw('SELECT 1; SELECT 1').execute(open())).rejects.toMatchObject({ code: '42601' })
  })

  it('times out a wait inside a caller transaction and leaves the transaction usable', async () => {
    const db = open()
    const k = key('in-transaction')
    const holder = await createLock(db, k).acquire()
    const outcome = await db.transaction().execute(async (trx) => {
      const error = await createLock(trx, k, { scope: 'transaction' })
        .acquire({ timeoutMs: 50 })
        .catch((caught: unknown) => caught)
      return { error, usable: (await sql<{ one: number }>`SELECT 1 AS one`.execute(trx)).rows }
    })
    expect(outcome).toEqual({ error: expect.any(LockTimeoutError), usable: [{ one: 1 }] })
    await holder.release()
    await db.transaction().execute(async (trx) => {
      await createLock(trx, k, { scope: 'transaction' }).acquire({ timeoutMs: 1_000 })
      expect(await observer.holders(k)).toHaveLength(1)
    })
    expect(await observer.locks(k)).toEqual([])
  })

  it("times out a session lock under lock_timeout and restores the connection's own setting", async () => {
    const db = open(1)
    const k = key('session')
    const holder = await createLock(open(), k).acquire()
    await expect(createLock(db, k).acquire({ timeoutMs: 50 })).rejects.toBeInstanceOf(LockTimeoutError)
    expect(await observer.waiters(k)).toEqual([])
    await holder.release()
    const seen = await withLock(
      db,
      k,
      async ({ db: leased }) => ({
        holders: await observer.holders(k),
        lockTimeout: (await sql<{ lock_timeout: string }>`SHOW lock_timeout`.execute(leased)).rows[0]?.lock_timeout,
      }),
      { timeoutMs: 1_000 },
    )
    expect(seen).toEqual({ holders: [expect.any(Number)], lockTimeout: '0' })
    expect(await observer.locks(k)).toEqual([])
  })
})
