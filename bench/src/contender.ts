/** Anything that runs one SQL statement: a pinned client, a transaction handle, a pool. */
export interface Queryable {
  query(sql: string): Promise<unknown>
}

/**
 * What runs while the lock is held. `db` is the handle on the lock's own connection, or
 * `undefined` for a library that does not expose it.
 */
export type CriticalSection = (db: Queryable | undefined) => void | Promise<void>

/** Where and how big: every contender of one measurement gets the same target. */
export interface BenchTarget {
  readonly url: string
  /** the pool size, for contenders that use a pool */
  readonly poolSize: number
  /** tags this contender's backends in `pg_stat_activity`, so a stuck run can be cleaned up */
  readonly applicationName: string
}

/** A contender set up and ready to take locks. */
export interface OpenContender {
  /** One acquire, `section`, release. Rejects if any step fails; always releases what it took. */
  cycle(key: number, section: CriticalSection): Promise<void>
  /** A query through the same pool the locks use, outside any lock; `undefined` without a pool. */
  readonly poolQuery: ((sql: string) => Promise<unknown>) | undefined
  /** Connections this contender has open now. */
  connections(): number
  close(): Promise<void>
}

/**
 * One row of the benchmark. Adding a library (or another pglock adapter) is one more object in
 * the table in `contenders.ts`: a name, which floor it is compared with, and `open`.
 */
export interface Contender {
  readonly name: string
  /** `variant`: a pglock row with an option that costs server work of its own (fencing), shown beside, not judged. */
  readonly role: 'floor' | 'pglock' | 'peer' | 'variant'
  readonly scope: 'session' | 'transaction'
  /** The contender whose cycles per second this one is divided by, for the ratio column. */
  readonly floor: string
  /** One line on what a cycle is, for the report. */
  readonly cycleDescription: string
  /**
   * pglock rows: the uncontended cycles/s it must reach, as a multiple of its floor's (issue 12:
   * 0.95 for session scope and where the driver sends `BEGIN`, 1.2 where pglock sends `BEGIN`
   * with the lock and the floor takes 3 round trips).
   */
  readonly floorRatioTarget?: number
  /** Why the pool-pressure scenario does not apply to it; unset when it does. */
  readonly noPoolPressure?: string
  open(target: BenchTarget): Promise<OpenContender>
}
