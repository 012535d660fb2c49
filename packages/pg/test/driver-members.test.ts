import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { createLock, UnsupportedError, withLock } from '@pglock/pg'
import { Observer, settleWithin } from '@pglock/testing'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'

const pgVersion = (createRequire(import.meta.url)('pg/package.json') as { version: string }).version

/** A node-postgres as a future release without the backend key data would make it. */
function withoutSecretKey(client: pg.ClientBase): void {
  delete (client as { secretKey?: unknown }).secretKey
}

describe('pg: a node-postgres without a member pglock needs', () => {
  let observer: Observer
  const prefix = `pglock-test:pg:privates:${randomBytes(4).toString('hex')}`
  const key = (label: string) => `${prefix}:${label}`

  beforeAll(() => {
    observer = new Observer(inject('databaseUrl'))
  })
  afterAll(() => observer.close())

  const unsupported = {
    state: 'rejected',
    error: expect.objectContaining({
      constructor: UnsupportedError,
      code: 'UNSUPPORTED',
      message: expect.stringContaining(`node-postgres (pg ${pgVersion}) has no Client#secretKey`),
    }),
  }

  it('refuses a Client without secretKey with UnsupportedError, instead of an abort that cannot stop the wait', async () => {
    const holderPool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 1 })
    const client = new pg.Client({ connectionString: inject('databaseUrl') })
    onTestFinished(async () => {
      await client.end()
      await holderPool.end()
    })
    await client.connect()
    withoutSecretKey(client)
    const k = key('client')
    const holder = await createLock(holderPool, k).acquire()

    const controller = new AbortController()
    const pending = createLock(client, k).acquire({ signal: controller.signal })
    setTimeout(() => controller.abort(), 100)
    const result = await settleWithin(pending, 2_000)
    await holder.release()

    expect(result).toMatchObject(unsupported)
    expect((result as { error: Error }).error).toBeInstanceOf(UnsupportedError)
    expect(await observer.locks(k)).toEqual([])
  })

  it('refuses a pool whose clients lack secretKey, and gives the client back', async () => {
    const pool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 1 })
    pool.on('connect', withoutSecretKey)
    onTestFinished(() => pool.end())
    const k = key('pool')
    let ran = false

    const result = await settleWithin(
      withLock(pool, k, () => {
        ran = true
      }),
      2_000,
    )

    expect(result).toMatchObject(unsupported)
    expect(ran).toBe(false)
    expect(await observer.locks(k)).toEqual([])
    expect({ total: pool.totalCount, idle: pool.idleCount }).toEqual({ total: 1, idle: 1 })
  })
})
