import { PostgresJsDatabase, PostgresJsSession } from 'drizzle-orm/postgres-js'
import type { DrizzleClasses } from './drizzle-executor.js'

/** Drizzle's postgres.js classes, as `drizzle-orm/postgres-js` exports them. */
export const postgresJsClasses: DrizzleClasses = { Database: PostgresJsDatabase, Session: PostgresJsSession }
