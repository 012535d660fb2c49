import { randomBytes } from 'node:crypto'
import { setImmediate as nextTurn } from 'node:timers/promises'

/** Anything that runs a node-postgres query: the pool itself, or the client a lease holds. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>
}

const TABLE_NAME = /^pglock_demo_[a-z0-9_]+$/
const COUNTER_ID = 1

/** A fresh table name, so that concurrent runs against one database never share a counter. */
export function newCounterTableName(): string {
  return `pglock_demo_${process.pid}_${randomBytes(4).toString('hex')}`
}

function quoted(table: string): string {
  if (!TABLE_NAME.test(table)) throw new Error(`not a demo table name: ${JSON.stringify(table)}`)
  return `"${table}"`
}

export async function createCounterTable(db: Queryable, table: string): Promise<void> {
  await db.query(`CREATE TABLE ${quoted(table)} (id integer PRIMARY KEY, value integer NOT NULL)`)
  await db.query(`INSERT INTO ${quoted(table)} (id, value) VALUES ($1, 0)`, [COUNTER_ID])
}

export async function dropCounterTable(db: Queryable, table: string): Promise<void> {
  await db.query(`DROP TABLE IF EXISTS ${quoted(table)}`)
}

export async function resetCounter(db: Queryable, table: string): Promise<void> {
  await db.query(`UPDATE ${quoted(table)} SET value = 0 WHERE id = $1`, [COUNTER_ID])
}

export async function readCounter(db: Queryable, table: string): Promise<number> {
  const { rows } = await db.query(`SELECT value FROM ${quoted(table)} WHERE id = $1`, [COUNTER_ID])
  const [row] = rows as { value: number }[]
  if (row === undefined) throw new Error(`counter row missing from ${table}`)
  return row.value
}

/**
 * Adds one to the counter the racy way: read it, yield to the event loop (as real code does
 * between its read and its write), then write back what it read plus one. Two workers that
 * read the same value both write the same result, and one increment is lost.
 */
export async function incrementByReadModifyWrite(db: Queryable, table: string): Promise<void> {
  const value = await readCounter(db, table)
  await nextTurn()
  await db.query(`UPDATE ${quoted(table)} SET value = $1 WHERE id = $2`, [value + 1, COUNTER_ID])
}
