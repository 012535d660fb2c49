import { type KeyHash, type LockKey, pgLocksRow, resolveLockId } from '@pglock/core'
import pg from 'pg'

/** One advisory lock row of `pg_locks`, as the tests read it. */
export interface LockRow {
  readonly pid: number
  readonly mode: 'ExclusiveLock' | 'ShareLock'
  readonly granted: boolean
}

/** One backend of `pg_stat_activity`. */
export interface BackendRow {
  readonly pid: number
  readonly state: string | null
}

/**
 * Looks at the database from outside the code under test, on connections of its own: who holds
 * or waits for a lock (`pg_locks`), which backends an application has open (`pg_stat_activity`),
 * and kills backends on request. What it reports is what Postgres decided, never what a driver
 * or pglock believes.
 */
export class Observer {
  readonly #pool: pg.Pool

  constructor(url: string) {
    this.#pool = new pg.Pool({ connectionString: url, max: 4, application_name: 'pglock-observer' })
    this.#pool.on('error', () => undefined)
  }

  /** The `pg_locks` rows for the advisory lock `key` names, in this database. */
  async locks(key: LockKey, options: { readonly keyHash?: KeyHash } = {}): Promise<LockRow[]> {
    const row = pgLocksRow(resolveLockId(key, options))
    const { rows } = await this.#pool.query<LockRow>(
      `SELECT pid, mode, granted FROM pg_locks
        WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = $1 AND objid = $2 AND objsubid = $3
        ORDER BY granted DESC, pid`,
      [row.classid, row.objid, row.objsubid],
    )
    return rows
  }

  /** The pids holding `key`. */
  async holders(key: LockKey): Promise<number[]> {
    return (await this.locks(key)).filter((row) => row.granted).map((row) => row.pid)
  }

  /** The pids waiting for `key`. */
  async waiters(key: LockKey): Promise<number[]> {
    return (await this.locks(key)).filter((row) => !row.granted).map((row) => row.pid)
  }

  /** Backends connected with this `application_name`. */
  async backends(applicationName: string): Promise<BackendRow[]> {
    const { rows } = await this.#pool.query<BackendRow>(
      'SELECT pid, state FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() ORDER BY pid',
      [applicationName],
    )
    return rows
  }

  /** Advisory locks held or awaited by backends of this `application_name`. */
  async locksOf(applicationName: string): Promise<{ pid: number; classid: number; objid: number; granted: boolean }[]> {
    const { rows } = await this.#pool.query(
      `SELECT l.pid, l.classid::int8 AS classid, l.objid::int8 AS objid, l.granted FROM pg_locks l
         JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND a.application_name = $1`,
      [applicationName],
    )
    return rows
  }

  /** Terminates a backend, as an administrator or a failover would. */
  async terminate(pid: number): Promise<void> {
    await this.#pool.query('SELECT pg_terminate_backend($1)', [pid])
  }

  /** Runs any SQL on the observer's own connections. */
  async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    return (await this.#pool.query<R>(sql, params)).rows
  }

  /** Polls `probe` until it returns true, failing after `timeoutMs`. */
  async until(what: string, probe: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!(await probe())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }

  async close(): Promise<void> {
    await this.#pool.end()
  }
}
