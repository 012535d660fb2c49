// For packages that build on this adapter (as @pglock/drizzle does), not for users locking.
export { type PgHandle, type PgLeaseDb, pgExecutor } from './pg-executor.js'
