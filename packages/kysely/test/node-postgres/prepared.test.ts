import { randomBytes } from 'node:crypto'
import { createLock, withLock } from '@pglock/kysely'
import { Observer } from '@pglock/testing'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'

/**
 * A Kysely on a one-connection node-postgres pool; `stringsOnly`: its client refuses anything but a
 * string, as another pool might; `log`: Kysely's query logger.
 */
function open(url: string, stringsOnly = false, log?: (event: { query: { sql: string } }) => void): Kysely<any> {
  const pool = new pg.Pool({ connectionString: url, application_name: `pglock-t-${randomBytes(5).toString('hex')}`, max: 1 })
  pool.on('error', () => undefined)
  pool.on('connect', (client) => {
    client.on('error', () => undefined)
    if (!stringsOnly) return
    const query = client.query.bind(client) as (text: unknown, values?: unknown) => unknown
    ;(client as { query: unknown }).query = (text: unknown, values?: unknown) => {
      if (typeof text !== 'string') throw new TypeError('query text must be a string')
      return query(text, values)
    }
  })
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }), ...(log === undefined ? {} : { log }) })
  onTestFinished(() => db.destroy())
  return db
}

const preparedNames = async (db: Kysely<any>) =>
  (await sql<{ name: string }>`SELECT name FROM pg_prepared_statements WHERE name LIKE 'pglock%' ORDER BY name`.execute(db)).rows.map(
    ({ name }) => name,
  )

// each pool its own connections: what one learns of its client does not carry to another
describe('Kysely over PostgresDialect: the session calls as prepared statements', () => {
  let observer: Observer
  const prefix = `pglock-test:kysely:prepared:${randomBytes(4).toString('hex')}`
  const key = (label: string) => `${prefix}:${label}`

  beforeAll(() => {
    observer = new Observer(inject('databaseUrl'))
  })
  afterAll(() => observer.close())

  it('prepares the lock and unlock once on the connection, and holds the lock on it', async () => {
    const db = open(inject('databaseUrl'))
    const k = key('named')
    await withLock(db, k, async () => undefined)
    const holder = await withLock(db, k, async (lease) => {
      expect(await observer.holders(k)).toHaveLength(1)
      return (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(lease.db)).rows[0]?.pid
    })
    expect(holder).toBeTypeOf('number')
    expect(await preparedNames(db)).toEqual(['pglock_backend', 'pglock_pg_advisory_lock_int64', 'pglock_pg_advisory_unlock_int64'])
    expect(await observer.locks(k)).toEqual([])
  })

  it('keeps locking after DISCARD ALL drops the prepared statements', async () => {
    const db = open(inject('databaseUrl'))
    const k = key('discard')
    const lock = createLock(db, k)
    for (let round = 0; round < 3; round += 1) {
      await lock.acquire()
      expect(await observer.holders(k)).toHaveLength(1)
      expect(await lock.release()).toBe(true)
      expect(await lock.tryAcquire()).toBe(true)
      expect(await lock.release()).toBe(true)
      await sql`DISCARD ALL`.execute(db)
    }
    expect(await observer.locks(k)).toEqual([])
  })

  it('sends its statements as text where the pool client takes nothing but a string', async () => {
    const db = open(inject('databaseUrl'), true)
    const k = key('strings-only')
    for (let round = 0; round < 2; round += 1) {
      await withLock(db, k, async () => {
        expect(await observer.holders(k)).toHaveLength(1)
      })
    }
    expect(await preparedNames(db)).toEqual([])
    expect(await observer.locks(k)).toEqual([])
  })

  it('leaves nothing held under a log function that reads each query as a string', async () => {
    const logged: string[] = []
    const db = open(inject('databaseUrl'), false, (event) => {
      logged.push(event.query.sql.trim())
    })
    const k = key('string-logger')
    const lock = createLock(db, k)
    for (let round = 0; round < 3; round += 1) {
      await lock.acquire()
      expect(await observer.holders(k)).toHaveLength(1)
      expect(await lock.release()).toBe(true)
      expect(await observer.locks(k)).toEqual([])
    }
    const elsewhere = createLock(open(inject('databaseUrl')), k)
    expect(await elsewhere.tryAcquire()).toBe(true)
    expect(await elsewhere.release()).toBe(true)
    expect(logged.filter((sql) => sql.includes('pg_advisory_lock'))).toHaveLength(3)
  })
})
