// A strict consumer of @pglock/drizzle, written the way its README shows. Type-checked only.
import { createLock, LockTimeoutError, tryWithLock, withLock } from '@pglock/drizzle'
import { eq } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import { integer, pgTable } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js'

const invoices = pgTable('invoices', { id: integer('id').primaryKey(), total: integer('total').notNull() })

export async function useDrizzle(): Promise<void> {
  const db = drizzle('postgres://localhost/app')

  await withLock(
    db,
    'invoice:42',
    async ({ db: tx }) => {
      const [invoice] = await tx.select().from(invoices).where(eq(invoices.id, 42))
      if (!invoice) return
      await tx
        .update(invoices)
        .set({ total: invoice.total + 1 })
        .where(eq(invoices.id, 42))
    },
    { scope: 'transaction', timeoutMs: 5_000 },
  )

  await withLock(db, 'report:daily', async ({ db: pinned, signal }) => {
    signal.throwIfAborted()
    const rows: { id: number; total: number }[] = await pinned.select().from(invoices)
    return rows.length
  })

  const run = await tryWithLock(db, 'cron:nightly', () => 1)
  if (run.acquired) console.log(run.value)

  await db.transaction(async (tx) => {
    await createLock(tx, 'account:7', { scope: 'transaction' }).acquire()
    await tx.update(invoices).set({ total: 0 })
  })

  {
    await using held = await createLock(db, 'job:7').acquire({ timeoutMs: 500 })
    console.log(held.isHeld)
  }

  const overPostgresJs = drizzlePostgresJs('postgres://localhost/app')
  try {
    await withLock(overPostgresJs, 'k', ({ db: pinned }) => pinned.select().from(invoices), { timeoutMs: 0 })
  } catch (error) {
    if (error instanceof LockTimeoutError) console.log(error.code, error.timeoutMs)
    else throw error
  }
}
