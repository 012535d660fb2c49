// A strict consumer of @pglock/postgres-js, written the way its README shows. Type-checked only.
import { createLock, LockLostError, PgLockError, tryWithLock, withLock } from '@pglock/postgres-js'
import postgres from 'postgres'

export async function usePostgresJs(): Promise<void> {
  const sql = postgres('postgres://localhost/app')

  await withLock(
    sql,
    'invoice:42',
    async ({ db, signal }) => {
      const reserved: postgres.ReservedSql = db
      const [invoice] = await reserved`SELECT total FROM invoices WHERE id = 42`
      signal.throwIfAborted()
      await db`UPDATE invoices SET sent_at = now() WHERE id = 42`
      return invoice
    },
    { timeoutMs: 5_000 },
  )

  await withLock(
    sql,
    'invoice:42',
    ({ db }) => {
      const tx: postgres.TransactionSql = db
      return tx`UPDATE invoices SET total = total + 1 WHERE id = 42`
    },
    { scope: 'transaction' },
  )

  const run = await tryWithLock(sql, 'cron:nightly', async ({ db }) => (await db`SELECT 1 AS one`).length)
  if (run.acquired) console.log(run.value + 1)

  const lock = createLock(sql, 'job:7')
  if (await lock.tryAcquire()) await lock.release()

  {
    await using held = await createLock(sql, 7).acquire()
    console.log(held.isHeld)
  }

  await sql.begin(async (tx) => {
    await createLock(tx, 'account:7', { scope: 'transaction' }).acquire()
  })

  try {
    await withLock(sql, 'k', () => undefined)
  } catch (error) {
    if (error instanceof LockLostError) console.log(error.code)
    else if (error instanceof PgLockError) console.log(error.key)
    else throw error
  }
  await sql.end({ timeout: 5 })
}
