import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Kysely } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import postgres from 'postgres'
import { kyselyAdapter } from '../kysely-adapter.ts'

/** Seconds `sql.end()` waits before it terminates what is left: postgres.js 3.4 never finishes a plain `end()` once a connection failed with a statement in flight (porsager/postgres#1142). */
const END_TIMEOUT_S = 0.2

/**
 * The postgres.js that kysely-postgres-js loads here. @pglock/kysely refuses it below 4: postgres.js
 * 3.4 leaves a statement on a reserved connection that closed pending forever (porsager/postgres#1208).
 */
export const postgresJs = (() => {
  const dialect = createRequire(import.meta.url).resolve('kysely-postgres-js')
  for (let dir = dirname(createRequire(dialect).resolve('postgres')); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const { name, version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (name === 'postgres' && version !== undefined) return { version, major: Number(version.split('.')[0]) }
    } catch {}
  }
  throw new Error('kysely-postgres-js loads no postgres.js')
})()

/** pglock refuses kysely-postgres-js over this postgres.js, so its suites do not run here. */
export const refused = postgresJs.major < 4

/**
 * Kysely over postgres.js 4 through kysely-postgres-js, which reserves one connection per checkout.
 * A lost connection fails its statements at once there, so the loss suites run
 * (`survivesConnectionLoss`); as with @pglock/postgres-js, the pool may refuse checkouts for a
 * moment after failures (`poolRecovers`, `firstCheckoutAfterRestartMayFail`).
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
  { survivesConnectionLoss: true, poolRecovers: false, endedPoolRefuses: false, firstCheckoutAfterRestartMayFail: true },
)
