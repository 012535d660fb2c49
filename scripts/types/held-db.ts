// Issue 10, item 5: after `await lock.acquire()`, `lock.db` is the driver handle, not `Db | undefined`.
import { createLock as createDrizzleLock } from '@pglock/drizzle'
import { createLock as createKyselyLock } from '@pglock/kysely'
import { createLock } from '@pglock/pg'
import { createLock as createPostgresJsLock } from '@pglock/postgres-js'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import type { Kysely } from 'kysely'
import type pg from 'pg'
import type postgres from 'postgres'

export async function heldDb(
  pool: pg.Pool,
  sql: postgres.Sql,
  drizzleDb: NodePgDatabase,
  kysely: Kysely<{ t: { id: number } }>,
): Promise<void> {
  const held = await createLock(pool, 'k').acquire()
  await held.db.query('SELECT 1')

  const reserved = await createPostgresJsLock(sql, 'k').acquire()
  await reserved.db`SELECT 1`

  const pinned = await createDrizzleLock(drizzleDb, 'k').acquire()
  await pinned.db.execute('SELECT 1')

  await using bound = await createKyselyLock(kysely, 'k').acquire()
  await bound.db.selectFrom('t').selectAll().execute()
}
