import { pgExecutor } from '@pglock/pg/adapter'
import { type DriverEntry, type DrizzleDriver, executorIf } from './drizzle-executor.js'

/**
 * Drizzle over node-postgres: pglock pins a client for both scopes, and in transaction scope
 * sends `BEGIN` with the lock and gives Drizzle's own `NodePgTransaction` on that client.
 */
export function nodePgDriver(entry: DriverEntry): DrizzleDriver {
  return {
    ...entry,
    adapter: 'drizzle/node-postgres',
    clientExecutor: (client) => (typeof client === 'object' && client !== null ? executorIf(pgExecutor, client) : undefined),
  }
}
