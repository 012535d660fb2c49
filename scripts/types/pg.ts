// A strict consumer of @pglock/pg, written the way its README shows. Type-checked only, never run.
import {
  AlreadyHeldError,
  createLock,
  InvalidKeyError,
  LockLostError,
  LockTimeoutError,
  PgLockError,
  type PgLockErrorCode,
  ReleaseFailedError,
  tryWithLock,
  UnsupportedError,
  withLock,
} from '@pglock/pg'
import type pg from 'pg'

export async function usePg(pool: pg.Pool): Promise<number> {
  const total = await withLock(
    pool,
    'invoice:42',
    async ({ db, signal }) => {
      const client: pg.PoolClient = db
      signal.throwIfAborted()
      const { rows } = await client.query<{ total: number }>('SELECT total FROM invoices WHERE id = $1', [42])
      return rows[0]?.total ?? 0
    },
    { timeoutMs: 5_000 },
  )

  const run = await tryWithLock(pool, 'cron:nightly', async () => 'sent' as const)
  const outcome: 'sent' | undefined = run.acquired ? run.value : undefined

  const lock = createLock(pool, 'job:7', { mode: 'shared', keyHash: 'postgres-lock-0.1' })
  if (await lock.tryAcquire()) {
    try {
      await lock.db?.query('UPDATE jobs SET started_at = now() WHERE id = 7')
      const lost: AbortSignal = lock.signal
      lost.throwIfAborted()
    } finally {
      const released: boolean = await lock.release()
      void released
    }
  }
  // @ts-expect-error a handle not yet acquired may have no connection
  await createLock(pool, 'job:7').db.query('SELECT 1')

  {
    await using held = await createLock(pool, [7, 1001]).acquire({ timeoutMs: 500, signal: AbortSignal.timeout(1_000) })
    const isHeld: boolean = held.isHeld
    void isHeld
  }

  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    await createLock(client, 'account:7', { scope: 'transaction' }).acquire()
    await withLock(client, 9_007_199_254_740_993n, ({ db }) => db.query('SELECT 1'))
    await client.query('COMMIT')
  } finally {
    client.release()
  }

  try {
    await withLock(pool, 'report:daily', () => undefined, { timeoutMs: 1_000 })
  } catch (error) {
    if (error instanceof LockTimeoutError) console.log(`busy after ${error.timeoutMs} ms`)
    else if (error instanceof PgLockError && error.code === 'LOST') console.log(error.key, error.mode, error.scope)
    else if (error instanceof LockLostError || error instanceof AlreadyHeldError || error instanceof ReleaseFailedError) throw error
    else if (error instanceof InvalidKeyError || error instanceof UnsupportedError) {
      const code: PgLockErrorCode = error.code
      console.log(code)
    } else throw error
  }

  // @ts-expect-error a key must be a number, bigint, string or int32 pair
  createLock(pool, { id: 1 })
  // @ts-expect-error only node-postgres handles are accepted
  createLock({ query: () => undefined }, 'k')

  return outcome === 'sent' ? total : 0
}
