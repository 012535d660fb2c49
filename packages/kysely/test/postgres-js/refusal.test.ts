import { randomBytes } from 'node:crypto'
import { createLock, tryWithLock, UnsupportedError, withLock } from '@pglock/kysely'
import { Observer } from '@pglock/testing'
import { Kysely } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'
import { postgresJs, refused } from './adapter.ts'

describe(`@pglock/kysely through kysely-postgres-js over postgres.js ${postgresJs.version}`, () => {
  let observer: Observer
  const key = `pglock-test:kysely:pgjs-refusal:${randomBytes(4).toString('hex')}`

  beforeAll(() => {
    observer = new Observer(inject('databaseUrl'))
  })
  afterAll(() => observer.close())

  /**
   * An instance whose client records every statement it sends but postgres.js's own type lookup
   * (which cannot be turned off here: postgres.js 3.4's `reserve()` never resolves with `fetch_types: false`).
   */
  function open(): { readonly db: Kysely<any>; readonly sent: string[] } {
    const sent: string[] = []
    const client = postgres(inject('databaseUrl'), {
      max: 2,
      debug: (_connection, text) => {
        if (!text.includes('pg_catalog.pg_type')) sent.push(text)
      },
      connection: { application_name: `pglock-t-${randomBytes(5).toString('hex')}` },
      onnotice: () => undefined,
    })
    const db = new Kysely<any>({ dialect: new PostgresJSDialect({ postgres: client }) })
    onTestFinished(async () => {
      await client.end({ timeout: 0.2 })
      await db.destroy()
    })
    return { db, sent }
  }

  const refusal = {
    code: 'UNSUPPORTED',
    message: expect.stringMatching(new RegExp(`postgres\\.js ${postgresJs.version.replace(/\./g, '\\.')}.*porsager/postgres/issues/1208`)),
  }

  it.runIf(refused)('refuses every lock with UnsupportedError naming porsager/postgres#1208, before any statement', async () => {
    const { db, sent } = open()
    const calls = [
      () => withLock(db, key, () => 'ran'),
      () => withLock(db, key, () => 'ran', { scope: 'transaction' }),
      () => tryWithLock(db, key, () => 'ran', { scope: 'transaction' }),
      () => createLock(db, key).acquire(),
      () => createLock(db, key).tryAcquire(),
    ]
    for (const call of calls) {
      const result = call()
      await expect(result).rejects.toBeInstanceOf(UnsupportedError)
      await expect(result).rejects.toMatchObject(refusal)
    }
    expect(sent).toEqual([])
    expect(await observer.locks(key)).toEqual([])
  })

  it.runIf(refused)('refuses a lock on a Transaction the caller opened, sending none of its statements', async () => {
    const { db, sent } = open()
    await db.transaction().execute(async (trx) => {
      await expect(createLock(trx, key, { scope: 'transaction' }).acquire()).rejects.toMatchObject(refusal)
    })
    expect(sent.map((text) => text.toLowerCase())).toEqual(['begin', 'commit'])
    expect(await observer.locks(key)).toEqual([])
  })

  it.runIf(!refused)('locks over postgres.js 4, where a lost connection fails its statements at once', async () => {
    const { db, sent } = open()
    expect(await withLock(db, key, () => 'ran')).toBe('ran')
    expect(await withLock(db, key, () => 'ran', { scope: 'transaction' })).toBe('ran')
    expect(sent.some((text) => text.includes('pg_advisory_lock'))).toBe(true)
    expect(await observer.locks(key)).toEqual([])
  })
})
