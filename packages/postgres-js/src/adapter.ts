// For packages that build on this adapter (as @pglock/drizzle does), not for users locking.
export { type PostgresJsHandle, type PostgresJsLeaseDb, postgresJsExecutor, runInPostgresJsTransaction } from './postgres-js-executor.js'
