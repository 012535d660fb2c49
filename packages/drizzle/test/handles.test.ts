import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import * as root from '@pglock/drizzle'
import * as nodePgEntry from '@pglock/drizzle/node-postgres'
import * as postgresJsEntry from '@pglock/drizzle/postgres-js'
import { FaultProxy, type LockFunctions, Observer } from '@pglock/testing'
import * as orm from 'drizzle-orm'
import { is, sql, TransactionRollbackError } from 'drizzle-orm'
import { drizzle as drizzleNodePg, NodePgTransaction } from 'drizzle-orm/node-postgres'
import { integer, pgTable, withReplicas } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePostgresJs, PostgresJsTransaction } from 'drizzle-orm/postgres-js'
import { npmVersion } from 'drizzle-orm/version'
import pg from 'pg'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'

const key = (label: string) => `pglock-test:drizzle:${randomBytes(4).toString('hex')}:${label}`
const table = `pglock_drizzle_${randomBytes(4).toString('hex')}`
/** The first row of `db.execute()`: node-postgres answers `{ rows }`, postgres.js the rows themselves. */
const firstRow = (result: unknown) =>
  (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows)[0] as Record<string, unknown> | undefined
const counters = pgTable(table, { id: integer('id').primaryKey(), value: integer('value').notNull() })
/**
 * `drizzle()` options that give `db.query.counters`: drizzle-orm 1.0 takes `relations` (from
 * `defineRelations`), 0.45 a `schema`. Typed as 0.45's, the committed devDependency.
 */
const withCounters = (
  'defineRelations' in orm
    ? { relations: (orm as unknown as { defineRelations(schema: object): unknown }).defineRelations({ counters }) }
    : { schema: { counters } }
) as { schema: { counters: typeof counters } }

/** The package's directory, from which Node resolves `@pglock/drizzle` to its own built entries. */
const packageDir = fileURLToPath(new URL('..', import.meta.url))

describe('drizzle specifics', () => {
  let url = ''
  let pool: pg.Pool
  let client: postgres.Sql
  let observer: Observer

  beforeAll(async () => {
    url = inject('databaseUrl')
    observer = new Observer(url)
    pool = new pg.Pool({ connectionString: url, max: 3 })
    client = postgres(url, { max: 3, onnotice: () => undefined })
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY, value int NOT NULL)`)
    await pool.query(`INSERT INTO ${table} VALUES (1, 0)`)
  })
  afterAll(async () => {
    await pool.query(`DROP TABLE ${table}`)
    await Promise.all([pool.end(), client.end(), observer.close()])
  })

  /** Each database with the entries that lock it: its driver's own, and the root entry. */
  const databases = () => [
    { db: drizzleNodePg({ client: pool, ...withCounters }), Tx: NodePgTransaction, libs: [nodePgEntry, root] as LockFunctions[] },
    { db: drizzlePostgresJs({ client, ...withCounters }), Tx: PostgresJsTransaction, libs: [postgresJsEntry, root] as LockFunctions[] },
  ]

  it('gives session-scope fn a database on the locked connection that keeps the schema', async () => {
    for (const { db, libs } of databases()) {
      for (const lib of libs) {
        const row = await lib.withLock(db, key('schema'), ({ db: locked }) => (locked as typeof db).query.counters.findFirst())
        expect(row).toEqual({ id: 1, value: 0 })
      }
    }
  })

  it("gives transaction-scope fn Drizzle's own tx, the first time and after, with savepoints and rollback()", async () => {
    for (const { db, Tx, libs } of databases()) {
      for (const lib of libs) {
        for (let round = 1; round <= 3; round += 1) {
          const k = key(`own-tx-${round}`)
          const seen = await lib.withLock(
            db,
            k,
            async ({ db: lease }) => {
              const tx = lease as Parameters<Parameters<typeof db.transaction>[0]>[0]
              const nested = await tx.transaction(async (inner) => firstRow(await inner.execute(sql`SELECT 7 AS seven`))?.seven)
              await tx.update(counters).set({ value: round }).where(sql`id = 1`)
              return { tx: is(tx, Tx), nested, row: await tx.query.counters.findFirst() }
            },
            { scope: 'transaction' },
          )
          expect(seen).toEqual({ tx: true, nested: 7, row: { id: 1, value: round } })
          const rolledBack = lib.withLock(
            db,
            k,
            async ({ db: lease }) => {
              const tx = lease as Parameters<Parameters<typeof db.transaction>[0]>[0]
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
    }
  })

  it('sends BEGIN with the lock over node-postgres from the first transaction lock of a database on', async () => {
    for (const lib of [nodePgEntry, root] as LockFunctions[]) {
      const proxy = await FaultProxy.start(url)
      onTestFinished(() => proxy.close())
      const proxied = new pg.Pool({ connectionString: proxy.url, max: 1 })
      onTestFinished(() => proxied.end())
      const db = drizzleNodePg({ client: proxied })
      await lib.withLock(db, key('warm-up'), () => undefined)
      const counted = async (action: () => Promise<unknown>) => {
        const before = proxy.roundTrips
        await action()
        return proxy.roundTrips - before
      }
      const k = key('first-tx')
      const costs = []
      for (let round = 0; round < 3; round += 1)
        costs.push(await counted(() => lib.withLock(db, k, () => undefined, { scope: 'transaction' })))
      expect(costs).toEqual([2, 2, 2])
    }
  })

  it('locks on the primary of a database with read replicas', async () => {
    for (const lib of [nodePgEntry, root] as LockFunctions[]) {
      const primary = drizzleNodePg({ client: pool, ...withCounters })
      const db = withReplicas(primary, [drizzleNodePg({ client: pool, ...withCounters })])
      const first = ({ db: locked }: { db: typeof primary }) => locked.query.counters.findFirst()
      const row = await lib.withLock(db, key('replicas'), first)
      expect(row).toEqual({ id: 1, value: 0 })
      expect(await lib.withLock(db, key('replicas-tx'), first, { scope: 'transaction' })).toEqual(row)
    }
  })

  it('holds a session lock on a database over one Client, on that Client', async () => {
    const single = new pg.Client({ connectionString: url })
    await single.connect()
    try {
      const db = drizzleNodePg({ client: single })
      const pid = async (handle: Omit<typeof db, '$client'>) => (await handle.execute(sql`SELECT pg_backend_pid() AS pid`)).rows[0]?.pid
      for (const lib of [nodePgEntry, root] as LockFunctions[]) {
        const k = key('single-client')
        expect(await lib.withLock(db, k, ({ db: locked }) => pid(locked as typeof db))).toBe(await pid(db))
        const first = await lib.createLock(db, k).acquire()
        expect(await lib.createLock(db, k).tryAcquire()).toBe(false)
        expect(await first.release()).toBe(true)
      }
    } finally {
      await single.end()
    }
  })

  it("runs transaction scope on a database over one Client, in Drizzle's tx on that Client", async () => {
    const single = new pg.Client({ connectionString: url })
    await single.connect()
    try {
      const db = drizzleNodePg({ client: single })
      const pid = (await db.execute(sql`SELECT pg_backend_pid() AS pid`)).rows[0]?.pid
      for (const lib of [nodePgEntry, root] as LockFunctions[]) {
        const seen = await lib.withLock(
          db,
          key('single-client-tx'),
          async ({ db: tx }) => ({
            tx: is(tx, NodePgTransaction),
            pid: (await (tx as typeof db).execute(sql`SELECT pg_backend_pid() AS pid`)).rows[0]?.pid,
          }),
          { scope: 'transaction' },
        )
        expect(seen).toEqual({ tx: true, pid })
        expect(single.getTransactionStatus?.()).toBe('I')
      }
    } finally {
      await single.end()
    }
  })

  it("refuses another driver's database with UNSUPPORTED naming the entry to use", () => {
    const nodePgDb = drizzleNodePg({ client: pool })
    const postgresJsDb = drizzlePostgresJs({ client })
    expect(() => nodePgEntry.createLock(postgresJsDb as never, key('wrong-entry'))).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringContaining('@pglock/drizzle/postgres-js') }),
    )
    expect(() => postgresJsEntry.createLock(nodePgDb as never, key('wrong-entry'))).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringContaining('@pglock/drizzle/node-postgres') }),
    )
  })

  it('refuses a database over another client with UNSUPPORTED naming the supported drivers', () => {
    const mock = drizzleNodePg.mock()
    for (const lib of [nodePgEntry, root] as LockFunctions[]) {
      expect(() => lib.createLock(mock, key('mock'), { scope: 'transaction' })).toThrow(
        expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringContaining('node-postgres') }),
      )
    }
  })

  it('refuses a value that is not a Drizzle database with INVALID_ARGUMENT', () => {
    for (const lib of [nodePgEntry, postgresJsEntry, root] as LockFunctions[]) {
      expect(() => lib.createLock(pool as never, key('not-drizzle'))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    }
  })

  it('fails with UNSUPPORTED naming drizzle-orm and its version, before any SQL, when Drizzle lacks a member pglock reads', async () => {
    const db = drizzleNodePg({ client: pool })
    delete (db as { dialect?: unknown }).dialect
    const k = key('no-dialect')
    const expected = expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringContaining(`drizzle-orm ${npmVersion}`) })
    for (const lib of [nodePgEntry, root] as LockFunctions[]) {
      expect(() => lib.createLock(db, k)).toThrow(expected)
      let ran = false
      for (const scope of ['session', 'transaction'] as const) {
        await expect(lib.withLock(db, k, () => (ran = true), { scope })).rejects.toThrow(expected)
      }
      expect(ran).toBe(false)
    }
    expect(await observer.holders(k)).toEqual([])
  })

  it("loads only its own driver's Drizzle module: each entry on import, the root entry on a driver's first lock", () => {
    const loaded = (entry: string) =>
      JSON.parse(
        execFileSync(
          process.execPath,
          ['-e', `require(${JSON.stringify(entry)}); console.log(JSON.stringify(Object.keys(require.cache)))`],
          { cwd: packageDir, encoding: 'utf8' },
        ),
      ) as string[]
    const drivers = (modules: string[]) => ({
      nodePostgres: modules.some((path) => /drizzle-orm[\\/]node-postgres[\\/]/.test(path)),
      pg: modules.some((path) => /node_modules[\\/]pg[\\/]/.test(path)),
      postgresJs: modules.some((path) => /drizzle-orm[\\/]postgres-js[\\/]/.test(path)),
      postgres: modules.some((path) => /node_modules[\\/]postgres[\\/]/.test(path)),
    })
    expect(drivers(loaded('@pglock/drizzle/node-postgres'))).toEqual({ nodePostgres: true, pg: true, postgresJs: false, postgres: false })
    expect(drivers(loaded('@pglock/drizzle/postgres-js'))).toEqual({ nodePostgres: false, pg: false, postgresJs: true, postgres: true })
    expect(drivers(loaded('@pglock/drizzle'))).toEqual({ nodePostgres: false, pg: false, postgresJs: false, postgres: false })
  })
})
