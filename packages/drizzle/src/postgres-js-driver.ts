import { postgresJsExecutor, runInPostgresJsTransaction } from '@pglock/postgres-js/adapter'
import { type DriverEntry, type DrizzleDriver, executorIf } from './drizzle-executor.js'
import { transactionClientOf } from './drizzle-privates.js'

/**
 * Drizzle over postgres.js: pglock reserves a connection for a session lock, and runs a
 * transaction lock inside `db.transaction()`, since only `sql.begin()` opens a postgres.js
 * transaction. pglock owns that transaction's connection.
 */
export function postgresJsDriver(entry: DriverEntry): DrizzleDriver {
  return {
    ...entry,
    adapter: 'drizzle/postgres-js',
    clientExecutor: (client) => (typeof client === 'function' ? executorIf(postgresJsExecutor, client) : undefined),
    runInTransaction: (db, body) =>
      runInPostgresJsTransaction(
        (callback) => db.transaction((tx) => callback(transactionClientOf(tx) as never, tx)),
        body,
        db.$client as object,
      ),
  }
}
