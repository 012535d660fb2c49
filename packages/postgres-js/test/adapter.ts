import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as lib from '@pglock/postgres-js'
import type { AdapterUnderTest } from '@pglock/testing'
import postgres, { type ISql, type Sql, type TransactionSql } from 'postgres'

/**
 * Seconds `sql.end()` waits before it terminates what is left. It must have a bound: postgres.js
 * 3.4 never finishes a plain `end()` once a connection failed with a statement in flight
 * (porsager/postgres#1142), which is what every fault test does.
 */
const END_TIMEOUT_S = 0.2

/**
 * How many of pglock's `onclose` hooks sit on the connection behind a `TransactionSql` on
 * postgres.js 3.4: pglock stacks one per pinned lock, each pointing at the one below as `previous`.
 */
export async function closeHooks(tx: TransactionSql): Promise<number> {
  let connection: { onclose?: unknown } | undefined
  const onexecute = (raw: { onclose?: unknown }) => {
    connection = raw
    return true
  }
  await tx.unsafe(';', [], { onexecute } as never)
  // postgres.js 4 has no `onexecute`: pglock hears of closes on a channel, not through hooks on the connection
  if (connection === undefined) return 0
  let hooks = 0
  for (let hook = connection.onclose as { previous?: unknown; live?: boolean } | undefined; hook !== undefined && 'live' in hook; ) {
    if (hook.live === true) hooks += 1
    hook = hook.previous as typeof hook
  }
  return hooks
}

/** The installed postgres.js major, for what differs between 3.4 and 4.x (4.x exports no `./package.json`). */
const postgresMajor = (() => {
  for (let dir = dirname(createRequire(import.meta.url).resolve('postgres')); dir !== dirname(dir); dir = dirname(dir)) {
    const manifest = join(dir, 'package.json')
    if (existsSync(manifest)) {
      const { name, version } = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string; version?: string }
      if (name === 'postgres') return Number(version?.split('.')[0])
    }
  }
  return Number.NaN
})()

/** postgres.js under the conformance suite: `Sql`, a `ReservedSql`, the `TransactionSql` of `sql.begin()` and of its savepoints. */
const adapter: AdapterUnderTest = {
  name: 'postgres-js',
  module: fileURLToPath(import.meta.url),
  lib,
  caps: {
    sessionOnPool: true,
    singleConnection: true,
    transactionHandle: true,
    savepointHandle: true,
    beginWithLock: false,
    poolRecovers: false,
    endedPoolRefuses: false,
    firstCheckoutAfterRestartMayFail: postgresMajor >= 4,
    survivesConnectionLoss: true,
    transactionRejectsOnLoss: true,
  },
  async openPool({ url, applicationName, max, throughPooler = false }) {
    const sql = postgres(url, {
      max,
      prepare: !throughPooler,
      connection: { application_name: applicationName },
      onnotice: () => undefined,
    })
    let closed: Promise<void> | undefined
    return { db: sql, close: () => (closed ??= sql.end({ timeout: END_TIMEOUT_S })) }
  },
  async openConnection({ url, applicationName }) {
    const sql = postgres(url, { max: 1, connection: { application_name: applicationName }, onnotice: () => undefined })
    const reserved = await sql.reserve()
    let closed: Promise<void> | undefined
    return {
      db: reserved,
      close: () =>
        (closed ??= (async () => {
          reserved.release()
          await sql.end({ timeout: END_TIMEOUT_S })
        })()),
    }
  },
  listenerCount: (tx) => closeHooks(tx as TransactionSql),
  inTransaction: (pool, body) => (pool as Sql).begin((tx) => body(tx)) as Promise<never>,
  inSavepoint: (tx, body) => (tx as TransactionSql).savepoint((savepoint) => body(savepoint)) as Promise<never>,
  async query(db, sql) {
    return [...(await (db as ISql).unsafe(sql))]
  },
}

export default adapter
