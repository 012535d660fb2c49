import { InvalidArgumentError } from './errors.js'
import type { LockConnection, Row } from './executor.js'

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

/**
 * What a driver does with its transaction's callback once the connection under it is lost:
 * - `'settle'`: the callback settles as usual, and the driver ends the transaction and gives its
 *   connection back by itself (Kysely);
 * - `'stay-pending'`: the callback never settles, because the driver fails its transaction by
 *   itself and would misbehave if it then tried to end it (postgres.js 3.4 throws from a timer
 *   on a `ROLLBACK` into a closed connection, porsager/postgres#1208).
 * Either way the core stops waiting for the driver as soon as the loss is known.
 */
export type AfterLoss = 'settle' | 'stay-pending'

/**
 * Runs `body` (the core's side of `LockExecutor.transaction`) inside a transaction the driver
 * opens with `begin`, on the connection `pin` makes of the driver's transaction handle. The core
 * watches that connection, reports its loss and releases it; an adapter says only what its
 * driver does with a callback after a loss (see {@link AfterLoss}).
 *
 * @example
 * ```ts
 * const executor: LockExecutor<TransactionSql> = {
 *   kind: 'pool',
 *   queueKey: sql,
 *   transaction: (body) =>
 *     runInDriverTransaction((callback) => sql.begin(callback), (tx) => pin(tx), body, 'stay-pending'),
 * }
 * ```
 */
export function runInDriverTransaction<Tx, Db, T>(
  begin: (callback: (tx: Tx) => Promise<T>) => PromiseLike<unknown>,
  pin: (tx: Tx) => LockConnection<Db>,
  body: (connection: LockConnection<Db>) => Promise<T>,
  afterLoss: AfterLoss,
): Promise<T> {
  const ended = begin((tx) => {
    const connection = pin(tx)
    if (afterLoss === 'settle') return body(connection)
    let lost = false
    const stop = connection.onLost(() => {
      lost = true
    })
    // after a loss the callback's promise adopts one that never settles
    return body(connection).then(
      (value) => {
        stop()
        return lost ? new Promise<T>(noop) : value
      },
      (error: unknown) => {
        stop()
        if (lost) return new Promise<T>(noop)
        throw error
      },
    )
  })
  return Promise.resolve(ended) as Promise<T>
}

const noop = () => undefined
