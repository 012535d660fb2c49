import type { Row } from '@pglock/core/adapter'

/** Runs one text on the connection, in one round trip; resolves to the rows as the dialect returns them. */
export type Exec = (sql: string) => Promise<readonly unknown[]>

/** Where a text runs: the dialect's connection class, and whether a transaction block is open. */
export interface TextContext {
  /** The prototype of the dialect's `DatabaseConnection`: what one connection of a class accepts, all do. */
  readonly kind: object
  /** A transaction block is open (a `Transaction`), so the text runs in it rather than in an implicit one. */
  readonly inBlock: boolean
}

/** Connection classes that run a text of several statements (PostgresDialect, kysely-postgres-js up to 4). */
const several = new WeakSet<object>()
/** Connection classes that refuse one (kysely-postgres-js 5 sends every text through the extended protocol). */
const single = new WeakSet<object>()

/** The SQLSTATE of Postgres refusing a text of several statements in the extended protocol; pglock's own texts have no other syntax error. */
const SYNTAX_ERROR = '42601'

const TRANSACTION_CONTROL = /^(BEGIN|START|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE)\b/i

function statementsOf(sql: string): string[] {
  return sql
    .split(';')
    .map((statement) => statement.trim())
    .filter((statement) => statement !== '')
}

/**
 * Whether connections of this class run a text of several statements: `false` for a dialect that
 * sends every text through the extended protocol (which may also keep each distinct text prepared
 * on the connection); `undefined` until {@link learnStatements} has found out.
 *
 * @example
 * ```ts
 * if (takesSeveral(Object.getPrototypeOf(connection)) === false) console.log('one statement per round trip')
 * ```
 */
export function takesSeveral(kind: object): boolean | undefined {
  return several.has(kind) ? true : single.has(kind) ? false : undefined
}

/**
 * Finds out, once per connection class, whether it runs a text of several statements, by sending
 * one. Postgres refuses it before running anything; inside a transaction block, where that would
 * fail the transaction, it is sent under a savepoint.
 *
 * @example
 * ```ts
 * await learnStatements(exec, { kind: Object.getPrototypeOf(connection), inBlock: false })
 * ```
 */
export async function learnStatements(exec: Exec, { kind, inBlock }: TextContext): Promise<void> {
  if (several.has(kind) || single.has(kind)) return
  if (inBlock) await exec('SAVEPOINT pglock_statements')
  try {
    await exec('SELECT 1; SELECT 1')
    several.add(kind)
  } catch (error) {
    if ((error as { code?: unknown } | null)?.code !== SYNTAX_ERROR) throw error
    single.add(kind)
    if (inBlock) await exec('ROLLBACK TO SAVEPOINT pglock_statements')
  }
  if (inBlock) await exec('RELEASE SAVEPOINT pglock_statements')
}

/**
 * Runs SQL text that pglock wrote and resolves to the rows of its last statement, whatever the
 * dialect does with a text of several statements (see {@link learnStatements}, which must have run
 * for the class):
 * - PostgresDialect sends it in one round trip but keeps the result of none of them (node-postgres
 *   answers with an array that Kysely does not read); kysely-postgres-js up to 4 answers with one
 *   array of rows per statement. So a text that opens or runs inside a transaction block (`BEGIN`,
 *   `SAVEPOINT`) and ends in a `SELECT` goes in two round trips: all but the last statement, then
 *   the last alone; inside a transaction block that changes nothing but latency. Other texts go
 *   whole: a session lock under `lock_timeout` needs the implicit transaction of one
 *   multi-statement query, and pglock reads no rows from it.
 * - kysely-postgres-js 5 refuses it. Its statements then go one by one, inside `BEGIN` … `COMMIT`
 *   where they needed the implicit transaction of one text.
 *
 * @example
 * ```ts
 * const rows = await runText(exec, 'SAVEPOINT a; SELECT pg_advisory_xact_lock(1)', { kind, inBlock: true })
 * ```
 */
export function runText(exec: Exec, sql: string, context: TextContext): Promise<readonly Row[]> {
  const statements = sql.includes(';') ? statementsOf(sql) : undefined
  if (statements === undefined || statements.length < 2) return exec(sql) as Promise<readonly Row[]>
  return runSeveral(exec, sql, statements, context)
}

async function runSeveral(exec: Exec, sql: string, statements: readonly string[], { kind, inBlock }: TextContext): Promise<readonly Row[]> {
  const first = statements[0] ?? ''
  const last = statements[statements.length - 1] ?? ''
  if (single.has(kind)) return oneByOne(exec, statements, !inBlock && !TRANSACTION_CONTROL.test(first))
  if (/^(BEGIN|SAVEPOINT)\b/i.test(first) && /^SELECT\b/i.test(last)) {
    await exec(statements.slice(0, -1).join('; '))
    return (await exec(last)) as readonly Row[]
  }
  const rows = await exec(sql)
  const perStatement = rows.length === statements.length && rows.every(Array.isArray)
  return (perStatement ? rows[rows.length - 1] : rows) as readonly Row[]
}

/** Statements one by one; with `implicit`, inside a transaction block of their own, as Postgres runs a text of several. */
async function oneByOne(exec: Exec, statements: readonly string[], implicit: boolean): Promise<readonly Row[]> {
  let rows: readonly unknown[] = []
  if (!implicit) {
    for (const statement of statements) rows = await exec(statement)
    return rows as readonly Row[]
  }
  await exec('BEGIN')
  try {
    for (const statement of statements) rows = await exec(statement)
    await exec('COMMIT')
  } catch (error) {
    await exec('ROLLBACK').catch(() => undefined)
    throw error
  }
  return rows as readonly Row[]
}
