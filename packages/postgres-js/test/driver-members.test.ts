import { tracingChannel } from 'node:diagnostics_channel'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createLock, UnsupportedError, withLock } from '@pglock/postgres-js'
import { Observer } from '@pglock/testing'
import postgres, { type ReservedSql } from 'postgres'
import { afterAll, describe, expect, inject, it } from 'vitest'

/** The postgres.js these tests run against, as a user's `npm ls postgres` would show it. */
function installedVersion(): string {
  for (let dir = dirname(createRequire(import.meta.url).resolve('postgres')); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json')
    if (!existsSync(manifest)) continue
    const { name, version } = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string; version: string }
    if (name === 'postgres') return version
  }
}

const url = inject('databaseUrl')
const observer = new Observer(url)
const prefix = `driver-versions:${Math.random().toString(36).slice(2)}`
const key = (name: string) => `${prefix}:${name}`
afterAll(() => observer.close())

/** A `ReservedSql` whose statements lack one member, as a postgres.js version without it would build them. */
function without(reserved: ReservedSql, member: string): ReservedSql {
  return new Proxy(reserved, {
    get(target, property, receiver) {
      if (property !== 'unsafe') return Reflect.get(target, property, receiver)
      return (...args: Parameters<ReservedSql['unsafe']>) => {
        const query = target.unsafe(...args)
        delete (query as unknown as Record<string, unknown>)[member]
        return query
      }
    },
  })
}

describe(`postgres-js: postgres.js ${installedVersion()}`, () => {
  it('fails with UnsupportedError naming postgres.js and its version when a statement lacks a member pglock reads, before sending any SQL', async () => {
    const sql = postgres(url, { max: 1, onnotice: () => undefined })
    try {
      const reserved = await sql.reserve()
      const lock = createLock(without(reserved, 'state'), key('no-state'))
      const failure = await lock.acquire().then(
        () => undefined,
        (error: unknown) => error,
      )
      expect(failure).toBeInstanceOf(UnsupportedError)
      expect((failure as Error).message).toContain(`postgres.js ${installedVersion()} has no Query#state`)
      expect(lock.isHeld).toBe(false)
      expect(await observer.locks(key('no-state'))).toEqual([])
      reserved.release()
    } finally {
      await sql.end({ timeout: 0.2 })
    }
  })

  it('takes and releases locks in both scopes while the application traces postgres.js queries', async () => {
    const seen: unknown[] = []
    const tracer = {
      start: () => undefined,
      end: () => undefined,
      asyncStart: () => undefined,
      asyncEnd: (context: unknown) => void seen.push(context),
      error: () => undefined,
    }
    const queries = tracingChannel('postgres:query')
    queries.subscribe(tracer)
    const sql = postgres(url, { max: 2, onnotice: () => undefined })
    try {
      expect(await withLock(sql, key('traced'), () => 'session')).toBe('session')
      expect(await withLock(sql, key('traced'), () => 'transaction', { scope: 'transaction' })).toBe('transaction')
      const inside = await sql.begin((tx) => withLock(tx, key('traced'), () => 'caller transaction', { scope: 'transaction' }))
      expect(inside).toBe('caller transaction')
      expect(await observer.locks(key('traced'))).toEqual([])
    } finally {
      queries.unsubscribe(tracer)
      await sql.end({ timeout: 0.2 })
    }
  })
  it('with fetch_types off: on 3.4 refuses a session lock on a Sql before any SQL (its reserve() would never settle), and locks in transaction scope; on 4.x locks in both', async () => {
    const applicationName = `${prefix}:fetch-types`
    const sql = postgres(url, { max: 1, fetch_types: false, connection: { application_name: applicationName }, onnotice: () => undefined })
    try {
      const session = await withLock(sql, key('fetch-types'), async () => (await observer.locks(key('fetch-types'))).length).then(
        (held) => ({ held }),
        (error: unknown) => ({ error }),
      )
      if (installedVersion().startsWith('3.')) {
        expect(session).toEqual({ error: expect.any(UnsupportedError) })
        expect(String((session as { error: Error }).error.message)).toContain('porsager/postgres/issues/751')
        expect(await observer.backends(applicationName), 'no connection was opened').toEqual([])
      } else {
        expect(session).toEqual({ held: 1 })
      }
      const held = await withLock(sql, key('fetch-types'), async () => (await observer.locks(key('fetch-types'))).length, {
        scope: 'transaction',
      })
      expect(held).toBe(1)
      expect(await observer.locks(key('fetch-types'))).toEqual([])
    } finally {
      await sql.end({ timeout: 0.2 })
    }
  })
})
