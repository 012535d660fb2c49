import { fileURLToPath } from 'node:url'
import { Kysely } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import postgres from 'postgres'
import { kyselyAdapter } from '../kysely-adapter.ts'

/** Seconds `sql.end()` waits before it terminates what is left: postgres.js 3.4 never finishes a plain `end()` once a connection failed with a statement in flight (porsager/postgres#1142). */
const END_TIMEOUT_S = 0.2

/**
 * Kysely over postgres.js through kysely-postgres-js, which reserves one connection per checkout.
 * It shares postgres.js 3.4's limits: a reserved connection that dies crashes the process or
 * stalls the pool (`survivesConnectionLoss`), the pool does not always recover after failures
 * (`poolRecovers`), and an ended pool still lends connections (`endedPoolRefuses`).
 */
export default kyselyAdapter(
  'kysely-postgres-js',
  fileURLToPath(import.meta.url),
  ({ url, applicationName, max, throughPooler = false }) => {
    const client = postgres(url, {
      max,
      prepare: !throughPooler,
      connection: { application_name: applicationName },
      onnotice: () => undefined,
    })
    const db = new Kysely<any>({ dialect: new PostgresJSDialect({ postgres: client }) })
    return {
      db,
      close: async () => {
        await client.end({ timeout: END_TIMEOUT_S })
        await db.destroy()
      },
    }
  },
  { survivesConnectionLoss: false, poolRecovers: false, endedPoolRefuses: false },
)
