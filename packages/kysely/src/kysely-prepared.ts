/**
 * Named prepared statements through Kysely's `PostgresDialect`: Kysely hands a query's `sql` to
 * the node-postgres client as it is, and node-postgres takes a `{ text, name }` there, so the
 * bare session calls are parsed once per connection, as `@pglock/pg` sends them.
 */
import { isConnectionFailure, type PreparedStatement } from '@pglock/core/adapter'
import { CompiledQuery, type DatabaseConnection } from 'kysely'

/** Kysely's connection class over a node-postgres pool (not exported, so known by name, in 0.28 to 0.30). */
const POSTGRES_CONNECTION = 'PostgresConnection'

/** A statement the server does not know (`DISCARD ALL`), or one another client prepared (a transaction-pooling PgBouncer). */
const FOREIGN_STATEMENT_STATES = new Set(['26000', '42P05'])

/**
 * Connections that send pglock's statements unnamed: a name failed there before any lock statement
 * (a pool of another kind than node-postgres, or a Kysely `log` function that reads the query as a
 * string), or the server dropped or shares pglock's statements.
 */
const unprepared = new WeakSet<DatabaseConnection>()
/** Connections on which a named statement without effects ran, through Kysely's logging too: lock statements go named there. */
const named = new WeakSet<DatabaseConnection>()

/** The name of the side-effect-free statement that {@link probeNames} sends. */
const PROBE_NAME = 'pglock_backend'

/** What node-postgres reads as a named statement; reads as its text anywhere a string is expected. */
class NamedText {
  constructor(
    readonly text: string,
    readonly name: string,
  ) {}

  toString(): string {
    return this.text
  }
}

/**
 * Whether connections of this class (a prototype) may take named statements: Kysely's own
 * `PostgresConnection`, over whatever pool it was given.
 *
 * @example
 * ```ts
 * if (takesNames(Object.getPrototypeOf(connection))) console.log('prepared once per connection')
 * ```
 */
export function takesNames(kind: object): boolean {
  return (kind as { constructor?: { name?: unknown } }).constructor?.name === POSTGRES_CONNECTION
}

/**
 * Runs `statement` on `connection` named, or unnamed (its text, with parameters) where the server
 * no longer knows pglock's statements or the client refused a name.
 *
 * @example
 * ```ts
 * const { rows } = await runNamed(connection, { name: 'pglock_x', text: 'SELECT $1::int8', values: ['1'] })
 * ```
 */
export function runNamed(connection: DatabaseConnection, statement: PreparedStatement) {
  if (unprepared.has(connection) || !named.has(connection)) return connection.executeQuery(unnamed(statement))
  // only errors raised before the statement ran are retried: a lock statement must never run twice
  return connection.executeQuery(namedQuery(statement.text, statement.name, statement.values)).catch((error: unknown) => {
    if (!isForeign(error)) throw error
    unprepared.add(connection)
    return connection.executeQuery(unnamed(statement))
  })
}

/**
 * Whether {@link probeNames} has decided, for this connection, between named and unnamed statements.
 *
 * @example
 * ```ts
 * if (!probed(connection)) await probeNames(connection, 'SELECT pg_backend_pid() AS pid')
 * ```
 */
export function probed(connection: DatabaseConnection): boolean {
  return named.has(connection) || unprepared.has(connection)
}

/**
 * Runs `sql`, a statement without effects, named: the first on each connection. If it fails
 * without the server's word on it (a client that takes only a string, a `log` function that calls
 * string methods on the query), the connection's statements go unnamed from then on, and `sql`
 * runs again as text. Resolves to its result.
 *
 * @example
 * ```ts
 * const { rows } = await probeNames(connection, 'SELECT pg_backend_pid() AS pid')
 * ```
 */
export function probeNames(connection: DatabaseConnection, sql: string) {
  return connection.executeQuery(namedQuery(sql, PROBE_NAME, [])).then(
    (result) => {
      named.add(connection)
      return result
    },
    (error: unknown) => {
      // the server answered: a name is not what failed (a dead connection fails the text too)
      if (!isForeign(error) && !isConnectionFailure(error)) throw error
      unprepared.add(connection)
      return connection.executeQuery(CompiledQuery.raw(sql))
    },
  )
}

/**
 * Sends this connection's statements unnamed from now on: its backend changed under it (a pooling
 * proxy), so a name prepared on one backend may be missing on the next.
 *
 * @example
 * ```ts
 * forgetNames(connection)
 * ```
 */
export function forgetNames(connection: DatabaseConnection): void {
  unprepared.add(connection)
}

function isForeign(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && FOREIGN_STATEMENT_STATES.has(code)
}

function namedQuery(text: string, name: string, values: readonly unknown[]) {
  return CompiledQuery.raw(new NamedText(text, name) as unknown as string, values as unknown[])
}

function unnamed(statement: PreparedStatement) {
  return CompiledQuery.raw(statement.text, statement.values as unknown[])
}
