/** What a `<!-- fragment: drizzle-pg -->` block may assume: a Drizzle database over node-postgres on the examples' database, and a report to build. */
import type { DrizzleLeaseDb, Lease } from '@pglock/drizzle'
import { sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'

export const db = drizzle(process.env.DATABASE_URL ?? '')

export async function buildReport(lease: Lease<DrizzleLeaseDb<typeof db, 'session'>>): Promise<void> {
  lease.signal.throwIfAborted()
  await lease.db.execute(sql`SELECT sum(total) FROM invoices`)
}

export async function close(): Promise<void> {
  await db.$client.end()
}
