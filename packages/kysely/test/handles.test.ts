import { randomBytes } from 'node:crypto'
import { createLock, withLock } from '@pglock/kysely'
import { Observer, sleep } from '@pglock/testing'
import { type Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'
import pgDialect from './node-postgres/adapter.ts'
import postgresJsDialect, { refused } from './postgres-js/adapter.ts'

/** What only Kysely's handles raise: `lease.db` passed back to pglock, and Transactions pglock opened. */
// kysely-postgres-js over postgres.js 3.4 is refused: refusal.test.ts checks that instead
for (const adapter of refused ? [pgDialect] : [pgDialect, postgresJsDialect]) {
  describe(`${adapter.name}: Kysely handles`, () => {
    let observer: Observer
    const prefix = `pglock-test:${adapter.name}:handles:${randomBytes(4).toString('hex')}`
    const key = (label: string) => `${prefix}:${label}`

    beforeAll(() => {
      observer = new Observer(inject('databaseUrl'))
    })
    afterAll(() => observer.close())

    async function open(): Promise<Kysely<any>> {
      const opened = await adapter.openPool({
        url: inject('databaseUrl'),
        applicationName: `pglock-t-${randomBytes(5).toString('hex')}`,
        max: 4,
      })
      onTestFinished(() => opened.close())
      return opened.db as Kysely<any>
    }

    const pid = async (db: Kysely<any>) => (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(db)).rows[0]?.pid

    it('takes a second lock through lease.db on the same connection, which stays usable inside', async () => {
      const db = await open()
      const [outer, inner] = [key('outer'), key('inner')]
      const seen = await withLock(db, outer, ({ db: leased }) =>
        withLock(leased, inner, async ({ db: nested }) => ({
          outer: await pid(leased),
          nested: await pid(nested),
          holders: [...(await observer.holders(outer)), ...(await observer.holders(inner))],
        })),
      )
      expect(seen.nested).toBe(seen.outer)
      expect(seen.holders).toEqual([seen.outer, seen.outer])
      expect(await observer.locks(inner)).toEqual([])
    })

    it('cancels a wait in Postgres through the Transaction that withLock opened', async () => {
      const db = await open()
      const [outer, contended] = [key('tx-outer'), key('tx-contended')]
      const holder = await createLock(db, contended).acquire()
      const reason = new Error('gave up')
      const outcome = await withLock(
        db,
        outer,
        async ({ db: trx }) => {
          const controller = new AbortController()
          const waiting = createLock(trx, contended, { scope: 'transaction' }).acquire({ signal: controller.signal })
          await observer.until('the transaction waits in Postgres', async () => (await observer.waiters(contended)).length === 1)
          controller.abort(reason)
          const error = await waiting.catch((caught: unknown) => caught)
          return {
            error,
            waiters: await observer.waiters(contended),
            usable: (await sql<{ one: number }>`SELECT 1 AS one`.execute(trx)).rows,
          }
        },
        { scope: 'transaction' },
      )
      expect(outcome).toEqual({ error: reason, waiters: [], usable: [{ one: 1 }] })
      await holder.release()
    })

    it('cancels a wait in Postgres through a Transaction the caller opened, where Kysely cancels on the connection', async (context) => {
      const db = await open()
      // Kysely 0.29 added DatabaseConnection.cancelQuery; without it no other connection is reachable from a caller's Transaction
      const cancels = await db
        .connection()
        .execute((bound) =>
          bound
            .getExecutor()
            .provideConnection(async (connection) => typeof (connection as { cancelQuery?: unknown }).cancelQuery === 'function'),
        )
      if (!cancels) context.skip()
      const k = key('caller-tx-contended')
      const holder = await createLock(db, k).acquire()
      const reason = new Error('gave up')
      const outcome = await db.transaction().execute(async (trx) => {
        const controller = new AbortController()
        const waiting = createLock(trx, k, { scope: 'transaction' }).acquire({ signal: controller.signal })
        await observer.until('the transaction waits in Postgres', async () => (await observer.waiters(k)).length === 1)
        controller.abort(reason)
        const error = await Promise.race([
          waiting.then(
            () => 'acquired',
            (caught: unknown) => caught,
          ),
          sleep(5_000).then(() => 'still waiting'),
        ])
        if (error === 'still waiting') await holder.release()
        return {
          error,
          waiters: await observer.waiters(k),
          usable: (await sql<{ one: number }>`SELECT 1 AS one`.execute(trx)).rows,
        }
      })
      expect(outcome).toEqual({ error: reason, waiters: [], usable: [{ one: 1 }] })
      await holder.release()
    })

    it('does not let a Transaction derived with withSchema() take the lock its Transaction holds', async () => {
      const db = await open()
      const k = key('with-schema')
      await db.transaction().execute(async (trx) => {
        await createLock(trx, k, { scope: 'transaction' }).acquire()
        const derived = trx.withSchema('public')
        expect(await createLock(derived, k, { scope: 'transaction' }).tryAcquire()).toBe(false)
        expect(await observer.holders(k)).toEqual([await pid(trx)])
      })
      expect(await observer.locks(k)).toEqual([])
    })

    it("makes a controlled transaction's savepoint wait for the lock the transaction holds, and take it once released", async () => {
      const db = await open()
      const k = key('controlled-savepoint')
      const trx = await db.startTransaction().execute()
      try {
        const outer = await createLock(trx, k).acquire()
        const savepoint = await trx.savepoint('inner').execute()
        const inner = createLock(savepoint, k)
        expect(await inner.tryAcquire()).toBe(false)
        const waiting = inner.acquire()
        await new Promise((resolve) => setTimeout(resolve, 50))
        expect(inner.isHeld).toBe(false)
        expect(await outer.release()).toBe(true)
        await waiting
        expect(await observer.holders(k)).toEqual([await pid(savepoint)])
        expect(await inner.release()).toBe(true)
        await savepoint.releaseSavepoint('inner').execute()
      } finally {
        await trx.rollback().execute()
      }
      expect(await observer.locks(k)).toEqual([])
    })
  })
}
