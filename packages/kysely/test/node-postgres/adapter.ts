import { fileURLToPath } from 'node:url'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { kyselyAdapter } from '../kysely-adapter.ts'

/**
 * Kysely's built-in PostgresDialect over a node-postgres `Pool`. A pg client checked out of the
 * pool has no error listener (Kysely adds none), so a backend terminated while pinned would crash
 * the process: the pool gives each client one, as any Kysely application on pg must.
 */
export default kyselyAdapter('kysely-pg', fileURLToPath(import.meta.url), ({ url, applicationName, max }) => {
  const pool = new pg.Pool({ connectionString: url, application_name: applicationName, max })
  pool.on('error', () => undefined)
  pool.on('connect', (client) => client.on('error', () => undefined))
  return { db: new Kysely<any>({ dialect: new PostgresDialect({ pool }) }) }
})
