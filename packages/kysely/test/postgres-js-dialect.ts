import { fileURLToPath } from 'node:url'
import { Kysely } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import postgres from 'postgres'
import { kyselyAdapter } from './kysely-adapter.ts'

/**
 * Kysely over postgres.js through kysely-postgres-js, which reserves one connection per checkout.
 * postgres.js 3.4.9 cannot survive a terminated backend on a reserved connection (see
 * `survivesConnectionLoss`), so the lost-lock tests cannot run on it.
 */
export default kyselyAdapter(
  'kysely-postgres-js',
  fileURLToPath(import.meta.url),
  ({ url, applicationName, max }) => {
    const client = postgres(url, { max, connection: { application_name: applicationName }, onnotice: () => undefined })
    return new Kysely<any>({ dialect: new PostgresJSDialect({ postgres: client }) })
  },
  { survivesConnectionLoss: false, poolRecovers: false, endedPoolRefuses: false },
)
