import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createLock, UnsupportedError, withLock } from '@pglock/kysely'
import { Observer } from '@pglock/testing'
import type { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'
import pgDialect from './node-postgres/adapter.ts'

/** The version of the kysely these tests run against, read the way a user would find it. */
function installedKysely(): string {
  const entry = createRequire(import.meta.url).resolve('kysely')
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (manifest.name === 'kysely' && manifest.version !== undefined) return manifest.version
    } catch {}
  }
  throw new Error('kysely is not installed')
}

/** A Kysely instance as a version without `getExecutor()` would be: every other member works. */
function withoutGetExecutor(db: Kysely<any>): Kysely<any> {
  return new Proxy(db, {
    get(target, property) {
      if (property === 'getExecutor') return undefined
      const value = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}

describe('Kysely members pglock cannot do without', () => {
  let observer: Observer
  const key = `pglock-test:kysely:privates:${randomBytes(4).toString('hex')}`

  beforeAll(() => {
    observer = new Observer(inject('databaseUrl'))
  })
  afterAll(() => observer.close())

  async function open(): Promise<Kysely<any>> {
    const opened = await pgDialect.openPool({
      url: inject('databaseUrl'),
      applicationName: `pglock-t-${randomBytes(5).toString('hex')}`,
      max: 2,
    })
    onTestFinished(() => opened.close())
    return opened.db as Kysely<any>
  }

  it('refuses a Kysely without getExecutor() with UnsupportedError naming kysely and its version, and takes no lock', async () => {
    const db = withoutGetExecutor(await open())
    const expected = { code: 'UNSUPPORTED', message: expect.stringContaining(`kysely ${installedKysely()} has no Kysely#getExecutor()`) }
    const thrown = (() => {
      try {
        createLock(db, key)
      } catch (error) {
        return error
      }
    })()
    expect(thrown).toBeInstanceOf(UnsupportedError)
    expect(thrown).toMatchObject(expected)
    await expect(withLock(db, key, () => 'ran', { scope: 'transaction' })).rejects.toMatchObject(expected)
    expect(await observer.locks(key)).toEqual([])
  })
})
