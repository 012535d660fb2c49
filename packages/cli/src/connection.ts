import pg from 'pg'
import { EXIT, ExitError } from './exit-codes.js'

/** Postgres limits `application_name` to 63 bytes and truncates longer names. */
const APPLICATION_NAME_BYTES = 63

/**
 * A connected `pg.Client` for `url` (`--url`), else `DATABASE_URL`, else what node-postgres
 * reads from the libpq variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, ...).
 * `applicationName` shows in `pg_stat_activity` unless `PGAPPNAME` or the URL names one.
 * `timeoutMs` bounds the connection attempt: running out is an `ExitError` with code 124, any
 * other failure to connect one with code 69.
 *
 * @example
 * ```ts
 * const client = await connect(values.url, 'pglock run nightly')
 * ```
 */
export async function connect(url: string | undefined, applicationName: string, timeoutMs?: number): Promise<pg.Client> {
  const connectionString = url ?? (process.env.DATABASE_URL || undefined)
  const limitMs = timeoutMs === undefined ? undefined : Math.max(1, timeoutMs)
  const client = new pg.Client({
    ...(connectionString === undefined ? {} : { connectionString }),
    application_name: process.env.PGAPPNAME ?? truncate(applicationName),
    ...(limitMs === undefined ? {} : { connectionTimeoutMillis: limitMs }),
  })
  // a connection that fails after its last use must not crash the process; losses are heard through the lock
  client.on('error', () => undefined)
  // set before node-postgres' own timer of the same length, so it has fired when that one fails the connect
  let timedOut = false
  const timer = limitMs === undefined ? undefined : setTimeout(() => (timedOut = true), limitMs)
  try {
    await client.connect()
  } catch (error) {
    if (timedOut) throw new ExitError(EXIT.timeout, `timed out after ${formatDuration(limitMs ?? 0)} while connecting to Postgres`)
    throw new ExitError(EXIT.unavailable, `cannot connect to Postgres: ${describeError(error)}`)
  } finally {
    clearTimeout(timer)
  }
  return client
}

/**
 * Ends `client` without throwing: the command's outcome is what `pglock` reports, not how the
 * connection closed.
 *
 * @example
 * ```ts
 * await disconnect(client)
 * ```
 */
export async function disconnect(client: pg.Client): Promise<void> {
  try {
    await client.end()
  } catch {
    // already closed
  }
}

/**
 * An error's message as a person reads it: node-postgres' `AggregateError` (one error per address
 * tried) carries its reasons in `errors`, and a connection refused has no message of its own.
 *
 * @example
 * ```ts
 * describeError(new Error('password authentication failed for user "app"'))
 * ```
 */
export function describeError(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) {
    return [...new Set(error.errors.map(describeError))].join('; ')
  }
  if (error instanceof Error) return error.message || (error as { code?: string }).code || error.name
  return String(error)
}

function truncate(name: string): string {
  const bytes = Buffer.from(name, 'utf8')
  if (bytes.length <= APPLICATION_NAME_BYTES) return name
  // cut on a character boundary: drop a trailing partial UTF-8 sequence
  return bytes
    .subarray(0, APPLICATION_NAME_BYTES)
    .toString('utf8')
    .replace(/\uFFFD+$/, '')
}

/**
 * A duration as `--timeout` takes it: whole seconds as `30s`, anything else in milliseconds.
 *
 * @example
 * ```ts
 * formatDuration(2_000) // '2s'
 * ```
 */
export function formatDuration(ms: number): string {
  return ms % 1_000 === 0 && ms > 0 ? `${ms / 1_000}s` : `${ms}ms`
}
