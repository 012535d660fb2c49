import { once } from 'node:events'
import net from 'node:net'
import * as pglockDrizzle from '@pglock/drizzle'
import * as pglockKysely from '@pglock/kysely'
import * as pglockPg from '@pglock/pg'
import * as pglockPostgresJs from '@pglock/postgres-js'
import advisoryLockModule from 'advisory-lock'
import { sql as drizzleSql } from 'drizzle-orm'
import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres'
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js'
import { Kysely, sql as kyselySql, PostgresDialect } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import pg from 'pg'
import pgMutexLockModule from 'pg-mutex-lock'
import postgres from 'postgres'
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

/** Issue 12: at least this share of the floor's cycles/s where pglock sends what the floor sends. */
const SAME_ROUND_TRIPS_RATIO = 0.95
/** Issue 12: where pglock sends `BEGIN` with the lock, 2 round trips against the floor's 3. */
const BEGIN_WITH_LOCK_RATIO = 1.2

/**
 * The two rows (session and transaction `withLock`) for one pglock adapter. A new adapter adds
 * one call: its lock functions, how to open its pool, how to run one query through `lease.db`,
 * and the raw floors of its driver.
 */
export function pglockContenders<Handle>(adapter: {
  /** the row names are `pglock <name> session` and `pglock <name> transaction` */
  readonly name: string
  /** the package, for the report; `@pglock/<name>` when unset */
  readonly packageName?: string
  readonly lib: PglockFunctions<Handle>
  readonly openPool: (target: BenchTarget) => Promise<OpenPool<Handle>>
  /** `lease.db` as a {@link Queryable}; unset when it already is one (node-postgres) */
  readonly leaseQueryable?: (db: any) => Queryable
  readonly sessionFloor: string
  readonly transactionFloor: string
  /** pglock sends `BEGIN` with the lock (one round trip fewer than its floor), so it must beat the floor */
  readonly sendsBegin?: boolean
  /** also rows with `fencing: true`, to show what a token costs */
  readonly fencedRows?: boolean
}): Contender[] {
  const packageName = adapter.packageName ?? `@pglock/${adapter.name}`
  const toQueryable = adapter.leaseQueryable ?? ((db: any) => db as Queryable)
  const open =
    (scope: 'session' | 'transaction', fencing = false) =>
    async (target: BenchTarget): Promise<OpenContender> => {
      const pool = await adapter.openPool(target)
      const options = fencing ? { scope, fencing } : { scope }
      return {
        cycle: (key, section) => adapter.lib.withLock(pool.db, key, (lease) => section(toQueryable(lease.db)), options),
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
      floorRatioTarget: SAME_ROUND_TRIPS_RATIO,
      cycleDescription: `withLock(pool, key, fn) from ${packageName}`,
      open: open('session'),
    },
    {
      name: `pglock ${adapter.name} transaction`,
      role: 'pglock',
      scope: 'transaction',
      floor: adapter.transactionFloor,
      floorRatioTarget: adapter.sendsBegin === true ? BEGIN_WITH_LOCK_RATIO : SAME_ROUND_TRIPS_RATIO,
      cycleDescription: `withLock(pool, key, fn, { scope: 'transaction' }) from ${packageName}`,
      open: open('transaction'),
    },
    ...(adapter.fencedRows !== true
      ? []
      : (['session', 'transaction'] as const).map(
          (scope): Contender => ({
            name: `pglock ${adapter.name} ${scope}, fencing`,
            role: 'variant',
            scope,
            floor: scope === 'session' ? adapter.sessionFloor : adapter.transactionFloor,
            cycleDescription: `withLock(pool, key, fn, { scope: '${scope}', fencing: true }) from ${packageName}`,
            open: open(scope, true),
          }),
        )),
  ]
}

/** A node-postgres pool tagged with the contender's `application_name`. */
export function openPgPool(target: BenchTarget): pg.Pool {
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

/** A drizzle database over a node-postgres pool, for `@pglock/drizzle`. */
async function openDrizzleNodePgPool(
  target: BenchTarget,
): Promise<OpenPool<ReturnType<typeof drizzleNodePg<Record<string, never>, pg.Pool>>>> {
  const pool = openPgPool(target)
  const db = drizzleNodePg({ client: pool })
  return {
    db,
    poolQuery: (text) => db.execute(drizzleSql.raw(text)),
    connections: () => pool.totalCount,
    close: () => pool.end(),
  }
}

/** A drizzle database (`db`, or the `tx` or pinned database pglock hands to fn) as a {@link Queryable}. */
function drizzleQueryable(db: { execute(query: ReturnType<typeof drizzleSql.raw>): PromiseLike<unknown> }): Queryable {
  return { query: async (text) => db.execute(drizzleSql.raw(text)) }
}

/**
 * A postgres.js `Sql` with `max` connections. postgres.js has no public count of its open
 * connections, so it opens them through a socket factory that counts them.
 */
export function openPostgresJs(target: BenchTarget): { sql: postgres.Sql; connections(): number } {
  const url = new URL(target.url)
  let open = 0
  const options: postgres.Options<Record<string, never>> = {
    max: target.poolSize,
    connection: { application_name: target.applicationName },
    onnotice: () => undefined,
    async socket() {
      const socket = net.connect(Number(url.port || 5432), url.hostname)
      await once(socket, 'connect')
      open += 1
      socket.once('close', () => {
        open -= 1
      })
      // net.Socket's overloaded `end` does not match the narrower signature postgres.js declares
      return socket as unknown as postgres.SocketLike
    },
  }
  const sql = postgres(target.url, options)
  return { sql, connections: () => open }
}

/**
 * Typed as `@pglock/postgres-js` takes it: the workspace build's declarations resolve postgres.js
 * from the adapter's own devDependency (3.x), the tarball's from the bench's postgres.js (4.x).
 */
async function openPostgresJsPool(target: BenchTarget): Promise<OpenPool<pglockPostgresJs.PostgresJsHandle>> {
  const { sql, connections } = openPostgresJs(target)
  return { db: sql as never, poolQuery: (text) => sql.unsafe(text), connections, close: () => sql.end({ timeout: 5 }) }
}

/** A drizzle database over a postgres.js `Sql`, for `@pglock/drizzle`. */
async function openDrizzlePostgresJsPool(
  target: BenchTarget,
): Promise<OpenPool<ReturnType<typeof drizzlePostgresJs<Record<string, never>, postgres.Sql>>>> {
  const { sql, connections } = openPostgresJs(target)
  const db = drizzlePostgresJs({ client: sql })
  return { db, poolQuery: (text) => db.execute(drizzleSql.raw(text)), connections, close: () => sql.end({ timeout: 5 }) }
}

/** A postgres.js handle (`ReservedSql`, `TransactionSql`) as a {@link Queryable}. */
function postgresJsQueryable(sql: postgres.Sql | postgres.ReservedSql | postgres.TransactionSql): Queryable {
  return { query: (text) => sql.unsafe(text) }
}

/**
 * Kysely's `PostgresDialect` over a node-postgres pool, for `@pglock/kysely`. Kysely adds no error
 * listener to the clients it checks out, so the pool gives each one, as a Kysely application on pg
 * must: a backend terminated while pinned would otherwise crash the process.
 */
async function openKyselyNodePgPool(target: BenchTarget): Promise<OpenPool<Kysely<any>>> {
  const pool = openPgPool(target)
  pool.on('connect', (client) => client.on('error', () => undefined))
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  return {
    db,
    poolQuery: (text) => kyselySql.raw(text).execute(db),
    connections: () => pool.totalCount,
    close: () => db.destroy(),
  }
}

/**
 * Kysely over a postgres.js `Sql` through kysely-postgres-js (`PostgresJSDialect`), which reserves
 * one connection per checkout; the connections are counted as for the raw postgres.js rows.
 */
async function openKyselyPostgresJsPool(target: BenchTarget): Promise<OpenPool<Kysely<any>>> {
  const { sql, connections } = openPostgresJs(target)
  const db = new Kysely<any>({ dialect: new PostgresJSDialect({ postgres: sql }) })
  return {
    db,
    poolQuery: (text) => kyselySql.raw(text).execute(db),
    connections,
    async close() {
      await sql.end({ timeout: 5 })
      await db.destroy()
    },
  }
}

/** A Kysely handle (the instance, or the connection-bound `Kysely` or `Transaction` pglock hands to fn) as a {@link Queryable}. */
function kyselyQueryable(db: Kysely<any>): Queryable {
  return { query: (text) => kyselySql.raw(text).execute(db) }
}

/** Hand-written Kysely on one connection (`db.connection()`), the way a Kysely user writes a session lock. */
async function rawKyselySessionCycle(db: Kysely<any>, key: number, section: CriticalSection): Promise<void> {
  await db.connection().execute(async (connection) => {
    await kyselySql`SELECT pg_advisory_lock(${key})`.execute(connection)
    try {
      await section(kyselyQueryable(connection))
    } finally {
      await kyselySql`SELECT pg_advisory_unlock(${key})`.execute(connection)
    }
  })
}

/** Kysely's own transaction (`begin`, lock, `commit`: 3 round trips), the floor of the Kysely rows in transaction scope. */
async function rawKyselyTransactionCycle(db: Kysely<any>, key: number, section: CriticalSection): Promise<void> {
  await db.transaction().execute(async (transaction) => {
    await kyselySql`SELECT pg_advisory_xact_lock(${key})`.execute(transaction)
    await section(kyselyQueryable(transaction))
  })
}

function rawKysely(openPool: (target: BenchTarget) => Promise<OpenPool<Kysely<any>>>, cycle: typeof rawKyselySessionCycle) {
  return async (target: BenchTarget): Promise<OpenContender> => {
    const pool = await openPool(target)
    return {
      cycle: (key, section) => cycle(pool.db, key, section),
      poolQuery: (text) => pool.poolQuery(text),
      connections: () => pool.connections(),
      close: () => pool.close(),
    }
  }
}

const RAW_DRIZZLE_PG_SESSION = 'raw drizzle/pg session'
const RAW_DRIZZLE_PG_TRANSACTION = 'raw drizzle/pg transaction'
const RAW_DRIZZLE_POSTGRES_JS_TRANSACTION = 'raw drizzle/postgres.js transaction'

type DrizzleDb = { execute(query: ReturnType<typeof drizzleSql.raw>): PromiseLike<unknown> }

/** A session lock written by hand in Drizzle: a database on the pinned client, as `drizzle()` makes one. */
async function drizzleSessionCycle(pinned: DrizzleDb, key: number, section: CriticalSection): Promise<void> {
  await pinned.execute(drizzleSql`SELECT pg_advisory_lock(${key})`)
  try {
    await section(drizzleQueryable(pinned))
  } finally {
    await pinned.execute(drizzleSql`SELECT pg_advisory_unlock(${key})`)
  }
}

/** Drizzle's own transaction (`BEGIN`, lock, `COMMIT`: 3 round trips), the floor of the Drizzle rows in transaction scope. */
async function drizzleTransactionCycle(
  db: { transaction(body: (tx: DrizzleDb) => Promise<void>): Promise<void> },
  key: number,
  section: CriticalSection,
): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.execute(drizzleSql`SELECT pg_advisory_xact_lock(${key})`)
    await section(drizzleQueryable(tx))
  })
}

/** Hand-written Drizzle over a node-postgres pool: `drizzle({ client })` on a checked-out client, or `db.transaction()`. */
function rawDrizzleNodePg(scope: 'session' | 'transaction') {
  return async (target: BenchTarget): Promise<OpenContender> => {
    const pool = openPgPool(target)
    const db = drizzleNodePg({ client: pool })
    return {
      async cycle(key, section) {
        if (scope === 'transaction') return drizzleTransactionCycle(db as never, key, section)
        const client = await pool.connect()
        try {
          await drizzleSessionCycle(drizzleNodePg({ client }), key, section)
        } finally {
          client.release()
        }
      },
      poolQuery: (text) => db.execute(drizzleSql.raw(text)),
      connections: () => pool.totalCount,
      close: () => pool.end(),
    }
  }
}

/**
 * Drizzle's own transaction over a postgres.js `Sql`. There is no session floor in Drizzle on
 * postgres.js 4: `drizzle({ client })` refuses a `ReservedSql` (it has no `options`), so the
 * drizzle/postgres.js session row is compared with raw postgres.js.
 */
async function openRawDrizzlePostgresJs(target: BenchTarget): Promise<OpenContender> {
  const { sql, connections } = openPostgresJs(target)
  const db = drizzlePostgresJs({ client: sql })
  return {
    cycle: (key, section) => drizzleTransactionCycle(db as never, key, section),
    poolQuery: (text) => db.execute(drizzleSql.raw(text)),
    connections,
    close: () => sql.end({ timeout: 5 }),
  }
}

/** Every hand-written lock deadlocks under pool pressure (see raw pg session); once is enough to show it. */
const HAND_WRITTEN_DEADLOCKS = 'a hand-written lock, as raw pg session: fn waits for a pool the waiters hold, and it deadlocks the same way'

const RAW_KYSELY_PG_SESSION = 'raw kysely/pg session'
const RAW_KYSELY_PG_TRANSACTION = 'raw kysely/pg transaction'
const RAW_KYSELY_POSTGRES_JS_SESSION = 'raw kysely/postgres.js session'
const RAW_KYSELY_POSTGRES_JS_TRANSACTION = 'raw kysely/postgres.js transaction'

/** Hand-written postgres.js on a reserved connection, the way a competent postgres.js user writes it. */
async function rawPostgresJsSessionCycle(sql: postgres.Sql, key: number, section: CriticalSection): Promise<void> {
  const reserved = await sql.reserve()
  try {
    await reserved`SELECT pg_advisory_lock(${key})`
    try {
      await section(postgresJsQueryable(reserved))
    } finally {
      await reserved`SELECT pg_advisory_unlock(${key})`
    }
  } finally {
    reserved.release()
  }
}

/** `sql.begin()` sends `BEGIN` on its own, then the lock: 3 round trips with the `COMMIT`. */
async function rawPostgresJsTransactionCycle(sql: postgres.Sql, key: number, section: CriticalSection): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${key})`
    await section(postgresJsQueryable(tx))
  })
}

function rawPostgresJs(cycle: typeof rawPostgresJsSessionCycle) {
  return async (target: BenchTarget): Promise<OpenContender> => {
    const { sql, connections } = openPostgresJs(target)
    return {
      cycle: (key, section) => cycle(sql, key, section),
      poolQuery: (text) => sql.unsafe(text),
      connections,
      close: () => sql.end({ timeout: 5 }),
    }
  }
}

const RAW_POSTGRES_JS_SESSION = 'raw postgres.js session'
const RAW_POSTGRES_JS_TRANSACTION = 'raw postgres.js transaction'

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
  {
    name: RAW_POSTGRES_JS_SESSION,
    role: 'floor',
    scope: 'session',
    floor: RAW_POSTGRES_JS_SESSION,
    cycleDescription: 'const r = await sql.reserve(); r`SELECT pg_advisory_lock(key)`; fn; r`SELECT pg_advisory_unlock(key)`; r.release()',
    open: rawPostgresJs(rawPostgresJsSessionCycle),
  },
  {
    name: RAW_POSTGRES_JS_TRANSACTION,
    role: 'floor',
    scope: 'transaction',
    floor: RAW_POSTGRES_JS_TRANSACTION,
    cycleDescription: 'sql.begin(async (tx) => { await tx`SELECT pg_advisory_xact_lock(key)`; fn })',
    open: rawPostgresJs(rawPostgresJsTransactionCycle),
  },
  {
    name: RAW_KYSELY_PG_SESSION,
    role: 'floor',
    noPoolPressure: HAND_WRITTEN_DEADLOCKS,
    scope: 'session',
    floor: RAW_PG_SESSION,
    cycleDescription: 'db.connection().execute(async (c) => { sql`SELECT pg_advisory_lock(key)`.execute(c); fn; unlock }), PostgresDialect',
    open: rawKysely(openKyselyNodePgPool, rawKyselySessionCycle),
  },
  {
    name: RAW_KYSELY_PG_TRANSACTION,
    role: 'floor',
    noPoolPressure: HAND_WRITTEN_DEADLOCKS,
    scope: 'transaction',
    floor: RAW_PG_TRANSACTION,
    cycleDescription: 'db.transaction().execute(async (tx) => { sql`SELECT pg_advisory_xact_lock(key)`.execute(tx); fn }), PostgresDialect',
    open: rawKysely(openKyselyNodePgPool, rawKyselyTransactionCycle),
  },
  {
    name: RAW_KYSELY_POSTGRES_JS_SESSION,
    role: 'floor',
    noPoolPressure: HAND_WRITTEN_DEADLOCKS,
    scope: 'session',
    floor: RAW_POSTGRES_JS_SESSION,
    cycleDescription: 'the same session lock by hand on PostgresJSDialect (kysely-postgres-js)',
    open: rawKysely(openKyselyPostgresJsPool, rawKyselySessionCycle),
  },
  {
    name: RAW_KYSELY_POSTGRES_JS_TRANSACTION,
    role: 'floor',
    noPoolPressure: HAND_WRITTEN_DEADLOCKS,
    scope: 'transaction',
    floor: RAW_POSTGRES_JS_TRANSACTION,
    cycleDescription: 'the same transaction by hand on PostgresJSDialect (kysely-postgres-js)',
    open: rawKysely(openKyselyPostgresJsPool, rawKyselyTransactionCycle),
  },
  {
    name: RAW_DRIZZLE_PG_SESSION,
    role: 'floor',
    noPoolPressure: HAND_WRITTEN_DEADLOCKS,
    scope: 'session',
    floor: RAW_PG_SESSION,
    cycleDescription: 'pool.connect(); drizzle({ client }).execute(sql`SELECT pg_advisory_lock(key)`); fn; unlock; client.release()',
    open: rawDrizzleNodePg('session'),
  },
  {
    name: RAW_DRIZZLE_PG_TRANSACTION,
    role: 'floor',
    noPoolPressure: HAND_WRITTEN_DEADLOCKS,
    scope: 'transaction',
    floor: RAW_PG_TRANSACTION,
    cycleDescription: 'db.transaction(async (tx) => { tx.execute(sql`SELECT pg_advisory_xact_lock(key)`); fn }), node-postgres',
    open: rawDrizzleNodePg('transaction'),
  },
  {
    name: RAW_DRIZZLE_POSTGRES_JS_TRANSACTION,
    role: 'floor',
    noPoolPressure: HAND_WRITTEN_DEADLOCKS,
    scope: 'transaction',
    floor: RAW_POSTGRES_JS_TRANSACTION,
    cycleDescription: 'the same transaction by hand in db.transaction() over postgres.js',
    open: openRawDrizzlePostgresJs,
  },
  ...pglockContenders({
    name: 'pg',
    lib: pglockPg,
    openPool: openPgPoolForPglock,
    sessionFloor: RAW_PG_SESSION,
    transactionFloor: RAW_PG_TRANSACTION,
    sendsBegin: true,
    fencedRows: true,
  }),
  ...pglockContenders({
    name: 'postgres-js',
    lib: pglockPostgresJs,
    openPool: openPostgresJsPool,
    leaseQueryable: postgresJsQueryable,
    sessionFloor: RAW_POSTGRES_JS_SESSION,
    transactionFloor: RAW_POSTGRES_JS_TRANSACTION,
    fencedRows: true,
  }),
  ...pglockContenders({
    name: 'drizzle/pg',
    packageName: '@pglock/drizzle over a node-postgres Pool',
    lib: pglockDrizzle,
    openPool: openDrizzleNodePgPool,
    leaseQueryable: drizzleQueryable,
    sessionFloor: RAW_DRIZZLE_PG_SESSION,
    transactionFloor: RAW_DRIZZLE_PG_TRANSACTION,
    sendsBegin: true,
  }),
  ...pglockContenders({
    name: 'drizzle/postgres.js',
    packageName: '@pglock/drizzle over a postgres.js Sql',
    lib: pglockDrizzle,
    openPool: openDrizzlePostgresJsPool,
    leaseQueryable: drizzleQueryable,
    sessionFloor: RAW_POSTGRES_JS_SESSION,
    transactionFloor: RAW_DRIZZLE_POSTGRES_JS_TRANSACTION,
  }),
  ...pglockContenders({
    name: 'kysely/pg',
    packageName: '@pglock/kysely over PostgresDialect on a node-postgres Pool',
    lib: pglockKysely,
    openPool: openKyselyNodePgPool,
    leaseQueryable: kyselyQueryable,
    sessionFloor: RAW_KYSELY_PG_SESSION,
    transactionFloor: RAW_KYSELY_PG_TRANSACTION,
  }),
  ...pglockContenders({
    name: 'kysely/postgres.js',
    packageName: '@pglock/kysely over kysely-postgres-js on a postgres.js Sql',
    lib: pglockKysely,
    openPool: openKyselyPostgresJsPool,
    leaseQueryable: kyselyQueryable,
    sessionFloor: RAW_KYSELY_POSTGRES_JS_SESSION,
    transactionFloor: RAW_KYSELY_POSTGRES_JS_TRANSACTION,
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
