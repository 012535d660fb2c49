/** What a `<!-- fragment: pg -->` block may assume: a node-postgres pool on the examples' database, and a report to build. */
import type { Lease } from '@pglock/pg'
import pg from 'pg'

export const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })

export async function buildReport({ db, signal }: Lease<pg.PoolClient>): Promise<void> {
  signal.throwIfAborted()
  await db.query('SELECT sum(total) FROM invoices')
}

export async function close(): Promise<void> {
  await pool.end()
}
