import type { GateTicket, Recheck } from './gate.js'
import { IN_FAILED_SQL_TRANSACTION, sqlState } from './sqlstate.js'

/**
 * A transaction lock taken on a caller's connection, which ends when its transaction does,
 * without a word to pglock. Postgres keeps a mark for each transaction (see {@link markSql}); a
 * later transaction on the connection carries another mark.
 */
export interface TransactionHold {
  /** the mark of the transaction the lock lives in */
  readonly mark: string
  /** the physical connection, where later transactions run */
  readonly connection: object
  /** settles the handle: its transaction is over */
  readonly end: () => void
}

/** The transaction locks taken on each physical connection and not yet seen to end. */
const holds = new WeakMap<object, Set<TransactionHold>>()
/** How many there are in all: most processes never take one, and then a checkout looks nothing up. */
let tied = 0

const MARK_PREFIX = Math.random().toString(36).slice(2, 10)
let marks = 0

/** @internal A transaction mark unique within this process (only `[a-z0-9.]`, as it travels as a literal). */
export function nextMark(): string {
  marks += 1
  return `${MARK_PREFIX}.${marks}`
}

/**
 * @internal The mark of the current transaction, set on first use: a transaction-local setting,
 * which Postgres itself resets at `COMMIT` or `ROLLBACK` (and at `ROLLBACK TO` a savepoint taken
 * before it), exactly when a transaction lock taken with it ends.
 */
export function markSql(fresh: string): string {
  return `COALESCE(NULLIF(current_setting('pglock.tx', true), ''), set_config('pglock.tx', '${fresh}', true))`
}

/** Answers in column `tx` the mark of the transaction the connection is in now, or `''` for none. */
const CURRENT_MARK_SQL = `SELECT COALESCE(current_setting('pglock.tx', true), '') AS tx`

/**
 * @internal Ends the transaction locks left unreleased on a connection fresh from its pool: a
 * pool lends a connection only once the transaction that used it is over.
 */
export function endTransactionLocks(physical: object | undefined): void {
  const open = physical === undefined || tied === 0 ? undefined : holds.get(physical)
  if (open !== undefined) for (const hold of [...open]) hold.end()
}

/** What {@link tieToTransaction} needs to know about one granted transaction lock. */
export interface Tie {
  readonly physical: object
  readonly mark: string
  /** the handle's own connection, asked when a newcomer came through none */
  readonly connection: NonNullable<Parameters<Recheck>[0]>
  /** the places the lock occupies in memory, whose newcomers may ask whether it still holds */
  readonly tickets: readonly GateTicket[]
  /** whether the lock is still the handle's (a recheck answering late changes nothing then) */
  readonly current: () => boolean
  readonly end: () => void | Promise<void>
}

/**
 * @internal Ties a lock taken in a caller's transaction to that transaction. Locks of earlier
 * transactions on the connection end now, as this one runs in another; a handle that finds the
 * lock's place taken in memory asks Postgres whether the holder's transaction still runs.
 */
export function tieToTransaction(tie: Tie): TransactionHold {
  let open = holds.get(tie.physical)
  if (open === undefined) holds.set(tie.physical, (open = new Set()))
  for (const other of [...open]) if (other.mark !== tie.mark) other.end()
  const hold: TransactionHold = { mark: tie.mark, connection: tie.physical, end: () => void tie.end() }
  open.add(hold)
  tied += 1
  let checking: Promise<void> | undefined
  const recheck: Recheck = (via) => (checking ??= stillOpen(tie, via ?? tie.connection).finally(() => (checking = undefined)))
  for (const ticket of tie.tickets) ticket.recheckWith(recheck)
  return hold
}

/** @internal Forgets a transaction lock that ended. */
export function untie(hold: TransactionHold): void {
  if (holds.get(hold.connection)?.delete(hold) === true) tied -= 1
}

/** Ends the handle if the transaction its lock was taken in is over; asks through `via`, on the same connection. */
async function stillOpen(tie: Tie, via: NonNullable<Parameters<Recheck>[0]>): Promise<void> {
  let current: unknown
  try {
    const [row] = await via.query(CURRENT_MARK_SQL)
    current = row?.tx
  } catch (error) {
    // a failed transaction still holds its locks until it is rolled back
    if (sqlState(error) === IN_FAILED_SQL_TRANSACTION) return
  }
  if (current !== tie.mark && tie.current()) await tie.end()
}
