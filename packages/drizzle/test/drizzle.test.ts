import { randomBytes } from 'node:crypto'
import { createLock, withLock } from '@pglock/drizzle'
import { is, sql, TransactionRollbackError } from 'drizzle-orm'
import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres'
import { integer, PgTransaction, pgTable, withReplicas } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js'
import pg from 'pg'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

const key = (label: string) => `pglock-test:drizzle:${randomBytes(4).toString('hex')}:${label}`
const table = `pglock_drizzle_${randomBytes(4).toString('hex')}`
/** The first row of `db.execute()`: node-postgres answers `{ rows }`, postgres.js the rows themselves. */
const firstRow = (result: unknown) =>
  (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows)[0] as Record<string, unknown> | undefined
const counters = pgTable(table, { id: integer('id').primaryKey(), value: integer('value').notNull() })

describe('drizzle specifics', () => {
  let url = ''
  let pool: pg.Pool
  let client: postgres.Sql

  beforeAll(async () => {
    url = inject('databaseUrl')
    pool = new pg.Pool({ connectionString: url, max: 3 })
    client = postgres(url, { max: 3, onnotice: () => undefined })
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY, value int NOT NULL)`)
    await pool.query(`INSERT INTO ${table} VALUES (1, 0)`)
  })
  afterAll(async () => {
    await pool.query(`DROP TABLE ${table}`)
    await Promise.all([pool.end(), client.end()])
  })

  it('gives session-scope fn a database on the locked connection that keeps the schema', async () => {
    for (const db of [drizzleNodePg({ client: pool, schema: { counters } }), drizzlePostgresJs({ client, schema: { counters } })]) {
      const row = await withLock(db, key('schema'), ({ db: locked }) => locked.query.counters.findFirst())
      expect(row).toEqual({ id: 1, value: 0 })
    }
  })

  it("gives transaction-scope fn Drizzle's own tx, the first time and after, with savepoints and rollback()", async () => {
    for (const db of [drizzleNodePg({ client: pool, schema: { counters } }), drizzlePostgresJs({ client, schema: { counters } })]) {
      for (let round = 1; round <= 3; round += 1) {
        const k = key(`own-tx-${round}`)
        const seen = await withLock(
          db,
          k,
          async ({ db: tx }) => {
            const nested = await tx.transaction(async (inner) => firstRow(await inner.execute(sql`SELECT 7 AS seven`))?.seven)
            await tx.update(counters).set({ value: round }).where(sql`id = 1`)
            return { tx: is(tx, PgTransaction), nested, row: await tx.query.counters.findFirst() }
          },
          { scope: 'transaction' },
        )
        expect(seen).toEqual({ tx: true, nested: 7, row: { id: 1, value: round } })
        const rolledBack = withLock(
          db,
          k,
          async ({ db: tx }) => {
            await tx.update(counters).set({ value: -1 }).where(sql`id = 1`)
            tx.rollback()
          },
          { scope: 'transaction' },
        )
        await expect(rolledBack).rejects.toBeInstanceOf(TransactionRollbackError)
        expect((await pool.query(`SELECT value FROM ${table} WHERE id = 1`)).rows[0]?.value).toBe(round)
      }
      await pool.query(`UPDATE ${table} SET value = 0 WHERE id = 1`)
    }
  })

  it('locks on the primary of a database with read replicas', async () => {
    const primary = drizzleNodePg({ client: pool, schema: { counters } })
    const db = withReplicas(primary, [drizzleNodePg({ client: pool, schema: { counters } })])
    const row = await withLock(db, key('replicas'), ({ db: locked }) => locked.query.counters.findFirst())
    expect(row).toEqual({ id: 1, value: 0 })
    expect(await withLock(db, key('replicas-tx'), ({ db: tx }) => tx.query.counters.findFirst(), { scope: 'transaction' })).toEqual(row)
  })

  it('holds a session lock on a database over one Client, on that Client', async () => {
    const single = new pg.Client({ connectionString: url })
    await single.connect()
    try {
      const db = drizzleNodePg({ client: single })
      const pid = async (handle: Omit<typeof db, '$client'>) => (await handle.execute(sql`SELECT pg_backend_pid() AS pid`)).rows[0]?.pid
      const k = key('single-client')
      expect(await withLock(db, k, ({ db: locked }) => pid(locked))).toBe(await pid(db))
      const first = await createLock(db, k).acquire()
      expect(await createLock(db, k).tryAcquire()).toBe(false)
      expect(await first.release()).toBe(true)
    } finally {
      await single.end()
    }
  })

  it('runs transaction scope on a database over one Client', async () => {
    const single = new pg.Client({ connectionString: url })
    await single.connect()
    try {
      const db = drizzleNodePg({ client: single })
      const value = await withLock(
        db,
        key('single-client-tx'),
        async ({ db: tx }) => (await tx.execute(sql`SELECT 42 AS answer`)).rows[0]?.answer,
        {
          scope: 'transaction',
        },
      )
      expect(value).toBe(42)
    } finally {
      await single.end()
    }
  })

  it('refuses a database over another driver with UNSUPPORTED naming the supported ones', () => {
    const http = drizzleNodePg.mock()
    expect(() => createLock(http, key('http'), { scope: 'transaction' })).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringContaining('node-postgres') }),
    )
  })

  it('refuses a value that is not a Drizzle database with INVALID_ARGUMENT', () => {
    expect(() => createLock(pool as never, key('not-drizzle'))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })
})
