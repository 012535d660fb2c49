import { resolveTestDatabase } from '@pglock/testing/database'
import pg from 'pg'

/** The database the bench runs against, and how to let it go. */
export interface BenchDatabase {
  readonly url: string
  readonly source: string
  readonly serverVersion: string
  stop(): Promise<void>
}

/**
 * `PGLOCK_BENCH_DATABASE_URL`, else `DATABASE_URL`, else whatever the test resolver finds
 * (`PGLOCK_TEST_DATABASE_URL`, a container, or a throwaway embedded Postgres).
 */
export async function resolveBenchDatabase(): Promise<BenchDatabase> {
  const fromEnv = process.env.PGLOCK_BENCH_DATABASE_URL || process.env.DATABASE_URL
  const database = fromEnv ? { url: fromEnv, source: 'env', stop: async () => undefined } : await resolveTestDatabase()
  const client = new pg.Client({ connectionString: database.url })
  await client.connect()
  try {
    const { rows } = await client.query<{ server_version: string }>('SHOW server_version')
    return { ...database, serverVersion: rows[0]?.server_version ?? 'unknown' }
  } finally {
    await client.end()
  }
}
