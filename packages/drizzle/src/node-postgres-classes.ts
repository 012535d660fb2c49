import { NodePgDatabase, NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres'
import type { DrizzleClasses } from './drizzle-executor.js'

/** Drizzle's node-postgres classes, as `drizzle-orm/node-postgres` exports them. */
export const nodePgClasses: DrizzleClasses = { Database: NodePgDatabase, Session: NodePgSession, Transaction: NodePgTransaction }
