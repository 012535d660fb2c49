/**
 * Contenders that peel a pglock cycle into layers, for `pnpm --filter @pglock/bench profile`
 * only (never in the main table): the driver with pglock's own SQL, written by hand; then the
 * adapter's pinned connection, driven by hand; the full `withLock` is the pglock row. The
 * difference between two neighbours is what that layer costs. A layer whose adapter no longer
 * exports what it drives (a reshaped public surface) is left out.
 */
import * as pglockPg from '@pglock/pg/adapter'
import * as pglockPostgresJs from '@pglock/postgres-js/adapter'
import type postgres from 'postgres'
import type { BenchTarget, Contender, CriticalSection, OpenContender, Queryable } from './contender.js'
import { openPgPool, openPostgresJs } from './contenders.js'

/** pglock's session statements (core/src/sql.ts, `PREPARED`): they answer `pid`, and the unlock checks it. */
const LOCK = {
  name: 'pglock_pg_advisory_lock_int64',
  text: "SELECT pg_advisory_lock($1::int8), pg_backend_pid() AS pid WHERE (CASE WHEN pg_is_in_recovery() THEN 'pglock: the server is in recovery' END)::int4 IS NULL",
}
const UNLOCK = {
  name: 'pglock_pg_advisory_unlock_int64',
  text: 'SELECT CASE WHEN pg_backend_pid() = COALESCE($1::int4, pg_backend_pid()) THEN pg_advisory_unlock($2::int8) END AS released, pg_backend_pid() AS pid',
}

interface Connection {
  readonly db: unknown
  query(sql: string): Promise<readonly Record<string, unknown>[]>
  execute?(statement: { name: string; text: string; values: readonly (string | null)[] }): Promise<readonly Record<string, unknown>[]>
  release(options: { destroy: boolean }): void | Promise<void>
}

type ExecutorOf = (db: unknown) => {
  connect?(): Promise<Connection>
  transaction?<T>(body: (connection: Connection) => Promise<T>): Promise<T>
}

function executorOf(module: object, name: string): ExecutorOf | undefined {
  const value = (module as Record<string, unknown>)[name]
  return typeof value === 'function' ? (value as ExecutorOf) : undefined
}

function pgLayers(): Contender[] {
  const sqlByHand = async (target: BenchTarget): Promise<OpenContender> => {
    const pool = openPgPool(target)
    return {
      async cycle(key, section) {
        const client = await pool.connect()
        const [{ pid }] = (await client.query({ ...LOCK, values: [String(key)] })).rows as [{ pid: number }]
        await section(client)
        await client.query({ ...UNLOCK, values: [String(pid), String(key)] })
        client.release()
      },
      poolQuery: undefined,
      connections: () => pool.totalCount,
      close: () => pool.end(),
    }
  }
  const transactionByHand = async (target: BenchTarget): Promise<OpenContender> => {
    const pool = openPgPool(target)
    return {
      async cycle(key, section) {
        const client = await pool.connect()
        await client.query(`BEGIN; SELECT pg_advisory_xact_lock('${key}'::int8)`)
        await section(client)
        await client.query('COMMIT')
        client.release()
      },
      poolQuery: undefined,
      connections: () => pool.totalCount,
      close: () => pool.end(),
    }
  }
  const layers: Contender[] = [
    layer('layer pg: SQL of pglock, by hand', 'session', 'raw pg session, prepared', sqlByHand),
    layer('layer pg: BEGIN with the lock, by hand', 'transaction', 'raw pg transaction', transactionByHand),
  ]
  const pgExecutor = executorOf(pglockPg, 'pgExecutor')
  if (pgExecutor !== undefined) {
    layers.push(
      layer('layer pg: adapter connection, by hand', 'session', 'raw pg session, prepared', async (target) => {
        const pool = openPgPool(target)
        const executor = pgExecutor(pool)
        return adapterSession(executor, pool, (db) => db as Queryable)
      }),
    )
  }
  return layers
}

/** The adapter's pinned connection, driven the way the core drives it on the happy path. */
function adapterSession(
  executor: ReturnType<ExecutorOf>,
  pool: { totalCount?: number; end(): Promise<void> } | postgres.Sql,
  toQueryable: (db: unknown) => Queryable,
): OpenContender {
  return {
    async cycle(key: number, section: CriticalSection) {
      const connection = await (executor.connect as () => Promise<Connection>)()
      const values = [String(key)]
      const run = (statement: { name: string; text: string }, params: (string | null)[]) =>
        connection.execute === undefined ? connection.query(statement.text) : connection.execute({ ...statement, values: params })
      const [row] = await run(LOCK, values)
      await section(toQueryable(connection.db))
      await run(UNLOCK, [String(row?.pid), ...values])
      await connection.release({ destroy: false })
    },
    poolQuery: undefined,
    connections: () => 1,
    close: async () => {
      await ('totalCount' in pool ? pool.end() : (pool as postgres.Sql).end({ timeout: 5 }))
    },
  }
}

function postgresJsLayers(): Contender[] {
  const queryable = (db: unknown): Queryable => ({ query: (text) => (db as postgres.ReservedSql).unsafe(text) })
  const layers: Contender[] = [
    layer('layer postgres.js: SQL of pglock, by hand', 'session', 'raw postgres.js session', async (target) => {
      const { sql, connections } = openPostgresJs(target)
      return {
        async cycle(key, section) {
          const reserved = await sql.reserve()
          const [row] = await reserved.unsafe(LOCK.text, [String(key)], { prepare: true })
          await section(queryable(reserved))
          await reserved.unsafe(UNLOCK.text, [String(row?.pid), String(key)], { prepare: true })
          reserved.release()
        },
        poolQuery: undefined,
        connections,
        close: () => sql.end({ timeout: 5 }),
      }
    }),
  ]
  const postgresJsExecutor = executorOf(pglockPostgresJs, 'postgresJsExecutor')
  if (postgresJsExecutor !== undefined) {
    layers.push(
      layer('layer postgres.js: adapter connection, by hand', 'session', 'raw postgres.js session', async (target) => {
        const { sql } = openPostgresJs(target)
        return adapterSession(postgresJsExecutor(sql), sql, queryable)
      }),
      layer('layer postgres.js: adapter transaction, by hand', 'transaction', 'raw postgres.js transaction', async (target) => {
        const { sql, connections } = openPostgresJs(target)
        const executor = postgresJsExecutor(sql)
        return {
          async cycle(key, section) {
            await (executor.transaction as NonNullable<ReturnType<ExecutorOf>['transaction']>)(async (connection) => {
              await connection.query(`SELECT pg_advisory_xact_lock('${key}'::int8)`)
              await section(queryable(connection.db))
            })
          },
          poolQuery: undefined,
          connections,
          close: () => sql.end({ timeout: 5 }),
        }
      }),
    )
  }
  return layers
}

function layer(
  name: string,
  scope: 'session' | 'transaction',
  floor: string,
  open: (target: BenchTarget) => Promise<OpenContender>,
): Contender {
  return { name, role: 'floor', scope, floor, cycleDescription: name, open }
}

/** Every layer contender, by driver. */
export function layerContenders(): Contender[] {
  return [...pgLayers(), ...postgresJsLayers()]
}
