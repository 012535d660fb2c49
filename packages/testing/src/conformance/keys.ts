import { randomBytes } from 'node:crypto'
import { type LockKey, PgLockError, pgLocksRow, resolveLockId, type WithLockOptions } from '@pglock/core'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { describeFeature } from './helpers.ts'

/**
 * Keys and arguments: invalid ones refused before any SQL, and the ids Postgres sees for each kind of key.
 * Part of {@link describeConformance}; callable alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeKeys } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeKeys(adapter)
 * ```
 */
export function describeKeys(adapter: AdapterUnderTest): void {
  const { lib } = adapter
  describeFeature(adapter, ({ key, observer, open }) => {
    describe('keys', () => {
      const invalid: [string, unknown][] = [
        ['NaN', Number.NaN],
        ['1.5', 1.5],
        ['2^64', 2n ** 64n],
        ['2^53', 2 ** 53],
        ['a pair out of int32', [2 ** 31, 0]],
        ['a pair of three', [1, 2, 3]],
        ['null', null],
        ['undefined', undefined],
        ['an object', { id: 1 }],
      ]
      for (const [label, bad] of invalid) {
        it(`refuses ${label} as a key with INVALID_KEY before any SQL`, async () => {
          const pool = await open()
          await pool.close()
          expect(() => lib.createLock(pool.db, bad as LockKey)).toThrow(PgLockError)
          expect(() => lib.createLock(pool.db, bad as LockKey)).toThrow(expect.objectContaining({ code: 'INVALID_KEY' }))
          await expect(lib.withLock(pool.db, bad as LockKey, () => 1)).rejects.toMatchObject({ code: 'INVALID_KEY' })
        })
      }

      it('refuses a malformed fn or options to withLock with INVALID_ARGUMENT before any SQL', async () => {
        const pool = await open()
        await pool.close()
        const k = key('bad-arguments')
        const malformed: [unknown, unknown][] = [
          ['not a function', undefined],
          ['not a function', { scope: 'transaction' }],
          [() => 1, 'fast'],
          [() => 1, null],
          [() => 1, { scope: 'global' }],
          [() => 1, { mode: 'upgrade' }],
          [() => 1, { timeoutMs: -1 }],
          [() => 1, { scope: 'transaction', timeoutMs: Number.NaN }],
          [() => 1, { signal: 'abort' }],
        ]
        for (const [fn, options] of malformed) {
          await expect(lib.withLock(pool.db, k, fn as () => number, options as WithLockOptions)).rejects.toMatchObject({
            code: 'INVALID_ARGUMENT',
          })
        }
      })

      it('hashes string keys like Python postgresql-lock and reproduces postgres-lock 0.1 on request', async () => {
        const pool = await open()
        const expected = {
          'sha1-int64': -464685171814670893n,
          'postgres-lock-0.1': 142468548502040132n,
        } as const
        for (const [keyHash, id] of Object.entries(expected) as [keyof typeof expected, bigint][]) {
          const rows = await lib.withLock(
            pool.db,
            'shared-identifier',
            () =>
              observer.query<{ classid: string; objid: string }>(
                `SELECT classid::int8 AS classid, objid::int8 AS objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
                    AND pid IN (SELECT pid FROM pg_stat_activity WHERE application_name = '${pool.applicationName}')`,
              ),
            { keyHash },
          )
          const row = pgLocksRow({ kind: 'int64', value: id })
          expect(rows).toEqual([{ classid: String(row.classid), objid: String(row.objid) }])
        }
      })

      it('locks integer, bigint and pair keys under the ids Postgres would use', async () => {
        const pool = await open()
        const base = Number.parseInt(randomBytes(3).toString('hex'), 16)
        const keys: LockKey[] = [base, -BigInt(base) * 2n ** 32n - 1n, [base, -base]]
        for (const k of keys) {
          const holders = await lib.withLock(pool.db, k, () => observer.holders(k))
          expect(holders).toHaveLength(1)
          expect(resolveLockId(k).kind).toBe(Array.isArray(k) ? 'pair' : 'int64')
        }
      })
    })
  })
}
