import { InvalidArgumentError } from './errors.js'
import type { Row } from './executor.js'

/**
 * How a value that is not a driver handle reads in messages: `null`, the name of its class, or its
 * type.
 *
 * @example
 * ```ts
 * describeValue(new Map()) // 'Map'
 * describeValue(undefined) // 'undefined'
 * ```
 */
export function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'object') return (Object.getPrototypeOf(value)?.constructor?.name as string | undefined) || 'an object'
  return typeof value
}

/**
 * The error an adapter raises, before any SQL, for a value that is not a handle of its driver.
 *
 * @param expected - what the adapter takes, as `a node-postgres Pool, PoolClient or Client`.
 * @param kind - how the value reads, when the adapter knows better than {@link describeValue}.
 * @example
 * ```ts
 * throw wrongHandle('a node-postgres Pool, PoolClient or Client', db)
 * // InvalidArgumentError: db must be a node-postgres Pool, PoolClient or Client, got Map
 * ```
 */
export function wrongHandle(expected: string, value: unknown, kind: string = describeValue(value)): InvalidArgumentError {
  return new InvalidArgumentError(`db must be ${expected}, got ${kind}`)
}

/**
 * The rows of the last statement of a text that may hold several, as drivers answer it: one
 * result or an array of them (node-postgres `QueryResult`s with `rows`; postgres.js results,
 * arrays of rows that carry `command`).
 *
 * @example
 * ```ts
 * lastRows(await client.query('BEGIN; SELECT 1 AS one')) // [{ one: 1 }]
 * ```
 */
export function lastRows(result: unknown): readonly Row[] {
  if (Array.isArray(result)) {
    if ('command' in result) return result as readonly Row[]
    return result.length === 0 ? EMPTY : lastRows(result[result.length - 1])
  }
  const rows = (result as { rows?: unknown } | null | undefined)?.rows
  return Array.isArray(rows) ? (rows as readonly Row[]) : EMPTY
}

const EMPTY: readonly Row[] = Object.freeze([])
