/** What a `<!-- fragment: postgres-js -->` block may assume: a postgres.js `sql` on the examples' database, and a report to build. */
import type { Lease } from '@pglock/postgres-js'
import postgres, { type ReservedSql } from 'postgres'

export const sql = postgres(process.env.DATABASE_URL ?? '', { onnotice: () => undefined })

export async function buildReport({ db, signal }: Lease<ReservedSql>): Promise<void> {
  signal.throwIfAborted()
  await db`SELECT sum(total) FROM invoices`
}

export async function close(): Promise<void> {
  await sql.end({ timeout: 5 })
}
