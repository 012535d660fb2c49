// A strict consumer of @pglock/kysely, written the way its README shows. Type-checked only.
import { createLock, PgLockError, tryWithLock, withLock } from '@pglock/kysely'
import { type Generated, Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'

interface Database {
  invoices: { id: Generated<number>; status: string }
}

export async function useKysely(): Promise<void> {
  const pool = new pg.Pool({ connectionString: 'postgres://localhost/app' })
  pool.on('connect', (client) => client.on('error', (error) => console.error(error)))
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })

  await withLock(
    db,
    'invoice:42',
    async ({ db, signal }) => {
      signal.throwIfAborted()
      await db.updateTable('invoices').set({ status: 'sent' }).where('id', '=', 42).execute()
    },
    { timeoutMs: 5_000 },
  )

  await withLock(db, 'invoice:42', ({ db: trx }) => trx.selectFrom('invoices').selectAll().execute(), { scope: 'transaction' })

  const run = await tryWithLock(db, 'cron:nightly', async () => true)
  if (run.acquired && run.value) console.log('ran')

  await db.transaction().execute(async (trx) => {
    await createLock(trx, 'account:7', { scope: 'transaction' }).acquire()
  })

  try {
    await using held = await createLock(db, 'job:7').acquire()
    console.log(held.isHeld)
  } catch (error) {
    if (error instanceof PgLockError) console.log(error.code)
    else throw error
  }
  await db.destroy()
}
