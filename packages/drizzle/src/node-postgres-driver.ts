import { InvalidArgumentError } from '@pglock/core'
import type { LockExecutor } from '@pglock/core/adapter'
import { pgExecutor } from '@pglock/pg/adapter'
import type { DrizzleClasses, DrizzleDriver } from './drizzle-executor.js'

/**
 * The pglock executor for a node-postgres client, if `client` is one. Only objects are offered to
 * `pgExecutor`: a refusal builds an error, and the root entry runs this on every lock.
 */
function pgClientExecutor(client: unknown): LockExecutor<unknown> | undefined {
  if (typeof client !== 'object' || client === null) return undefined
  try {
    return pgExecutor(client as Parameters<typeof pgExecutor>[0]) as LockExecutor<unknown>
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error
    return undefined
  }
}

/**
 * Drizzle over node-postgres: pglock pins a client for both scopes, and in transaction scope
 * sends `BEGIN` with the lock and gives Drizzle's own `NodePgTransaction` on that client.
 */
export function nodePgDriver(options: {
  readonly entry: string
  readonly supports: string
  readonly owns: (db: object) => boolean
  readonly classes: () => DrizzleClasses | Promise<DrizzleClasses>
}): DrizzleDriver {
  return { ...options, clientExecutor: pgClientExecutor }
}
