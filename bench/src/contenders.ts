import * as pglockPg from '@pglock/pg'
import advisoryLockModule from 'advisory-lock'
import pg from 'pg'
import pgMutexLockModule from 'pg-mutex-lock'
import type { BenchTarget, Contender, CriticalSection, OpenContender, Queryable } from './contender.js'

/** Both peers are CommonJS with `exports.default`: from ESM, the function is on `.default`. */
const advisoryLock = advisoryLockModule.default
const PGMutexLock = pgMutexLockModule.default

/** The lock functions every pglock adapter exports, as the bench calls them. */
interface PglockFunctions<Handle> {
  withLock<T>(
    db: Handle,
    key: number,
    fn: (lease: { readonly db: any }) => T | PromiseLike<T>,
    options?: { readonly scope?: 'session' | 'transaction' },
  ): Promise<T>
}

/** A driver's pool, opened for one measurement. */
interface OpenPool<Handle> {
  readonly db: Handle
  poolQuery(sql: string): Promise<unknown>
  connections(): number
  close(): Promise<void>
}

/**
 * The two rows (session and transaction `withLock`) for one pglock adapter. A new adapter adds
 * one call: its lock functions, how to open its pool, and the raw floor of its driver.
 */
export function pglockContenders<Handle>(adapter: {
  readonly name: string
  readonly lib: PglockFunctions<Handle>
  readonly openPool: (target: BenchTarget) => Promise<OpenPool<Handle>>
  readonly sessionFloor: string
  readonly transactionFloor: string
}): Contender[] {
  const open =
    (scope: 'session' | 'transaction') =>
    async (target: BenchTarget): Promise<OpenContender> => {
      const pool = await adapter.openPool(target)
      const options = { scope }
      return {
        cycle: (key, section) => adapter.lib.withLock(pool.db, key, (lease) => section(lease.db as Queryable), options),
        poolQuery: (sql) => pool.poolQuery(sql),
        connections: () => pool.connections(),
        close: () => pool.close(),
      }
    }
  return [
    {
      name: `pglock ${adapter.name} session`,
      role: 'pglock',
      scope: 'session',
      floor: adapter.sessionFloor,
      cycleDescription: `withLock(pool, key, fn) from @pglock/${adapter.name}`,
      open: open('session'),
    },
    {
      name: `pglock ${adapter.name} transaction`,
      role: 'pglock',
      scope: 'transaction',
      floor: adapter.transactionFloor,
      cycleDescription: `withLock(pool, key, fn, { scope: 'transaction' }) from @pglock/${adapter.name}`,
      open: open('transaction'),
    },
  ]
}

function openPgPool(target: BenchTarget): pg.Pool {
  const pool = new pg.Pool({ connectionString: target.url, max: target.poolSize, application_name: target.applicationName })
  pool.on('error', () => undefined)
  return pool
}

async function openPgPoolForPglock(target: BenchTarget): Promise<OpenPool<pg.Pool>> {
  const pool = openPgPool(target)
  return {
    db: pool,
    poolQuery: (sql) => pool.query(sql),
    connections: () => pool.totalCount,
    close: () => pool.end(),
  }
}

/** Hand-written node-postgres on a pinned connection, the way a careful user writes it. */
async function rawPgSessionCycle(pool: pg.Pool, key: number, section: CriticalSection): Promise<void> {
  const client = await pool.connect()
  let unlocked = false
  try {
    await client.query('SELECT pg_advisory_lock($1)', [key])
    try {
      await section(client)
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [key])
      unlocked = true
    }
  } finally {
    client.release(!unlocked)
  }
}

/** The same, with named prepared statements: the server parses and plans each statement once per connection. */
async function rawPgPreparedSessionCycle(pool: pg.Pool, key: number, section: CriticalSection): Promise<void> {
  const client = await pool.connect()
  let unlocked = false
  try {
    await client.query({ name: 'bench_advisory_lock', text: 'SELECT pg_advisory_lock($1)', values: [key] })
    try {
      await section(client)
    } finally {
      await client.query({ name: 'bench_advisory_unlock', text: 'SELECT pg_advisory_unlock($1)', values: [key] })
      unlocked = true
    }
  } finally {
    client.release(!unlocked)
  }
}

async function rawPgTransactionCycle(pool: pg.Pool, key: number, section: CriticalSection): Promise<void> {
  const client = await pool.connect()
  let clean = false
  try {
    await client.query('BEGIN')
    try {
      await client.query('SELECT pg_advisory_xact_lock($1)', [key])
      await section(client)
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK')
      throw error
    }
    clean = true
  } finally {
    client.release(!clean)
  }
}

function rawPg(cycle: typeof rawPgSessionCycle) {
  return async (target: BenchTarget): Promise<OpenContender> => {
    const pool = openPgPool(target)
    return {
      cycle: (key, section) => cycle(pool, key, section),
      poolQuery: (sql) => pool.query(sql),
      connections: () => pool.totalCount,
      close: () => pool.end(),
    }
  }
}

const RAW_PG_SESSION = 'raw pg session'
const RAW_PG_TRANSACTION = 'raw pg transaction'

/** The `advisory-lock` package (v2): a new connection for every lock, closed after the unlock. */
async function openAdvisoryLock(target: BenchTarget): Promise<OpenContender> {
  const createMutex = advisoryLock(target.url)
  let open = 0
  return {
    async cycle(key, section) {
      open += 1
      try {
        await createMutex(String(key)).withLock(async () => section(undefined))
      } finally {
        open -= 1
      }
    },
    poolQuery: undefined,
    connections: () => open,
    close: async () => undefined,
  }
}

/** pg-mutex-lock asserts that a password is set, even for a server that asks for none. */
const PASSWORD_IGNORED_BY_TRUST_AUTH = 'unused'

/**
 * The `pg-mutex-lock` package: one instance (one connection) per process, as its README shows.
 * `acquireLock` polls `pg_try_advisory_lock` every 100 ms while the lock is taken.
 */
async function openPgMutexLock(target: BenchTarget): Promise<OpenContender> {
  const url = new URL(target.url)
  const previousAppName = process.env.PGAPPNAME
  process.env.PGAPPNAME = target.applicationName
  const mutex = new PGMutexLock({
    database: {
      host: url.hostname,
      port: Number(url.port || 5432),
      database: decodeURIComponent(url.pathname.slice(1)),
      user: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password) || process.env.PGPASSWORD || PASSWORD_IGNORED_BY_TRUST_AUTH,
    },
  })
  if (previousAppName === undefined) delete process.env.PGAPPNAME
  else process.env.PGAPPNAME = previousAppName
  const warmupKey = `pglock-bench-warmup-${process.pid}`
  await mutex.acquireLock(warmupKey)
  await mutex.releaseLock(warmupKey)
  return {
    async cycle(key, section) {
      const name = String(key)
      await mutex.acquireLock(name)
      try {
        await section(undefined)
      } finally {
        await mutex.releaseLock(name)
      }
    },
    poolQuery: undefined,
    connections: () => 1,
    close: () => mutex.end(),
  }
}

const NO_POOL = 'no pool to share: the library opens its own connections, so fn cannot starve it'

/** Every contender, in table order. The floors come first: the ratios are computed against them. */
export const CONTENDERS: readonly Contender[] = [
  {
    name: RAW_PG_SESSION,
    role: 'floor',
    scope: 'session',
    floor: RAW_PG_SESSION,
    cycleDescription: 'pool.connect(); SELECT pg_advisory_lock($1); fn; SELECT pg_advisory_unlock($1); client.release()',
    open: rawPg(rawPgSessionCycle),
  },
  {
    name: RAW_PG_TRANSACTION,
    role: 'floor',
    scope: 'transaction',
    floor: RAW_PG_TRANSACTION,
    cycleDescription: 'pool.connect(); BEGIN; SELECT pg_advisory_xact_lock($1); fn; COMMIT; client.release()',
    open: rawPg(rawPgTransactionCycle),
  },
  {
    name: 'raw pg session, prepared',
    role: 'floor',
    scope: 'session',
    floor: RAW_PG_SESSION,
    cycleDescription: 'as raw pg session, with named prepared statements ({ name, text, values })',
    noPoolPressure: 'the same code as raw pg session, with named statements: it deadlocks the same way',
    open: rawPg(rawPgPreparedSessionCycle),
  },
  ...pglockContenders({
    name: 'pg',
    lib: pglockPg,
    openPool: openPgPoolForPglock,
    sessionFloor: RAW_PG_SESSION,
    transactionFloor: RAW_PG_TRANSACTION,
  }),
  {
    name: 'advisory-lock',
    role: 'peer',
    scope: 'session',
    floor: RAW_PG_SESSION,
    cycleDescription: 'advisoryLock(url)(String(key)).withLock(fn): connect, lock, fn, unlock, end',
    noPoolPressure: NO_POOL,
    open: openAdvisoryLock,
  },
  {
    name: 'pg-mutex-lock',
    role: 'peer',
    scope: 'session',
    floor: RAW_PG_SESSION,
    cycleDescription: 'mutex.acquireLock(String(key)); fn; mutex.releaseLock(String(key)), on one shared connection',
    noPoolPressure: NO_POOL,
    open: openPgMutexLock,
  },
]
