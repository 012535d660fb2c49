import type { Row } from '@pglock/core/adapter'

/** One text in one round trip; the rows as the dialect returns them. */
export type Exec = (sql: string) => Promise<readonly unknown[]>

export interface TextContext {
  /** The connection's prototype: what one connection of a class accepts, all do. */
  readonly kind: object
  readonly inBlock: boolean
}

/** PostgresDialect, kysely-postgres-js up to 4. */
const several = new WeakSet<object>()
/** kysely-postgres-js 5: the extended protocol refuses a text of several statements. */
const single = new WeakSet<object>()

/** pglock's own texts have no other syntax error. */
const SYNTAX_ERROR = '42601'

const TRANSACTION_CONTROL = /^(BEGIN|START|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE)\b/i

function statementsOf(sql: string): string[] {
  return sql
    .split(';')
    .map((statement) => statement.trim())
    .filter((statement) => statement !== '')
}

/**
 * Whether connections of this class run a text of several statements; `undefined` until
 * {@link learnStatements} has found out.
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
 * one (under a savepoint inside a transaction block, which a refusal would fail).
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
 * Runs SQL text pglock wrote; resolves to the rows of its last statement. PostgresDialect drops
 * the rows of a text of several, so a last `SELECT` (which answers the backend and the fencing
 * token) goes in a round trip of its own; where
 * several are refused (kysely-postgres-js 5) they go one by one, in `BEGIN` … `COMMIT` if needed.
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
  if (/^SELECT\b/i.test(last)) {
    await exec(statements.slice(0, -1).join('; '))
    return (await exec(last)) as readonly Row[]
  }
  const rows = await exec(sql)
  const perStatement = rows.length === statements.length && rows.every(Array.isArray)
  return (perStatement ? rows[rows.length - 1] : rows) as readonly Row[]
}

/** With `implicit`, in a transaction block of their own, as Postgres runs a text of several. */
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
