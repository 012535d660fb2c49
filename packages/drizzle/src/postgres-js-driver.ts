import { InvalidArgumentError } from '@pglock/core'
import type { LockExecutor } from '@pglock/core/adapter'
import { postgresJsExecutor, runInPostgresJsTransaction } from '@pglock/postgres-js/adapter'
import type { DrizzleClasses, DrizzleDriver } from './drizzle-executor.js'
import { transactionClientOf } from './drizzle-privates.js'

/**
 * The pglock executor for a postgres.js `Sql`, `ReservedSql` or `TransactionSql`, if `client` is
 * one. A postgres.js handle is a function, so nothing else is offered to `postgresJsExecutor`.
 */
function postgresJsClientExecutor(client: unknown): LockExecutor<unknown> | undefined {
  if (typeof client !== 'function') return undefined
  try {
    return postgresJsExecutor(client as Parameters<typeof postgresJsExecutor>[0]) as LockExecutor<unknown>
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error
    return undefined
  }
}

/**
 * Drizzle over postgres.js: pglock reserves a connection for a session lock, and runs a
 * transaction lock inside `db.transaction()`, since only `sql.begin()` opens a postgres.js
 * transaction (it sends `BEGIN` on its own). pglock owns that transaction's connection.
 */
export function postgresJsDriver(options: {
  readonly entry: string
  readonly supports: string
  readonly owns: (db: object) => boolean
  readonly classes: () => DrizzleClasses | Promise<DrizzleClasses>
}): DrizzleDriver {
  return {
    ...options,
    clientExecutor: postgresJsClientExecutor,
    runInTransaction: (db, body) =>
      runInPostgresJsTransaction(
        (callback) => db.transaction((tx) => callback(transactionClientOf(tx) as never, tx)),
        body,
        db.$client as object,
      ),
  }
}
