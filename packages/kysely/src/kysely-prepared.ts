/**
 * Named prepared statements through Kysely's `PostgresDialect`: Kysely hands a query's `sql` to
 * the node-postgres client as it is, and node-postgres takes a `{ text, name }` there, so the
 * bare session calls are parsed once per connection, as `@pglock/pg` sends them.
 */
import type { PreparedStatement } from '@pglock/core/adapter'
import { CompiledQuery, type DatabaseConnection } from 'kysely'

/** Kysely's connection class over a node-postgres pool (not exported, so known by name, in 0.28 to 0.30). */
const POSTGRES_CONNECTION = 'PostgresConnection'

/** A statement the server does not know (`DISCARD ALL`), or one another client prepared (a transaction-pooling PgBouncer). */
const FOREIGN_STATEMENT_STATES = new Set(['26000', '42P05'])

/**
 * Connections that send pglock's statements unnamed: the client refused a name (a pool of another
 * kind than node-postgres; Kysely's connection class is the same for every pool), or the server
 * dropped or shares pglock's statements.
 */
const unprepared = new WeakSet<DatabaseConnection>()
/** Connections that ran a named statement: their client takes names. */
const named = new WeakSet<DatabaseConnection>()

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
  if (unprepared.has(connection)) return connection.executeQuery(unnamed(statement))
  const sql = new NamedText(statement.text, statement.name) as unknown as string
  return connection.executeQuery(CompiledQuery.raw(sql, statement.values as unknown[])).then(
    (result) => {
      if (!named.has(connection)) named.add(connection)
      return result
    },
    (error: unknown) => {
      const code = (error as { code?: unknown } | null)?.code
      const foreign = typeof code === 'string' && FOREIGN_STATEMENT_STATES.has(code)
      // a client that takes only a string throws before sending anything: node-postgres refuses bad input with a TypeError too
      if (!foreign && (named.has(connection) || !(error instanceof TypeError))) throw error
      unprepared.add(connection)
      return connection.executeQuery(unnamed(statement))
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

function unnamed(statement: PreparedStatement) {
  return CompiledQuery.raw(statement.text, statement.values as unknown[])
}
