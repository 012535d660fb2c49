/**
 * What a `<!-- fragment: kysely-pg -->` block may assume: a Kysely instance with `PostgresDialect`
 * on the examples' database, typed by the Kysely README's own schema block, and a report to build.
 */
import type { Lease } from '@pglock/kysely'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import type { Database } from '../packages-kysely/schema.js'

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })
pool.on('connect', (client) => client.on('error', (error) => console.error(error)))

export const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })

export async function buildReport({ db, signal }: Lease<Kysely<Database>>): Promise<void> {
  signal.throwIfAborted()
  await sql`SELECT sum(total) FROM invoices`.execute(db)
}

export async function close(): Promise<void> {
  await db.destroy()
}
